"""Live workers: each worker process writes a heartbeat record, listed while fresh, gone at a clean stop."""
from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from jobkit import App
from jobkit.embedded import Beanstalkd
from jobkit.worker import Worker
from tests.conftest import unique
from tests.faultkit import StartWorker, make_app, worker_name
from tests.helpers import eventually

pytestmark = pytest.mark.e2e


@pytest.fixture
def app(beanstalkd: Beanstalkd, sqlite_url: str) -> Iterator[App]:
    jobkit_app = make_app(beanstalkd.url, sqlite_url)
    yield jobkit_app
    jobkit_app.close()


def test_thread_and_process_workers_are_listed_then_leave_when_stopped(
        app: App, workers: StartWorker) -> None:
    queue = unique("q")
    threads = workers(app, queue, concurrency=3)
    pool = workers(app, queue, concurrency=2, pool="process")
    listed = eventually(lambda: len(app.workers()) == 3 and app.workers(), what="3 live workers")
    by_name = {w["name"]: w for w in listed}
    alone = by_name[worker_name(threads)]
    assert (alone["concurrency"], alone["queues"], alone["pool"], alone["busy"]) == (3, [queue], None, 0)
    children = [w for w in listed if w["pool"] == worker_name(pool)]
    assert len(children) == 2 and all(w["concurrency"] == 1 and w["pid"] != pool.pid for w in children)
    threads.stop()
    pool.signal(signal.SIGTERM)
    pool.wait(15)
    assert app.workers() == []  # a clean stop removes the record at once


def counts(worker: Worker) -> tuple[int, int, int]:
    """The worker's (busy slots, jobs done, jobs failed) as its record shows them."""
    record = worker.record()
    return record["busy"], record["jobs_done"], record["jobs_failed"]


def test_a_worker_counts_its_jobs_and_shows_what_it_runs(app: App) -> None:
    queue = unique("q")
    worker = Worker(app, queues=[queue], concurrency=2)
    worker.start()
    try:
        app.send("add", [1, 2], queue=queue).get(timeout=10)
        boom = app.send("boom", queue=queue)
        eventually(lambda: app.status(boom.id).state.finished, what="the failing job failed")
        slow = app.send("sleepy", [5], queue=queue)  # after it: two slots could run both at once
        eventually(lambda: slow.id in worker.record()["jobs"], what="the slow job running")
        eventually(lambda: counts(worker) == (1, 2, 1), timeout_s=3,  # a slot counts just after storing
                   what="busy 1, done 2, failed 1")
        record = worker.record()
        assert record["name"] == f"{os.uname().nodename}:{os.getpid()}"
    finally:
        worker.shutdown(graceful=False)
    assert app.workers() == []
