"""MongoDB result backend.

URL: any pymongo URI, ``mongodb://user:pass@host:27017/dbname?authSource=admin``.
Database: the URI's path, else ``jobs``; collection ``jobs``. Unless the URI
says otherwise, server selection and connection time out after 2 s, so a
down server is reported quickly instead of hanging requests.

Features: one document per job (``_id`` = job id); every write is a single
upsert or conditional update; indexes on ``state``+``created_at`` and
``task``+``created_at``; a TTL index on ``expires_at`` (stored as a BSON date)
expires finished jobs, and reads hide expired ones until MongoDB's TTL monitor
removes them. ``args``, ``kwargs`` and ``result`` are stored as JSON text, so
client keys such as ``$where`` or ``a.b`` are never read as operators or paths
and integers of any size survive.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any

import pymongo
from pymongo import errors as mongo_errors
from pymongo import uri_parser

from jobkit.backends.base import FREE_LEASE_KEEP_S, Backend
from jobkit.errors import BackendError, BackendUnavailable, ConfigError
from jobkit.job import FINISHED_STATES, RECORD_FIELDS

_JSON_FIELDS = frozenset({"args", "kwargs", "result"})
_BROKER_FIELDS = ("broker_id", "priority", "queue")
_DOWN = (mongo_errors.ConnectionFailure, mongo_errors.ServerSelectionTimeoutError)
_DEFAULT_OPTIONS = {"serverSelectionTimeoutMS": 2000, "connectTimeoutMS": 2000}


class MongoBackend(Backend):
    """Job records in the ``jobs`` collection of a MongoDB database."""

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        try:
            parsed = uri_parser.parse_uri(url)
        except (mongo_errors.InvalidURI, mongo_errors.ConfigurationError, ValueError) as exc:
            raise ConfigError(f"bad MongoDB URL: {exc}") from None
        self.database = parsed.get("database") or "jobs"
        given = {name.lower() for name in parsed["options"]}  # option names are case-insensitive
        self._client_options: dict[str, Any] = {
            k: v for k, v in _DEFAULT_OPTIONS.items() if k.lower() not in given}
        self._client: pymongo.MongoClient[dict[str, Any]] | None = None
        self._pid = os.getpid()
        self._lock = threading.Lock()

    @property
    def _jobs(self) -> Any:
        if self._client is None or self._pid != os.getpid():
            with self._lock:
                if self._client is None or self._pid != os.getpid():
                    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
                        self.url, **self._client_options)
                    try:
                        _create_indexes(client[self.database]["jobs"])
                        _create_indexes(client[self.database]["leases"])
                    except BaseException:
                        client.close()  # or every failed call leaks a client and its threads
                        raise
                    self._client, self._pid = client, os.getpid()
        return self._client[self.database]["jobs"]

    @contextmanager
    def _db(self) -> Iterator[Any]:
        try:
            yield self._jobs
        except _DOWN as exc:
            raise BackendUnavailable(f"MongoDB unreachable: {exc}") from None
        except mongo_errors.DuplicateKeyError:
            raise  # a guarded upsert that found the record in a protected state
        except mongo_errors.PyMongoError as exc:
            raise BackendError(f"MongoDB: {exc}") from None

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None and self._pid == os.getpid():
            client.close()

    def add(self, record: dict[str, Any], *, report_created: bool = True) -> bool:
        doc = _to_doc({"state": "queued", "attempts": 0} | record)
        refresh = {k: doc.pop(k) for k in _BROKER_FIELDS if doc.get(k) is not None}
        update: dict[str, Any] = {"$setOnInsert": doc}
        if refresh:
            update["$set"] = refresh
        with self._db() as jobs:
            result = jobs.update_one({"_id": doc["_id"]}, update, upsert=True)
        return result.upserted_id is not None

    def claim(self, record: dict[str, Any]) -> dict[str, Any]:
        started = {"state": "running", "started_at": record["started_at"],
                   "worker": record.get("worker")}
        fresh = _to_doc({k: v for k, v in record.items() if k not in started})
        fresh.pop("attempts", None)
        try:  # update_one + find_one rather than find_one_and_update: wire servers differ there
            with self._db() as jobs:
                jobs.update_one(
                    {"_id": record["id"], "state": {"$nin": sorted(FINISHED_STATES)}},
                    {"$set": started, "$inc": {"attempts": 1}, "$setOnInsert": fresh}, upsert=True)
        except mongo_errors.DuplicateKeyError:
            pass  # finished: left as it was
        current = self.get(record["id"])
        if current is None:  # finished long ago and expired: start afresh
            self.delete(record["id"])
            return self.claim(record)
        return current

    def update(
        self,
        job_id: str,
        fields: dict[str, Any],
        *,
        unless: Collection[str] = (),
        insert: dict[str, Any] | None = None,
    ) -> bool:
        query: dict[str, Any] = {"_id": job_id}
        if unless:
            query["state"] = {"$nin": list(unless)}
        changes: dict[str, Any] = {"$set": _to_doc(fields)}
        if insert is not None:
            extra = _to_doc({"state": "queued", "attempts": 0} | insert)
            changes["$setOnInsert"] = {k: v for k, v in extra.items()
                                       if k not in changes["$set"] and k != "_id"}
        try:
            with self._db() as jobs:
                result = jobs.update_one(query, changes, upsert=insert is not None)
        except mongo_errors.DuplicateKeyError:
            return False  # exists, in a state that must not be overwritten
        return bool(result.matched_count or result.upserted_id is not None)

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._db() as jobs:
            doc = jobs.find_one(_live({"_id": job_id}))
        return None if doc is None else _from_doc(doc)

    def find(
        self, *, state: str | None = None, task: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        query: dict[str, Any] = {}
        if state is not None:
            query["state"] = state
        if task is not None:
            query["task"] = task
        with self._db() as jobs:
            docs = list(jobs.find(_live(query)).sort("created_at", pymongo.DESCENDING).limit(limit))
        return [_from_doc(doc) for doc in docs]

    def counts(self) -> dict[str, int]:
        pipeline = [{"$match": _live({})}, {"$group": {"_id": "$state", "n": {"$sum": 1}}}]
        with self._db() as jobs:
            return {row["_id"]: row["n"] for row in jobs.aggregate(pipeline)}

    def delete(self, job_id: str) -> None:
        with self._db() as jobs:
            jobs.delete_one({"_id": job_id})

    def ping(self) -> None:
        with self._db() as jobs:
            jobs.database.command("ping")

    def prune(self, now: float | None = None) -> int:
        """Delete expired records now (MongoDB's TTL monitor does it within a minute anyway)."""
        now = time.time() if now is None else now
        with self._db() as jobs:
            jobs.database["leases"].delete_many({"holder": None, "until": {"$lte": now - FREE_LEASE_KEEP_S}})
            return int(jobs.delete_many({"expires_at": {"$lte": _date(now)}}).deleted_count)

    # -- leases: one document per (key, slot) in ``leases``; times are plain numbers --------------

    @contextmanager
    def _leases(self) -> Iterator[Any]:
        with self._db() as jobs:
            yield jobs.database["leases"]

    def acquire(self, key: str, holder: str, *, slots: int, now: float, until: float) -> float:
        mine = {"key": key, "slot": {"$lt": slots}}
        with self._leases() as leases:
            while True:  # update_one changes one matching document atomically: the first free lease
                taken = leases.update_one(mine | {"until": {"$lte": now}},
                                          {"$set": {"holder": holder, "until": until}})
                if taken.matched_count:
                    return 0.0
                ends = {doc["slot"]: doc["until"] for doc in leases.find(mine, {"slot": 1, "until": 1})}
                if len(ends) >= slots:
                    return max(float(min(ends.values())) - now, 1e-6)
                _make_leases(leases, key, [slot for slot in range(slots) if slot not in ends])

    def hold(self, key: str, holder: str, *, until: float | None) -> bool:
        change = {"until": until} if until is not None else {"holder": None, "until": time.time()}
        with self._leases() as leases:
            return bool(leases.update_many({"key": key, "holder": holder}, {"$set": change}).matched_count)

    def leases(self, key: str) -> list[dict[str, Any]]:
        with self._leases() as leases:
            docs = list(leases.find({"key": key}).sort("slot", pymongo.ASCENDING))
        return [{"slot": doc["slot"], "holder": doc.get("holder"), "until": doc["until"]} for doc in docs]


def _create_indexes(collection: Any) -> None:
    try:
        if collection.name == "leases":
            collection.create_index([("key", 1), ("until", 1)])
            return
        collection.create_index([("state", 1), ("created_at", 1)])
        collection.create_index([("task", 1), ("created_at", 1)])
        collection.create_index("expires_at", expireAfterSeconds=0)
    except _DOWN as exc:
        raise BackendUnavailable(f"MongoDB unreachable: {exc}") from None
    except mongo_errors.PyMongoError as exc:
        raise BackendError(f"MongoDB: cannot create indexes: {exc}") from None


def _make_leases(leases: Any, key: str, slots: list[int]) -> None:
    """Insert the free leases ``slots`` of ``key``; those another process made meanwhile stay as they are."""
    docs = [{"_id": f"{slot}:{key}", "key": key, "slot": slot, "holder": None, "until": 0.0}
            for slot in slots]
    try:
        leases.insert_many(docs, ordered=False)
    except mongo_errors.BulkWriteError as exc:
        if any(error.get("code") != 11000 for error in exc.details.get("writeErrors", [])):
            raise


def _live(query: dict[str, Any]) -> dict[str, Any]:
    """``query`` restricted to records not expired (``$and`` keeps both parts on every server)."""
    alive = {"$or": [{"expires_at": None}, {"expires_at": {"$gt": _date(time.time())}}]}
    return {"$and": [query, alive]} if query else alive


def _date(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def _to_doc(record: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, value in record.items():
        if key == "id":
            doc["_id"] = value
        elif key in _JSON_FIELDS and value is not None:
            doc[key] = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
        elif key == "expires_at" and value is not None:
            doc[key] = _date(value)
        else:
            doc[key] = value
    return doc


def _from_doc(doc: dict[str, Any]) -> dict[str, Any]:
    record: dict[str, Any] = dict.fromkeys(RECORD_FIELDS)
    for key, value in doc.items():
        if key == "_id":
            record["id"] = value
        elif key in _JSON_FIELDS and isinstance(value, str):
            record[key] = json.loads(value)
        elif key == "expires_at" and isinstance(value, dt.datetime):
            aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
            record[key] = aware.timestamp()
        elif key in record:
            record[key] = value
    return record
