"""One contract, every backend (memory, sqlite, MongoDB)."""
from __future__ import annotations

import time

import pytest

from jobkit.backends import Backend, backend_from_url
from jobkit.errors import BackendUnavailable, ConfigError, JobNotFound, JobTimeout
from tests.conftest import unique


def accepted(job_id: str, **extra: object) -> dict[str, object]:
    return {"id": job_id, "task": "add", "args": [1, 2], "kwargs": {"k": "v"}, "queue": "default",
            "priority": 1024, "created_at": time.time(), "broker_id": "7"} | extra


def claim(backend: Backend, job_id: str) -> dict[str, object]:
    return backend.claim(accepted(job_id, worker="w1", started_at=time.time()))


def test_add_creates_a_queued_record_once(backend: Backend) -> None:
    job_id = unique()
    assert backend.add(accepted(job_id)) is True
    assert backend.add(accepted(job_id, broker_id="9")) is False
    record = backend.get(job_id)
    assert record is not None
    assert record["state"] == "queued" and record["attempts"] == 0
    assert record["args"] == [1, 2] and record["kwargs"] == {"k": "v"}
    assert record["broker_id"] == "9"  # refreshed, the rest untouched


def test_add_without_report_writes_the_same(backend: Backend) -> None:
    """``report_created=False`` (the enqueue path) creates, then refreshes only the broker fields."""
    job_id = unique()
    backend.add(accepted(job_id), report_created=False)
    record = backend.get(job_id)
    assert record is not None
    assert record["state"] == "queued" and record["attempts"] == 0 and record["broker_id"] == "7"
    claim(backend, job_id)
    backend.add(accepted(job_id, broker_id="9", priority=5, queue="q2", args=[0], task="other"),
                report_created=False)
    backend.add(accepted(job_id, broker_id=None, priority=None, queue=None), report_created=False)
    record = backend.get(job_id)
    assert record is not None
    assert record["state"] == "running" and record["attempts"] == 1
    assert record["args"] == [1, 2] and record["task"] == "add"  # the rest untouched
    assert (record["broker_id"], record["priority"], record["queue"]) == ("9", 5, "q2")
    backend.finish(job_id, "succeeded", result=3, attempts=1)
    backend.add(accepted(job_id, broker_id="11"), report_created=False)
    record = backend.get(job_id)
    assert record is not None
    assert record["state"] == "succeeded" and record["result"] == 3 and record["broker_id"] == "11"


def test_get_unknown_is_none(backend: Backend) -> None:
    assert backend.get(unique()) is None


def test_claim_counts_attempts_and_marks_running(backend: Backend) -> None:
    job_id = unique()
    backend.add(accepted(job_id))
    assert claim(backend, job_id)["attempts"] == 1
    record = claim(backend, job_id)
    assert record["state"] == "running" and record["attempts"] == 2 and record["worker"] == "w1"


def test_claim_creates_a_missing_record_from_the_envelope(backend: Backend) -> None:
    job_id = unique()
    record = claim(backend, job_id)
    assert record["state"] == "running" and record["attempts"] == 1
    assert record["task"] == "add" and record["args"] == [1, 2]


def test_claim_leaves_a_finished_job_alone(backend: Backend) -> None:
    job_id = unique()
    claim(backend, job_id)
    backend.finish(job_id, "succeeded", result={"x": 1}, attempts=1)
    record = claim(backend, job_id)
    assert record["state"] == "succeeded" and record["attempts"] == 1 and record["result"] == {"x": 1}


def test_accept_after_finish_keeps_the_outcome(backend: Backend) -> None:
    """The worker may store the outcome before the API records the job: order never matters."""
    job_id = unique()
    claim(backend, job_id)
    backend.finish(job_id, "succeeded", result=3, attempts=1, insert=accepted(job_id))
    assert backend.add(accepted(job_id, broker_id="11")) is False
    record = backend.get(job_id)
    assert record is not None
    assert record["state"] == "succeeded" and record["result"] == 3 and record["broker_id"] == "11"


def test_finish_inserts_when_missing_and_sets_expiry(backend: Backend) -> None:
    job_id = unique()
    before = time.time()
    assert backend.finish(job_id, "failed", error={"type": "E", "message": "m", "traceback": ""},
                          insert=accepted(job_id))
    record = backend.get(job_id)
    assert record is not None and record["state"] == "failed"
    assert record["error"]["type"] == "E" and record["task"] == "add"
    assert before + 3600 - 5 <= record["expires_at"] <= time.time() + 3600 + 5


