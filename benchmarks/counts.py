"""Job counts by state: ``Backend.counts()`` on a large SQLite file, against a primary-key lookup.

Fills a fresh file with ``--records`` job records (spread over every state,
through the backend's own table, so its triggers keep the counts), then
alternates one-second turns of ``counts()`` and of a bare ``SELECT … WHERE
id = ?`` on another connection, and reports calls per second of each. The
counts must cost about a lookup at any size; the extra field ``scan=`` is
what counting the rows (``GROUP BY state``, the way before the counts were
kept) takes once at this size.
"""
from __future__ import annotations

import random
import sqlite3
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks import common
from jobkit.backends.sqlite import SQLiteBackend
from jobkit.job import JobState

STATES = [state.value for state in JobState]
BATCH = 50_000  # rows per insert transaction while filling


def fill(path: str, records: int) -> None:
    """Write ``records`` rows, ``BATCH`` per transaction."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    now = time.time()
    for start in range(0, records, BATCH):
        rows = [(f"job{i:09d}", "hash_payload", "[]", "{}", "default", STATES[i % len(STATES)], now)
                for i in range(start, min(records, start + BATCH))]
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO jobs (id, task, args, kwargs, queue, state, created_at)"
                         " VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        conn.execute("COMMIT")
    conn.close()


def rate(call: Callable[[], Any], seconds: float) -> tuple[int, float]:
    """(calls, elapsed seconds) of calling ``call`` for about ``seconds``."""
    calls, start = 0, time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline:
        for _ in range(50):
            call()
        calls += 50
    return calls, time.perf_counter() - start


def main(argv: Sequence[str] | None = None) -> str:
    parser = common.parser("counts", __doc__)
    parser.add_argument("--records", type=int, default=1_000_000, help="records (default 1000000)")
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per side (default 3)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="jobkit-bench-") as tmp:
        path = f"{tmp}/counts.db"
        backend = SQLiteBackend(f"sqlite:///{path}")
        backend.ping()  # creates the schema, triggers included
        fill(path, args.records)
        assert sum(backend.counts().values()) == args.records, backend.counts()
        bare = sqlite3.connect(path)
        ids = [f"job{random.randrange(args.records):09d}" for _ in range(1024)]
        lookup = iter(ids * 10_000).__next__
        started = time.perf_counter()
        bare.execute("SELECT state, count(*) FROM jobs GROUP BY state").fetchall()
        scan_s = time.perf_counter() - started
        jobkit_calls = jobkit_s = base_calls = base_s = 0.0
        turns = max(1, round(args.seconds))
        for _ in range(turns):
            calls, elapsed = rate(lambda: bare.execute("SELECT state FROM jobs WHERE id = ?",
                                                       (lookup(),)).fetchone(), args.seconds / turns)
            base_calls, base_s = base_calls + calls, base_s + elapsed
            calls, elapsed = rate(backend.counts, args.seconds / turns)
            jobkit_calls, jobkit_s = jobkit_calls + calls, jobkit_s + elapsed
        bare.close()
        backend.close()
    return common.report("counts", jobkit_calls / jobkit_s, base_calls / base_s,
                         f"records={args.records} scan={scan_s * 1000:.1f}ms")


if __name__ == "__main__":
    main()
