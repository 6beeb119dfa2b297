"""Tools for the fault tests: private servers and worker processes as fixtures, a TCP
proxy whose connections can be cut, and small probes."""
from __future__ import annotations

import os
import shutil
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jobkit import App, Job, JobState
from jobkit.embedded import Beanstalkd, free_port
from tests import taskapp
from tests.helpers import eventually
from tests.processes import JobkitProcess
from tests.servers import MongoServer, missing

StartWorker = Callable[..., JobkitProcess]


class TcpProxy:
    """Forwards TCP connections from a local port to ``target``; :meth:`cut` severs them.

    Each accepted connection gets two pump threads (one per direction). Cutting
    closes both ends of every current connection, which is what a network fault
    looks like to both peers: the client reads EOF, beanstalkd sees its
    connection close. The proxy keeps accepting, so clients can reconnect.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.accepted = 0
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    @property
    def url(self) -> str:
        return f"beanstalk://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                continue
            upstream.settimeout(None)
            with self.lock:
                self.pairs.append((client, upstream))
                self.accepted += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(src, dst), daemon=True).start()

    def cut(self) -> int:
        """Sever every current connection; returns how many were cut."""
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for pair in pairs:
            for sock in pair:
                _shut(sock)
        return len(pairs)

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.listener.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    _shut(src)
    _shut(dst)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def lines(path: Path) -> list[str]:
    """The lines a task appended to ``path`` (none when it never ran)."""
    return path.read_text().splitlines() if path.exists() else []


def settled(app: App, queue: str) -> bool:
    """True when the broker holds nothing for ``queue``: no ready, reserved, delayed or buried job."""
    counts = app.broker.stats().get(queue, {})
    return not any(counts.get(k, 0) for k in ("ready", "reserved", "delayed", "buried"))


def record_count(app: App) -> int:
    """How many job records the backend holds, whatever their state."""
    return sum(app.backend.counts().values())


def make_app(broker_url: str, backend_url: str) -> App:
    """An App over the given servers with the tasks the worker processes import."""
    app = App("faults", broker=broker_url, backend=backend_url)
    app.tasks = taskapp.app.tasks
    return app


@pytest.fixture
def beanstalk(tmp_path: Path) -> Iterator[Beanstalkd]:
    """A private beanstalkd with a binlog in ``tmp_path``, killed at teardown."""
    if shutil.which("beanstalkd") is None:
        missing("beanstalkd is not installed (apt-get install beanstalkd)")
    server = Beanstalkd(binlog_dir=tmp_path / "binlog").start()
    yield server
    server.stop(kill=True)


@pytest.fixture
def mongo(tmp_path: Path) -> Iterator[MongoServer]:
    """A private MongoDB server (nx-27017 here) the test may stop and start again."""
    workdir = tmp_path / "mongo"
    workdir.mkdir()
    server = MongoServer(workdir).start()
    yield server
    server.stop(kill=True)


@pytest.fixture
def fault_app(beanstalk: Beanstalkd, sqlite_url: str) -> Iterator[App]:
    """The test tasks over the private beanstalkd, records in SQLite."""
    app = make_app(beanstalk.url, sqlite_url)
    yield app
    app.close()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[StartWorker]:
    """Start ``jobkit worker`` processes; by default wait until their slots block in reserve."""
    started: list[JobkitProcess] = []

    def start(app: App, queue: str, *extra: str, concurrency: int = 1, pool: str = "thread",
              grace: float = 10, broker_url: str | None = None, wait_ready: bool = True) -> JobkitProcess:
        waiting = app.broker.stats().get(queue, {}).get("waiting", 0)
        log = tmp_path / f"worker-{len(started)}.log"
        proc = JobkitProcess("worker", "-A", "tests.taskapp:app", "--broker", broker_url or app.broker.url,
                             "--backend", app.backend.url, "-q", queue, "-c", str(concurrency),
                             "--pool", pool, "--grace", str(grace), *extra, log=log)
        started.append(proc)
        if wait_ready:
            eventually(lambda: proc.proc.poll() is None and app.broker.stats().get(queue, {})
                       .get("waiting", 0) >= waiting + concurrency,
                       timeout_s=20, what=f"worker waiting on {queue} ({log})")
        return proc

    yield start
    for proc in started:
        proc.stop(timeout_s=5)


def worker_name(proc: JobkitProcess) -> str:
    """The name a thread-pool worker process writes into the records it claims."""
    return f"{os.uname().nodename}:{proc.pid}"


def waiting(app: App, queue: str) -> int:
    """How many consumers block in reserve on ``queue``."""
    return int(app.broker.stats().get(queue, {}).get("waiting", 0))


def send_concurrently(app: App, queue: str, path: Path, numbers: range, ttr: int | None = None) -> list[Job]:
    """Send one ``tagged`` job per number, each from its own thread (fills the producer pool)."""
    jobs: dict[int, Job] = {}

    def send(i: int) -> None:
        jobs[i] = app.send("tagged", (str(path), str(i), 0.05), queue=queue, ttr=ttr)

    threads = [threading.Thread(target=send, args=(i,)) for i in numbers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(jobs) == list(numbers)
    return list(jobs.values())


def succeeded(jobs: dict[str, Job]) -> set[str]:
    """The keys of the jobs that succeeded."""
    return {key for key, job in jobs.items() if job.status().state is JobState.SUCCEEDED}


def cli_servers(app: App) -> tuple[str, ...]:
    """The CLI flags that point a ``jobkit`` command at the app's servers."""
    return ("-A", "tests.taskapp:app", "--broker", app.broker.url, "--backend", app.backend.url)
