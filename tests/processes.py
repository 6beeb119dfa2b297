"""Real jobkit processes for end-to-end tests: ``python -m jobkit ...`` from the repository root."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEED_AND_JOBKIT_VARS = ("JOBKIT_", "BEANSTALK_", "MONGO_URL", "MANAGER_LISTEN_PORT", "HASH_PAYLOAD")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without any jobkit or seed setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(SEED_AND_JOBKIT_VARS)}
    env["PYTHONUNBUFFERED"] = "1"
    return env | extra


def jobkit(*args: str, env: dict[str, str] | None = None, timeout_s: float = 60,
           cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    """Run a jobkit command to completion."""
    return subprocess.run([sys.executable, "-m", "jobkit", *args], cwd=cwd, env=env or clean_env(),
                          capture_output=True, text=True, timeout=timeout_s)


class JobkitProcess:
    """A long-running jobkit command (worker, api, up) in its own process group."""

    def __init__(self, *args: str, env: dict[str, str] | None = None, log: Path | None = None,
                 cwd: Path = ROOT) -> None:
        self.args = args
        self.log_path = log
        out = open(log, "wb") if log else subprocess.DEVNULL
        self.proc = subprocess.Popen([sys.executable, "-m", "jobkit", *args], cwd=cwd,
                                     env=env or clean_env(), stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, signum: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signum)

    def wait(self, timeout_s: float) -> int:
        return self.proc.wait(timeout_s)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self, timeout_s: float = 15) -> None:
        """SIGTERM, then SIGKILL the whole process group if it does not exit in time."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.wait(5)
