"""Group commit: concurrent writes of one process share one round trip.

perf: an API process answers many requests at once, each of which records
one job and puts one message. Written one by one, every record costs a
transaction of its own (SQLite: the write lock, a WAL commit; MongoDB: a
round trip), and every put a round trip to beanstalkd. A
:class:`GroupWriter` lets the first caller in (the leader) write everything
queued meanwhile in one go while the others (followers) wait, each on a lock
of its own; whoever arrives during that write is taken by the next leader.
No call ever sleeps for a fixed time to gather company: a lone call writes
at once, and groups grow only as large as the write before them was long.

Each call returns only once its own item is written (or raises): grouping
never answers before the write it stands for, so "the call returned" still
means "the record exists".
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from jobkit.errors import BackendError, JobkitError

T = TypeVar("T")
R = TypeVar("R")

#: Most items one leader writes at once (bounds a transaction's length, and so the wait behind it).
MAX_GROUP = 256


class _Pending(Generic[T, R]):
    """One call's item, its outcome once written, and the lock its caller waits on.

    ``wake`` is taken when the call queues and released by whoever wakes the
    caller: a leader that wrote the item (``done``), or one that hands the
    lead on to it. perf: a lock per call, released once, is the cheapest wait
    Python has (a ``Condition`` allocates such a lock per wait as well, and
    wakes every waiter to let one lead).
    """

    __slots__ = ("item", "done", "result", "error", "wake")

    def __init__(self, item: T) -> None:
        self.item = item
        self.done = False
        self.result: R | None = None
        self.error: BaseException | None = None
        self.wake = threading.Lock()
        self.wake.acquire()


class _Groups(Generic[T, R]):
    """One process's queue of items and whether a write is under way (guarded by ``mutex``)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.mutex = threading.Lock()
        self.queue: list[_Pending[T, R]] = []
        self.writing = False


class GroupWriter(Generic[T, R]):
    """Write items given by concurrent threads in groups, one group at a time.

    The first caller to find no write under way leads: it writes every item
    queued (its own included, up to ``max_group``), wakes their callers, and
    hands the lead to the first caller still queued, if any. The others wait
    on a lock of their own until they are woken with their outcome or the lead.

    A forked child starts afresh: the parent may have been mid-write when it
    forked, and its waiting callers are not in the child.

    Args:
        write: writes a group in one step (one transaction, one bulk call) and
            returns one outcome per item, in order: a result, or an exception
            for an item that alone failed. When it raises, every item of the
            group fails with that error; other groups are not affected.
        max_group: the most items one call of ``write`` is given.
    """

    def __init__(self, write: Callable[[list[T]], Sequence[R | BaseException]],
                 max_group: int = MAX_GROUP) -> None:
        self._write = write
        self._max_group = max_group
        self._groups: _Groups[T, R] = _Groups()

    @property
    def waiting(self) -> int:
        """Items queued behind the write under way (for tests and metrics)."""
        return len(self._groups.queue)

    def submit(self, item: T) -> R:
        """Write ``item`` (with whatever else is queued), and return its outcome once written.

        Raises:
            JobkitError: the write failed (the error ``write`` raised, or its
                per-item exception); a fresh instance per caller.
        """
        groups = self._groups
        if groups.pid != os.getpid():  # forked (threads racing here each get a working queue)
            groups = self._groups = _Groups()
        pending: _Pending[T, R] = _Pending(item)
        with groups.mutex:
            groups.queue.append(pending)
            lead = not groups.writing
            groups.writing = True
        if not lead:
            pending.wake.acquire()  # woken with the outcome, or with the lead
        if not pending.done:
            self._lead(groups)
        if pending.error is not None:
            raise _fresh(pending.error)
        return pending.result  # type: ignore[return-value]

    def _lead(self, groups: _Groups[T, R]) -> None:
        """Write the queued items, wake their callers, and hand the lead on (or give it up)."""
        with groups.mutex:
            group, groups.queue = groups.queue[:self._max_group], groups.queue[self._max_group:]
        try:
            outcomes: Sequence[R | BaseException] = self._write([p.item for p in group])
            if len(outcomes) != len(group):
                raise BackendError(f"a group write gave {len(outcomes)} outcomes for {len(group)} items")
        except BaseException as exc:  # noqa: BLE001 - every caller gets it, this one re-raises it
            outcomes = [exc] * len(group)
        for pending, outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                pending.error = outcome
            else:
                pending.result = outcome
            pending.done = True
        with groups.mutex:
            successor = groups.queue[0] if groups.queue else None
            groups.writing = successor is not None
        for pending in group:
            if pending.wake.locked():
                pending.wake.release()
        if successor is not None:
            successor.wake.release()  # it leads the next group


def _fresh(error: BaseException) -> BaseException:
    """A copy of a jobkit error for one caller (threads must not share one traceback).

    Anything else (a bug, an interrupt) is wrapped in a :class:`BackendError` that names it.
    """
    if isinstance(error, JobkitError):
        try:
            copy = type(error)(*error.args)
        except TypeError:  # a subclass with other constructor arguments
            return error
        return copy.with_traceback(None)
    if isinstance(error, (KeyboardInterrupt, SystemExit)):
        return BackendError(f"group write interrupted: {error!r}")
    return BackendError(f"group write failed: {type(error).__name__}: {error}")
