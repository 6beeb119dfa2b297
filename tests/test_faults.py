"""The fault tests F1-F13 of docs/fault-tests.md: real worker processes, real servers, real faults.

Every test that kills or restarts beanstalkd or the backend owns a private
server; every process and server is stopped in fixture teardown. Each test
asserts what the catalogue's "what must hold" column says, and is bounded
in time by short TTRs and a pytest timeout.
"""
from __future__ import annotations

import os
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import greenstalk
import pymongo
import pytest

from jobkit import App, JobState
from jobkit.embedded import Beanstalkd
from jobkit.errors import BackendUnavailable, BrokerUnavailable, JobFailed
from jobkit.message import Envelope
from jobkit.runner import OUTAGE_DELAY_S
from tests.brokerservers import PrivateBroker
from tests.faultkit import (
    LinkFaults,
    StartWorker,
    TcpProxy,
    cli_servers,
    lines,
    make_app,
    record_count,
    send_concurrently,
    settled,
    succeeded,
    waiting,
    worker_name,
)
from tests.helpers import eventually
from tests.processes import clean_env, jobkit
from tests.servers import MongoServer

pytestmark = pytest.mark.fault


@pytest.fixture
def app(fault_app: App) -> App:
    """The test tasks over a private beanstalkd, records in SQLite (see tests.faultkit)."""
    return fault_app


# -- workers die, stop or lose their connection ------------------------------

@pytest.fixture(params=PrivateBroker.KINDS)
def any_broker_url(request: pytest.FixtureRequest) -> str:
    """The session's server(s) of every broker that workers in other processes can share
    (not ``memory://``: it lives in one process, and dies with it)."""
    fixture = {"beanstalk": "beanstalkd", "beanstalk-cluster": "beanstalkd_cluster",
               "redis": "redis_server", "rabbitmq": "rabbitmq_server"}[request.param]
    return str(request.getfixturevalue(fixture).url)


@pytest.fixture(params=PrivateBroker.KINDS)
def private_broker(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PrivateBroker]:
    """Private server(s) of every broker but ``memory://``, which the test may crash and restart."""
    broker = PrivateBroker(request.param, tmp_path / request.param).start()
    yield broker
    broker.stop()


@pytest.mark.timeout(90)
def test_f1_kill9_one_of_two_workers_with_jobs_in_flight(any_broker_url: str, sqlite_url: str, queue: str,
                                                         workers: StartWorker, tmp_path: Path) -> None:
    """The killed worker's jobs come back (TTR, or its connection closing on RabbitMQ) and run once more."""
    app = make_app(any_broker_url, sqlite_url)
    app.broker.consumer([queue]).close()  # RabbitMQ: stats count the queues this process used
    path, ttr = tmp_path / "runs", 2
    victim = workers(app, queue, concurrency=4)
    workers(app, queue, concurrency=4)
    jobs = [app.send("tagged", (str(path), str(i), 0.05 + (i % 6) * 0.01), queue=queue, ttr=ttr)
            for i in range(120)]
    eventually(lambda: len(lines(path)) >= 30, what="30 jobs started")
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(5)
    eventually(lambda: app.backend.counts().get("succeeded") == 120, timeout_s=ttr + 20,
               what="all 120 jobs succeeded")
    assert record_count(app) == 120
    assert all(job.status().state is JobState.SUCCEEDED for job in jobs)
    eventually(lambda: settled(app, queue), timeout_s=ttr + 10, what="nothing left in the broker")
    runs = lines(path)
    assert set(runs) == {str(i) for i in range(120)}
    assert len(runs) - 120 <= 4  # only the jobs the killed worker held ran twice
    app.close()


SIGTERM_CASES = [  # pool, --grace, SIGTERMs sent, what becomes of the running job
    ("thread", 10.0, 1, "finishes"),
    ("thread", 0.5, 1, "released"),
    ("thread", 60.0, 2, "released"),
    ("process", 10.0, 1, "finishes"),
    ("process", 0.5, 1, "released"),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("pool", "grace", "signals", "fate"), SIGTERM_CASES)
