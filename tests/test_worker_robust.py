"""Nothing a task raises takes a worker slot down, in the thread pool and in the process pool."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jobkit import App, JobState
from jobkit.embedded import Beanstalkd
from jobkit.errors import JobFailed
from jobkit.runner import Runner
from jobkit.worker import Worker
from tests import taskapp
from tests.helpers import eventually
from tests.processes import JobkitProcess

EXPECTED = {  # kind -> (type, message)
    "unprintable": ("Unprintable", "<unprintable Unprintable: __str__ raised RuntimeError>"),
    "bad_notes": ("BadNotes", "notes"),
    "surrogate": ("ValueError", "lone \\ud800 and NUL \\x00"),
    "system_exit": ("SystemExit", "3"),
    "keyboard_interrupt": ("KeyboardInterrupt", ""),
    "base_exception": ("BaseException", "base"),
}


def assert_failed_and_slot_alive(app: App, queue: str, kind: str) -> None:
    """A job raising ``kind`` ends failed with what could be described, and the slot runs the next job."""
    job = app.send("raises_oddly", (kind,), queue=queue)
    with pytest.raises(JobFailed) as caught:
        job.get(timeout=20)
    error = caught.value.error
    assert (error["type"], error["message"]) == EXPECTED[kind]
    assert "Traceback (most recent call last)" in error["traceback"]
    assert job.status().state is JobState.FAILED
    assert app.send("add", (2, 3), queue=queue).get(timeout=20) == 5  # the one slot goes on


@pytest.fixture
def app(broker_url: str, sqlite_url: str, queue: str) -> Iterator[App]:
    app = App("robust", broker=broker_url, backend=sqlite_url)
    for name, task in taskapp.app.tasks.items():
        app.task(name=name, **{**task.options.__dict__, "queue": queue})(task.fn)
    yield app
    app.close()


@pytest.mark.parametrize("kind", sorted(EXPECTED))
def test_thread_pool_slot_survives_any_exception(app: App, queue: str, kind: str) -> None:
    worker = Worker(app, concurrency=1, grace_s=1)
    worker.start()
    try:
        assert_failed_and_slot_alive(app, queue, kind)
        assert all(slot.thread.is_alive() for slot in worker.live_slots())
    finally:
        worker.shutdown(graceful=False)


def test_an_unexpected_error_in_the_slot_is_logged_and_the_job_comes_back(
        app: App, queue: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    settle = Runner.settle
    failures = []

    def settle_fails_once(self: Runner, *args: Any, **kwargs: Any) -> Any:
        if not failures:
            failures.append(1)
            raise RuntimeError("a bug in the worker")
        return settle(self, *args, **kwargs)

    monkeypatch.setattr(Runner, "settle", settle_fails_once)
    worker = Worker(app, concurrency=1, grace_s=1)
    worker.start()
    try:
        job = app.send("add", (1, 2), queue=queue)
        assert job.get(timeout=20) == 3  # back to ready when the slot dropped its connection; run again
        assert failures == [1] and job.status().attempts == 2
        assert "unexpected error; its jobs go back to the broker" in caplog.text
        assert app.send("add", (2, 2), queue=queue).get(timeout=10) == 4
    finally:
        worker.shutdown(graceful=False)


StartWorker = Callable[..., JobkitProcess]


@pytest.fixture
def process_app(beanstalkd: Beanstalkd, sqlite_url: str) -> Iterator[App]:
    app = App("robust-e2e", broker=beanstalkd.url, backend=sqlite_url)
    app.tasks = taskapp.app.tasks
    yield app
    app.close()


@pytest.mark.e2e
def test_process_pool_slot_survives_any_exception(process_app: App, queue: str, tmp_path: Path) -> None:
    app = process_app
    log = tmp_path / "worker.log"
    proc = JobkitProcess("worker", "-A", "tests.taskapp:app", "--broker", app.broker.url, "--backend",
                         app.backend.url, "-q", queue, "-c", "1", "--pool", "process", "--grace", "1",
                         log=log)
    try:
        eventually(lambda: proc.proc.poll() is None and
                   app.broker.stats().get(queue, {}).get("waiting", 0) >= 1,
                   timeout_s=20, what=f"worker waiting on {queue} ({log})")
        for kind in sorted(EXPECTED):
            assert_failed_and_slot_alive(app, queue, kind)
        assert proc.proc.poll() is None
        assert "exited with" not in proc.output()  # the child was never replaced
    finally:
        proc.stop()
