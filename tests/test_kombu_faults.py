"""Fault tests on the Redis and RabbitMQ brokers: real worker processes, real servers, real faults.

Each test owns a private server (function scope), so it may kill and restart
it on the same data directory: Redis with its append-only file fsynced on
every write, RabbitMQ with its quorum queues' log.
"""
from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobkit import App
from jobkit.errors import BrokerUnavailable
from tests.brokerservers import RabbitServer, RedisServer
from tests.faultkit import StartWorker, lines, make_app, record_count, settled
from tests.helpers import eventually

pytestmark = pytest.mark.fault

Server = RedisServer | RabbitServer


@pytest.fixture(params=["redis", "rabbitmq"])
def server(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Server]:
    """A private server of each kind, killed at teardown."""
    workdir = tmp_path / request.param
    workdir.mkdir()
    instance: Server = RedisServer(workdir) if request.param == "redis" else RabbitServer(workdir)
    instance.start()
    yield instance
    instance.stop(kill=True)


@pytest.fixture
def app(server: Server, sqlite_url: str) -> Iterator[App]:
    """The test tasks over the private server, records in SQLite."""
    instance = make_app(server.url, sqlite_url)
    yield instance
    instance.close()


@pytest.mark.timeout(90)
def test_kill9_worker_mid_job_redelivers_it_and_keeps_one_record(
        app: App, queue: str, workers: StartWorker, tmp_path: Path) -> None:
    """Redis gives the job back when its TTR runs out, RabbitMQ when the dead worker's connection closes."""
    path, ttr = tmp_path / "runs", 2
    job = app.send("slow_first_run", (str(path), 60), queue=queue, ttr=ttr)
    victim = workers(app, queue, wait_ready=False)
    eventually(path.exists, timeout_s=20, what="the first run started")
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(5)
    workers(app, queue, wait_ready=False)
    assert job.get(timeout=ttr + 20) == 2  # it ran again, once
    assert record_count(app) == 1
    eventually(lambda: settled(app, queue), timeout_s=ttr + 10, what="nothing left in the broker")


@pytest.mark.timeout(120)
def test_broker_restart_loses_no_accepted_job(app: App, server: Server, queue: str,
                                              workers: StartWorker, tmp_path: Path) -> None:
    """Jobs accepted before the broker stopped, and after its restart, all run; workers reconnect.

    Redis is killed (-9): its AOF is fsynced on every write. RabbitMQ is
    stopped (SIGTERM): a 3.x node killed within minutes of declaring a quorum
    queue may not restart that queue (its Ra name registry is saved lazily).
    """
    path = tmp_path / "runs"
    ttr = 2  # Redis: a delete lost in the outage leaves its job reserved until its TTR runs out
    sent = [app.send("tagged", (str(path), str(i), 0.05), queue=queue, ttr=ttr) for i in range(40)]
    workers(app, queue, concurrency=2, wait_ready=False)
    eventually(lambda: len(lines(path)) >= 5, timeout_s=20, what="5 jobs started")
    server.stop(kill=isinstance(server, RedisServer))
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        app.send("add", (1, 1), queue=queue)
    assert time.monotonic() - started < 5
    server.start()  # the same port and data directory
    for i in range(40, 50):  # RabbitMQ nacks puts until the queue's Raft leader is back: a 503, retried
        sent.append(eventually(lambda i=i: app.send("tagged", (str(path), str(i), 0.01), queue=queue, ttr=ttr,
                                                    idempotency_key=f"{queue}-{i}"),
                               timeout_s=30, what=f"job {i} accepted after the restart"))
    eventually(lambda: app.backend.counts().get("succeeded") == 50, timeout_s=60,
               what="every accepted job succeeded")
    assert record_count(app) == 50
    assert {job.get(timeout=1) for job in sent} == {str(i) for i in range(50)}
    eventually(lambda: settled(app, queue), timeout_s=ttr + 10, what="nothing left in the broker")
