"""Inside a running job: :func:`current_job` and the :class:`JobContext` it returns.

A worker gives each attempt a :class:`JobContext` and makes it the current
one (a :class:`contextvars.ContextVar`) while the task runs, so it is found
from the task's thread, from a process-pool child and from an ``async def``
task on an event loop alike, and never from another job running beside it.

The context never does I/O in the task's thread: :meth:`JobContext.progress`
and :meth:`JobContext.touch` leave a note that the worker's heartbeat acts
on (progress is written at most twice a second per job, the latest value
winning, and once more when the job ends), and the heartbeat sets
:attr:`JobContext.cancelled` when it reads that the job was cancelled.
"""
from __future__ import annotations

import contextlib
import json
import math
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

from jobkit.errors import NotInJob, PayloadError
from jobkit.message import dumps

_CURRENT: ContextVar[JobContext] = ContextVar("jobkit_current_job")


def current_job() -> JobContext:
    """The job the calling task runs as.

    Raises:
        NotInJob: called outside a task run by a worker (a direct call of the
            task function, a thread the task started itself).
    """
    try:
        return _CURRENT.get()
    except LookupError:
        raise NotInJob("current_job() works only inside a task run by a jobkit worker") from None


class JobContext:
    """What a running task knows about its job, and how it talks to its worker.

    Thread-safe: the task's thread writes notes, the heartbeat takes them.

    Attributes:
        id: the job id.
        attempt: which attempt this is, 1 for the first run.
    """

    def __init__(self, job_id: str, attempt: int) -> None:
        self.id = job_id
        self.attempt = attempt
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()  # one progress write at a time, in order
        self._cancelled = False
        self._on_cancel: list[Callable[[], None]] = []
        self._progress: dict[str, Any] | None = None  # reported, not yet written
        self._last_progress: dict[str, Any] | None = None
        self._touch_wanted = False
        self._wake: Callable[[], None] | None = None

    def __repr__(self) -> str:
        return f"<JobContext {self.id} attempt {self.attempt}>"

    # -- for the task ------------------------------------------------------

    @property
    def cancelled(self) -> bool:
        """True once the worker saw that the job was cancelled: stop soon, the outcome is discarded.

        A task that goes on is stopped by force after the worker's
        ``--cancel-grace`` seconds; an ``async def`` task is also cancelled
        (``asyncio.CancelledError`` at its next ``await``).
        """
        return self._cancelled

    @property
    def last_progress(self) -> dict[str, Any] | None:
        """The latest progress reported, ``{"fraction", "meta"}``, or None."""
        with self._lock:
            return self._last_progress

    def progress(self, fraction: float, **meta: Any) -> None:
        """Report how far the job is: ``fraction`` from 0 to 1, and any JSON ``meta``.

        Cheap enough for a tight loop: the worker writes the latest value at
        most twice a second (and once when the job ends); readers see it as
        ``JobStatus.progress`` and in ``GET /v1/jobs/{id}``.

        Raises:
            PayloadError: ``fraction`` is not a number from 0 to 1, or ``meta`` is not JSON data.
        """
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
                or not math.isfinite(fraction) or not 0 <= fraction <= 1:
            raise PayloadError(f"progress fraction must be a number from 0 to 1, not {fraction!r}")
        value = {"fraction": float(fraction), "meta": json.loads(dumps(meta)) if meta else {}}
        with self._lock:
            self._progress = self._last_progress = value

    def touch(self) -> None:
        """Ask the worker to restart the job's TTR clock now (it does so every TTR/2 anyway)."""
        with self._lock:
            self._touch_wanted = True
            wake = self._wake
        if wake is not None:
            wake()

    # -- for the worker ----------------------------------------------------

    @contextlib.contextmanager
    def running(self) -> Iterator[JobContext]:
        """Make this the current job of the calling thread or asyncio task for the block."""
        token = _CURRENT.set(self)
        try:
            yield self
        finally:
            with contextlib.suppress(ValueError):  # a coroutine closed by the garbage collector
                _CURRENT.reset(token)

    def wake_with(self, wake: Callable[[], None]) -> None:
        """Call ``wake`` (from the task's thread) when the task leaves a note the worker must act on soon."""
        with self._lock:
            self._wake = wake

    def cancel(self) -> None:
        """Mark the job cancelled and call the callbacks of :meth:`on_cancel` (once)."""
        with self._lock:
            if self._cancelled:
                return
            self._cancelled = True
            callbacks, self._on_cancel = self._on_cancel, []
        for callback in callbacks:
            callback()

    def on_cancel(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` when the job is cancelled (at once if it is already)."""
        with self._lock:
            if not self._cancelled:
                self._on_cancel.append(callback)
                return
        callback()

    def write_progress(self, write: Callable[[float, dict[str, Any]], object]) -> None:
        """Call ``write(fraction, meta)`` with the progress reported since the last write, if any.

        Writes from the heartbeat and from the job's end happen one at a
        time, so that an older value never lands after a newer one. A value
        whose write raised is kept for the next write.
        """
        with self._write_lock:
            with self._lock:
                value, self._progress = self._progress, None
            if value is None:
                return
            try:
                write(value["fraction"], value["meta"])
            except BaseException:
                with self._lock:
                    if self._progress is None:
                        self._progress = value
                raise

    def take_touch(self) -> bool:
        """True once after :meth:`touch` was called."""
        with self._lock:
            wanted, self._touch_wanted = self._touch_wanted, False
        return wanted
