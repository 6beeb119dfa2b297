"""Load: the load check of docs/fault-tests.md, through the HTTP API.

``--clients`` threads (default 50) POST ``{"example":"data"}`` to ``/`` and then
GET ``/<id>/``, over and over for ``--seconds`` (default 20; the
check asks for 60), against ``jobkit api --processes 2`` with a process-pool worker
running. It must see no transport error and no 5xx, and afterwards the number
of 202s must equal the number of records and the number of jobs beanstalkd
took. Prints the request rate and p50/p99 latency; exits 1 when a check fails.
There is no baseline: the figure is the checks, not a ratio.
"""
from __future__ import annotations

import http.client
import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import greenstalk

from benchmarks import common
from benchmarks.http import jobkit_server

BODY = json.dumps(common.PAYLOAD).encode()


class Client(threading.Thread):
    """One client: POST a job, GET its status, repeat until ``deadline``."""

    def __init__(self, port: int, deadline: float) -> None:
        super().__init__(daemon=True)
        self.port, self.deadline = port, deadline
        self.statuses: Counter[int] = Counter()
        self.errors: list[str] = []
        self.latencies: list[float] = []

    def run(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while time.monotonic() < self.deadline:
            try:
                status, body = self.call(conn, "POST", "/", BODY)
                if status == 202:
                    self.call(conn, "GET", f"/{json.loads(body)['id']}/", None)
            except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
                self.errors.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.close()

    def call(self, conn: http.client.HTTPConnection, method: str, path: str,
             body: bytes | None) -> tuple[int, bytes]:
        started = time.perf_counter()
        conn.request(method, path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        self.latencies.append(time.perf_counter() - started)
        self.statuses[resp.status] += 1
        return resp.status, data


def count_records(db_path: Path, state: str | None = None) -> int:
    with sqlite3.connect(db_path) as db:
        sql = "SELECT count(*) FROM jobs" + (" WHERE state = ?" if state else "")
        return int(db.execute(sql, (state,) if state else ()).fetchone()[0])


def broker_jobs(address: tuple[str, int]) -> int:
    with greenstalk.Client(address) as client:
        return int(client.stats_tube(common.JOBKIT_QUEUE)["total-jobs"])


def main(argv: Sequence[str] | None = None) -> str:
    parser = common.parser("load", __doc__)
    parser.add_argument("--clients", type=int, default=50, help="concurrent clients (default 50)")
    parser.add_argument("--seconds", type=float, default=20, help="how long they run (default 20)")
    args = parser.parse_args(argv)
    with common.servers() as (beanstalkd, tmp):
        db_path = tmp / "jobkit.db"
        url = common.sqlite_url(db_path)
        with jobkit_server(beanstalkd, db_path, processes=2, threads=8) as port, \
                common.jobkit_worker(beanstalkd, url):
            deadline = time.monotonic() + args.seconds
            clients = [Client(port, deadline) for _ in range(args.clients)]
            for client in clients:
                client.start()
            for client in clients:
                client.join()
            statuses = sum((c.statuses for c in clients), Counter())
            accepted = statuses[202]
            done = wait_done(db_path, accepted)
            records, taken = count_records(db_path), broker_jobs((beanstalkd.host, beanstalkd.port))
    errors = [e for c in clients for e in c.errors]
    latencies = [t for c in clients for t in c.latencies]
    server_errors = sum(n for code, n in statuses.items() if code >= 500)
    checks = {"no errors": not errors, "no 5xx": not server_errors, "202s == records": accepted == records,
              "202s == broker jobs": accepted == taken, "all jobs done": done}
    common.note(f"statuses {dict(sorted(statuses.items()))}; first errors: {errors[:3]}")
    failed = [name for name, ok in checks.items() if not ok]
    extra = (f"clients={args.clients} seconds={args.seconds:g} requests={len(latencies)} "
             f"errors={len(errors)} http5xx={server_errors} accepted={accepted} records={records} "
             f"broker_jobs={taken} {common.latency_text('', latencies)} "
             f"checks={'FAILED: ' + ', '.join(failed) if failed else 'ok'}")
    line = common.report("load", len(latencies) / args.seconds, 0, extra)
    if failed:
        raise SystemExit(1)
    return line


def wait_done(db_path: Path, accepted: int, timeout_s: float = 120) -> bool:
    """Wait until every accepted job's record says succeeded."""
    deadline = time.monotonic() + timeout_s
    while count_records(db_path, "succeeded") < accepted:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


if __name__ == "__main__":
    main()
