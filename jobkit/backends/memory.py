"""In-process result backend.

URL: ``memory://``. Features: everything the contract asks, for one process
(tests, ``jobkit up`` demos). Records are copied through JSON on the way in
and out, exactly as a real backend would store them. Nothing survives the
process.
"""
from __future__ import annotations

import json
import threading
import time
from collections.abc import Collection
from typing import Any

from jobkit.backends.base import FORGET_WORKER_S, FREE_LEASE_KEEP_S, Backend, take_input
from jobkit.job import FINISHED_STATES, RECORD_FIELDS

_BROKER_FIELDS = ("broker_id", "priority", "queue")


def _copy(record: dict[str, Any]) -> dict[str, Any]:
    copied: dict[str, Any] = json.loads(json.dumps(record))
    return copied


class MemoryBackend(Backend):
    """Records in a dict, guarded by one lock."""

    def __init__(self, url: str = "memory://", **options: Any) -> None:
        super().__init__(url, **options)
        self._records: dict[str, dict[str, Any]] = {}
        self._leases: dict[str, dict[int, tuple[str | None, float]]] = {}  # key -> slot -> (holder, until)
        self._workers: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def add(self, record: dict[str, Any], *, report_created: bool = True) -> bool:
        with self._lock:
            current = self._live(record["id"])
            if current is None:
                self._records[record["id"]] = _blank() | _copy(record)
                return True
            current.update({k: record[k] for k in _BROKER_FIELDS if record.get(k) is not None})
            return False

    def claim(self, record: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            current = self._live(record["id"])
            if current is None:
                current = self._records[record["id"]] = _blank() | _copy(record)
                current["attempts"] = 0
            stale = current.get("superseded") is not None and current["superseded"] == record.get("broker_id")
            if current["state"] not in FINISHED_STATES and not stale:
                current.update(state="running", started_at=record["started_at"],
                               worker=record.get("worker"), lease_until=record.get("lease_until"))
                current["attempts"] = (current.get("attempts") or 0) + 1
            return _copy(current)

    def update(
        self,
        job_id: str,
        fields: dict[str, Any],
        *,
        unless: Collection[str] = (),
        insert: dict[str, Any] | None = None,
    ) -> bool:
        with self._lock:
            current = self._live(job_id)
            if current is None:
                if insert is None:
                    return False
                current = self._records[job_id] = _blank() | _copy(insert) | {"id": job_id}
            elif current["state"] in unless:
                return False
            current.update(_copy(fields))
            return True

    def update_held(self, job_id: str, fields: dict[str, Any], *, worker: str, attempts: int) -> bool:
        with self._lock:
            current = self._live(job_id)
            if current is None or (current["state"], current.get("worker"), current.get("attempts")) != (
                    "running", worker, attempts):
                return False
            current.update(_copy(fields))
            return True

    def expired_leases(self, now: float, limit: int = 100) -> list[dict[str, Any]]:
        with self._lock:
            rows = [r for r in self._records.values()
                    if r.get("lease_until") is not None and r["lease_until"] < now]
        rows.sort(key=lambda r: r["lease_until"])
        return [_copy(r) for r in rows[:limit]]

    def feed(self, job_id: str, slot: int, value: str, *, by: str) -> dict[str, Any] | None:
        with self._lock:
            current = self._live(job_id)
            if current is None:
                return None
            _, hand_over = take_input(current, slot, value, by)
            return _copy(current) if hand_over else None

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            current = self._live(job_id)
            return None if current is None else _copy(current)

    def find(
        self, *, state: str | None = None, task: str | None = None, queue: str | None = None,
        before: str | None = None, limit: int = 100,
    ) -> list[dict[str, Any]]:
        now = time.time()
        with self._lock:
            cursor = self._records.get(before) if before is not None else None
            if before is not None and cursor is None:
                return []
            rows = [r for r in self._records.values()
                    if (state is None or r["state"] == state) and (task is None or r["task"] == task)
                    and (queue is None or r["queue"] == queue) and not _expired(r, now)
                    and (cursor is None or _order(r) < _order(cursor))]
        rows.sort(key=_order, reverse=True)
        return [_copy(r) for r in rows[:limit]]

    def finished_per_minute(self, since: float) -> dict[int, dict[str, int]]:
        counts: dict[int, dict[str, int]] = {}
        with self._lock:
            for record in self._records.values():
                finished = record.get("finished_at")
                if finished is not None and finished >= since:
                    per_state = counts.setdefault(int(finished // 60), {})
                    per_state[record["state"]] = per_state.get(record["state"], 0) + 1
        return counts

    def counts(self) -> dict[str, int]:
        now = time.time()
        counts: dict[str, int] = {}
        with self._lock:
            for record in self._records.values():
                if not _expired(record, now):
                    counts[record["state"]] = counts.get(record["state"], 0) + 1
        return counts

    def cancelled(self, job_ids: Collection[str]) -> set[str]:
        with self._lock:
            return {job_id for job_id in job_ids
                    if (record := self._live(job_id)) is not None and record["state"] == "cancelled"}

    def delete(self, job_id: str) -> None:
        with self._lock:
            self._records.pop(job_id, None)

    def ping(self) -> None:
        return None

    def prune(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        with self._lock:
            dead = [k for k, r in self._records.items() if _expired(r, now)]
            for key in dead:
                del self._records[key]
            for slots in self._leases.values():
                for slot in [n for n, (who, until) in slots.items()
                             if who is None and until <= now - FREE_LEASE_KEEP_S]:
                    del slots[slot]
            for name in [n for n, w in self._workers.items() if w["last_seen"] < now - FORGET_WORKER_S]:
                del self._workers[name]
        return len(dead)

    def acquire(self, key: str, holder: str, *, slots: int, now: float, until: float) -> float:
        with self._lock:
            leases = self._leases.setdefault(key, {})
            ends = [leases.get(slot, (None, 0.0))[1] for slot in range(slots)]
            free = next((slot for slot, end in enumerate(ends) if end <= now), None)
            if free is None:
                return min(ends) - now
            leases[free] = (holder, until)
            return 0.0

    def hold(self, key: str, holder: str, *, until: float | None) -> bool:
        with self._lock:
            leases = self._leases.get(key, {})
            mine = [slot for slot, (who, _) in leases.items() if who == holder]
            for slot in mine:
                leases[slot] = (holder, until) if until is not None else (None, time.time())
            return bool(mine)

    def leases(self, key: str) -> list[dict[str, Any]]:
        with self._lock:
            leases = dict(self._leases.get(key, {}))
        return [{"slot": slot, "holder": who, "until": until}
                for slot, (who, until) in sorted(leases.items())]

    def beat_worker(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._workers[record["name"]] = _copy(record)

    def workers(self, seen_since: float) -> list[dict[str, Any]]:
        with self._lock:
            return [_copy(w) for _, w in sorted(self._workers.items()) if w["last_seen"] >= seen_since]

    def forget_worker(self, name: str) -> None:
        with self._lock:
            self._workers.pop(name, None)

    def _live(self, job_id: str) -> dict[str, Any] | None:
        record = self._records.get(job_id)
        if record is not None and _expired(record, time.time()):
            del self._records[job_id]
            return None
        return record


def _blank() -> dict[str, Any]:
    record: dict[str, Any] = dict.fromkeys(RECORD_FIELDS)
    record.update(state="queued", attempts=0, args=[], kwargs={})
    return record


def _order(record: dict[str, Any]) -> tuple[float, str]:
    """The listing order, newest first: creation time, then id (records created at once)."""
    return (record.get("created_at") or 0, record["id"])


def _expired(record: dict[str, Any], now: float) -> bool:
    expires = record.get("expires_at")
    return expires is not None and expires <= now
