"""async def tasks: in the asyncio pool and in the thread pool, with limits, retries and cancellation."""
from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobkit import App, AsyncTask, JobState, Task
from jobkit.asyncpool import AsyncWorker
from jobkit.errors import JobFailed
from jobkit.worker import Worker
from tests import jobtasks
from tests.helpers import eventually
from tests.test_context import copy_tasks


@pytest.fixture
def app(broker_url: str, sqlite_url: str, queue: str) -> Iterator[App]:
    app = copy_tasks(broker_url, sqlite_url, queue)
    yield app
    app.close()


@pytest.fixture(params=["asyncio", "thread"])
def worker(request: pytest.FixtureRequest, app: App) -> Iterator[Worker]:
    """An asyncio pool of 8, and a thread pool of 2 (a loop per job)."""
    kind, size = (AsyncWorker, 8) if request.param == "asyncio" else (Worker, 2)
    worker = kind(app, concurrency=size, grace_s=2, cancel_grace_s=1)
    worker.start()
    yield worker
    worker.shutdown(graceful=False)


def test_an_async_def_task_is_an_async_task_and_a_direct_call_is_its_coroutine() -> None:
    assert isinstance(jobtasks.async_whoami, AsyncTask) and jobtasks.async_whoami.is_async
    assert type(jobtasks.sync_in_any_pool) is Task and not jobtasks.sync_in_any_pool.is_async
    coroutine = jobtasks.async_sleep(0)
    assert asyncio.iscoroutine(coroutine)
    assert asyncio.run(coroutine) == 0


def test_async_tasks_run_as_their_job(app: App, worker: Worker) -> None:
    job = app.tasks["async_whoami"].delay()
    result = job.get(timeout=10)
    assert result["id"] == job.id and result["attempt"] == 1
    assert job.status().progress == {"fraction": 1.0, "meta": {"where": "async"}}


def test_sync_tasks_run_in_every_pool(app: App, worker: Worker) -> None:
    jobs = [app.tasks["sync_in_any_pool"].delay(i) for i in range(20)]
    assert [job.get(timeout=10) for job in jobs] == [2 * i for i in range(20)]


def test_an_async_task_stops_at_its_time_limit_and_is_retried(
        app: App, worker: Worker, tmp_path: Path) -> None:
    log = tmp_path / "log"
    job = app.tasks["async_overruns"].delay(str(log))
    with pytest.raises(JobFailed) as caught:
        job.get(timeout=20)
    assert caught.value.error["type"] == "TimeLimitExceeded"
    assert "time limit of 1 s" in caught.value.error["message"]
    assert job.status().attempts == 2 and len(jobtasks.lines(log)) == 2  # max_retries=1


def test_an_async_task_is_retried_until_it_succeeds(app: App, worker: Worker, tmp_path: Path) -> None:
    log = tmp_path / "log"
    assert app.tasks["async_flaky"].delay(str(log), 2).get(timeout=20) == 3
    assert len(jobtasks.lines(log)) == 3


def test_cancelling_an_async_job_cancels_its_asyncio_task(app: App, worker: Worker, tmp_path: Path) -> None:
    log = tmp_path / "log"
    job = app.tasks["async_cooperative"].delay(str(log))
    eventually(lambda: jobtasks.lines(log), what="the job to start")
    job.cancel()
    assert eventually(lambda: "cancelled; flag True" in jobtasks.lines(log), what="CancelledError")
    assert job.status().state is JobState.CANCELLED
    assert app.tasks["sync_in_any_pool"].delay(4).get(timeout=10) == 8  # the worker goes on


def test_an_async_job_that_swallows_its_cancellation_is_stopped_by_force(
        app: App, worker: Worker, tmp_path: Path) -> None:
    log = tmp_path / "log"
    job = app.tasks["async_ignores_cancel"].delay(str(log))
    eventually(lambda: jobtasks.lines(log), what="the job to start")
    job.cancel()
    eventually(lambda: "ignored a cancellation" in jobtasks.lines(log), what="the cancellation")
    eventually(lambda: not any(h.attempt for h in worker.holders()), what="the job to be let go")
    status = job.status()
    assert status.state is JobState.CANCELLED and status.attempts == 1
    assert app.tasks["sync_in_any_pool"].delay(5).get(timeout=10) == 10


def test_one_async_task_awaits_a_thousand_things_at_once(app: App, worker: Worker) -> None:
    assert app.tasks["gather_sleeps"].delay(1000, 0.05).get(timeout=30) == 1000


def test_the_asyncio_pool_runs_200_jobs_at_once_on_one_thread(app: App) -> None:
    jobtasks.RENDEZVOUS.__init__()  # type: ignore[misc]  # a fresh meeting for this test
    worker = AsyncWorker(app, concurrency=200, grace_s=2)
    worker.start()
    try:
        jobs = [app.tasks["meet"].delay(200) for _ in range(200)]
        assert all(job.get(timeout=60) >= 200 for job in jobs)  # each waited for all 200
    finally:
        worker.shutdown(graceful=False)
    assert len(jobtasks.RENDEZVOUS.threads) == 1
    assert threading.get_ident() not in jobtasks.RENDEZVOUS.threads


def test_the_asyncio_pool_gives_back_running_jobs_at_shutdown(app: App, tmp_path: Path) -> None:
    worker = AsyncWorker(app, concurrency=4, grace_s=0.2)
    worker.start()
    log = tmp_path / "log"
    job = app.tasks["async_ignores_cancel"].delay(str(log))
    eventually(lambda: jobtasks.lines(log), what="the job to start")
    worker.shutdown()
    assert job.status().state is JobState.QUEUED  # released for another worker, attempt not counted
    assert job.status().attempts == 0
    again = AsyncWorker(app, concurrency=4, grace_s=0.2)
    again.start()
    try:
        eventually(lambda: len(jobtasks.lines(log)) >= 2 and job.status().state is JobState.RUNNING,
                   what="another run")
    finally:
        again.shutdown(graceful=False)
