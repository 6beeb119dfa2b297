"""current_job() inside a task: id, attempt, progress (coalesced, seen from outside), touch."""
from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import falcon.testing
import pytest

from jobkit import App, JobContext, current_job
from jobkit.api import create_app
from jobkit.config import Settings
from jobkit.backends.memory import MemoryBackend
from jobkit.errors import NotInJob, PayloadError
from jobkit.runner import CANCEL_CHECK_S
from jobkit.worker import Worker
from tests import jobtasks
from tests.conftest import unique
from tests.helpers import eventually
from tests.processes import JobkitProcess, clean_env


def copy_tasks(broker: str, backend: Any, queue: str) -> App:
    """The tasks of tests.jobtasks in a new app, routed to ``queue``."""
    app = App("context-tests", broker=broker, backend=backend)
    for name, task in jobtasks.app.tasks.items():
        app.task(name=name, **{**task.options.__dict__, "queue": queue})(task.fn)
    return app


@pytest.fixture
def app(broker_url: str, sqlite_url: str, queue: str) -> Iterator[App]:
    app = copy_tasks(broker_url, sqlite_url, queue)
    yield app
    app.close()


@pytest.fixture
def worker(app: App) -> Iterator[Worker]:
    worker = Worker(app, concurrency=2, grace_s=2, cancel_grace_s=1)
    worker.start()
    yield worker
    worker.shutdown(graceful=False)


def test_outside_a_task_current_job_raises_a_jobkit_error() -> None:
    with pytest.raises(NotInJob, match="only inside a task"):
        current_job()
    with pytest.raises(NotInJob):
        jobtasks.whoami()  # a direct call runs here, outside any job
    seen: list[BaseException] = []

    def elsewhere() -> None:
        try:
            current_job()
        except NotInJob as exc:
            seen.append(exc)
    with JobContext("j", 1).running():
        thread = threading.Thread(target=elsewhere)  # a thread of its own is outside the job
        thread.start()
        thread.join()
        assert current_job().id == "j"
    assert len(seen) == 1


def test_the_context_follows_each_asyncio_task_apart() -> None:
    async def both() -> list[str]:
        async def one(ctx: JobContext) -> str:
            with ctx.running():
                await asyncio.sleep(0.01)
                return current_job().id
        return list(await asyncio.gather(one(JobContext("a", 1)), one(JobContext("b", 1))))
    assert asyncio.run(both()) == ["a", "b"]


@pytest.mark.parametrize("fraction", [-0.1, 1.5, float("nan"), True, "half", None])
def test_progress_takes_a_fraction_from_0_to_1(fraction: Any) -> None:
    with pytest.raises(PayloadError, match="from 0 to 1"):
        JobContext("j", 1).progress(fraction)


def test_progress_meta_must_be_json() -> None:
    ctx = JobContext("j", 1)
    with pytest.raises(PayloadError):
        ctx.progress(0.5, when={1, 2})
    ctx.progress(0.5, ok=[1, "two", None])
    assert ctx.last_progress == {"fraction": 0.5, "meta": {"ok": [1, "two", None]}}


def test_a_task_knows_its_job_id_and_attempt(app: App, worker: Worker) -> None:
    job = app.tasks["whoami"].delay()
    assert job.get(timeout=10) == {"id": job.id, "attempt": 1, "cancelled": False}
    retried = app.tasks["attempt_until"].delay(3)
    assert retried.get(timeout=20) == 3
    assert retried.status().attempts == 3


def test_progress_is_seen_while_the_job_runs_and_its_last_value_after(
        app: App, worker: Worker, tmp_path: Path) -> None:
    flag = tmp_path / "go"
    job = app.tasks["reports_progress"].delay(str(tmp_path / "log"), str(flag))
    status = eventually(lambda: (s := job.status()).progress and s, what="progress")
    assert status.state.value == "running"
    assert status.progress == {"fraction": 0.4, "meta": {"step": "resize", "done": 4, "of": 10}}
    flag.touch()
    assert job.get(timeout=10) == "ok"
    assert job.status().progress == {"fraction": 1.0, "meta": {"step": "done"}}


class CountingBackend(MemoryBackend):
    """A memory backend that counts progress writes."""

    def __init__(self) -> None:
        super().__init__()
        self.progress_writes = 0

    def progress(self, job_id: str, fraction: float, meta: dict[str, Any]) -> bool:
        self.progress_writes += 1
        return super().progress(job_id, fraction, meta)