def test_f2_sigterm_mid_job(app: App, queue: str, workers: StartWorker, tmp_path: Path, pool: str,
                            grace: float, signals: int, fate: str) -> None:
    path = tmp_path / "runs"
    proc = workers(app, queue, concurrency=2, pool=pool, grace=grace)
    job = app.send("slow_first_run", (str(path), 1.5 if fate == "finishes" else 30), queue=queue)
    eventually(lambda: len(lines(path)) == 1, what="the task started")  # not the claim: see test_worker
    proc.signal(signal.SIGTERM)
    eventually(lambda: waiting(app, queue) == 0, what="the idle slot stopped reserving")
    late = app.send("add", (1, 2), queue=queue)  # sent after the stop: must not be taken
    signalled = time.monotonic()
    if signals == 2:
        proc.signal(signal.SIGTERM)
    assert proc.wait(grace + 10) == 0
    if fate == "finishes":
        assert job.status().state is JobState.SUCCEEDED and job.status().attempts == 1
    else:
        assert time.monotonic() - signalled < min(grace, 1) + 2  # released at once / after grace
        status = job.status()
        assert (status.state, status.attempts) == (JobState.QUEUED, 0)
    assert late.status().state is JobState.QUEUED
    counts = app.broker.stats()[queue]
    assert (counts["ready"], counts["reserved"]) == (1 if fate == "finishes" else 2, 0)
    workers(app, queue, wait_ready=False)  # 0 lost: a fresh worker runs what is left
    assert late.get(timeout=10) == 3
    assert job.get(timeout=10) == len(lines(path))
    assert record_count(app) == 2


@pytest.mark.timeout(60)
def test_f2_a_job_released_at_shutdown_is_claimed_cleanly_by_another_worker(
        app: App, queue: str, workers: StartWorker, tmp_path: Path) -> None:
    path = tmp_path / "runs"
    stopping = workers(app, queue, grace=0.2)
    job = app.send("slow_first_run", (str(path), 30), queue=queue)
    eventually(lambda: len(lines(path)) == 1, what="the task started")  # not the claim: see test_worker
    workers(app, queue)  # stands by, takes the job the moment it is released
    stopping.signal(signal.SIGTERM)
    assert stopping.wait(10) == 0
    assert job.get(timeout=10) == 2
    status = job.status()  # the release did not overwrite the second worker's claim
    assert status.attempts == 1 and status.record["worker"] != worker_name(stopping)
    assert record_count(app) == 1 and len(lines(path)) == 2


@pytest.mark.timeout(60)
def test_f3_sigterm_then_sigkill_before_the_job_ends(app: App, queue: str, workers: StartWorker,
                                                     tmp_path: Path) -> None:
    path, ttr = tmp_path / "runs", 2
    first = workers(app, queue, grace=30)
    job = app.send("slow_first_run", (str(path), 30), queue=queue, ttr=ttr)
    eventually(lambda: len(lines(path)) == 1, what="the task started")  # not the claim: see test_worker
    first.signal(signal.SIGTERM)
    eventually(lambda: "finishing running jobs" in first.output(), what="SIGTERM handled")
    os.kill(first.pid, signal.SIGKILL)
    first.wait(5)
    workers(app, queue, wait_ready=False)
    assert job.get(timeout=ttr + 5) == 2  # it ran again, once
    assert job.status().attempts == 2 and record_count(app) == 1
    assert settled(app, queue)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("pool", ["thread", "process"])
def test_f4_a_job_running_3_ttrs_is_touched_and_runs_once(app: App, queue: str, workers: StartWorker,
                                                          tmp_path: Path, pool: str) -> None:
    path = tmp_path / "runs"
    workers(app, queue, pool=pool)
    job = app.send("long_job", (str(path), 3.5), queue=queue)  # TTR 1 s
    broker_id = eventually(lambda: job.status().record["broker_id"], what="broker id recorded")
    samples: list[dict[str, object]] = []

    def gone() -> bool:
        peeked = app.broker.peek(broker_id)
        if peeked is not None:
            samples.append(peeked.stats)
        return peeked is None

    eventually(gone, timeout_s=10, what="job deleted")
    assert job.get(timeout=5) == 3.5
    assert max(int(str(s["age"])) for s in samples if s["state"] == "reserved") >= 3
    assert all(s["timeouts"] == 0 and s["reserves"] == 1 for s in samples), samples
    assert len(lines(path)) == 1 and job.status().attempts == 1


