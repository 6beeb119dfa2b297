"""Running the pieces on one machine: beanstalkd as a child process, and ``jobkit up``.

Also used by the tests and benchmarks to start real servers.
"""
from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

import greenstalk

from jobkit.config import Settings, read_env
from jobkit.errors import ConfigError

log = logging.getLogger("jobkit.up")

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
    """Whether ``host:port`` could be bound now (a name that does not resolve counts as taken)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def beanstalkd_answers(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """Whether something speaking beanstalkd's protocol listens on ``host:port``.

    It must answer ``list-tubes`` with ``OK <bytes>``: an open port alone could
    be anything, and jobs put into anything else would wait for ever. The whole
    answer is read before closing: a socket closed with bytes unread is reset,
    and beanstalkd prints the reset on its stderr (the first line ``jobkit up``
    showed).
    """
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock, \
                greenstalk.Client(sock, encoding=None) as client:
            client.tubes()  # reads the answer whole
            return True
    except (OSError, ValueError, greenstalk.Error):  # ValueError: an answer that is not beanstalkd's
        return False


def stop_process(proc: subprocess.Popen[Any], timeout_s: float, *, kill: bool = False) -> None:
    """SIGTERM ``proc`` (SIGKILL when ``kill``), wait up to ``timeout_s``, then SIGKILL and reap it."""
    if kill:
        proc.kill()
    else:
        proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_for_port(port: int, host: str = "127.0.0.1", timeout_s: float = 10.0,
                  proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll until ``host:port`` accepts connections (``proc``'s, when given).

    A port that answers after ``proc`` exited is someone else's (a process
    that took the free port meanwhile): that is ``proc`` failing to start.

    Raises:
        TimeoutError: it did not within ``timeout_s``, or ``proc`` exited first.
    """
    deadline = time.monotonic() + timeout_s
    pause = 0.005
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            if proc is None or proc.poll() is None:
                return
        except OSError:
            pass
        if proc is not None and proc.poll() is not None:
            raise TimeoutError(f"process exited with {proc.returncode} before {host}:{port} opened")
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s} s")
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


#: How long :meth:`Beanstalkd.start` waits for it to serve (a long binlog takes a while to replay).
SERVE_TIMEOUT_S = 30.0


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

    def start(self, timeout_s: float = SERVE_TIMEOUT_S) -> Beanstalkd:
        """Start beanstalkd and wait until it answers a command.

        beanstalkd listens before it locks and replays its binlog, so an open
        port is not yet a server: one whose binlog folder another beanstalkd
        holds exits right after opening it.

        Raises:
            TimeoutError: it exited, or did not answer within ``timeout_s``.
        """
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, start_new_session=True,
                                     preexec_fn=die_with_parent)
        deadline = time.monotonic() + timeout_s
        wait_for_port(self.port, self.host, timeout_s=timeout_s, proc=self.proc)
        while True:
            answers = beanstalkd_answers(self.host, self.port, max(0.1, deadline - time.monotonic()))
            if self.proc.poll() is not None:  # what answered, if anything, is someone else's
                raise TimeoutError(f"beanstalkd exited with {self.proc.returncode} before it served "
                                   f"{self.host}:{self.port}")
            if answers:
                return self
            if time.monotonic() > deadline:
                raise TimeoutError(f"beanstalkd on {self.host}:{self.port} did not answer in {timeout_s} s")
            time.sleep(0.01)

    def stop(self, kill: bool = False) -> None:
        """Stop it: SIGTERM (or SIGKILL when ``kill``), then wait."""
        if self.proc is None or self.proc.poll() is not None:
            return
        stop_process(self.proc, 10.0, kill=kill)

    def __enter__(self) -> Beanstalkd:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- jobkit up ----------------------------------------------------------------

