"""The result-backend boundary.

A backend keeps one record per job id (:data:`jobkit.job.RECORD_FIELDS`).
Every write is an upsert keyed by job id, so the API's "accepted" write and
the worker's writes may arrive in any order. Implementations write the
abstract methods; waiting, finishing and expiry rules live here once.

Backends also keep each live worker's heartbeat record (one per worker name,
rewritten every :data:`BEAT_EVERY_S`), so that any API process can list the
workers: name, host, pid, queues, concurrency, busy slots, the jobs running,
started and last seen (unix seconds), jobs done and failed.
"""
from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from typing import Any

from jobkit.errors import JobNotFound, JobTimeout
from jobkit.job import FINISHED_STATES

DEFAULT_RESULT_TTL = 7 * 24 * 3600.0
#: Seconds a free lease that nobody holds is kept before :meth:`Backend.prune` deletes it
#: (concurrency keys come and go); far more than any clock skew, so that a deleted lease
#: (made again free on next use) was free for every caller.
FREE_LEASE_KEEP_S = 3600.0
BEAT_EVERY_S = 5.0  # how often a worker rewrites its heartbeat record
LIVE_FOR_S = 3 * BEAT_EVERY_S  # a worker not seen for longer is not listed (it died, or hangs)
FORGET_WORKER_S = 3600.0  # a record not rewritten for this long is deleted by prune()
_UNSET: Any = object()


