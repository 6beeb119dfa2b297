"""What every benchmark shares: servers, the bare baseline loop, measuring and reporting.

Each benchmark runs jobkit and a bare greenstalk + sqlite loop doing the same
work in the same run, on its own beanstalkd (a free port) and temp SQLite
files, and prints ``<name>: jobkit=<x>/s baseline=<y>/s ratio=<x/y>`` last.
The bare loop uses the same SQLite pragmas as jobkit's backend (WAL,
``synchronous=NORMAL``, one autocommitted statement per write).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import greenstalk

from jobkit.embedded import Beanstalkd, die_with_parent, wait_for_port

ROOT = Path(__file__).resolve().parent.parent
APP = "examples.hashing:app"
PAYLOAD = {"example": "data"}
JOBKIT_QUEUE = "default"  # hash_payload's queue
BARE_QUEUE = "bare"
POLL_S = 0.001  # how often a waiting client polls the database for results

BARE_DDL = ("CREATE TABLE IF NOT EXISTS jobs (id TEXT PRIMARY KEY, payload TEXT, state TEXT NOT NULL,"
            " result TEXT, created_at REAL, finished_at REAL)")
BARE_ADD = ("INSERT INTO jobs (id, payload, state, created_at) VALUES (?, ?, 'queued', ?)"
            " ON CONFLICT (id) DO NOTHING")
BARE_DONE = ("INSERT INTO jobs (id, state, result, finished_at) VALUES (?, 'succeeded', ?, ?)"
             " ON CONFLICT (id) DO UPDATE SET state = 'succeeded', result = excluded.result,"
             " finished_at = excluded.finished_at")


# -- arguments and reporting -------------------------------------------------

def parser(name: str, doc: str | None) -> argparse.ArgumentParser:
    """An argument parser for ``python -m benchmarks.<name>``."""
    return argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=doc)


def report(name: str, jobkit_rate: float, baseline_rate: float, extra: str = "") -> str:
    """Print (and return) the final line: ``<name>: jobkit=<x>/s baseline=<y>/s ratio=<x/y>``."""
    ratio = f"{jobkit_rate / baseline_rate:.2f}" if baseline_rate > 0 else "n/a"
    line = f"{name}: jobkit={_number(jobkit_rate)}/s baseline={_number(baseline_rate)}/s ratio={ratio}"
    if extra:
        line = f"{line} {extra}"
    print(line, flush=True)
    return line


def _number(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.4g}"


def note(text: str) -> None:
    """Progress on stderr, so that stdout holds the results."""
    print(f"  {text}", file=sys.stderr, flush=True)


def percentile(values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile of ``values`` (0 for none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))
    return ordered[int(rank) - 1]


def latency_text(prefix: str, seconds: Sequence[float]) -> str:
    """``<prefix>p50=1.2ms <prefix>p99=3.4ms`` for latencies given in seconds."""
    return " ".join(f"{prefix}p{p}={percentile(seconds, p) * 1000:.1f}ms" for p in (50, 99))


# -- servers and processes ---------------------------------------------------

@contextlib.contextmanager
def servers() -> Iterator[tuple[Beanstalkd, Path]]:
    """A private beanstalkd on a free port and a temp directory for SQLite files."""
    with tempfile.TemporaryDirectory(prefix="jobkit-bench-") as tmp, Beanstalkd() as beanstalkd:
        yield beanstalkd, Path(tmp)


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"


def clean_env() -> dict[str, str]:
    """This environment minus jobkit and seed settings: benchmarks pass everything as flags."""
    prefixes = ("JOBKIT_", "BEANSTALK_", "MONGO_URL", "MANAGER_LISTEN_PORT", "HASH_PAYLOAD")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    return env | {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


@contextlib.contextmanager
def jobkit_command(*args: str) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``python -m jobkit <args>`` in its own process group; SIGTERM (then SIGKILL) it after."""
    proc = subprocess.Popen([sys.executable, "-m", "jobkit", *args, "--env-file", os.devnull],
                            cwd=ROOT, env=clean_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        yield proc
    finally:
        stop_group(proc)


def stop_group(proc: subprocess.Popen[bytes], timeout_s: float = 15) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    if proc.poll() is None:
        proc.wait(5)


def jobkit_worker(beanstalkd: Beanstalkd, backend_url: str, pool: str = "process",
                  concurrency: int = 2) -> contextlib.AbstractContextManager[subprocess.Popen[bytes]]:
    """``jobkit worker -A examples.hashing:app --pool <pool> -c <concurrency>``."""
    return jobkit_command("worker", "-A", APP, "--broker", beanstalkd.url, "--backend", backend_url,
                          "--pool", pool, "-c", str(concurrency), "-l", "ERROR")


def wait_waiting(beanstalkd: Beanstalkd, tube: str, count: int, timeout_s: float = 30,
                 proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until ``count`` connections block in a reserve on ``tube`` (consumers are ready)."""
    deadline = time.monotonic() + timeout_s
    with greenstalk.Client((beanstalkd.host, beanstalkd.port)) as client:
        while True:
            try:
                if client.stats_tube(tube)["current-waiting"] >= count:
                    return
            except greenstalk.NotFoundError:
                pass
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"consumer exited with {proc.returncode} before it was ready")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{count} consumers not waiting on {tube!r} after {timeout_s} s")
            time.sleep(0.01)


def jobkit_app(beanstalkd: Beanstalkd, backend_url: str) -> Any:
    """The seed's ``hash_payload`` task, its app wired to this run's servers and connected."""
    from examples.hashing import app, hash_payload

    app.configure(broker=beanstalkd.url, backend=backend_url)
    app.backend.ping()  # creates the table, and opens this thread's connection
    app.broker.stats()  # opens a pooled producer connection
    return hash_payload


# -- the bare loop -----------------------------------------------------------

def bare_db(path: Path) -> sqlite3.Connection:
    """A connection to the bare loop's SQLite file, with jobkit's pragmas; creates the table."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(BARE_DDL)
    return conn


class BareProducer:
    """What an enqueue must do at least: record the job (one upsert) and put it."""

    def __init__(self, beanstalkd: Beanstalkd, db_path: Path) -> None:
        self.client: greenstalk.Client[str] = greenstalk.Client(
            (beanstalkd.host, beanstalkd.port), use=BARE_QUEUE)
        self.db = bare_db(db_path)

    def send(self, payload: Any) -> str:
        job_id = uuid.uuid4().hex
        self.db.execute(BARE_ADD, (job_id, json.dumps(payload, separators=(",", ":")), time.time()))
        self.client.put(json.dumps({"id": job_id, "payload": payload}, separators=(",", ":")))
        return job_id

    def close(self) -> None:
        self.client.close()
        self.db.close()


def _bare_consume(address: tuple[str, int], db_path: Path) -> None:
    """A bare consumer: reserve, md5 as hash_payload does, one upsert (autocommit), delete."""
    from examples.hashing import hash_payload

    die_with_parent()
    db = bare_db(db_path)
    with greenstalk.Client(address, watch=BARE_QUEUE) as client:
        while True:
            job = client.reserve()
            message = json.loads(job.body)
            result = hash_payload(message["payload"])  # calling a task runs it here
            db.execute(BARE_DONE, (message["id"], json.dumps(result, separators=(",", ":")), time.time()))
            client.delete(job)


@contextlib.contextmanager
def bare_consumers(beanstalkd: Beanstalkd, db_path: Path, processes: int = 2) -> Iterator[list[int]]:
    """Start ``processes`` bare consumer processes; yields their pids once they wait in reserve."""
    bare_db(db_path).close()
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_bare_consume, args=((beanstalkd.host, beanstalkd.port), db_path),
                         daemon=True) for _ in range(processes)]
    for proc in procs:
        proc.start()
    try:
        wait_waiting(beanstalkd, BARE_QUEUE, processes)
        yield [proc.pid for proc in procs if proc.pid is not None]
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.join(5)


