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

- bare (RabbitMQ only, one job a call): what any client must do at least,
  in the same run: a record upsert here + one py-amqp publish to a quorum
  queue, waiting for its confirm; two consumer processes (``basic.consume``,
  prefetch 4) that hash, upsert and ack. Reported as ``bare=`` beside the
  line: the ceiling a single producer meets on this broker.

``--producers P`` threads enqueue for each system (default 1, as in
:mod:`benchmarks.e2e`). ``--batch B`` enqueues B jobs a call with each
system's batch API instead: jobkit's ``Task.map`` (one transaction, puts
pipelined: on RabbitMQ one wait for all the confirms), Celery's ``group``
and Dramatiq's ``group`` (a confirmed publish each), the peers' records in
one transaction per batch; the line is then ``<broker>_batch``.
``--jobkit-pool thread:4`` runs jobkit's worker as one process of four
threads (jobkit's default pool) instead of two processes. Each worker is
warm (one job done) before the clock starts. The servers are durable for
everyone: Redis with ``appendfsync always``, RabbitMQ with publisher
confirms (see :mod:`benchmarks.peer_apps`). The systems alternate for
``--rounds`` rounds and the best round of each counts. The last line is
``<broker>: jobkit=<x>/s baseline=<celery>/s ratio=<x/celery>
dramatiq=<z>/s vs_dramatiq=<x/z>``, then ``bare=<b>/s vs_bare=<x/b>`` on
RabbitMQ.
"""
from __future__ import annotations

import contextlib
import json
import multiprocessing
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


DEFAULT_JOBKIT_POOL = "process:2"  # jobkit worker --pool process -c 2


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


def timed(send: Callable[[int], str], db_path: Path, n: int, producers: int, batch: int) -> float:
    """Warm the workers with one job, then time ``n`` more sent by ``producers`` threads; jobs/s.

    ``send(k)`` enqueues ``k`` jobs and returns the last one's id; each
    producer sends its share ``batch`` jobs at a time (one at a time when 0).
    """
    common.wait_all_stored(db_path, 1, send(1), timeout_s=60)
    share = [n // producers + (i < n % producers) for i in range(producers)]
    lasts: list[str] = []
    step = max(1, batch)

    def produce(count: int) -> None:
        for done in range(0, count, step):
            last = send(min(step, count - done))
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


def run_jobkit(url: str, tmp: Path, n: int, producers: int, batch: int,
               pool: str = DEFAULT_JOBKIT_POOL) -> float:
    db_path = tmp / "jobkit.db"
    from examples.hashing import app, hash_payload

    app.configure(broker=url, backend=common.sqlite_url(db_path))
    app.backend.ping()

    def send(k: int) -> str:
        if not batch:
            return hash_payload.delay(common.PAYLOAD).id
        return hash_payload.map([(common.PAYLOAD,)] * k)[-1].id  # one transaction, pipelined puts

    kind, concurrency = pool.split(":")
    with common.jobkit_command("worker", "-A", common.APP, "--broker", url, "--backend",
                               common.sqlite_url(db_path), "--pool", kind, "-c", concurrency, "-l", "ERROR"):
        rate = timed(send, db_path, n, producers, batch)
    app.close()
    return rate


def run_peer(kind: str, url: str, tmp: Path, n: int, producers: int, batch: int) -> float:
    db_path = tmp / f"{kind}.db"
    db = common.bare_db(db_path)  # check_same_thread=False: the producers share it, autocommit
    lock = threading.Lock()  # one transaction at a time on the shared connection
    sender = _celery_sender(url) if kind == "celery" else _dramatiq_sender(url)

    def send(k: int) -> str:
        job_ids = [uuid.uuid4().hex for _ in range(k)]
        now = time.time()
        with lock:
            db.execute("BEGIN")
            db.executemany(common.BARE_ADD, [(job_id, '{"example":"data"}', now) for job_id in job_ids])
            db.execute("COMMIT")
        sender(job_ids, common.PAYLOAD)
        return job_ids[-1]

    with peer_worker(kind, url, db_path):
        rate = timed(send, db_path, n, producers, batch)
    db.close()
    return rate


BARE_AMQP_QUEUE = "bare"


def _bare_amqp_channel(url: str) -> Any:
    """A py-amqp connection's channel in confirm mode, with the bare quorum queue declared."""
    import amqp
    from kombu.utils.url import url_to_parts

    _, host, port, user, password, _, _ = url_to_parts(url)
    connection = amqp.Connection(f"{host}:{port}", userid=user, password=password, confirm_publish=True)
    connection.connect()
    channel = connection.channel()
    channel.queue_declare(BARE_AMQP_QUEUE, durable=True, auto_delete=False,
                          arguments={"x-queue-type": "quorum"})
    return channel


#: A quorum queue declared a moment ago can answer a consume with INTERNAL_ERROR (541) while its Raft
#: group starts (seen once in a ten-run loop); jobkit's consumer reconnects as after any outage.
CONSUME_ATTEMPTS = 50


def _bare_amqp_consume(url: str, db_path: Path) -> None:
    """A bare consumer: pushed messages (prefetch 4), md5 as hash_payload does, one upsert, ack."""
    import amqp

    from examples.hashing import hash_payload
    from jobkit.embedded import die_with_parent

    die_with_parent()
    db = common.bare_db(db_path)

    def on_message(message: Any) -> None:
        job_id, payload = json.loads(message.body)
        result = hash_payload(payload)  # calling a task runs it here
        db.execute(common.BARE_DONE, (job_id, json.dumps(result, separators=(",", ":")), time.time()))
        channel.basic_ack(message.delivery_tag)

    for attempt in range(CONSUME_ATTEMPTS):
        channel = _bare_amqp_channel(url)
        channel.basic_qos(0, 4, False)
        try:
            channel.basic_consume(BARE_AMQP_QUEUE, callback=on_message, no_ack=False)
            break
        except amqp.exceptions.InternalError:  # the queue's Raft group is not up yet: a new connection
            if attempt == CONSUME_ATTEMPTS - 1:
                raise
            time.sleep(0.1)
    while True:
        channel.connection.drain_events()


def run_bare_amqp(url: str, tmp: Path, n: int, producers: int) -> float:
    """The bare loop on RabbitMQ (see the module docstring); one channel per producer thread."""
    import amqp

    db_path = tmp / "bare.db"
    db = common.bare_db(db_path)
    lock = threading.Lock()
    local = threading.local()
    channels: list[Any] = []
    _bare_amqp_channel(url).connection.close()  # one declare, before the consumers' own
    consumers = [multiprocessing.get_context("fork").Process(target=_bare_amqp_consume, args=(url, db_path),
                                                             daemon=True) for _ in range(2)]
    for proc in consumers:
        proc.start()

    def send(k: int) -> str:
        if not hasattr(local, "channel"):
            local.channel = _bare_amqp_channel(url)
            channels.append(local.channel)
        for _ in range(k):
            job_id = uuid.uuid4().hex
            with lock:
                db.execute(common.BARE_ADD, (job_id, '{"example":"data"}', time.time()))
            body = json.dumps([job_id, common.PAYLOAD], separators=(",", ":"))
            local.channel.basic_publish(amqp.Message(body, delivery_mode=2), routing_key=BARE_AMQP_QUEUE)
        return job_id

    try:
        return timed(send, db_path, n, producers, 0)
    finally:
        for proc in consumers:
            proc.terminate()
        for proc in consumers:
            proc.join(5)
        for channel in channels:
            channel.connection.close()
        db.close()


def _celery_sender(url: str) -> Callable[[list[str], Any], None]:
    """One ``send_task``, or a ``group`` of them (Celery's batch: one producer, a publish each)."""
    from celery import group

    from benchmarks.peer_apps import celery_app

    app = celery_app(url)

    def send(job_ids: list[str], payload: Any) -> None:
        if len(job_ids) == 1:
            app.send_task("hash_payload", args=(job_ids[0], payload))
        else:
            group(app.signature("hash_payload", args=(job_id, payload))
                  for job_id in job_ids).apply_async()
    return send


def _dramatiq_sender(url: str) -> Callable[[list[str], Any], None]:
    """One ``send``, or a ``group`` of messages (Dramatiq's batch: an enqueue each)."""
    import dramatiq

    from benchmarks.peer_apps import dramatiq_actor

    actor = dramatiq_actor(url)

    def send(job_ids: list[str], payload: Any) -> None:
        if len(job_ids) == 1:
            actor.send(job_ids[0], payload)
        else:
            dramatiq.group([actor.message(job_id, payload) for job_id in job_ids]).run()
    return send


def main(broker: str, argv: Sequence[str] | None = None) -> str:
    parser = common.parser(broker, __doc__)
    parser.add_argument("-n", "--jobs", type=int, default=5_000, help="jobs per run (default 5000)")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each system (default 2)")
    parser.add_argument("--producers", type=int, default=1,
                        help="threads enqueueing at once, for every system (default 1)")
    parser.add_argument("--batch", type=int, default=0,
                        help="enqueue this many jobs per call with each system's batch API: jobkit's"
                             " Task.map, Celery's and Dramatiq's group (default 0: one .delay()/send"
                             " per job)")
    parser.add_argument("--jobkit-pool", default=DEFAULT_JOBKIT_POOL,
                        help="jobkit worker's pool as POOL:CONCURRENCY (default process:2, two"
                             " processes as Celery's; thread:4 is one process of four threads, where"
                             " Dramatiq runs two of four)")
    args = parser.parse_args(argv)
    rates: dict[str, list[float]] = {"jobkit": [], "celery": [], "dramatiq": []}
    bare = broker == "rabbitmq" and not args.batch
    if bare:
        rates["bare"] = []
    with tempfile.TemporaryDirectory(prefix="jobkit-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        with broker_server(broker, tmp / "server") as url:
            for round_ in range(args.rounds):
                here = tmp / f"r{round_}"
                here.mkdir()
                sizes = (args.jobs, args.producers, args.batch)
                rates["celery"].append(run_peer("celery", url, here, *sizes))
                rates["dramatiq"].append(run_peer("dramatiq", url, here, *sizes))
                rates["jobkit"].append(run_jobkit(url, here, *sizes, pool=args.jobkit_pool))
                if bare:
                    rates["bare"].append(run_bare_amqp(url, here, args.jobs, args.producers))
                common.note(f"round {round_ + 1}: " + ", ".join(
                    f"{name} {values[-1]:.0f} jobs/s" for name, values in rates.items()))
    best = {name: max(values) for name, values in rates.items()}
    vs = best["jobkit"] / best["dramatiq"] if best["dramatiq"] else 0
    name = f"{broker}_batch" if args.batch else broker  # as benchmarks.rabbitmq_batch
    beside = f"bare={best['bare']:.0f}/s vs_bare={best['jobkit'] / best['bare']:.2f} " if bare else ""
    return common.report(name, best["jobkit"], best["celery"],
                         f"dramatiq={best['dramatiq']:.0f}/s vs_dramatiq={vs:.2f} {beside}"
                         f"jobs={args.jobs} best_of={args.rounds} producers={args.producers}"
                         f" batch={args.batch} workers=2 jobkit_pool={args.jobkit_pool}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main(sys.argv[1] if len(sys.argv) > 1 else "redis", sys.argv[2:])
