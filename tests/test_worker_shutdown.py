"""Shutdown closes no connection while another thread can still use it."""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from jobkit import App, JobState
from jobkit.backends.sqlite import SQLiteBackend
from jobkit.errors import BackendError
from jobkit.worker import Worker
from tests import taskapp


class SlowPrune(SQLiteBackend):
    """A SQLite backend whose prune takes a while, and that notes who is alive when it is closed."""

    def __init__(self, url: str) -> None:
        super().__init__(url, result_ttl=3600)
        self.pruning = threading.Event()
        self.heartbeat: threading.Thread | None = None
        self.heartbeat_alive_at_close: list[bool] = []

    def prune(self, now: float | None = None) -> int:
        self.pruning.set()
        threading.Event().wait(1.0)  # busy in prune while the worker is told to stop
        return super().prune(now)

    def close(self) -> None:
        if self.heartbeat is not None:
            self.heartbeat_alive_at_close.append(self.heartbeat.is_alive())
        super().close()


def test_shutdown_joins_the_heartbeat_before_the_backend_is_closed(tmp_path: Path) -> None:
    backend = SlowPrune(f"sqlite:///{tmp_path / 'jobs.db'}")
    app = App("shutdown", broker="memory://", backend=backend)
    app.tasks = taskapp.app.tasks
    worker = Worker(app, concurrency=2, grace_s=1)
    backend.heartbeat = worker.heartbeat.thread
    worker.start()
    assert backend.pruning.wait(10)  # the first prune runs at start, in the heartbeat thread
    worker.shutdown(graceful=False)
    app.close()
    assert backend.heartbeat_alive_at_close == [False]
    assert not any(slot.thread.is_alive() for slot in worker.slots)


def test_join_waits_for_a_slot_storing_an_outcome(tmp_path: Path) -> None:
    """A slot busy storing when the stop comes is joined, not left using a closed backend."""
    storing, go_on = threading.Event(), threading.Event()
    backend = SQLiteBackend(f"sqlite:///{tmp_path / 'jobs.db'}", result_ttl=3600)
    finish = backend.finish

    def slow_finish(*args: Any, **kwargs: Any) -> bool:
        storing.set()
        go_on.wait(10)
        return finish(*args, **kwargs)

    backend.finish = slow_finish  # type: ignore[method-assign]
    app = App("shutdown", broker="memory://", backend=backend)
    app.tasks = taskapp.app.tasks
    worker = Worker(app, concurrency=1, grace_s=0)
    worker.start()
    job = app.send("add", (1, 2))
    assert storing.wait(10)
    stopper = threading.Thread(target=worker.shutdown, kwargs={"graceful": False})
    stopper.start()
    stopper.join(0.5)
    assert stopper.is_alive()  # join waits for the slot rather than closing under it
    go_on.set()
    stopper.join(10)
    assert not stopper.is_alive() and not worker.slots[0].thread.is_alive()
    assert job.status().state is JobState.SUCCEEDED
    app.close()


def test_sqlite_close_waits_for_a_statement_running_in_another_thread(tmp_path: Path) -> None:
    backend = SQLiteBackend(f"sqlite:///{tmp_path / 'jobs.db'}", result_ttl=3600)
    running, results = threading.Event(), []

    def nap() -> int:
        running.set()
        threading.Event().wait(0.5)
        return 1

    def query() -> None:
        try:
            with backend._db() as db:
                db.conn.create_function("nap", 0, nap)
                results.append(db.execute("SELECT nap()").fetchone()[0])
        except BackendError as exc:  # a clean error is fine too; a crash is not
            results.append(exc)

    user = threading.Thread(target=query)
    user.start()
    assert running.wait(10)
    backend.close()  # waits until the statement is done, then closes
    closed_while_running = user.is_alive()
    user.join(10)
    assert results == [1] and not closed_while_running
    assert backend.counts() == {}  # used again after close: it reconnects
    backend.close()
