"""Running the pieces on one machine: beanstalkd as a child process, and ``jobkit up``.

Also used by the tests and benchmarks to start real servers.
"""
from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

from jobkit.errors import ConfigError

DEFAULT_MAX_JOB_SIZE = 1 << 20  # bytes; beanstalkd's own default is 65,535


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
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL)
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
