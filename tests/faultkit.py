"""Tools for the fault tests: private servers and worker processes as fixtures, a TCP
proxy whose connections can be cut, and small probes."""
from __future__ import annotations

import argparse
import os
import queue
import random
import shutil
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from jobkit import App, Job, JobState
from jobkit.embedded import Beanstalkd, free_port
from tests import taskapp
from tests.helpers import eventually
from tests.processes import JobkitProcess
from tests.servers import MongoServer, missing

StartWorker = Callable[..., JobkitProcess]


# A fault strikes within a connection's first bytes, in its first request or that request's answer:
# every connection here carries that many (a job's ``put``, a MongoDB handshake), so a connection
# drawn for a fault gets it. Points drawn over kilobytes missed short connections, and a run of
# ~470 connections could see no fault at all.
FAULT_WITHIN = 64


@dataclass(frozen=True)
class LinkFaults:
    """What a proxied link does to the connections through it.

    Attributes:
        delay_s: added to every chunk, each way (a round trip gets twice this).
        stall: the share of connections that go silent (a black hole) at a
            random point of their first ``FAULT_WITHIN`` bytes, for ``stall_s``, then are cut.
        reset: the share of connections reset (RST) at such a point.
        stall_s: how long a stalled connection hangs before the cut.
        seed: seeds the choice of the connections hit (None: random).
    """

    delay_s: float = 0.0
    stall: float = 0.0
    reset: float = 0.0
    stall_s: float = 5.0
    seed: int | None = None


class _Link:
    """One proxied connection: its sockets and its fate (``ok``, ``stall`` or ``reset`` after some bytes)."""

    def __init__(self, client: socket.socket, upstream: socket.socket, fate: str, after: int) -> None:
        self.pair = (client, upstream)
        self.fate, self.after = fate, after
        self.passed = 0
        self.lock = threading.Lock()
        self.hit = threading.Event()
        self.counted = False  # its fault was counted (both directions see it)

    def forward(self, size: int) -> str:
        """Count ``size`` bytes; return what happens to them: ``ok``, ``stall`` or ``reset``."""
        with self.lock:
            if self.hit.is_set():
                return self.fate
            self.passed += size
            if self.fate != "ok" and self.passed >= self.after:
                self.hit.set()
                return self.fate
        return "ok"


class TcpProxy:
    """Forwards TCP connections from a local port to ``target``; :meth:`cut` severs them.

    Each accepted connection gets two pump threads (one per direction), four
    with a delay (a reader and a writer each way, so that the delay is latency,
    not a cap on throughput). Cutting closes both ends of every current
    connection, which is what a network fault looks like to both peers: the
    client reads EOF, beanstalkd sees its connection close. The proxy keeps
    accepting, so clients can reconnect. ``faults`` makes the link slow or
    lossy (see :class:`LinkFaults`; the kernel here has no ``netem``).
    """

    def __init__(self, target: tuple[str, int], faults: LinkFaults | None = None,
                 listen: tuple[str, int] = ("127.0.0.1", 0), report: bool = False) -> None:
        self.target = target
        self.report = report  # print a line per connection and per fault (a proxy process's log)
        self.faults = faults or LinkFaults()
        self.random = random.Random(self.faults.seed)
        self.port = listen[1] or free_port(listen[0])
        self.listener = socket.create_server((listen[0], self.port))
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.accepted = self.stalled = self.resets = 0
        self.lock = threading.Lock()
        self.closed = False
        self.answers_held = threading.Event()  # set: the server's bytes are dropped (see hold_answers)
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
            link = _Link(client, upstream, *self._fate())
            with self.lock:
                self.pairs.append(link.pair)
                self.accepted += 1
            if self.report:
                print("proxy: connection", flush=True)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(link, src, dst), daemon=True).start()

    def _fate(self) -> tuple[str, int]:
        """Whether a new connection is stalled, reset or left alone, and after how many bytes."""
        draw, faults = self.random.random(), self.faults
        fate = "stall" if draw < faults.stall else "reset" if draw < faults.stall + faults.reset else "ok"
        return fate, self.random.randrange(1, FAULT_WITHIN)

    def _pump(self, link: _Link, src: socket.socket, dst: socket.socket) -> None:
        delayed: queue.Queue[tuple[float, bytes] | None] | None = None
        if self.faults.delay_s > 0:
            delayed = queue.Queue()
            threading.Thread(target=_send_later, args=(delayed, dst), daemon=True).start()
        try:
            while data := src.recv(65536):
                fate = link.forward(len(data))
                if fate != "ok":
                    self._fault(link, fate)
                    return
                if src is link.pair[1] and self.answers_held.is_set():
                    continue
                if delayed is None:
                    dst.sendall(data)
                else:
                    delayed.put((time.monotonic() + self.faults.delay_s, data))
        except OSError:
            pass
        if delayed is not None:
            delayed.put(None)  # the writer shuts both ends once the delayed data is out
        else:
            _shut(src)
            _shut(dst)

    def _fault(self, link: _Link, fate: str) -> None:
        """Stall (silence, then a cut) or reset a connection; counted once per connection."""
        with self.lock:
            first, link.counted = not link.counted, True
        if first:
            with self.lock:
                if fate == "stall":
                    self.stalled += 1
                else:
                    self.resets += 1
            if self.report:
                print(f"proxy: {fate}", flush=True)
        if fate == "stall":
            deadline = time.monotonic() + self.faults.stall_s
            while not self.closed and time.monotonic() < deadline:
                time.sleep(0.05)
            for sock in link.pair:
                _shut(sock)
        else:
            for sock in link.pair:
                _reset(sock)

    def hold_answers(self, held: bool = True) -> None:
        """Drop what servers send while ``held`` (requests still arrive): answers that never come."""
        if held:
            self.answers_held.set()
        else:
            self.answers_held.clear()

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


def _send_later(delayed: queue.Queue[tuple[float, bytes] | None], dst: socket.socket) -> None:
    """Send each chunk when its time comes; at the end, shut the connection."""
    try:
        while (item := delayed.get()) is not None:
            wait = item[0] - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            dst.sendall(item[1])
    except OSError:
        pass
    _shut(dst)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def _reset(sock: socket.socket) -> None:
    """Close with an RST (linger 0), as a peer that crashed or a middlebox does."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


def serve_proxy(argv: list[str] | None = None) -> None:
    """``python -m tests.faultkit --listen H:P --target H:P [--delay S] [--stall F] …``: run a proxy.

    The test network starts one inside each server's namespace (see tests/netkit.py).
    """
    parser = argparse.ArgumentParser(prog="python -m tests.faultkit")
    parser.add_argument("--listen", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds added each way")
    parser.add_argument("--stall", type=float, default=0.0, help="share of connections stalled")
    parser.add_argument("--reset", type=float, default=0.0, help="share of connections reset")
    parser.add_argument("--stall-seconds", type=float, default=5.0)
    args = parser.parse_args(argv)
    faults = LinkFaults(args.delay, args.stall, args.reset, args.stall_seconds)
    proxy = TcpProxy(_address(args.target), faults, listen=_address(args.listen), report=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        while True:
            time.sleep(3600)
    finally:
        proxy.close()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


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


if __name__ == "__main__":
    serve_proxy()
