"""MongoDB documents: ``args``, ``kwargs`` and ``result`` stored as native BSON, every JSON value exact.

Runs on the session's MongoDB server (``mongod``, else the nx-27017 wire server) and reads the
stored documents with pymongo, as a user querying their results would.
"""
from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from typing import Any

import pymongo
import pytest

from jobkit import App
from jobkit.backends import backend_from_url
from jobkit.backends.mongo import MAX_NATIVE_DEPTH, MongoBackend
from jobkit.worker import Worker
from tests.conftest import unique

WRAPPER = "__jobkit_json__"


@pytest.fixture
def backend(mongo_url: str) -> Iterator[MongoBackend]:
    backend = backend_from_url(mongo_url)
    assert isinstance(backend, MongoBackend)
    yield backend
    backend.close()


@pytest.fixture
def jobs(mongo_url: str) -> Iterator[Any]:
    """The ``jobs`` collection itself, through a client of the test's own."""
    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(mongo_url)
    yield client.get_default_database()["jobs"]
    client.close()


def nested(depth: int, leaf: Any = "leaf") -> Any:
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


EDGE_VALUES: list[Any] = [
    None, True, False, 0, -1, 1.5, -0.0, 1e308, 5e-324, "", "text", "é\u2028😀", "a\x00b", "\ud800",
    2**63 - 1, -(2**63), 2**63, -(2**63) - 1, 2**64, -(2**64), 10**40,
    [], {}, [[]], [{}], {"e": {}}, {"e": []},
    {"$where": "1"}, {"a.b": 1}, {".": 1}, {"a.": [1]}, {"$": 1}, {"": 1}, {"k\x00": 1},
    {"\udc00": 1}, {WRAPPER: "x"}, {WRAPPER: 1, "other": 2}, {"price$": 1},
    {"outer": {"$set": {"x": 1}}, "ok": [1, {"$inc": {"y": 2**70}}]},
    {"hash": "h", "payload": '{"example":"data"}'},
    [1, 1.0, True, "1", None], {"i": 1, "f": 1.0, "b": True},
    nested(MAX_NATIVE_DEPTH - 1), nested(MAX_NATIVE_DEPTH), nested(MAX_NATIVE_DEPTH + 1), nested(300),
    nested(64, {"$deep": 2**64}),
]


def exact(value: Any) -> Any:
    """``value`` with every scalar tagged by type, so ``1``, ``1.0`` and ``True`` compare unequal."""
    if isinstance(value, dict):
        return {key: exact(item) for key, item in value.items()}
    if isinstance(value, list):
        return [exact(item) for item in value]
    if isinstance(value, float):
        return ("float", repr(value))  # -0.0 and 0.0 differ
    return (type(value).__name__, value)