def test_finish_never_overwrites_cancelled(backend: Backend) -> None:
    job_id = unique()
    backend.add(accepted(job_id))
    assert backend.update(job_id, {"state": "cancelled"}, unless=("succeeded",))
    assert backend.finish(job_id, "succeeded", result=1, insert=accepted(job_id)) is False
    record = backend.get(job_id)
    assert record is not None and record["state"] == "cancelled" and record["result"] is None


def test_update_guards_states_and_does_not_insert_by_default(backend: Backend) -> None:
    job_id = unique()
    assert backend.update(job_id, {"state": "cancelled"}) is False
    assert backend.get(job_id) is None
    backend.add(accepted(job_id))
    assert backend.update(job_id, {"state": "running"}, unless=("queued",)) is False
    assert backend.update(job_id, {"state": "running"}, unless=("succeeded",)) is True


def test_results_keep_any_json_and_never_read_keys_as_operators(backend: Backend) -> None:
    job_id = unique()
    result = {"$where": "1", "a.b": [1, {"$set": None}], "big": 10**40, "text": "é\u2028",
              "nested": [[[["deep"]]]], "f": 1.5, "t": True}
    backend.add(accepted(job_id, args=[{"$inc": {"x": 1}}]))
    backend.finish(job_id, "succeeded", result=result)
    record = backend.get(job_id)
    assert record is not None and record["result"] == result
    assert record["args"] == [{"$inc": {"x": 1}}]


def test_find_filters_and_orders_newest_first(backend: Backend) -> None:
    task = unique("task")
    ids = []
    for i in range(5):
        job_id = unique()
        ids.append(job_id)
        backend.add(accepted(job_id, task=task, created_at=1000.0 + i))
    backend.finish(ids[0], "succeeded", result=0)
    found = backend.find(task=task, limit=3)
    assert [r["id"] for r in found] == [ids[4], ids[3], ids[2]]
    assert [r["id"] for r in backend.find(task=task, state="succeeded")] == [ids[0]]
    assert backend.find(task=unique("none")) == []


def test_find_pages_by_keyset_and_filters_by_queue(backend: Backend) -> None:
    task = unique("task")
    ids = [unique() for _ in range(7)]
    for i, job_id in enumerate(ids):
        backend.add(accepted(job_id, task=task, queue="odd" if i % 2 else "even", created_at=1000.0 + i))
    pages, before = [], None
    while page := backend.find(task=task, limit=3, before=before):
        pages.append([r["id"] for r in page])
        before = page[-1]["id"]
    assert pages == [ids[:3:-1], ids[3:0:-1], ids[:1]]  # newest first, each record once
    assert [r["id"] for r in backend.find(task=task, queue="odd")] == [ids[5], ids[3], ids[1]]
    assert [r["id"] for r in backend.find(task=task, queue="odd", before=ids[3])] == [ids[1]]
    backend.finish(ids[2], "failed", error=None)
    backend.finish(ids[0], "failed", error=None)
    assert [r["id"] for r in backend.find(state="failed", task=task, before=ids[2])] == [ids[0]]
    assert backend.find(task=task, before=unique("gone")) == []


