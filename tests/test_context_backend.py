"""The backend side of running jobs, on every backend: progress, and which running jobs were cancelled."""
from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from jobkit.backends import Backend, backend_from_url
from jobkit.job import JobStatus
from tests.conftest import unique


def running(backend: Backend, job_id: str) -> None:
    backend.add({"id": job_id, "task": "t", "args": [], "kwargs": {}, "queue": "default",
                 "priority": 1024, "created_at": time.time()})
    backend.claim({"id": job_id, "task": "t", "worker": "w1", "started_at": time.time()})


def test_progress_is_stored_and_read_back_as_sent(backend: Backend) -> None:
    job_id = unique()
    running(backend, job_id)
    meta = {"step": "resize", "done": 3, "of": 10, "nested": {"$odd": [1.5, None, "ü"]}}
    assert backend.progress(job_id, 0.3, meta) is True
    record = backend.get(job_id)
    assert record is not None and record["progress"] == {"fraction": 0.3, "meta": meta}
    assert JobStatus.from_record(record).progress == {"fraction": 0.3, "meta": meta}
    assert backend.progress(job_id, 0.5, {}) is True
    assert (backend.get(job_id) or {})["progress"] == {"fraction": 0.5, "meta": {}}


def test_progress_never_touches_a_finished_record(backend: Backend) -> None:
    job_id = unique()
    running(backend, job_id)
    backend.progress(job_id, 0.9, {})
    backend.finish(job_id, "succeeded", result=1)
    assert backend.progress(job_id, 0.1, {"late": True}) is False
    record = backend.get(job_id)
    assert record is not None and record["state"] == "succeeded"
    assert record["progress"] == {"fraction": 0.9, "meta": {}}
    assert backend.progress(unique(), 0.5, {}) is False  # no record: none is made


def test_a_record_without_progress_has_none(backend: Backend) -> None:
    job_id = unique()
    running(backend, job_id)
    record = backend.get(job_id)
    assert record is not None and record["progress"] is None
    assert JobStatus.from_record(record).progress is None


def test_cancelled_names_exactly_the_cancelled_ones(backend: Backend) -> None:
    ids = [unique() for _ in range(5)]
    for job_id in ids:
        running(backend, job_id)
    for job_id in ids[1:3]:
        backend.update(job_id, {"state": "cancelled", "finished_at": time.time()})
    backend.finish(ids[3], "succeeded", result=None)
    assert backend.cancelled(ids + [unique()]) == set(ids[1:3])
    assert backend.cancelled([]) == set()
    assert backend.cancelled([ids[0]]) == set()


def test_an_older_sqlite_file_gains_the_progress_column(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:  # the table as jobkit made it before progress existed
        db.execute("""CREATE TABLE jobs (
            id TEXT PRIMARY KEY, task TEXT, args TEXT, kwargs TEXT, queue TEXT,
            state TEXT NOT NULL, broker_id INTEGER, priority INTEGER,
            attempts INTEGER NOT NULL DEFAULT 0, result TEXT, error TEXT,
            created_at REAL, started_at REAL, finished_at REAL, expires_at REAL,
            worker TEXT, idempotency_key TEXT)""")
        db.execute("INSERT INTO jobs (id, task, args, kwargs, state)"
                   " VALUES ('old', 't', '[]', '{}', 'running')")
    backend = backend_from_url(f"sqlite:///{path}")
    try:
        assert (backend.get("old") or {})["progress"] is None
        assert backend.progress("old", 1, {"ok": True})
        assert (backend.get("old") or {})["progress"] == {"fraction": 1, "meta": {"ok": True}}
    finally:
        backend.close()