# -- measuring ---------------------------------------------------------------

SUCCEEDED_COUNT = "SELECT count(*) FROM jobs WHERE state = 'succeeded'"
IS_SUCCEEDED = "SELECT 1 FROM jobs WHERE id = ? AND state = 'succeeded'"


def wait_all_stored(db_path: Path, n: int, last_id: str, timeout_s: float = 120) -> float:
    """Poll until ``n`` records say succeeded; returns ``time.perf_counter()`` when seen.

    Polls the last job sent by its id (a primary-key lookup) every millisecond,
    and counts every record only once that one is done, so that waiting costs
    the consumers next to no CPU.
    """
    conn = sqlite3.connect(db_path, timeout=30, isolation_level=None)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if (conn.execute(IS_SUCCEEDED, (last_id,)).fetchone()
                    and conn.execute(SUCCEEDED_COUNT).fetchone()[0] >= n):
                return time.perf_counter()
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {n} results stored after {timeout_s} s")
            time.sleep(POLL_S)
    finally:
        conn.close()


def paced_latencies(send: Callable[[], str], db_path: Path, rate: float, seconds: float,
                    timeout_s: float = 30) -> list[float]:
    """Send ``rate`` jobs a second for ``seconds``; return each one's enqueue -> visible latency.

    A poller thread looks for the outstanding ids among the succeeded records
    every :data:`POLL_S`, as a client waiting on its jobs would.
    """
    pending: dict[str, float] = {}
    latencies: list[float] = []
    lock = threading.Lock()
    sending = threading.Event()
    sending.set()

    def poll() -> None:
        conn = sqlite3.connect(db_path, timeout=30, isolation_level=None)
        while sending.is_set() or pending:
            with lock:
                ids = list(pending)
            if ids:
                marks = ",".join("?" * len(ids))
                rows = conn.execute(f"SELECT id FROM jobs WHERE state = 'succeeded' AND id IN ({marks})",
                                    ids).fetchall()
                seen = time.perf_counter()
                with lock:
                    for (job_id,) in rows:
                        latencies.append(seen - pending.pop(job_id))
            time.sleep(POLL_S)
        conn.close()

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    start = time.perf_counter()
    for i in range(int(rate * seconds)):
        pause = start + i / rate - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
        began = time.perf_counter()
        job_id = send()
        with lock:
            pending.setdefault(job_id, began)
    sending.clear()
    poller.join(timeout_s)
    if poller.is_alive() or pending:
        raise TimeoutError(f"{len(pending)} jobs not finished {timeout_s} s after the last send")
    return latencies


def cpu_seconds(pids: Sequence[int], with_descendants: bool = True) -> float:
    """User + system CPU seconds of ``pids`` (and their live descendants and reaped children)."""
    stats = _proc_stats()
    todo, seen = list(pids), set()
    ticks = 0
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        fields = stats[pid]
        ticks += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
        if with_descendants:
            todo.extend(child for child, f in stats.items() if int(f[1]) == pid)
    return ticks / os.sysconf("SC_CLK_TCK")


def _proc_stats() -> dict[int, list[str]]:
    """pid -> the fields of /proc/<pid>/stat after the command name (state, ppid, …)."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                text = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            stats[int(entry)] = text[text.rindex(")") + 2:].split()
    return stats


def wait_port(port: int, proc: subprocess.Popen[bytes] | None = None) -> None:
    wait_for_port(port, timeout_s=30, proc=proc)