def test_finished_per_minute_counts_by_minute_and_state(backend: Backend) -> None:
    now = 60 * (time.time() // 60) + 30  # the middle of this minute
    since = now + 3000  # clear of records other tests finished: in the future
    for offset, state in ((3010, "succeeded"), (3015, "succeeded"), (3015, "failed"), (3080, "succeeded"),
                          (2990, "succeeded")):  # the last one is before ``since``
        job_id = unique()
        backend.add(accepted(job_id))
        backend.finish(job_id, state, result=1, now=now + offset)
    queued = unique()
    backend.add(accepted(queued))
    minute = int((now + 3010) // 60)
    assert backend.finished_per_minute(since) == {minute: {"succeeded": 2, "failed": 1},
                                                  minute + 1: {"succeeded": 1}}


def test_counts_by_state(backend: Backend) -> None:
    start = backend.counts()
    a, b = unique(), unique()
    backend.add(accepted(a))
    backend.add(accepted(b))
    backend.finish(b, "failed", error={"type": "E", "message": "", "traceback": ""})
    counts = backend.counts()
    assert counts.get("queued", 0) == start.get("queued", 0) + 1
    assert counts.get("failed", 0) == start.get("failed", 0) + 1


ERROR = {"type": "E", "message": "m", "traceback": ""}


def test_counts_follow_every_change_of_state(backend: Backend) -> None:
    """Maintained counts stay right through add, claim, finish, retry, cancel, delete and prune."""
    ok, flaky, dead, cancelled, gone, old = (unique() for _ in range(6))
    for job_id in (ok, flaky, dead, cancelled, gone, old):
        backend.add(accepted(job_id))
    backend.add(accepted(ok))  # a repeated add counts once
    assert backend.counts() == {"queued": 6}
    claim(backend, ok)
    claim(backend, flaky)
    claim(backend, flaky)  # a redelivery of a running job moves nothing
    assert backend.counts() == {"queued": 4, "running": 2}
    backend.finish(ok, "succeeded", result=1)
    backend.finish(flaky, "retrying", error=ERROR)
    assert backend.counts() == {"queued": 4, "retrying": 1, "succeeded": 1}
    claim(backend, flaky)
    backend.finish(flaky, "succeeded", result=2)
    claim(backend, dead)
    backend.finish(dead, "failed", error=ERROR)
    backend.update(cancelled, {"state": "cancelled", "expires_at": time.time() + 60},
                   unless=("succeeded", "cancelled"))
    assert backend.counts() == {"queued": 2, "succeeded": 2, "failed": 1, "cancelled": 1}
    backend.update(dead, {"state": "queued", "error": None, "expires_at": None},
                   unless=("queued", "running"))  # a retry of a dead letter
    assert not backend.update(ok, {"state": "cancelled"}, unless=("succeeded",))
    backend.delete(gone)
    backend.finish(old, "succeeded", result=0, now=time.time() - 7200)  # expired an hour ago
    backend.prune()
    assert backend.counts() == {"queued": 1, "succeeded": 2, "cancelled": 1}


def test_counts_of_records_inserted_by_outcomes_and_claims(backend: Backend) -> None:
    """A worker may write a record first (its claim, or an outcome with ``insert``)."""
    claimed, stored = unique(), unique()
    claim(backend, claimed)
    backend.finish(stored, "failed", error=ERROR, insert=accepted(stored))
    backend.add(accepted(claimed))  # the API's write, arriving late, changes no state
    assert backend.counts() == {"running": 1, "failed": 1}
    assert not backend.update(unique(), {"state": "cancelled"})  # no record: nothing counted
    assert backend.counts() == {"running": 1, "failed": 1}


def test_sqlite_counts_are_built_for_a_database_made_before_them(sqlite_url: str) -> None:
    import sqlite3

    backend = backend_from_url(sqlite_url)
    ids = [unique() for _ in range(3)]
    for job_id in ids:
        backend.add(accepted(job_id))
    backend.finish(ids[0], "succeeded", result=1)
    backend.close()
    path = sqlite_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as old:  # as an earlier jobkit left it
        for name in ("insert", "update", "delete"):
            old.execute(f"DROP TRIGGER jobs_counted_{name}")
        old.execute("DROP TABLE job_counts")
    reopened = backend_from_url(sqlite_url)
    assert reopened.counts() == {"queued": 2, "succeeded": 1}
    claim(reopened, ids[1])
    assert reopened.counts() == {"queued": 1, "running": 1, "succeeded": 1}
    reopened.close()


def test_mongo_counts_are_built_for_a_database_made_before_them(mongo_url: str) -> None:
    backend = backend_from_url(mongo_url)
    ids = [unique() for _ in range(3)]
    for job_id in ids:
        backend.add(accepted(job_id))
    backend.finish(ids[0], "succeeded", result=1)
    backend.close()
    import pymongo

    client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(mongo_url)
    client.get_default_database()["job_counts"].drop()  # as an earlier jobkit left it
    client.close()
    reopened = backend_from_url(mongo_url)
    assert reopened.counts() == {"queued": 2, "succeeded": 1}
    claim(reopened, ids[1])
    assert reopened.counts() == {"queued": 1, "running": 1, "succeeded": 1}
    reopened.close()


def worker_record(name: str, last_seen: float, **extra: object) -> dict[str, object]:
    return {"name": name, "host": "h", "pid": 1, "queues": ["default"], "concurrency": 2, "busy": 1,
            "jobs": ["j1"], "started_at": last_seen - 10, "last_seen": last_seen, "jobs_done": 3,
            "jobs_failed": 1} | extra


def test_worker_heartbeats_are_listed_while_fresh(backend: Backend) -> None:
    now = time.time()
    backend.beat_worker(worker_record("b:2", now))
    backend.beat_worker(worker_record("a:1", now - 100))
    backend.beat_worker(worker_record("c:3", now - 5000))
    assert [w["name"] for w in backend.workers(now - 200)] == ["a:1", "b:2"]
    assert backend.workers(now - 10) == [worker_record("b:2", now)]
    backend.beat_worker(worker_record("a:1", now + 1, busy=0))  # the next beat replaces the record
    assert [(w["name"], w["busy"]) for w in backend.workers(now)] == [("a:1", 0), ("b:2", 1)]
    backend.forget_worker("b:2")
    backend.prune()  # records not seen for an hour are deleted
    assert [w["name"] for w in backend.workers(0)] == ["a:1"]


def test_delete(backend: Backend) -> None:
    job_id = unique()
    backend.add(accepted(job_id))
    backend.delete(job_id)
    assert backend.get(job_id) is None


def test_expired_records_are_hidden_then_pruned(backend: Backend) -> None:
    job_id, live = unique(), unique()
    backend.add(accepted(job_id))
    backend.add(accepted(live))
    backend.finish(job_id, "succeeded", result=1, now=time.time() - 7200)  # expired an hour ago
    assert backend.get(job_id) is None
    assert job_id not in [r["id"] for r in backend.find(limit=1000)]
    backend.prune()
    assert backend.get(live) is not None
    claim(backend, job_id)  # a redelivered job whose record expired starts afresh
    record = backend.get(job_id)
    assert record is not None and record["state"] == "running" and record["attempts"] == 1


def test_wait_returns_finished_record_or_times_out(backend: Backend) -> None:
    job_id = unique()
    backend.add(accepted(job_id))
    with pytest.raises(JobTimeout):
        backend.wait(job_id, 0.05)
    backend.finish(job_id, "succeeded", result=5)
    assert backend.wait(job_id, 1)["result"] == 5
    with pytest.raises(JobNotFound):
        backend.wait(unique(), 1)


def test_ping(backend: Backend) -> None:
    backend.ping()


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="memory://.*mongodb://.*sqlite://"):
        backend_from_url("redis://localhost")


def test_mongo_down_is_unavailable_quickly() -> None:
    from jobkit.embedded import free_port

    backend = backend_from_url(f"mongodb://127.0.0.1:{free_port()}/x?serverSelectionTimeoutMS=300")
    with pytest.raises(BackendUnavailable):
        backend.get("x")
    backend.close()


def test_mongo_timeouts_in_the_url_win_over_the_defaults() -> None:
    from jobkit.embedded import free_port

    backend = backend_from_url(f"mongodb://127.0.0.1:{free_port()}/x?serverSelectionTimeoutMS=200")
    started = time.monotonic()
    with pytest.raises(BackendUnavailable):
        backend.get("x")
    assert time.monotonic() - started < 1.5  # the default would be 2 s
    backend.close()


def test_mongo_down_leaves_no_client_behind() -> None:
    import gc
    import warnings

    from jobkit.embedded import free_port

    backend = backend_from_url(f"mongodb://127.0.0.1:{free_port()}/x?serverSelectionTimeoutMS=100")
    gc.collect()  # clients other tests dropped warn when collected: not this backend's doing
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ResourceWarning)
        for _ in range(3):
            with pytest.raises(BackendUnavailable):
                backend.get("x")
        gc.collect()
    assert not [w for w in caught if "Unclosed MongoClient" in str(w.message)]


