"""Leases: a running job is held by its worker until ``lease_until``; jobs of vanished workers run again.

Why: beanstalkd (1.12, Debian's build) can lose a connection's timer: when
it fires in the very microsecond of a reserved job's deadline, nothing
expires and the connection is never scheduled again (README, "Not promised:
exactly-once"). A worker host that reserved or touched its job and is then
cut off, or dies without its TCP connection being closed (power loss), can
keep the job reserved until that connection ends: possibly for ever. So jobkit does not rely on
the broker alone to notice a lost worker; the record does:

- **Claim**: the record names its holder (``worker``) and ``lease_until``
  (now + ``lease_s``; ``JOBKIT_LEASE``, 30 s by default).
- **Renewal**: the holder's heartbeat extends the leases of the jobs it runs
  every ``lease_s / 3``, and rewrites its worker record as often.
- **Reconcile**: on the same beat, a live worker that holds the backend lease
  :data:`LOCK` (one worker at a time: :meth:`Backend.acquire`) reads the records whose lease ran out. A job
  still ``running`` under a worker with no heartbeat for ``lease_s`` gets a
  fresh message (same job id, from the record), then its record is taken
  back: ``queued``, no holder, ``superseded`` = the broker id of the copy the
  lost worker holds. The take-back is conditional on holder and attempt: when
  the holder stored an outcome (or renewed) meanwhile, the fresh message is
  deleted again.
- **Late outcome**: a worker stores an outcome only while it holds the job at
  that attempt (:meth:`Backend.update_held`): the lost worker's outcome, when
  its link heals, writes nothing, and its message is deleted.
- **Stale copy**: a delivery whose broker id is the record's ``superseded``
  is deleted without running (the claim leaves the record alone).

Delivery stays at-least-once: a worker that was only slow, not gone, may
have run the job when the fresh copy runs again; one outcome is kept.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from jobkit.errors import BrokerError, JobkitError, TaskNotFound
from jobkit.message import Envelope

if TYPE_CHECKING:
    from jobkit.app import App

log = logging.getLogger("jobkit.leases")
LOCK = "jobkit.reconciler"  # the backend lock a reconciling worker holds
BATCH = 100  # expired leases looked at per beat


def renew_every_s(lease_s: float) -> float:
    """How often a holder renews its leases: three renewals fit in one lease."""
    return max(0.1, lease_s / 3)


def stale_copy(record: dict[str, Any], broker_id: str) -> bool:
    """True when ``broker_id`` names a copy that a reconciler replaced with a fresh one."""
    superseded = record.get("superseded")
    return superseded is not None and superseded == broker_id


class Reconciler:
    """Re-enqueues the jobs whose holders are gone (see the module docstring).

    Args:
        app: the app whose backend and broker hold the jobs; its tasks give
            the options a record lacks (ttr, retries).
        name: who reconciles (a worker name), for the backend lock.
        lease_s: the lease; a holder not seen for as long is gone.
    """

    def __init__(self, app: App, name: str, lease_s: float) -> None:
        self.app, self.name, self.lease_s = app, name, lease_s

    def run(self, now: float | None = None) -> int:
        """Look once; return how many jobs were re-enqueued (0 when another reconciler holds the lock)."""
        now = time.time() if now is None else now
        backend = self.app.backend
        until = now + self.lease_s
        if not (backend.hold(LOCK, self.name, until=until)
                or backend.acquire(LOCK, self.name, slots=1, now=now, until=until) == 0.0):
            return 0  # another worker reconciles
        expired = backend.expired_leases(now, BATCH)
        if not expired:
            return 0
        live = {w["name"] for w in backend.workers(now - self.lease_s)}
        return sum(self._reclaim(record, live) for record in expired)

    def _reclaim(self, record: dict[str, Any], live: set[str]) -> bool:
        """Re-enqueue one job whose lease ran out, when its holder is gone; True when done."""
        if record["state"] != "running":  # finished some other way (cancelled, released)
            self.app.backend.update(record["id"], {"lease_until": None}, unless=("running",))
            return False
        if record.get("worker") in live:
            return False  # alive: it renews, or gives the job back itself
        envelope = self._envelope(record)
        if envelope is None:
            return False
        try:
            return self._requeue(record, envelope)
        except JobkitError as exc:  # broker or backend unavailable
            log.warning("job %s: could not re-enqueue it (%s); next beat", record["id"], exc)
            return False

    def _envelope(self, record: dict[str, Any]) -> Envelope | None:
        try:
            return self.app.envelope_of(record)
        except TaskNotFound:
            return None  # a worker that knows the task re-enqueues it

    def _requeue(self, record: dict[str, Any], env: Envelope) -> bool:
        """Put a fresh copy, then take the record back from its holder (or delete the copy again)."""
        broker = self.app.broker
        fresh = broker.put(env.encode(), queue=env.queue, priority=env.priority, delay_s=0, ttr_s=env.ttr)
        taken = self.app.backend.update_held(
            record["id"], {"state": "queued", "worker": None, "lease_until": None,
                           "superseded": record.get("broker_id"), "broker_id": fresh},
            worker=record["worker"], attempts=record["attempts"])
        if not taken:  # its holder finished or renewed meanwhile
            try:
                broker.delete(fresh)
            except BrokerError:
                log.warning("job %s: an extra copy %s stays (settled unrun when reserved)",
                            record["id"], fresh)
            return False
        log.warning("job %s: its worker %s is gone (no heartbeat for %s s): re-enqueued as %s",
                    record["id"], record["worker"], self.lease_s, fresh)
        return True
