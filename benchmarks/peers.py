"""End to end on a shared broker: jobkit, Celery and Dramatiq on the same Redis or RabbitMQ.

For one broker (a private ``redis-server`` or RabbitMQ node started here),
each system runs N seed ``hash_payload`` jobs from the first enqueue to the
last stored result, with two worker processes:

- jobkit: ``hash_payload.delay()`` here (record + put), ``jobkit worker
  --pool process -c 2`` with results in SQLite;
- Celery: a record upsert here + ``send_task``; ``celery worker -P prefork
  -c 2`` whose task hashes and upserts its result into SQLite;
- Dramatiq: a record upsert here + ``send``; ``dramatiq --processes 2
  --threads 4``, the same task.

``--producers P`` threads enqueue for each system (default 1, as in
:mod:`benchmarks.e2e`). Each worker is warm (one job done) before the clock
starts. The servers are durable for everyone: Redis with ``appendfsync
always``, RabbitMQ with publisher confirms (see :mod:`benchmarks.peer_apps`).
The systems
alternate for ``--rounds`` rounds and the best round of each counts. The
last line is ``<broker>: jobkit=<x>/s baseline=<celery>/s ratio=<x/celery>
dramatiq=<z>/s vs_dramatiq=<x/z>``.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks import common

WORKER_ARGS = {
    "celery": ["-m", "celery", "-A", "benchmarks.peer_apps:celery", "worker", "-P", "prefork",
               "-c", "2", "--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "ERROR"],
    "dramatiq": ["-m", "dramatiq", "benchmarks.peer_apps", "--processes", "2", "--threads", "4"],
}


@contextlib.contextmanager
def broker_server(kind: str, workdir: Path) -> Iterator[str]:
    """A private Redis or RabbitMQ server; yields its URL."""
    from tests.brokerservers import RabbitServer, RedisServer

    workdir.mkdir(parents=True, exist_ok=True)
    server = (RedisServer if kind == "redis" else RabbitServer)(workdir).start()
    try:
        yield server.url
    finally:
        server.stop()


@contextlib.contextmanager
def peer_worker(kind: str, url: str, db_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A Celery or Dramatiq worker (two processes) in its own process group."""
    env = common.clean_env() | {"PEER_KIND": kind, "PEER_BROKER_URL": url, "PEER_DB": str(db_path)}
    proc = subprocess.Popen([sys.executable, *WORKER_ARGS[kind]], cwd=common.ROOT, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        yield proc
    finally:
        common.stop_group(proc)


def timed(send: Callable[[], str], db_path: Path, n: int, producers: int) -> float:
    """Warm the workers with one job, then time ``n`` more sent by ``producers`` threads; jobs/s."""
    common.wait_all_stored(db_path, 1, send(), timeout_s=60)
    share = [n // producers + (i < n % producers) for i in range(producers)]
    lasts: list[str] = []

    def produce(count: int) -> None:
        for _ in range(count):
            last = send()
        lasts.append(last)

    threads = [threading.Thread(target=produce, args=(count,)) for count in share if count]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for last in lasts[:-1]:
        common.wait_all_stored(db_path, 1, last)
    return n / (common.wait_all_stored(db_path, n + 1, lasts[-1]) - start)


def run_jobkit(url: str, tmp: Path, n: int, producers: int) -> float:
    db_path = tmp / "jobkit.db"
    from examples.hashing import app, hash_payload

    app.configure(broker=url, backend=common.sqlite_url(db_path))
    app.backend.ping()
    with common.jobkit_command("worker", "-A", common.APP, "--broker", url, "--backend",
                               common.sqlite_url(db_path), "--pool", "process", "-c", "2", "-l", "ERROR"):
        rate = timed(lambda: hash_payload.delay(common.PAYLOAD).id, db_path, n, producers)
    app.close()
    return rate


def run_peer(kind: str, url: str, tmp: Path, n: int, producers: int) -> float:
    db_path = tmp / f"{kind}.db"
    db = common.bare_db(db_path)  # check_same_thread=False: the producers share it, autocommit
    sender = _celery_sender(url) if kind == "celery" else _dramatiq_sender(url)

    def send() -> str:
        job_id = uuid.uuid4().hex
        db.execute(common.BARE_ADD, (job_id, '{"example":"data"}', time.time()))
        sender(job_id, common.PAYLOAD)
        return job_id

    with peer_worker(kind, url, db_path):
        rate = timed(send, db_path, n, producers)
    db.close()
    return rate


def _celery_sender(url: str) -> Callable[[str, Any], None]:
    from benchmarks.peer_apps import celery_app

    app = celery_app(url)
    return lambda job_id, payload: app.send_task("hash_payload", args=(job_id, payload))


def _dramatiq_sender(url: str) -> Callable[[str, Any], None]:
    from benchmarks.peer_apps import dramatiq_actor

    actor = dramatiq_actor(url)
    send: Callable[[str, Any], None] = actor.send
    return send


def main(broker: str, argv: Sequence[str] | None = None) -> str:
    parser = common.parser(broker, __doc__)
    parser.add_argument("-n", "--jobs", type=int, default=5_000, help="jobs per run (default 5000)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each system (default 2)")
    parser.add_argument("--producers", type=int, default=1,
                        help="threads enqueueing at once, for every system (default 1)")
    args = parser.parse_args(argv)
    rates: dict[str, list[float]] = {"jobkit": [], "celery": [], "dramatiq": []}
    with tempfile.TemporaryDirectory(prefix="jobkit-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        with broker_server(broker, tmp / "server") as url:
            for round_ in range(args.rounds):
                here = tmp / f"r{round_}"
                here.mkdir()
                rates["celery"].append(run_peer("celery", url, here, args.jobs, args.producers))
                rates["dramatiq"].append(run_peer("dramatiq", url, here, args.jobs, args.producers))
                rates["jobkit"].append(run_jobkit(url, here, args.jobs, args.producers))
                common.note(f"round {round_ + 1}: " + ", ".join(
                    f"{name} {values[-1]:.0f} jobs/s" for name, values in rates.items()))
    best = {name: max(values) for name, values in rates.items()}
    vs = best["jobkit"] / best["dramatiq"] if best["dramatiq"] else 0
    return common.report(broker, best["jobkit"], best["celery"],
                         f"dramatiq={best['dramatiq']:.0f}/s vs_dramatiq={vs:.2f} "
                         f"jobs={args.jobs} best_of={args.rounds} producers={args.producers} workers=2")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main(sys.argv[1] if len(sys.argv) > 1 else "redis", sys.argv[2:])