@pytest.mark.timeout(60)
def test_f5_worker_connection_cut_mid_job(app: App, beanstalk: Beanstalkd, queue: str,
                                          workers: StartWorker, tmp_path: Path) -> None:
    path = tmp_path / "runs"
    proxy = TcpProxy((beanstalk.host, beanstalk.port))
    try:
        cut_off = workers(app, queue, broker_url=proxy.url)
        job = app.send("tagged", (str(path), "x", 2.0), queue=queue, ttr=10)
        eventually(lambda: lines(path) == ["x"], what="job started on the proxied worker")
        other = workers(app, queue)
        assert proxy.cut() == 1
        eventually(lambda: lines(path) == ["x", "x"], timeout_s=5, what="job re-run elsewhere")
        assert job.get(timeout=10) == "x"
        eventually(lambda: settled(app, queue) and waiting(app, queue) == 2, timeout_s=15,
                   what="the cut-off worker reconnected")
        status = job.status()
        assert status.state is JobState.SUCCEEDED and status.attempts == 2
        assert record_count(app) == 1
        assert proxy.accepted == 2
        other.stop()
        more = [app.send("add", (i, 1), queue=queue) for i in range(5)]
        assert [m.get(timeout=10) for m in more] == [1, 2, 3, 4, 5]
        assert {m.status().record["worker"] for m in more} == {worker_name(cut_off)}
    finally:
        proxy.close()


def test_a_lossy_link_faults_the_short_connections_it_draws(beanstalk: Beanstalkd) -> None:
    """A connection drawn for a reset gets it, even one that carries a single small job.

    The lossy-links network test counts faults that fired; a proxy that struck only after kilobytes
    missed every short connection, and a run saw none.
    """
    proxy = TcpProxy((beanstalk.host, beanstalk.port), LinkFaults(reset=1.0, seed=1))
    try:
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
                sock.sendall(b"put 0 0 10 60\r\n" + b"x" * 60 + b"\r\n")  # one small job: 77 bytes
                try:
                    while sock.recv(4096):
                        pass
                except OSError:
                    pass
        eventually(lambda: proxy.resets == 5, timeout_s=5, what="every connection reset")
    finally:
        proxy.close()


# -- beanstalkd dies or refuses ------------------------------------------------

@pytest.mark.timeout(180)
def test_f6_kill_the_broker_and_restart(private_broker: PrivateBroker, sqlite_url: str, queue: str,
                                        workers: StartWorker, tmp_path: Path) -> None:
    """Every job accepted before the broker died, and after its restart, runs once; workers reconnect.

    Each broker restarts on its own data: beanstalkd's binlog (every server of
    a cluster), Redis's append-only file, RabbitMQ's quorum queue log.
    """
    app = make_app(private_broker.url, sqlite_url)
    app.broker.consumer([queue]).close()  # RabbitMQ: stats count the queues this process used
    path = tmp_path / "runs"
    ttr = 2  # Redis: a job held (or a delete lost) when it died stays reserved until its TTR runs out
    first = workers(app, queue, concurrency=3)
    second = workers(app, queue, concurrency=2, pool="process")
    sent = send_concurrently(app, queue, path, range(60), ttr=ttr)  # fills the producer pool
    eventually(lambda: len(lines(path)) >= 15, what="15 jobs started")
    private_broker.crash()
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        app.send("add", (1, 1), queue=queue)
    assert time.monotonic() - started < 5  # refused at once, not after a hang
    private_broker.start()  # the same ports and data
    for i in range(60, 70):  # RabbitMQ nacks puts until the queue's Raft leader is back: a 503, retried
        sent.append(eventually(lambda i=i: app.send("tagged", (str(path), str(i), 0.05), queue=queue, ttr=ttr,
                                                    idempotency_key=f"{queue}-{i}"),
                               timeout_s=30, what=f"job {i} accepted after the restart"))
    sent += send_concurrently(app, queue, path, range(70, 90), ttr=ttr)
    eventually(lambda: app.backend.counts().get("succeeded") == 90, timeout_s=60,
               what="every accepted job succeeded")
    assert record_count(app) == 90 and {job.get(timeout=1) for job in sent} == {str(i) for i in range(90)}
    slots = 5 * private_broker.reservers_per_slot
    eventually(lambda: settled(app, queue) and waiting(app, queue) == slots, timeout_s=30,
               what="all five worker slots reserving again")
    assert first.proc.poll() is None and second.proc.poll() is None
    app.close()