UP_DIR = Path(".jobkit")  # relative: `up` keeps its state in the directory it runs in
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class UpLock:
    """One ``jobkit up`` per directory: an exclusive ``flock`` on ``.jobkit/up.lock``.

    The file holds what that ``up`` runs (pid, broker URL, API address) as
    JSON, for the CLI's error messages. The kernel drops the lock when the
    process dies, so a crash leaves nothing stale to clean up; the file stays.
    """

    def __init__(self, directory: Path = UP_DIR) -> None:
        self.path = directory / "up.lock"
        self._file: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock and write this process's pid.

        Raises:
            ConfigError: another ``jobkit up`` holds it.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        file = os.fdopen(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600), "r+")
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_json(file).get("pid", "?")
            file.close()
            raise ConfigError(f"another jobkit up is running in this directory (pid {pid}): "
                              "stop it, or run this one from another directory") from None
        self._file = file
        self.write(pid=os.getpid())

    def write(self, **info: Any) -> None:
        """Replace what the lock file says about this ``up``."""
        if self._file is not None:
            self._file.seek(0)
            self._file.truncate()
            self._file.write(json.dumps(info))
            self._file.flush()

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def running_up(directory: Path = UP_DIR) -> dict[str, Any] | None:
    """What the ``jobkit up`` keeping its state in ``directory`` runs, or None when none runs there."""
    try:
        file = open(directory / "up.lock")  # noqa: SIM115 - closed below, whichever way
    except OSError:
        return None
    with file:
        try:
            fcntl.flock(file, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_json(file) or {"pid": "?"}
        return None


def _read_json(file: IO[str]) -> dict[str, Any]:
    file.seek(0)
    try:
        found = json.loads(file.read() or "{}")
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def up(settings: Settings, app: App, args: argparse.Namespace) -> int:
    """Run the API, workers and (when installed) beanstalkd on this machine until a signal.

    The API binds 127.0.0.1 unless ``--host`` or ``JOBKIT_API_HOST`` says
    otherwise. The broker is, in this order: whatever speaks beanstalkd's
    protocol at the broker address (configured, else 127.0.0.1:11300); a
    beanstalkd started here at that address with a binlog under ``.jobkit/``;
    a configured broker that does not answer yet; the in-process memory broker.

    Raises:
        ConfigError: another ``up`` runs in this directory, or a port is taken.
    """
    from jobkit.api.server import cores, processes_for, serve, stop_on_signals
    from jobkit.cli import emit

    stop_on_signals()  # a signal at any point from here stops up cleanly (the ExitStack unwinds)
    env = read_env(env_file=args.env_file or ".env")
    settings = settings.replace(api_host=args.api_host or env.get("JOBKIT_API_HOST") or "127.0.0.1")
    _check_can_listen(settings.api_host, settings.api_port)  # before starting anything
    args.workers = args.workers or cores()
    with contextlib.ExitStack() as stack:
        lock = UpLock()
        lock.acquire()
        stack.callback(lock.release)
        broker_url, how = _choose_broker(settings, _broker_configured(args, env), stack)
        app.configure(broker=broker_url)
        settings = settings.replace(broker_url=broker_url)
        workers = _start_workers(settings, app, args, stack)
        lock.write(pid=os.getpid(), broker=broker_url, api=f"{_reach(settings)}:{settings.api_port}")
        _banner(settings, app, how, workers)
        serve(settings, app, processes=processes_for(app, args.processes), threads=8)  # returns at a signal
    emit("jobkit up: stopped (everything it started has exited)")  # the stack has unwound
    return 0


def _check_can_listen(host: str, port: int) -> None:
    """Raise ConfigError, in one line, when the API could not bind ``host:port``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            hint = ": choose another with --port" if exc.errno == errno.EADDRINUSE else ""
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}{hint}") from None


def _broker_configured(args: argparse.Namespace, env: dict[str, str]) -> bool:
    names = ("JOBKIT_BROKER_URL", "BEANSTALK_HOST", "BEANSTALK_PORT")
    return bool(args.broker) or any(env.get(name) for name in names)


def _choose_broker(settings: Settings, configured: bool, stack: contextlib.ExitStack) -> tuple[str, str]:
    url = settings.broker_url
    address = _single_address(url)
    if address is None:  # memory://, a cluster, another kind of broker
        return url, "as configured"
    host, port = address
    if beanstalkd_answers(host, port):
        return url, f"the beanstalkd already listening on {host}:{port}"
    if host in LOCAL_HOSTS and shutil.which("beanstalkd") is not None:
        return _start_beanstalkd(host, port, configured, stack)
    if configured:
        return url, "as configured; it does not answer yet: the workers and the API keep trying"
    return "memory://", ("in-process memory broker (install beanstalkd for a durable queue): "
                         "only this process reaches it, so send jobs through the HTTP API")


def _single_address(url: str) -> tuple[str, int] | None:
    parts = urlsplit(url)
    if parts.scheme != "beanstalk" or "," in parts.netloc:
        return None
    try:
        return parts.hostname or "127.0.0.1", parts.port or 11300
    except ValueError:  # a bad port: the broker itself says so when used
        return None


def _start_beanstalkd(host: str, port: int, configured: bool, stack: contextlib.ExitStack) -> tuple[str, str]:
    note = ""
    if not port_is_free(port, host):
        if configured:
            raise ConfigError(f"{host}:{port} is taken by something that does not speak beanstalkd: "
                              "name another port in the broker URL")
        port = free_port(host)
        note = f"; 11300 is taken, so for the CLI: export JOBKIT_BROKER_URL=beanstalk://{host}:{port}"
    server = Beanstalkd(port=port, host=host, binlog_dir=UP_DIR / "beanstalkd")
    try:
        server.start()
    except TimeoutError as exc:
        server.stop()
        raise ConfigError(f"beanstalkd did not start on {host}:{port} ({exc})") from None
    stack.callback(server.stop)
    return server.url, "beanstalkd started here, binlog in .jobkit/beanstalkd" + note
def _start_workers(settings: Settings, app: App, args: argparse.Namespace,
                   stack: contextlib.ExitStack) -> str:
    if settings.broker_url.startswith("memory:"):
        from jobkit.worker import Worker

        from jobkit.beat import alongside

        worker = Worker(app, concurrency=args.workers)
        worker.start()
        stack.callback(worker.shutdown)
        stack.enter_context(alongside(app))  # stopped before the workers (the stack unwinds backwards)
        return f"{args.workers} worker threads in this process, and the beat"
    argv = [sys.executable, "-m", "jobkit", "worker", "-c", str(args.workers), "--pool", "process",
            "--beat", "-l", args.loglevel, *(["--env-file", args.env_file] if args.env_file else [])]
    # URLs go in the environment, not on the command line: `ps` would show a password.
    env = os.environ | {"JOBKIT_APP": settings.app, "JOBKIT_BROKER_URL": settings.broker_url,
                        "JOBKIT_BACKEND_URL": settings.backend_url,
                        "JOBKIT_RESULT_TTL": str(settings.result_ttl)}
    pool = PoolProcess(argv, env)
    stack.callback(pool.stop)
    return f"{args.workers} worker processes and the beat (jobkit worker --pool process --beat)"


def _reach(settings: Settings) -> str:
    """The address to connect to: 127.0.0.1 when the API binds every interface."""
    return "127.0.0.1" if settings.api_host in ("0.0.0.0", "::", "") else settings.api_host


def _banner(settings: Settings, app: App, how: str, workers: str) -> None:
    where = f"{_reach(settings)}:{settings.api_port}"
    binds = f"{settings.api_host}:{settings.api_port}"
    if settings.api_host in ("0.0.0.0", "::", ""):
        binds += " (every interface)" if settings.api_token else \
            " (every interface, no token: anyone who reaches it may enqueue)"
    print(f"""jobkit up: app {settings.app} ({len(app.tasks)} tasks)
  broker   {settings.broker_url}  ({how})
  backend  {settings.backend_url}
  workers  {workers}
  api      listening on {binds}   (Ctrl-C to stop)
try:
  curl -X POST {where} -H "Content-Type: application/json" --data '{{"example":"data"}}'
  curl {where}/<id>/""", flush=True)


class PoolProcess:
    """``up``'s worker pool process, started again whenever it exits before ``up`` stops it.

    A pool killed outright (``kill -9``, the OOM killer) takes its workers
    with it (they die with their parent); without this, ``up`` would go on
    accepting jobs that nothing runs, and say nothing.
    """

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.argv, self.env = argv, env
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self.proc = self._spawn()
        threading.Thread(target=self._watch, name="jobkit-up-pool", daemon=True).start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL, start_new_session=True,
                                preexec_fn=die_with_parent)

    def _watch(self) -> None:
        while True:
            code = self.proc.wait()
            if self._stopping.wait(1.0):  # a pause: a pool that cannot start is not restarted in a tight loop
                return
            log.warning("jobkit up: the worker pool (pid %d) exited with %s; starting it again",
                        self.proc.pid, code)
            with self._lock:
                if self._stopping.is_set():
                    return
                self.proc = self._spawn()

    def stop(self) -> None:
        with self._lock:
            self._stopping.set()
        stop_process(self.proc, 60.0)
