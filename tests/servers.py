"""Real servers for the tests: beanstalkd, and MongoDB (``mongod`` or the nx-27017 wire server)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from jobkit.embedded import free_port, wait_for_port

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def missing(what: str) -> None:
    """Skip when a server cannot be started here; under CI=true that is a failure."""
    if IN_CI:
        pytest.fail(f"{what} (CI=true: servers are required)")
    pytest.skip(what)


class MongoServer:
    """A real ``mongod`` when one is on PATH, else the MongoDB-wire-protocol server nx-27017."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.kind = ""

    def argv(self) -> list[str]:
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        mongod = shutil.which("mongod")
        if mongod:
            self.kind = "mongod"
            return [mongod, "--dbpath", str(data), "--port", str(self.port), "--bind_ip", "127.0.0.1"]
        nx = shutil.which("nx-27017") or str(Path(sys.executable).with_name("nx-27017"))
        if not Path(nx).exists():
            missing("neither mongod nor nx-27017 is installed (pip install -e .[test])")
        self.kind = "nx-27017"
        return [nx, "--data-dir", str(data), "--host", "127.0.0.1", "-p", str(self.port),
                "--pid-file", str(self.workdir / "nx.pid"), "--log-file", str(self.workdir / "nx.log")]

    def start(self) -> MongoServer:
        log = open(self.workdir / "server.out", "wb")
        self.proc = subprocess.Popen(self.argv(), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        wait_for_port(self.port, proc=self.proc, timeout_s=30)
        return self

    def url(self, database: str) -> str:
        return f"mongodb://127.0.0.1:{self.port}/{database}"

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