@pytest.mark.timeout(60)
def test_f6_workers_reconnect_quickly_after_each_outage(app: App, beanstalk: Beanstalkd, queue: str,
                                                       workers: StartWorker) -> None:
    proc = workers(app, queue)
    for outage in (1, 2):
        beanstalk.stop(kill=True)
        if outage == 1:  # a long outage: the reconnect pauses grow (0.1, 0.2, 0.4, 0.8 s ...)
            eventually(lambda: proc.output().count("broker unavailable") >= 4, what="4 failed reconnects")
        beanstalk.start()
        started = time.monotonic()
        eventually(lambda: waiting(app, queue) == 1, timeout_s=10, what=f"reconnected after outage {outage}")
        if outage == 2:  # a fresh outage starts again from the shortest pause
            assert time.monotonic() - started < 1.5
    assert app.send("add", (1, 2), queue=queue).get(timeout=5) == 3


@pytest.mark.timeout(30)
def test_f7_send_to_a_draining_or_stopped_beanstalkd(app: App, beanstalk: Beanstalkd, queue: str) -> None:
    app.send("add", (1, 1), queue=queue)  # the producer pool now holds a connection
    assert beanstalk.proc is not None
    beanstalk.proc.send_signal(signal.SIGUSR1)
    probe = greenstalk.Client((beanstalk.host, beanstalk.port))
    eventually(lambda: probe.stats()["draining"], what="beanstalkd draining")
    probe.close()
    _assert_refused_fast(app, queue, "drain")
    beanstalk.stop()
    _assert_refused_fast(app, queue, "down")
    assert record_count(app) == 1


def _assert_refused_fast(app: App, queue: str, label: str) -> None:
    for key in (None, f"key-{label}"):
        started = time.monotonic()
        with pytest.raises(BrokerUnavailable):
            app.send("add", (1, 2), queue=queue, idempotency_key=key)
        assert time.monotonic() - started < 2
        assert record_count(app) == 1  # nothing recorded as queued


# -- the backend goes away ---------------------------------------------------------

@pytest.mark.timeout(60)
def test_f8_backend_down_when_a_job_completes(beanstalk: Beanstalkd, mongo: MongoServer, queue: str,
                                              workers: StartWorker, tmp_path: Path) -> None:
    path = tmp_path / "runs"
    app = make_app(beanstalk.url, mongo.url("f8"))
    workers(app, queue)
    job = app.send("tagged", (str(path), "x", 1.5), queue=queue)
    record = eventually(lambda: job.status().record if lines(path) else None, what="job running")
    assert record["state"] == "running"
    mongo.stop()
    stats = eventually(lambda: (p := app.broker.peek(record["broker_id"])) and
                       p.stats["state"] == "delayed" and p.stats, timeout_s=10,
                       what="job released with a delay")
    assert stats["releases"] == 1 and stats["delay"] > 0 and lines(path) == ["x"]
    mongo.start()  # same port, same data directory
    assert job.get(timeout=20) == "x"
    assert record_count(app) == 1 and settled(app, queue)
    app.close()


@pytest.mark.timeout(60)
def test_f8_backend_down_when_a_job_is_claimed(beanstalk: Beanstalkd, mongo: MongoServer, queue: str,
                                               workers: StartWorker, tmp_path: Path) -> None:
    path = tmp_path / "runs"
    app = make_app(beanstalk.url, mongo.url("f8"))
    proc = workers(app, queue)
    mongo.stop()
    env = Envelope(id="claimedwhiledown", task="tagged", args=[str(path), "x"], queue=queue)
    broker_id = app.broker.put(env.encode(), queue=queue, priority=0, delay_s=0, ttr_s=10)

    def stats() -> dict[str, int]:
        peeked = app.broker.peek(broker_id)
        assert peeked is not None, "the job left the broker"
        return peeked.stats

    eventually(lambda: stats()["state"] == "delayed", what="job released with a delay")
    released = time.monotonic()
    eventually(lambda: stats()["reserves"] == 2, timeout_s=15, what="reserved again after its delay")
    assert time.monotonic() - released >= OUTAGE_DELAY_S - 1  # it waited in the broker: no hot loop
    assert lines(path) == [] and proc.output().count("backend unavailable") <= 2
    mongo.start()
    eventually(lambda: app.status(env.id).state is JobState.SUCCEEDED, timeout_s=20, what="job done")
    assert lines(path) == ["x"] and record_count(app) == 1 and settled(app, queue)
    app.close()