def random_json(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value mixing what BSON holds natively with what it cannot."""
    kind = rng.randrange(10 if depth < 6 else 7)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([rng.randint(-(2**31), 2**31), rng.randint(-(2**66), 2**66), 2**63, -(2**63) - 1])
    if kind == 2:
        return rng.choice([rng.uniform(-1e9, 1e9), -0.0, 0.1, 1e-300])
    if kind in (3, 4, 5, 6):
        return random_text(rng)
    if kind in (7, 8):
        return {random_text(rng): random_json(rng, depth + 1) for _ in range(rng.randrange(4))}
    return [random_json(rng, depth + 1) for _ in range(rng.randrange(4))]


def random_text(rng: random.Random) -> str:
    alphabet = ["a", "b", "$", ".", "\x00", "é", "😀", "\ud800", " ", WRAPPER, "_id"]
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(4)))


def stored(jobs: Any, job_id: str) -> dict[str, Any]:
    doc = jobs.find_one({"_id": job_id})
    assert doc is not None
    return dict(doc)


def unsafe_keys(value: Any) -> list[str]:
    """Keys in a stored value that MongoDB could read as an operator or a path."""
    if isinstance(value, dict):
        bad = [key for key in value if key.startswith("$") or "." in key or key == ""]
        return bad + [key for item in value.values() for key in unsafe_keys(item)]
    if isinstance(value, list):
        return [key for item in value for key in unsafe_keys(item)]
    return []


def finish_with(backend: MongoBackend, value: Any) -> str:
    job_id = unique()
    kwargs = value if isinstance(value, dict) else {"v": value}
    backend.add({"id": job_id, "task": "t", "args": [value], "kwargs": kwargs, "created_at": time.time()})
    backend.finish(job_id, "succeeded", result=value, attempts=1)
    return job_id


@pytest.mark.parametrize("value", EDGE_VALUES, ids=range(len(EDGE_VALUES)))
def test_every_json_value_reads_back_exactly(backend: MongoBackend, jobs: Any, value: Any) -> None:
    job_id = finish_with(backend, value)
    record = backend.get(job_id)
    assert record is not None
    assert exact(record["result"]) == exact(value)
    assert exact(record["args"]) == exact([value])
    assert exact(record["kwargs"]) == exact(value if isinstance(value, dict) else {"v": value})
    doc = stored(jobs, job_id)
    assert unsafe_keys({k: doc[k] for k in ("args", "kwargs", "result")}) == []


def test_random_json_values_read_back_exactly(backend: MongoBackend) -> None:
    rng = random.Random(20240613)
    values = [random_json(rng) for _ in range(150)]
    ids = [finish_with(backend, value) for value in values]
    for job_id, value in zip(ids, values, strict=True):
        record = backend.get(job_id)
        assert record is not None
        assert exact(record["result"]) == exact(value), job_id


def test_representable_values_are_stored_natively(backend: MongoBackend, jobs: Any) -> None:
    result = {"n": 2**63 - 1, "f": 1.5, "list": [1, "two", None, {"deep": True}], "text": "a\x00é",
              "rows": [{"deep": True}]}
    job_id = finish_with(backend, result)
    doc = stored(jobs, job_id)
    assert doc["result"] == result and doc["args"] == [result] and doc["kwargs"] == result
    # (nx-27017 answers "malformed JSON" to a path through an array holding a string: not "list")
    assert jobs.find_one({"_id": job_id, "result.rows.deep": True}) is not None
    assert jobs.find_one({"_id": job_id, "result.n": 2**63 - 1}) is not None


def test_what_bson_cannot_hold_is_wrapped_at_the_smallest_enclosing_value(
        backend: MongoBackend, jobs: Any) -> None:
    result = {"big": 2**64, "ops": {"$where": "1"}, "path": {"a.b": 1}, "ok": "plain",
              "inf": float("inf"), "fake": {WRAPPER: "not ours"}}
    job_id = finish_with(backend, result)
    doc = stored(jobs, job_id)["result"]
    assert doc["ok"] == "plain"  # siblings stay queryable
    assert doc["big"] == {WRAPPER: "18446744073709551616"}
    assert doc["ops"] == {WRAPPER: '{"$where":"1"}'}
    assert doc["path"] == {WRAPPER: '{"a.b":1}'}
    assert doc["inf"] == {WRAPPER: "Infinity"}
    assert doc["fake"] == {WRAPPER: json.dumps({WRAPPER: "not ours"}, separators=(",", ":"))}
    assert backend.get(job_id)["result"] == result  # type: ignore[index]


@pytest.mark.parametrize(("result", "text"), [("3", '"3"'), (True, "true"), (-0.0, "-0.0"), (7, "7")])
def test_a_scalar_result_is_stored_wrapped_as_bare_text_means_an_old_record(
        backend: MongoBackend, jobs: Any, result: Any, text: str) -> None:
    job_id = finish_with(backend, result)
    assert stored(jobs, job_id)["result"] == {WRAPPER: text}
    assert exact(backend.get(job_id)["result"]) == exact(result)  # type: ignore[index]


def test_a_hash_payload_document_is_the_seeds_and_queryable(mongo_url: str, jobs: Any) -> None:
    """Run through a worker, the seed's task leaves ``result: {hash, payload}``, found by ``result.hash``."""
    from examples.hashing import hash_payload

    app = App("mongo-docs", broker="memory://", backend=mongo_url)
    app.task(name="hash_payload")(hash_payload.fn)
    worker = Worker(app, concurrency=1, grace_s=1)
    worker.start()
    try:
        job = app.tasks["hash_payload"].delay({"example": "data"})
        job.get(timeout=10)
    finally:
        worker.shutdown(graceful=False)
        app.close()
    found = list(jobs.find({"result.hash": "09ee943c4fa33cd5a355eb7a4e38f7ef"}))
    assert [doc["_id"] for doc in found] == [job.id]
    doc = found[0]
    assert doc["result"] == {"hash": "09ee943c4fa33cd5a355eb7a4e38f7ef", "payload": '{"example":"data"}'}
    assert doc["args"] == [{"example": "data"}] and doc["kwargs"] == {}
    assert doc["state"] == "succeeded" and doc["task"] == "hash_payload"


def old_record(job_id: str, result: Any) -> dict[str, Any]:
    """A document as jobkit wrote it before native storage: JSON text in ``args``/``kwargs``/``result``."""
    return {"_id": job_id, "task": "add", "args": json.dumps([1, {"$inc": 2**70}]),
            "kwargs": json.dumps({"a.b": "x"}), "result": json.dumps(result), "state": "succeeded",
            "attempts": 1, "queue": "default", "priority": 1024, "created_at": time.time(),
            "finished_at": time.time(), "error": None}


@pytest.mark.parametrize("result", ["3", 3, {"hash": "h"}, [1, "x"], None, 10**30])
def test_an_old_record_of_json_text_still_reads_back(
        backend: MongoBackend, jobs: Any, result: Any) -> None:
    job_id = unique()
    jobs.insert_one(old_record(job_id, result))
    record = backend.get(job_id)
    assert record is not None
    assert exact(record["result"]) == exact(result)
    assert record["args"] == [1, {"$inc": 2**70}] and record["kwargs"] == {"a.b": "x"}
    assert [r["id"] for r in backend.find(task="add", limit=1000) if r["id"] == job_id] == [job_id]


def test_an_old_queued_record_finished_by_new_code_reads_back(backend: MongoBackend, jobs: Any) -> None:
    """During an upgrade a job queued by the old code is finished by the new: both halves read."""
    job_id = unique()
    doc = old_record(job_id, None) | {"state": "queued"}
    del doc["result"], doc["finished_at"]
    jobs.insert_one(doc)
    backend.claim({"id": job_id, "task": "add", "args": [0], "started_at": time.time(), "worker": "w"})
    backend.finish(job_id, "succeeded", result="done", attempts=1)
    record = backend.get(job_id)
    assert record is not None
    assert record["result"] == "done" and record["args"] == [1, {"$inc": 2**70}]
