"""Running the pieces on one machine: beanstalkd as a child process, and ``jobkit up``.

Also used by the tests and benchmarks to start real servers.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from jobkit.config import Settings, read_env
from jobkit.errors import ConfigError

if TYPE_CHECKING:
    from jobkit.app import App

DEFAULT_MAX_JOB_SIZE = 1 << 20  # bytes; beanstalkd's own default is 65,535


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent dies (best effort; no-op elsewhere)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def wait_for_port(port: int, host: str = "127.0.0.1", timeout_s: float = 10.0,
                  proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll until ``host:port`` accepts connections.

    Raises:
        TimeoutError: it did not within ``timeout_s``, or ``proc`` exited first.
    """
    deadline = time.monotonic() + timeout_s
    pause = 0.005
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            raise TimeoutError(f"process exited with {proc.returncode} before {host}:{port} opened")
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s} s")
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


class Beanstalkd:
    """A beanstalkd child process.

    Args:
        port: port to listen on (default: a free one).
        binlog_dir: keep a binlog there (``-b``); None runs without one.
        fsync_ms: with a binlog, fsync at most this often (``-f``; 0 = every write).
        max_job_size: largest job in bytes (``-z``).
    """

    def __init__(self, port: int | None = None, binlog_dir: str | Path | None = None,
                 fsync_ms: int | None = None, max_job_size: int = DEFAULT_MAX_JOB_SIZE,
                 host: str = "127.0.0.1") -> None:
        binary = shutil.which("beanstalkd")
        if binary is None:
            raise ConfigError("beanstalkd is not installed (apt-get install beanstalkd)")
        self.host, self.port = host, port or free_port(host)
        self.argv = [binary, "-l", host, "-p", str(self.port), "-z", str(max_job_size)]
        if binlog_dir is not None:
            Path(binlog_dir).mkdir(parents=True, exist_ok=True)
            self.argv += ["-b", str(binlog_dir)]
            if fsync_ms is not None:
                self.argv += ["-f", str(fsync_ms)]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"beanstalk://{self.host}:{self.port}"

    def start(self) -> Beanstalkd:
        """Start beanstalkd and wait until it accepts connections."""
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=die_with_parent)
        wait_for_port(self.port, self.host, proc=self.proc)
        return self

    def stop(self, kill: bool = False) -> None:
        """Stop it: SIGTERM (or SIGKILL when ``kill``), then wait."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> Beanstalkd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- jobkit up ----------------------------------------------------------------

def up(settings: Settings, app: App, args: argparse.Namespace) -> int:
    """Run the API, workers and (when installed) beanstalkd on this machine until a signal.

    The broker is the configured one when ``JOBKIT_BROKER_URL`` (or the seed's
    ``BEANSTALK_*``) is set, else a beanstalkd started here with a binlog under
    ``.jobkit/``, else the in-process memory broker.
    """
    from jobkit.api.server import serve

    with contextlib.ExitStack() as stack:
        broker_url, how = _choose_broker(settings, args, stack)
        app.configure(broker=broker_url)
        settings = settings.replace(broker_url=broker_url)
        workers = _start_workers(settings, app, args, stack)
        _banner(settings, app, how, workers)
        serve(settings, app, processes=1, threads=8)
    return 0


def _choose_broker(settings: Settings, args: argparse.Namespace,
                   stack: contextlib.ExitStack) -> tuple[str, str]:
    env = read_env(env_file=args.env_file or ".env")
    if args.broker or any(k in env for k in ("JOBKIT_BROKER_URL", "BEANSTALK_HOST", "BEANSTALK_PORT")):
        return settings.broker_url, "as configured"
    if shutil.which("beanstalkd") is None:
        return "memory://", "in-process memory broker (install beanstalkd for a durable queue)"
    port = 11300 if port_is_free(11300) else free_port()
    server = Beanstalkd(port=port, binlog_dir=Path(".jobkit") / "beanstalkd").start()
    stack.callback(server.stop)
    return server.url, "beanstalkd started here, binlog in .jobkit/beanstalkd"


def _start_workers(settings: Settings, app: App, args: argparse.Namespace,
                   stack: contextlib.ExitStack) -> str:
    if settings.broker_url.startswith("memory:"):
        from jobkit.worker import Worker

        worker = Worker(app, concurrency=args.workers)
        worker.start()
        stack.callback(worker.shutdown)
        return f"{args.workers} worker threads in this process"
    argv = [sys.executable, "-m", "jobkit", "worker", "-c", str(args.workers), "--pool", "process",
            "-l", args.loglevel, *(["--env-file", args.env_file] if args.env_file else [])]
    # URLs go in the environment, not on the command line: `ps` would show a password.
    env = os.environ | {"JOBKIT_APP": settings.app, "JOBKIT_BROKER_URL": settings.broker_url,
                        "JOBKIT_BACKEND_URL": settings.backend_url,
                        "JOBKIT_RESULT_TTL": str(settings.result_ttl)}
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=die_with_parent)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    stack.callback(stop)
    return f"{args.workers} worker processes (jobkit worker --pool process)"


def _banner(settings: Settings, app: App, how: str, workers: str) -> None:
    host = "127.0.0.1" if settings.api_host in ("0.0.0.0", "::", "") else settings.api_host
    where = f"{host}:{settings.api_port}"
    print(f"""jobkit up: app {settings.app} ({len(app.tasks)} tasks)
  broker   {settings.broker_url}  ({how})
  backend  {settings.backend_url}
  workers  {workers}
  api      http://{where}   (Ctrl-C to stop)
try:
  curl -X POST {where} -H "Content-Type: application/json" --data '{{"example":"data"}}'
  curl {where}/<id>/""", flush=True)
