"""The backend methods workflows rely on, on every backend: add_many, and feed (the fan-in)."""
from __future__ import annotations

import threading
from typing import Any

from jobkit.backends import Backend


def waiting(job_id: str, deps: int, **extra: Any) -> dict[str, Any]:
    """The record of a job waiting for ``deps`` others."""
    return {"id": job_id, "task": "tsum", "args": [], "kwargs": {}, "queue": "default", "priority": 1024,
            "created_at": 1.0, "root": "r", "parent": None, "children": [],
            "workflow": {"deps": [f"d{i}" for i in range(deps)], "many": True, "immutable": False,
                         "pending": deps, "inputs": {}, "due_by": None, "next": [], "ttr": 60,
                         "max_retries": 0, "delay": 0}} | extra


def test_add_many_writes_every_record_and_refreshes_broker_ids(backend: Backend) -> None:
    backend.add_many([waiting(f"j{i}", 1) for i in range(50)])
    assert backend.counts() == {"queued": 50}
    record = backend.get("j7")
    assert record is not None and record["workflow"]["pending"] == 1 and record["root"] == "r"
    backend.add_many([{"id": "j7", "broker_id": "42", "state": "failed"}])  # a refresh: broker id only
    record = backend.get("j7")
    assert record is not None and record["broker_id"] == "42" and record["state"] == "queued"


def test_the_last_slot_filled_makes_the_job_due_once_and_a_repeat_changes_nothing(backend: Backend) -> None:
    backend.add(waiting("cb", 3))
    assert backend.feed("cb", 0, "1", by="d0") is None
    assert backend.feed("cb", 0, "1", by="d0") is None  # a repeat (a redelivered member)
    assert backend.get("cb")["workflow"]["pending"] == 2  # type: ignore[index]
    assert backend.feed("cb", 2, '"three"', by="d2") is None
    due = backend.feed("cb", 1, "[2]", by="d1")
    assert due is not None and due["parent"] == "d1"
    assert due["workflow"]["inputs"] == {"0": "1", "1": "[2]", "2": '"three"'}
    assert due["workflow"]["pending"] == 0 and due["workflow"]["due_by"] == "d1"
    # the job that made it due gets it again until it is in the broker; nobody else does
    assert backend.feed("cb", 1, "[2]", by="d1") is not None
    assert backend.feed("cb", 0, "1", by="d0") is None
    backend.update("cb", {"broker_id": "7"})
    assert backend.feed("cb", 1, "[2]", by="d1") is None


def test_only_a_queued_job_is_fed(backend: Backend) -> None:
    backend.add(waiting("cb", 1, state="failed"))
    assert backend.feed("cb", 0, "1", by="d0") is None
    assert backend.get("cb")["workflow"]["pending"] == 1  # type: ignore[index]
    assert backend.feed("missing", 0, "1", by="d0") is None


def test_members_finishing_together_make_the_job_due_exactly_once(backend: Backend) -> None:
    members = 40
    backend.add(waiting("cb", members))
    due: list[str] = []

    def member(i: int) -> None:
        if backend.feed("cb", i, str(i), by=f"d{i}") is not None:
            due.append(f"d{i}")

    threads = [threading.Thread(target=member, args=(i,)) for i in range(members)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(due) == 1
    record = backend.get("cb")
    assert record is not None and record["workflow"]["pending"] == 0
    assert len(record["workflow"]["inputs"]) == members
