"""Cancelling jobs: running ones in each pool (cooperative, or stopped by force), and waiting ones."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobkit import App, JobState
from jobkit.brokers.base import DELETE
from jobkit.errors import InvalidState, JobCancelled
from jobkit.worker import Worker
from tests import jobtasks
from tests.conftest import unique
from tests.helpers import eventually
from tests.processes import JobkitProcess, clean_env
from tests.test_context import copy_tasks

#: per pool: the task that stops when cancelled, what it writes then, and the task that never stops
TASKS = {
    "thread": ("cooperative", "saw cancelled", "sleeps_forever"),
    "process": ("cooperative", "saw cancelled", "sleeps_forever"),
    "asyncio": ("async_cooperative", "cancelled; flag True", "async_ignores_cancel"),
}


class Setup:
    """A worker process of one pool on a queue of its own, and an app to send to it."""

    def __init__(self, beanstalk_url: str, tmp_path: Path, pool: str) -> None:
        self.queue = unique("q")
        backend_url = f"sqlite:///{tmp_path / 'jobs.db'}"
        env = clean_env(JOBKIT_BROKER_URL=beanstalk_url, JOBKIT_BACKEND_URL=backend_url)
        self.worker = JobkitProcess("worker", "-A", "tests.jobtasks:app", "--pool", pool, "-c", "1",
                                    "--cancel-grace", "1", "-q", self.queue, env=env,
                                    log=tmp_path / "worker.log")
        self.app = copy_tasks(beanstalk_url, backend_url, self.queue)

    def broker_counts(self) -> dict[str, int]:
        counts: dict[str, int] = self.app.stats()["queues"].get(self.queue, {})
        return {k: counts.get(k, 0) for k in ("ready", "reserved", "delayed", "buried")}

    def close(self) -> None:
        self.worker.stop()
        self.app.close()


@pytest.fixture(params=sorted(TASKS))
def setup(request: pytest.FixtureRequest, beanstalkd: Any, tmp_path: Path) -> Iterator[Setup]:
    setup = Setup(beanstalkd.url, tmp_path, request.param)
    setup.pool = request.param  # type: ignore[attr-defined]
    yield setup
    setup.close()


def started(log: Path) -> int:
    """The pid the job's first run started in, once it started."""
    line = eventually(lambda: jobtasks.lines(log), timeout_s=30, what="the job to start")[0]
    return int(line.split()[1])


def assert_cancelled_for_good(setup: Setup, job_id: str, log: Path) -> None:
    status = setup.app.status(job_id)
    assert status.state is JobState.CANCELLED and status.attempts == 1
    eventually(lambda: setup.broker_counts() == {"ready": 0, "reserved": 0, "delayed": 0, "buried": 0},
               what="the message deleted")
    assert sum(line.startswith("start") for line in jobtasks.lines(log)) == 1  # never run again


def test_a_cooperative_job_stops_when_cancelled(setup: Setup, tmp_path: Path) -> None:
    name, saw, _ = TASKS[setup.pool]  # type: ignore[attr-defined]
    log = tmp_path / "log"
    job = setup.app.tasks[name].delay(str(log))
    pid = started(log)
    assert job.cancel().state is JobState.CANCELLED
    eventually(lambda: saw in jobtasks.lines(log), what="the task to see its cancellation")
    with pytest.raises(JobCancelled):
        job.get(timeout=1)
    assert_cancelled_for_good(setup, job.id, log)
    assert setup.app.tasks["pid"].delay().get(timeout=30) == pid  # the same process goes on


def test_a_job_that_never_stops_is_stopped_by_force(setup: Setup, tmp_path: Path) -> None:
    _, _, name = TASKS[setup.pool]  # type: ignore[attr-defined]
    log = tmp_path / "log"
    job = setup.app.tasks[name].delay(str(log))
    pid = started(log)
    job.cancel()
    next_pid = setup.app.tasks["pid"].delay().get(timeout=30)  # -c 1: only once the first is let go
    if setup.pool == "process":
        assert next_pid != pid  # the child was replaced
    else:
        assert next_pid == pid
    assert_cancelled_for_good(setup, job.id, log)
    assert "went on after its cancellation" in setup.worker.output()


# -- waiting jobs ------------------------------------------------------------


@pytest.fixture
def app(broker_url: str, sqlite_url: str, queue: str) -> Iterator[App]:
    app = copy_tasks(broker_url, sqlite_url, queue)
    yield app
    app.close()


def counts(app: App, queue: str) -> dict[str, int]:
    found: dict[str, int] = app.stats()["queues"].get(queue, {})
    return {k: found.get(k, 0) for k in ("ready", "reserved", "delayed", "buried")}


NOTHING = {"ready": 0, "reserved": 0, "delayed": 0, "buried": 0}


def assert_removed(app: App, queue: str, job_id: str) -> None:
    """The job is cancelled, and its message gone where the broker can delete one by id
    (elsewhere the worker that gets it drops it unrun: see the last test)."""
    assert app.status(job_id).state is JobState.CANCELLED
    if app.broker.can(DELETE):
        assert counts(app, queue) == NOTHING


def test_cancelling_a_queued_job_removes_it(app: App, queue: str) -> None:
    job = app.tasks["pid"].delay()
    assert counts(app, queue)["ready"] == 1
    assert job.cancel().state is JobState.CANCELLED
    assert_removed(app, queue, job.id)
    with pytest.raises(InvalidState):
        job.cancel()


def test_cancelling_a_delayed_job_removes_it(app: App, queue: str) -> None:
    job = app.tasks["pid"].apply_async(delay=3600)
    assert counts(app, queue)["delayed"] == 1
    job.cancel()
    assert_removed(app, queue, job.id)


def run_until(app: App, probe: Any) -> None:
    worker = Worker(app, concurrency=1, grace_s=1)
    worker.start()
    try:
        eventually(probe, what="the job's state")
    finally:
        worker.shutdown(graceful=False)


def test_cancelling_a_retrying_job_removes_it(app: App, queue: str, tmp_path: Path) -> None:
    app.task(name="fails_slowly", max_retries=3, retry_backoff=3600, queue=queue)(jobtasks.attempt_until)
    job = app.tasks["fails_slowly"].delay(5)
    run_until(app, lambda: job.status().state is JobState.RETRYING and counts(app, queue)["delayed"])
    job.cancel()
    assert_removed(app, queue, job.id)


def test_cancelling_a_buried_job_removes_it(app: App, queue: str) -> None:
    app.task(name="fails_once", queue=queue)(jobtasks.attempt_until)
    job = app.tasks["fails_once"].delay(5)
    run_until(app, lambda: job.status().state is JobState.FAILED and counts(app, queue)["buried"])
    job.cancel()
    assert_removed(app, queue, job.id)


def test_a_job_cancelled_before_it_starts_never_runs(app: App, queue: str, tmp_path: Path) -> None:
    log = tmp_path / "log"
    job = app.tasks["cooperative"].delay(str(log))
    job.cancel()
    run_until(app, lambda: app.tasks["pid"].delay().get(timeout=10))
    assert jobtasks.lines(log) == [] and job.status().state is JobState.CANCELLED
    assert counts(app, queue) == NOTHING
