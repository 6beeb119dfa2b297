"""Dashboard reads at scale: ``/dashboard``, ``/v1/queues`` and the jobs list over a big SQLite file.

Fills a SQLite file with ``--records`` job records (default 1,000,000: 90%
succeeded, 5% failed, the rest queued, running or cancelled, created over
the last week, the newest hour the busiest) in one transaction, then asks
each page ``--rounds`` times through Falcon's in-process test client (no
sockets: the figures are jobkit's own work) and reports the median time of
each. ``jobkit`` is ``/dashboard`` requests per second, ``baseline`` is
``/healthz`` (no reads at all) requests per second.
"""
from __future__ import annotations

import sqlite3
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import falcon.testing

from benchmarks import common
from jobkit import App
from jobkit.api import create_app
from jobkit.backends.sqlite import SQLiteBackend
from jobkit.config import Settings
from jobkit.job import RECORD_FIELDS

WEEK_S = 7 * 24 * 3600
TASKS = ("hash_payload", "resize", "send_mail", "report", "sync")
#: (state, share of the records) in the order the records cycle through them
STATES = (("succeeded", 90), ("failed", 5), ("queued", 3), ("running", 1), ("cancelled", 1))


def fill(path: Path, records: int, now: float) -> None:
    """Write ``records`` rows with the backend's table, then let the backend build its indexes."""
    db = sqlite3.connect(path)
    db.execute(SQLiteBackend.DDL[0])  # the table alone: indexes built once at the end are faster
    cycle = [state for state, share in STATES for _ in range(share)]
    columns = ", ".join(RECORD_FIELDS)
    sql = f"INSERT INTO jobs ({columns}) VALUES ({', '.join('?' * len(RECORD_FIELDS))})"
    with db:
        db.executemany(sql, (_row(i, records, cycle[i % len(cycle)], now) for i in range(records)))
    db.close()
    backend = SQLiteBackend(common.sqlite_url(path))
    backend.ping()  # creates the indexes
    backend.close()


def _row(i: int, records: int, state: str, now: float) -> tuple[object, ...]:
    created = now - WEEK_S * (1 - i / records) ** 2  # denser towards now
    finished = created + 0.5 if state in ("succeeded", "failed", "cancelled") else None
    error = '{"type":"ValueError","message":"boom","traceback":"..."}' if state == "failed" else None
    values = {"id": f"{0x01a0_0000_0000 + i:012x}{i:020x}", "task": TASKS[i % len(TASKS)], "args": "[1]",
              "kwargs": "{}", "queue": "default", "state": state, "priority": 1024, "attempts": 1,
              "result": "2" if state == "succeeded" else None, "error": error, "created_at": created,
              "started_at": created + 0.1 if state != "queued" else None, "finished_at": finished,
              "expires_at": finished + WEEK_S if finished is not None else None, "worker": "bench:1"}
    return tuple(values.get(field) for field in RECORD_FIELDS)


def median_ms(client: falcon.testing.TestClient, path: str, rounds: int) -> float:
    """The median time of ``rounds`` GETs of ``path``, in milliseconds (each checked to be a 200)."""
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        result = client.simulate_get(path)
        times.append(time.perf_counter() - started)
        assert result.status_code == 200, (path, result.status_code)
    return 1000 * statistics.median(times)


def main(argv: Sequence[str] | None = None) -> str:
    parser = common.parser("dashboard", __doc__)
    parser.add_argument("--records", type=int, default=1_000_000, help="job records (default 1000000)")
    parser.add_argument("--rounds", type=int, default=20, help="requests per page (default 20)")
    args = parser.parse_args(argv)
    with common.servers() as (beanstalkd, tmp):
        now = time.time()
        started = time.perf_counter()
        fill(tmp / "jobs.db", args.records, now)
        common.note(f"filled {args.records} records in {time.perf_counter() - started:.1f}s")
        app = App("bench", broker=beanstalkd.url, backend=common.sqlite_url(tmp / "jobs.db"))
        client = falcon.testing.TestClient(create_app(Settings(), app))
        middle = f"{0x01a0_0000_0000 + args.records // 2:012x}{args.records // 2:020x}"
        pages = {"dashboard": "/dashboard", "queues": "/v1/queues", "jobs": "/dashboard/jobs",
                 "jobs_failed": "/dashboard/jobs?state=failed",
                 "jobs_deep": f"/dashboard/jobs?before={middle}", "dead": "/dashboard/dead",
                 "healthz": "/healthz"}
        timings = {name: median_ms(client, path, args.rounds) for name, path in pages.items()}
        app.close()
    detail = " ".join(f"{name}_ms={ms:.1f}" for name, ms in timings.items() if name != "healthz")
    return common.report("dashboard", 1000 / timings["dashboard"], 1000 / timings["healthz"],
                         f"{detail} records={args.records}")


if __name__ == "__main__":
    main()
