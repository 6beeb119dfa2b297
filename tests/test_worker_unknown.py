"""A worker that does not know a task gives its jobs back for a while before burying them."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from jobkit import App, Job, JobState
from jobkit.backends import backend_from_url
from jobkit.brokers import broker_from_url
from jobkit.brokers.base import PEEK, STATS
from jobkit.embedded import Beanstalkd
from jobkit.errors import JobFailed
from jobkit.worker import Worker
from tests import taskapp
from tests.helpers import eventually
from tests.processes import JobkitProcess, clean_env


@pytest.fixture
def apps(broker_url: str, sqlite_url: str, queue: str) -> Iterator[tuple[App, App]]:
    """Two apps on one broker and backend: one without ``add`` (as ``jobkit up``'s), one with it."""
    broker, backend = broker_from_url(broker_url), backend_from_url(sqlite_url, result_ttl=3600)
    lacking, knowing = App("lacking", broker=broker, backend=backend), App("knowing", broker=broker,
                                                                            backend=backend)
    lacking.task(name="boom", queue=queue)(taskapp.boom.fn)
    knowing.task(name="add", queue=queue)(taskapp.add.fn)
    yield lacking, knowing
    broker.close()
    backend.close()


def releases(app: App, job: Job, caplog: pytest.LogCaptureFixture | None = None) -> int:
    """The broker's count of the job's releases; where it cannot peek, the worker's release logs."""
    if not app.broker.can(PEEK):
        assert caplog is not None
        return sum(f"job {job.id}: no task" in message for message in caplog.messages)
    peeked = app.broker.peek(job.status().record["broker_id"])
    return int(peeked.stats["releases"]) if peeked is not None else -1


def test_a_worker_that_lacks_the_task_leaves_it_to_one_that_knows_it(
        apps: tuple[App, App], caplog: pytest.LogCaptureFixture) -> None:
    lacking, knowing = apps
    first = Worker(lacking, concurrency=1, unknown_task_releases=30, unknown_task_delay_s=1)
    first.start()
    second = Worker(knowing, concurrency=1)
    try:
        job = knowing.send("add", (2, 3))
        eventually(lambda: releases(knowing, job, caplog) >= 1, what="released by the worker that lacks it")
        assert job.status().state is JobState.QUEUED  # neither failed nor buried
        if knowing.broker.can(STATS):
            assert knowing.broker.stats()[job.status().record["queue"]]["buried"] == 0
        second.start()  # started later, beside the first
        assert job.get(timeout=30) == 5
        assert job.status().attempts == 1  # never claimed by the worker that lacks it
    finally:
        first.shutdown(graceful=False)
        second.shutdown(graceful=False)


def test_a_task_no_worker_knows_is_buried_with_the_reason_after_the_limit(
        apps: tuple[App, App], queue: str, caplog: pytest.LogCaptureFixture) -> None:
    lacking, knowing = apps
    worker = Worker(lacking, concurrency=1, unknown_task_releases=2, unknown_task_delay_s=1)
    worker.start()
    try:
        job = knowing.send("add", (2, 3))  # add has max_retries 0: buried after 0 + 2 releases
        eventually(lambda: releases(knowing, job, caplog) == 1, what="the first release")
        assert job.status().state is JobState.QUEUED
        with pytest.raises(JobFailed) as caught:
            job.get(timeout=20)
        assert caught.value.error["type"] == "PoisonMessage"
        assert caught.value.error["message"] == "unknown task 'add'"
        if knowing.broker.can(PEEK):  # the bury follows the stored outcome: wait for it
            buried = eventually(lambda: knowing.broker.peek_buried(queue), what="the job buried")
            assert buried.stats["releases"] == 2
        else:
            assert releases(knowing, job, caplog) == 2
    finally:
        worker.shutdown(graceful=False)


def test_a_limit_of_zero_buries_at_first_sight(apps: tuple[App, App], queue: str,
                                               caplog: pytest.LogCaptureFixture) -> None:
    lacking, knowing = apps
    worker = Worker(lacking, concurrency=1, unknown_task_releases=0)
    worker.start()
    try:
        job = knowing.send("add", (2, 3))
        with pytest.raises(JobFailed):
            job.get(timeout=10)
        if knowing.broker.can(PEEK):  # the bury follows the stored outcome: wait for it
            buried = eventually(lambda: knowing.broker.peek_buried(queue), what="the job buried")
            assert buried.stats["releases"] == 0
        assert releases(knowing, job, caplog) == 0
    finally:
        worker.shutdown(graceful=False)


@pytest.mark.e2e
def test_the_readme_snippet_while_up_runs(beanstalkd: Beanstalkd, sqlite_url: str, queue: str,
                                          tmp_path: Path) -> None:
    """``up``'s workers (the demo app) get an ``add`` job; the user's own worker, started later, runs it."""
    app = App("readme", broker=beanstalkd.url, backend=sqlite_url)
    app.tasks = taskapp.app.tasks
    env = clean_env(JOBKIT_UNKNOWN_TASK_DELAY="1")
    started: list[JobkitProcess] = []

    def worker(app_spec: str) -> None:
        waiting = app.broker.stats().get(queue, {}).get("waiting", 0)
        log = tmp_path / f"worker-{len(started)}.log"
        started.append(JobkitProcess("worker", "-A", app_spec, "--broker", beanstalkd.url, "--backend",
                                     sqlite_url, "-q", queue, "--pool", "process", "-c", "2",
                                     env=env, log=log))
        eventually(lambda: app.broker.stats().get(queue, {}).get("waiting", 0) >= waiting + 2,
                   timeout_s=20, what=f"worker waiting ({log})")

    try:
        worker("jobkit.demo:app")
        job = app.send("add", (2, 3), queue=queue)
        eventually(lambda: releases(app, job) >= 1, what="released by up's worker")
        assert job.status().state is JobState.QUEUED
        worker("tests.taskapp:app")
        assert job.get(timeout=60) == 5
        assert "no task 'add' in this worker" in started[0].output()
    finally:
        for proc in started:
            proc.stop()
        app.close()