def test_a_tight_progress_loop_is_coalesced(queue: str) -> None:
    backend = CountingBackend()
    app = copy_tasks("memory://", backend, queue)
    worker = Worker(app, concurrency=1, grace_s=1)
    worker.start()
    try:
        steps = 200_000
        job = app.tasks["tight_progress"].delay(steps)
        assert job.get(timeout=60) == steps
        status = job.status()
    finally:
        worker.shutdown(graceful=False)
    ran_s = status.record["finished_at"] - status.record["started_at"]
    # at most one write per heartbeat look (every CANCEL_CHECK_S) and one at the end
    assert 1 <= backend.progress_writes <= ran_s / CANCEL_CHECK_S + 2
    assert status.progress == {"fraction": 1.0, "meta": {"i": steps}}


def test_touch_asks_the_heartbeat_once() -> None:
    ctx, woken = JobContext("j", 1), []
    ctx.wake_with(lambda: woken.append(1))
    assert ctx.take_touch() is False
    ctx.touch()
    assert woken == [1]
    assert ctx.take_touch() is True and ctx.take_touch() is False


def test_touch_keeps_a_job_past_its_ttr(app: App, worker: Worker, tmp_path: Path) -> None:
    """ttr=2 and a run of 4 s: the touches (on request and the heartbeat's) keep it with its worker."""
    log = tmp_path / "log"
    job = app.tasks["touches"].delay(str(log), 4.0)
    assert job.get(timeout=20) == "touched"
    assert len(jobtasks.lines(log)) == 1  # it ran once


def test_progress_seen_from_another_process_while_the_job_runs(beanstalkd: Any, tmp_path: Path) -> None:
    """A worker process runs the job; this process reads its progress from the shared backend."""
    backend_url = f"sqlite:///{tmp_path / 'jobs.db'}"
    queue = unique("q")
    env = clean_env(JOBKIT_BROKER_URL=beanstalkd.url, JOBKIT_BACKEND_URL=backend_url)
    proc = JobkitProcess("worker", "-A", "tests.jobtasks:app", "-c", "1", "-q", queue,
                         env=env, log=tmp_path / "worker.log")
    app = copy_tasks(beanstalkd.url, backend_url, queue)
    try:
        flag = tmp_path / "go"
        job = app.tasks["reports_progress"].delay(str(tmp_path / "log"), str(flag))
        status = eventually(lambda: (s := job.status()).progress and s, timeout_s=30, what="progress")
        assert status.state.value == "running"
        assert status.progress == {"fraction": 0.4, "meta": {"step": "resize", "done": 4, "of": 10}}
        assert jobtasks.lines(tmp_path / "log") == [f"start {proc.pid}"]  # not this process
        assert proc.pid != os.getpid()
        flag.touch()
        assert job.get(timeout=20) == "ok"
    finally:
        proc.stop()
        app.close()


def test_the_http_api_shows_progress_and_cancels_a_running_job(queue: str, tmp_path: Path) -> None:
    app = copy_tasks("memory://", "memory://", queue)
    client = falcon.testing.TestClient(create_app(Settings(broker_url="memory://", backend_url="memory://"),
                                                  app))
    worker = Worker(app, concurrency=1, grace_s=1, cancel_grace_s=1)
    worker.start()
    try:
        log = tmp_path / "log"
        job = app.tasks["reports_progress"].delay(str(log), str(tmp_path / "never"))
        body = eventually(lambda: (b := client.simulate_get(f"/v1/jobs/{job.id}").json)["progress"] and b,
                          what="progress over HTTP")
        assert body["state"] == "running"
        assert body["progress"] == {"fraction": 0.4, "meta": {"step": "resize", "done": 4, "of": 10}}
        cancelled = client.simulate_delete(f"/v1/jobs/{job.id}")
        assert cancelled.status_code == 200 and cancelled.json["state"] == "cancelled"
        eventually(lambda: not any(slot.attempt for slot in worker.holders()), what="the job to stop")
        assert client.simulate_get(f"/v1/jobs/{job.id}").json["state"] == "cancelled"
    finally:
        worker.shutdown(graceful=False)
        app.close()