def test_mongo_indexes_include_ttl_on_expires_at(mongo_url: str) -> None:
    backend = backend_from_url(mongo_url)
    backend.ping()
    import pymongo

    indexes = list(pymongo.MongoClient(mongo_url).get_default_database()["jobs"].list_indexes())
    keys = {tuple(ix["key"].keys()): ix for ix in indexes}
    assert ("state", "created_at") in keys
    assert keys[("expires_at",)].get("expireAfterSeconds") == 0


def test_sqlite_is_shared_by_threads(sqlite_url: str) -> None:
    import threading

    backend = backend_from_url(sqlite_url)
    ids = [unique() for _ in range(40)]

    def work(chunk: list[str]) -> None:
        for job_id in chunk:
            claim(backend, job_id)
            backend.finish(job_id, "succeeded", result=job_id)

    threads = [threading.Thread(target=work, args=(ids[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all((backend.get(i) or {}).get("result") == i for i in ids)


def test_batch_keeps_every_write(backend: Backend) -> None:
    """The worker's batch (outcome of one job, claim of the next) writes both, on every backend."""
    done, following = unique(), unique()
    claim(backend, done)
    with backend.batch():
        assert backend.finish(done, "succeeded", result=1, attempts=1, insert=accepted(done))
        assert claim(backend, following)["state"] == "running"
    assert (backend.get(done) or {}).get("state") == "succeeded"
    assert (backend.get(following) or {}).get("attempts") == 1


def test_sqlite_batch_is_all_or_nothing(sqlite_url: str) -> None:
    backend = backend_from_url(sqlite_url)
    done, following = unique(), unique()
    claim(backend, done)
    with pytest.raises(RuntimeError), backend.batch():
        backend.finish(done, "succeeded", result=1, attempts=1)
        claim(backend, following)
        raise RuntimeError("the worker failed between the writes")
    assert (backend.get(done) or {}).get("state") == "running"  # rolled back
    assert backend.get(following) is None
    with backend.batch():  # the connection is usable afterwards, in and out of batches
        backend.finish(done, "succeeded", result=1, attempts=1)
    assert (backend.get(done) or {}).get("state") == "succeeded"
    backend.close()


def test_sqlite_waits_for_a_writer_then_writes(sqlite_url: str) -> None:
    """A write that finds the file locked by another process's transaction waits for it."""
    import sqlite3
    import threading

    backend = backend_from_url(sqlite_url)
    job_id = unique()
    claim(backend, job_id)
    path = sqlite_url.removeprefix("sqlite:///")
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # holds the write lock
    released: list[float] = []

    def commit() -> None:
        released.append(time.monotonic())
        other.execute("COMMIT")

    release = threading.Timer(0.3, commit)
    release.start()
    assert backend.finish(job_id, "succeeded", result=2, attempts=1)
    assert released and time.monotonic() > released[0]  # it waited for the lock, then wrote
    assert (backend.get(job_id) or {}).get("result") == 2
    release.join()
    other.close()
    backend.close()


def test_sqlite_gives_up_on_a_lock_after_its_timeout(tmp_path: object) -> None:
    import sqlite3

    path = f"{tmp_path}/jobs.db"
    backend = backend_from_url(f"sqlite:///{path}?timeout=0.2")
    backend.ping()  # creates the file and table
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(BackendUnavailable, match="locked"):
            backend.add(accepted(unique()))
    finally:
        other.execute("ROLLBACK")
        other.close()
        backend.close()


def test_sqlite_drops_the_indexes_of_earlier_schemas(tmp_path: object) -> None:
    import sqlite3

    path = f"{tmp_path}/old.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, task TEXT, args TEXT, kwargs TEXT, queue TEXT,"
                " state TEXT NOT NULL, broker_id INTEGER, priority INTEGER, attempts INTEGER NOT NULL"
                " DEFAULT 0, result TEXT, error TEXT, created_at REAL, started_at REAL, finished_at REAL,"
                " expires_at REAL, worker TEXT, idempotency_key TEXT)")
    old.execute("CREATE INDEX jobs_created ON jobs (created_at)")
    old.execute("CREATE INDEX jobs_task_created ON jobs (task, created_at)")
    old.execute("CREATE INDEX jobs_failed ON jobs (created_at) WHERE state = 'failed'")
    old.commit()
    old.close()
    backend = backend_from_url(f"sqlite:///{path}")
    job_id = unique()
    backend.add(accepted(job_id))
    backend.finish(job_id, "failed", error={"type": "E", "message": "m", "traceback": ""})
    assert [r["id"] for r in backend.find(state="failed")] == [job_id]
    backend.close()
    names = {row[0] for row in sqlite3.connect(path).execute(
        "SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")}
    assert names == {"jobs_cancelled_rows", "jobs_failed_rows", "jobs_retrying_rows", "jobs_expiring",
                     "jobs_finished", "leases_ending", "jobs_leased"}


def test_sqlite_starts_its_wal_afresh_while_in_use(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    """A thread of each process checkpoints (SQLite's own checkpoints are off): the WAL stays short."""
    import os
    import sqlite3

    from jobkit.backends import sqlite_wal

    monkeypatch.setattr(sqlite_wal, "RESTART_PAGES", 1)

    def wal_bytes_after_writes(name: str, every_s: float) -> int:
        monkeypatch.setattr(sqlite_wal, "EVERY_S", every_s)
        path = f"{tmp_path}/{name}.db"
        backend = backend_from_url(f"sqlite:///{path}")
        checkpointer = backend._checkpointer  # type: ignore[attr-defined]
        reader = sqlite3.connect(path, isolation_level=None)  # a reader between writes, as the API is
        for _ in range(100):
            runs = checkpointer.runs
            backend.add(accepted(unique()))
            reader.execute("SELECT count(*) FROM jobs").fetchone()
            deadline = time.monotonic() + 10
            while every_s < 1 and checkpointer.runs == runs and time.monotonic() < deadline:
                time.sleep(0.001)  # until the thread has checkpointed after this write
        size = os.path.getsize(f"{path}-wal")
        assert len(backend.find(limit=200)) == 100
        reader.close()
        backend.close()
        return size

    assert wal_bytes_after_writes("unchecked", 3600.0) > 100 * 4096  # every write still in the WAL
    assert wal_bytes_after_writes("checked", 0.001) < 30 * 4096  # the schema (21 pages), then afresh


def _open_and_add(url: str, job_id: str) -> None:
    backend = backend_from_url(url)
    backend.add(accepted(job_id))
    backend.close()


def test_sqlite_processes_opening_a_new_file_at_once_all_get_in(tmp_path: object) -> None:
    """Each sets up the schema (WAL, table, indexes) while the others do the same."""
    import multiprocessing

    url = f"sqlite:///{tmp_path}/fresh.db"
    ids = [unique() for _ in range(6)]
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_open_and_add, args=(url, job_id)) for job_id in ids]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(30)
    assert [proc.exitcode for proc in procs] == [0] * len(ids)
    backend = backend_from_url(url)
    assert all(backend.get(job_id) is not None for job_id in ids)
    backend.close()


# -- broker ids are opaque text -------------------------------------------------------

OPAQUE_IDS = ("42", "007", "12e4", "h1:11300/42", "3f2b9c1e-77aa-4b1e-9d1b-4a6a1b2c3d4e")


def test_broker_ids_are_opaque_text_read_back_unchanged(backend: Backend) -> None:
    """A broker's id is never parsed: ``"007"`` and ``"12e4"`` are not numbers to the store."""
    for broker_id in OPAQUE_IDS:
        job_id = unique()
        backend.add(accepted(job_id, broker_id=broker_id), report_created=False)
        record = backend.get(job_id)
        assert record is not None and record["broker_id"] == broker_id
        assert claim(backend, job_id)["broker_id"] == broker_id
        assert [r["broker_id"] for r in backend.find(limit=1)] == [broker_id]


def test_sqlite_file_with_numeric_broker_ids_is_upgraded_in_place(tmp_path: object) -> None:
    """A file of the first schema (INTEGER broker_id) reads its ids back as text, keeps its
    listing order, and from then on stores opaque ids unchanged."""
    import sqlite3

    path = f"{tmp_path}/old.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, task TEXT, args TEXT, kwargs TEXT, queue TEXT,"
                " state TEXT NOT NULL, broker_id INTEGER, priority INTEGER, attempts INTEGER NOT NULL"
                " DEFAULT 0, result TEXT, error TEXT, created_at REAL, started_at REAL, finished_at REAL,"
                " expires_at REAL, worker TEXT, idempotency_key TEXT)")
    for number, job_id in enumerate(("older", "newer"), start=7):
        old.execute("INSERT INTO jobs (id, task, args, kwargs, queue, state, broker_id, attempts)"
                    " VALUES (?, 'add', '[1]', '{}', 'default', 'queued', ?, 0)", (job_id, number))
    old.commit()
    old.close()
    backend = backend_from_url(f"sqlite:///{path}")
    try:
        assert [(r["id"], r["broker_id"]) for r in backend.find()] == [("newer", "8"), ("older", "7")]
        for broker_id in OPAQUE_IDS:
            backend.add(accepted(job_id := unique(), broker_id=broker_id), report_created=False)
            assert backend.get(job_id)["broker_id"] == broker_id  # type: ignore[index]
        assert [r["state"] for r in backend.find(state="queued", limit=100)].count("queued") == 7
    finally:
        backend.close()


def test_mongo_documents_with_numeric_broker_ids_read_back_as_text(mongo_url: str) -> None:
    import pymongo

    with pymongo.MongoClient(mongo_url) as client:  # a document written by an earlier jobkit
        client.get_default_database()["jobs"].insert_one(
            {"_id": "old1", "task": "add", "state": "queued", "attempts": 0, "broker_id": 7})
    backend = backend_from_url(mongo_url)
    try:
        record = backend.get("old1")
        assert record is not None and record["broker_id"] == "7"
    finally:
        backend.close()