@pytest.mark.timeout(60)
def test_f9_backend_down_during_a_read(beanstalk: Beanstalkd, mongo: MongoServer, queue: str) -> None:
    app = make_app(beanstalk.url, mongo.url("f9"))
    job = app.send("add", (1, 2), queue=queue)
    mongo.stop()
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        app.status(job.id)
    assert time.monotonic() - started < 5
    with pytest.raises(BackendUnavailable):
        app.send("add", (3, 4), queue=queue)
    assert app.broker.stats()[queue]["ready"] == 1  # the unrecorded job was taken back
    fresh = make_app(beanstalk.url, mongo.url("f9"))  # first used during the outage
    threads = threading.active_count()
    for _ in range(3):
        with pytest.raises(BackendUnavailable):
            fresh.status(job.id)
    assert threading.active_count() <= threads + 2  # no client leaked per failed call
    mongo.start()
    assert app.status(job.id).state is JobState.QUEUED  # the same App recovers
    assert fresh.status(job.id).state is JobState.QUEUED
    app.close()
    fresh.close()


# -- jobs that fail, crash or poison --------------------------------------------------

@pytest.mark.timeout(60)
def test_f10_always_raising_task_retries_with_backoff_then_buried(app: App, queue: str,
                                                                  workers: StartWorker,
                                                                  tmp_path: Path) -> None:
    path = tmp_path / "attempts"
    workers(app, queue)  # one slot: the retrying job must not block the others
    job = app.send("fails_with_backoff", (str(path),), queue=queue)
    eventually(lambda: len(lines(path)) >= 2, what="first retry")
    others = [app.send("add", (i, i), queue=queue) for i in range(20)]
    assert [o.get(timeout=5) for o in others] == [2 * i for i in range(20)]
    others_done = time.time()
    with pytest.raises(JobFailed) as caught:
        job.get(timeout=20)
    starts = [float(t) for t in lines(path)]
    assert len(starts) == 4  # max_retries=3
    assert others_done < starts[-1]  # the others ran while it was still being retried
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:], strict=False)]
    assert gaps[0] >= 0.9 and gaps[0] < gaps[1] < gaps[2], gaps  # backoff 1, 2, 3-4 s
    error = caught.value.error
    assert (error["type"], error["message"]) == ("RuntimeError", "fails every time")
    assert 'raise RuntimeError("fails every time")' in error["traceback"]
    assert job.status().attempts == 4
    # a dead letter: buried right after its outcome is stored (the record is written first)
    eventually(lambda: app.broker.stats()[queue]["buried"] == 1, what="the dead letter")
    kicked = jobkit("kick", "--job", job.id, *cli_servers(app), env=clean_env())
    assert kicked.returncode == 0 and "kicked 1 job(s)" in kicked.stdout, kicked.stderr
    eventually(lambda: len(lines(path)) == 5, what="kicked job ran again")
    eventually(lambda: job.status().state is JobState.RETRYING and job.status().attempts == 1,
               what="a fresh round of retries")


@pytest.mark.timeout(60)
def test_f10_kick_cli_by_job_queue_and_all(app: App, workers: StartWorker, tmp_path: Path) -> None:
    flag = tmp_path / "flag"
    jobs = {q: app.send("fails_until", (str(tmp_path / q), str(flag)), queue=q)
            for q in ("qa", "qb", "qc")}
    workers(app, "qa,qb,qc", wait_ready=False)
    eventually(lambda: all(j.status().state is JobState.FAILED for j in jobs.values()), what="all failed")
    flag.touch()
    for args, done in ((("--job", jobs["qa"].id), {"qa"}), (("--queue", "qb"), {"qa", "qb"}),
                       (("--all",), {"qa", "qb", "qc"})):
        result = jobkit("kick", *args, *cli_servers(app), env=clean_env())
        assert result.returncode == 0 and "kicked 1 job(s)" in result.stdout, result.stderr
        eventually(lambda done=done: succeeded(jobs) == done, what=f"kick {args} ran exactly {done}")
    assert all(job.get(timeout=1) == 2 for job in jobs.values())
    assert all(settled(app, q) for q in jobs)