class Backend(ABC):
    """Stores job records.

    Args:
        url: the backend URL; each implementation documents its form.
        result_ttl: seconds a finished record is kept before it expires.
    """

    def __init__(self, url: str, *, result_ttl: float = DEFAULT_RESULT_TTL) -> None:
        self.url = url
        self.result_ttl = result_ttl

    @abstractmethod
    def add(self, record: dict[str, Any], *, report_created: bool = True) -> bool:
        """Insert ``record`` for a newly accepted job.

        When a record with that id exists already (a worker got there first,
        or an idempotent request repeats), only ``broker_id``, ``priority``
        and ``queue`` are refreshed, never the state or outcome.

        Args:
            record: the job's fields.
            report_created: False when the caller ignores the answer: the
                backend may then write in one step without finding out
                whether the record existed (the write is the same).

        Returns:
            True when the record was created, False when it existed; with
            ``report_created=False``, not meaningful.
        """

    @abstractmethod
    def claim(self, record: dict[str, Any]) -> dict[str, Any]:
        """Mark a job ``running`` and count the attempt, unless it is finished.

        Args:
            record: the job's fields from its envelope plus ``worker`` and
                ``started_at``; used to create the record when it is missing.

        Returns:
            The record after the write (unchanged when it was finished).
        """

    @abstractmethod
    def update(
        self,
        job_id: str,
        fields: dict[str, Any],
        *,
        unless: Collection[str] = (),
        insert: dict[str, Any] | None = None,
    ) -> bool:
        """Set ``fields`` on a record whose state is not in ``unless``.

        Args:
            job_id: the record to change.
            fields: field -> new value.
            unless: states that must not be overwritten.
            insert: when given and the record is missing, create it from
                ``insert`` updated with ``fields``.

        Returns:
            True when a record was written.
        """

    @abstractmethod
    def get(self, job_id: str) -> dict[str, Any] | None:
        """Return the record, or None when there is none (or it expired)."""

    @abstractmethod
    def find(
        self, *, state: str | None = None, task: str | None = None, queue: str | None = None,
        before: str | None = None, limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Return up to ``limit`` records, newest first, filtered by state, task and queue.

        Args:
            before: a job id from an earlier answer: only records listed after
                it (older ones) are returned, so that paging never counts rows
                to skip; none when that record is gone.
        """

    @abstractmethod
    def finished_per_minute(self, since: float) -> dict[int, dict[str, int]]:
        """Count the records whose ``finished_at`` is at or after ``since``, per minute and state.

        For the dashboard's throughput chart: reads an index over
        ``finished_at``, so the cost follows the jobs finished since then,
        not the number of records.

        Returns:
            ``{minute: {state: n}}``, ``minute`` being ``int(finished_at // 60)``.
        """

    @abstractmethod
    def counts(self) -> dict[str, int]:
        """Return the number of records in each state (states without any are left out).

        Cheap at any size (maintained counts, never a scan of the records):
        the dashboard and every scrape call it. Finished records past their
        expiry may still be counted until they are pruned.
        """

    @abstractmethod
    def delete(self, job_id: str) -> None:
        """Remove a record (used to take back a job the broker refused)."""

    @abstractmethod
    def ping(self) -> None:
        """Check that the backend answers.

        Raises:
            BackendUnavailable: it does not.
        """

    @abstractmethod
    def feed(self, job_id: str, slot: int, value: str, *, by: str) -> dict[str, Any] | None:
        """Give a waiting workflow job the result of one of the jobs it waits for.

        One atomic write (see :func:`take_input`): the result goes into slot
        ``slot`` of the record's ``workflow.inputs`` and its ``pending`` count
        drops by one, unless that slot is filled already (a repeat changes
        nothing); the write that fills the last slot marks the job due, by
        ``by``. Only a ``queued`` record is fed: a failed or cancelled one stays so.

        Args:
            job_id: the waiting job.
            slot: the index of ``by`` among the jobs it waits for.
            value: the result, as JSON text.
            by: the job whose result it is.

        Returns:
            The record when ``by`` made it due and it is not in the broker
            yet (no ``broker_id``): the caller puts it. Else None.
        """

    def add_many(self, records: Sequence[dict[str, Any]]) -> None:
        """:meth:`add` every record, in one transaction where the backend has them.

        A batch enqueue writes all its records at once: one commit, one round trip.
        """
        for record in records:
            self.add(record, report_created=False)

    def prune(self, now: float | None = None) -> int:
        """Delete expired records and old worker records; returns how many job records.

        Backends that expire records by themselves return 0.
        """
        return 0

    # -- leases (limits and schedules) -------------------------------------

    @abstractmethod
    def acquire(self, key: str, holder: str, *, slots: int, now: float, until: float) -> float:
        """Take one of the ``slots`` leases of ``key`` free at ``now``, for ``holder``, up to ``until``.

        A lease is free when it ended at or before ``now``. Atomic across
        every process and machine sharing the backend: two callers never take
        the same lease. Leases are made on first use (each starts free).

        Returns:
            0.0 when a lease was taken; else the seconds from ``now`` until the
            first of the ``slots`` leases ends (> 0).
        """

    @abstractmethod
    def hold(self, key: str, holder: str, *, until: float | None) -> bool:
        """Renew ``holder``'s lease of ``key`` up to ``until``; with None, free it now.

        A freed lease ends at the backend's clock (``time.time()``) when it is
        freed, and forgets its holder.

        Returns:
            False when ``holder`` holds no lease of ``key`` (its lease ended and another took it).
        """

    @abstractmethod
    def leases(self, key: str) -> list[dict[str, Any]]:
        """The leases of ``key``: ``{"slot", "holder", "until"}`` each (``holder`` None when never held)."""

    # -- live workers ------------------------------------------------------

    @abstractmethod
    def beat_worker(self, record: dict[str, Any]) -> None:
        """Write a worker's heartbeat record, replacing its last one.

        Args:
            record: JSON data with at least ``name`` (the key) and
                ``last_seen`` (unix seconds).
        """

    @abstractmethod
    def workers(self, seen_since: float) -> list[dict[str, Any]]:
        """Return the heartbeat records last seen at or after ``seen_since`` (unix seconds), by name."""

    @abstractmethod
    def forget_worker(self, name: str) -> None:
        """Remove a worker's record (it stopped cleanly)."""

    # -- leases (see jobkit.leases) ----------------------------------------

    @abstractmethod
    def update_held(self, job_id: str, fields: dict[str, Any], *, worker: str, attempts: int) -> bool:
        """Set ``fields`` only while the job runs under ``worker`` at attempt ``attempts``.

        The one write a holder makes after its claim (lease renewal, outcome),
        and the reconciler's take-back: whoever finds the record moved on (a
        reconciler re-enqueued it, another worker claimed it, it was
        cancelled) writes nothing.

        Returns:
            True when the record was written.
        """

    @abstractmethod
    def expired_leases(self, now: float, limit: int = 100) -> list[dict[str, Any]]:
        """Return up to ``limit`` records whose ``lease_until`` is before ``now`` (any state).

        Reads an index over ``lease_until``: only records with a lease are looked at.
        """

    def close(self) -> None:
        """Release connections. The backend reconnects if used again."""

    def cancelled(self, job_ids: Collection[str]) -> set[str]:
        """Return those of ``job_ids`` whose record says ``cancelled``.

        A worker's heartbeat asks this about all of its running jobs at once,
        twice a second: implementations answer with one query.
        """
        found: set[str] = set()
        for job_id in job_ids:
            record = self.get(job_id)
            if record is not None and record["state"] == "cancelled":
                found.add(job_id)
        return found

    def progress(self, job_id: str, fraction: float, meta: dict[str, Any]) -> bool:
        """Store a running job's progress, ``{"fraction", "meta"}``, unless it is finished.

        Returns:
            True when it was written.
        """
        return self.update(job_id, {"progress": {"fraction": fraction, "meta": meta}},
                           unless=tuple(FINISHED_STATES))

    def batch(self) -> contextlib.AbstractContextManager[None]:
        """Group this thread's writes inside the block into one transaction, where the backend can.

        SQLite does (all or none of them, one commit). Elsewhere each write
        stands alone: after an error some of them may have been made, so
        callers only group writes that may be repeated.
        """
        return contextlib.nullcontext()

    # -- shared rules ------------------------------------------------------

    def finish(
        self,
        job_id: str,
        state: str,
        *,
        result: Any = _UNSET,
        error: dict[str, Any] | None = None,
        attempts: int | None = None,
        insert: dict[str, Any] | None = None,
        now: float | None = None,
        held_by: tuple[str, int] | None = None,
    ) -> bool:
        """Store a job's outcome (``succeeded``, ``failed`` or ``retrying``).

        A cancelled job keeps its state. Finished records get ``expires_at``.
        With ``held_by`` (worker, attempt), only that holder's outcome is
        stored (see :meth:`update_held`) and its lease ends; ``insert`` is
        then not used.

        Returns:
            True when the outcome was written (False: the job was cancelled).
        """
        now = time.time() if now is None else now
        fields: dict[str, Any] = {"state": state, "error": error, "finished_at": now}
        if result is not _UNSET:
            fields["result"] = result
        if attempts is not None:
            fields["attempts"] = attempts
        fields["expires_at"] = now + self.result_ttl if state in FINISHED_STATES else None
        if held_by is not None:
            return self.update_held(job_id, fields | {"lease_until": None},
                                    worker=held_by[0], attempts=held_by[1])
        return self.update(job_id, fields, unless=("cancelled",), insert=insert)

    def wait(self, job_id: str, timeout: float | None) -> dict[str, Any]:
        """Return the record once the job is finished.

        Polls with a backoff from 5 ms to 200 ms.

        Raises:
            JobNotFound: there is no record for ``job_id``.
            JobTimeout: still not finished after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.005
        while True:
            record = self.get(job_id)
            if record is None:
                raise JobNotFound(job_id)
            if record["state"] in FINISHED_STATES:
                return record
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise JobTimeout(f"job {job_id} not finished after {timeout} s (state {record['state']})")
            time.sleep(pause if left is None else min(pause, left))
            pause = min(pause * 2, 0.2)


def take_input(record: dict[str, Any], slot: int, value: str, by: str) -> tuple[bool, bool]:
    """Apply :meth:`Backend.feed` to a record in place: the rule every backend follows.

    Returns:
        ``(changed, hand_over)``: whether the record must be written, and
        whether the caller must put the job into the broker.
    """
    flow = record.get("workflow")
    if record.get("state") != "queued" or not isinstance(flow, dict):
        return False, False
    inputs, changed = flow.setdefault("inputs", {}), False
    if str(slot) not in inputs:
        inputs[str(slot)] = value
        flow["pending"] = flow.get("pending", 0) - 1
        changed = True
    if flow["pending"] <= 0 and flow.get("due_by") is None:
        flow["due_by"] = record["parent"] = by
        changed = True
    return changed, flow.get("due_by") == by and record.get("broker_id") is None