@pytest.mark.timeout(60)
def test_f11_task_that_kills_its_worker_each_time(app: App, queue: str, workers: StartWorker,
                                                  tmp_path: Path) -> None:
    path = tmp_path / "runs"
    proc = workers(app, queue, pool="process")
    job = app.send("crash", (str(path),), queue=queue)  # max_retries=2
    eventually(lambda: app.broker.stats()[queue]["buried"] == 1, timeout_s=20, what="job buried")
    status = job.status()
    assert status.state is JobState.FAILED and status.error is not None
    assert status.error["type"] == "WorkerLost" and "reserved 4 times" in status.error["message"]
    assert len(lines(path)) == 3  # max_retries + 1 runs, then buried on the next reserve
    buried = app.broker.peek_buried(queue)
    assert buried is not None and buried.stats["reserves"] == 4
    assert app.send("add", (2, 2), queue=queue).get(timeout=10) == 4  # the pool works on
    assert len(lines(path)) == 3 and proc.proc.poll() is None  # no endless loop


@pytest.mark.timeout(30)
def test_f12_poison_messages_are_buried_with_the_reason(app: App, queue: str, workers: StartWorker,
                                                        tmp_path: Path) -> None:
    settings = tmp_path / "bury-unknown-at-once.env"
    settings.write_text("JOBKIT_UNKNOWN_TASK_RELEASES=0\n")  # no other worker to wait for
    proc = workers(app, queue, "--env-file", str(settings))
    app.broker.put(b"\xff not json", queue=queue, priority=0, delay_s=0, ttr_s=5)
    unknown = Envelope(id="poisonunknown1", task="no_such_task", queue=queue)
    app.broker.put(unknown.encode(), queue=queue, priority=0, delay_s=0, ttr_s=5)
    eventually(lambda: app.broker.stats()[queue]["buried"] == 2, what="both buried")
    with pytest.raises(JobFailed) as caught:
        app.job("poisonunknown1").get(timeout=5)
    assert caught.value.error["type"] == "PoisonMessage"
    assert "unknown task 'no_such_task'" in caught.value.error["message"]
    assert app.send("add", (1, 1), queue=queue).get(timeout=10) == 2  # keeps running
    assert proc.proc.poll() is None
    assert "burying message" in proc.output() and "unknown task" in proc.output()


# -- expiry ---------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_f13_mongo_has_a_ttl_index_on_expires_at(beanstalk: Beanstalkd, mongo: MongoServer) -> None:
    app = make_app(beanstalk.url, mongo.url("f13"))
    job = app.send("add", (1, 1))
    app.backend.finish(job.id, "succeeded", result=2)
    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(mongo.url("f13"))
    try:
        jobs = client["f13"]["jobs"]
        ttl = [ix for ix in jobs.index_information().values() if ix["key"] == [("expires_at", 1)]]
        assert len(ttl) == 1 and ttl[0]["expireAfterSeconds"] == 0
        doc = jobs.find_one({"_id": job.id})
        assert doc is not None and doc["expires_at"]
        if mongo.kind == "mongod":  # nx-27017 keeps dates written by $set as text
            assert hasattr(doc["expires_at"], "tzinfo")  # a BSON date, as the TTL monitor needs
    finally:
        client.close()
        app.close()


@pytest.mark.timeout(30)
def test_f13_sqlite_worker_prunes_expired_rows(app: App, queue: str, workers: StartWorker,
                                               tmp_path: Path) -> None:
    workers(app, queue, "--result-ttl", "1", "--prune-every", "0.5")
    kept = app.send("add", (0, 0), queue="elsewhere")  # never run: no expiry
    jobs = [app.send("add", (i, i), queue=queue) for i in range(5)]
    assert [job.get(timeout=10) for job in jobs] == [0, 2, 4, 6, 8]
    db = str(tmp_path / "jobs.db")

    def ids() -> set[str]:
        with sqlite3.connect(db) as conn:
            return {row[0] for row in conn.execute("SELECT id FROM jobs")}

    eventually(lambda: ids() == {kept.id}, timeout_s=10, what="expired rows pruned")
