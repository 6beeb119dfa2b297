"""MongoDB result backend.

URL: any pymongo URI, ``mongodb://user:pass@host:27017/dbname?authSource=admin``.
Database: the URI's path, else ``jobs``; collection ``jobs``. Unless the URI
says otherwise, server selection and connection time out after 2 s, so a
down server is reported quickly instead of hanging requests, and an answer
is awaited 10 s at most (``socketTimeoutMS``): a server cut off by a silent
network partition would otherwise hold the caller until TCP gives up, many
minutes later.

Features: one document per job (``_id`` = job id); every write of a record
is a single upsert or conditional update; listings are newest first by ``created_at``
then ``_id``, paged by keyset (``before``), served by indexes on
``state``+``created_at``, ``task``+``created_at`` and ``created_at``; an
index on ``finished_at``+``state`` serves the dashboard's throughput chart;
a TTL index on ``expires_at`` (stored as a BSON date)
expires finished jobs, and reads hide expired ones until MongoDB's TTL monitor
removes them.

Values: ``args``, ``kwargs``, ``result`` and ``progress`` are stored as native BSON, so a
``hash_payload`` job's document holds ``"result": {"hash": …, "payload": …}``
and ``db.jobs.find({"result.hash": …})`` finds it. What BSON cannot hold
exactly, or MongoDB could read as an operator or a path, is stored as its
JSON text in a one-key wrapper ``{"__jobkit_json__": "<json>"}`` at the
smallest enclosing value, and read back unchanged:

- integers outside BSON's int64 (below -2**63 or from 2**63 up);
- a dict with a key that starts with ``$``, contains ``.`` or NUL, is empty,
  or is ``__jobkit_json__`` itself (the whole dict is wrapped);
- floats NaN and ±Infinity (not JSON; some MongoDB-wire servers refuse them);
- strings (and keys) with lone surrogates, which UTF-8 cannot encode;
- containers nested more than 64 levels inside the field (mongod refuses
  documents nested over 100);
- a scalar as the whole field (a result that is not a list or dict): records
  written before native storage held each of these fields as a JSON text
  string, so a string there is read as such a record's JSON text; and some
  MongoDB-wire servers (nx-27017) turn a ``$set`` of a top-level ``true`` into
  ``1`` and ``-0.0`` into ``0.0``. ``args`` (a list) and ``kwargs`` (a dict)
  are always native.

Counts by state live in ``job_counts``, moved by each write that changes a
record's state (the write returns the state it replaced, then one ``$inc``
moves the count), so :meth:`counts` reads a few hundred small documents at
any size. Finished records are counted per state and hour of expiry, in
documents that the same TTL mechanism removes when that hour is over: a
finished record stays counted until the end of the hour it expires in. The
count and the record are two writes: a process killed between them leaves
a count off by one (never hidden: the records are the truth). A database
made before the counts gets them built once, by the first process to open it.
Worker heartbeats live in ``workers``, expired by a TTL index after
:data:`~jobkit.backends.base.FORGET_WORKER_S`.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pymongo
from pymongo import UpdateOne
from pymongo import errors as mongo_errors
from pymongo import uri_parser

from jobkit.backends.base import FORGET_WORKER_S, FREE_LEASE_KEEP_S, Backend
from jobkit.backends.mongo_counts import build_counts, count_inserted, move_count, write_counted
from jobkit.grouping import GroupWriter
from jobkit.errors import BackendError, BackendUnavailable, ConfigError
from jobkit.job import FINISHED_STATES, RECORD_FIELDS

_JSON_FIELDS = frozenset({"args", "kwargs", "result", "progress"})
_WRAPPER = "__jobkit_json__"  # {_WRAPPER: json text}: a value stored as its JSON text
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
MAX_NATIVE_DEPTH = 64
"""Containers nested deeper than this inside a field are stored wrapped (mongod's limit is 100)."""
_BROKER_FIELDS = ("broker_id", "priority", "queue")
_DUPLICATE_KEY = 11000
#: One add: the document to insert, and the upsert that inserts it (or refreshes an existing one).
_Add = tuple[dict[str, Any], dict[str, Any]]
_DOWN = (mongo_errors.ConnectionFailure, mongo_errors.ServerSelectionTimeoutError)
_DEFAULT_OPTIONS = {"serverSelectionTimeoutMS": 2000, "connectTimeoutMS": 2000, "socketTimeoutMS": 10000}


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
        self._adds: GroupWriter[_Add, bool] = GroupWriter(self._write_adds)

    @property
    def _jobs(self) -> Any:
        if self._client is None or self._pid != os.getpid():
            with self._lock:
                if self._client is None or self._pid != os.getpid():
                    client: pymongo.MongoClient[dict[str, Any]] = pymongo.MongoClient(
                        self.url, **self._client_options)
                    try:
                        _create_indexes(client[self.database]["jobs"])
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
        """Insert a new job's record; concurrent adds of this process share one ``bulk_write``.

        perf: the document is built here, in the caller's thread; the write
        is a :class:`~jobkit.grouping.GroupWriter` group (one round
        trip for every add that arrived meanwhile, one more for their counts),
        and this returns once this record's upsert is acknowledged.
        """
        doc = _to_doc({"state": "queued", "attempts": 0} | record)
        refresh = {k: doc.pop(k) for k in _BROKER_FIELDS if doc.get(k) is not None}
        update: dict[str, Any] = {"$setOnInsert": doc}
        if refresh:
            update["$set"] = refresh
        return self._adds.submit((doc, update))

    def _write_adds(self, adds: list[_Add]) -> list[bool | BaseException]:
        """Upsert a group of records in one unordered ``bulk_write``; an upsert that failed fails alone."""
        with self._db() as jobs:
            try:
                ops = [UpdateOne({"_id": doc["_id"]}, update, upsert=True) for doc, update in adds]
                result = jobs.bulk_write(ops, ordered=False)
                upserted, failed = set(result.upserted_ids), {}
            except mongo_errors.BulkWriteError as exc:
                upserted = {u["index"] for u in exc.details.get("upserted", [])}
                failed = {e["index"]: e for e in exc.details.get("writeErrors", [])}
            count_inserted(jobs, [doc for i, (doc, _) in enumerate(adds) if i in upserted])
        return [self._again(adds[i], failed[i]) if i in failed else i in upserted
                for i in range(len(adds))]

    def _again(self, add: _Add, error: dict[str, Any]) -> bool | BaseException:
        """An upsert that lost a race to insert the same id (a repeated key): now it only refreshes."""
        if error.get("code") != _DUPLICATE_KEY:
            return BackendError(f"MongoDB: the record was not written: {error.get('errmsg')}")
        doc, update = add
        if "$set" in update:
            with self._db() as jobs:
                jobs.update_one({"_id": doc["_id"]}, {"$set": update["$set"]})
        return False

    def claim(self, record: dict[str, Any]) -> dict[str, Any]:
        started = {"state": "running", "started_at": record["started_at"],
                   "worker": record.get("worker"), "lease_until": record.get("lease_until")}
        fresh = _to_doc({k: v for k, v in record.items() if k not in started})
        fresh |= started | {"attempts": 1}
        query: dict[str, Any] = {"_id": record["id"], "state": {"$nin": sorted(FINISHED_STATES)}}
        if record.get("broker_id") is not None:  # not a copy a reconciler replaced
            query["superseded"] = {"$ne": record["broker_id"]}
        with self._db() as jobs:
            # a finished record is left as it was
            write_counted(jobs, query, {"$set": started, "$inc": {"attempts": 1}}, fresh)
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
        if "state" in fields or "expires_at" in fields:  # the count moves: know what it was
            doc = None if insert is None else (
                _to_doc({"state": "queued", "attempts": 0} | insert | fields) | {"_id": job_id})
            with self._db() as jobs:
                return write_counted(jobs, query, changes, doc)
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

    def update_held(self, job_id: str, fields: dict[str, Any], *, worker: str, attempts: int) -> bool:
        query = {"_id": job_id, "state": "running", "worker": worker, "attempts": attempts}
        changes = {"$set": _to_doc(fields)}
        with self._db() as jobs:
            if "state" in fields or "expires_at" in fields:  # the count moves
                return write_counted(jobs, query, changes, None)
            return bool(jobs.update_one(query, changes).matched_count)

    def expired_leases(self, now: float, limit: int = 100) -> list[dict[str, Any]]:
        with self._db() as jobs:  # the index on lease_until bounds the documents read
            docs = list(jobs.find({"lease_until": {"$lt": now}}).sort("lease_until", 1).limit(limit))
        return [_from_doc(doc) for doc in docs]

    def add_many(self, records: Sequence[dict[str, Any]]) -> None:
        requests, docs = [], []
        for record in records:
            doc = _to_doc({"state": "queued", "attempts": 0} | record)
            refresh = {k: doc.pop(k) for k in _BROKER_FIELDS if doc.get(k) is not None}
            update: dict[str, Any] = {"$setOnInsert": doc} | ({"$set": refresh} if refresh else {})
            requests.append(pymongo.UpdateOne({"_id": doc["_id"]}, update, upsert=True))
            docs.append(doc)
        if requests:
            with self._db() as jobs:
                result = jobs.bulk_write(requests, ordered=False)
                count_inserted(jobs, [docs[i] for i in result.upserted_ids])

    def feed(self, job_id: str, slot: int, value: str, *, by: str) -> dict[str, Any] | None:
        """See :meth:`Backend.feed`: two conditional updates, each atomic, each safe to repeat.

        The first fills the slot and counts it; the second, a compare-and-set,
        names the job that makes it due, once. After a crash between the two,
        a repeat (the redelivered job) does the second.
        """
        queued: dict[str, Any] = {"_id": job_id, "state": "queued"}
        with self._db() as jobs:
            jobs.update_one(queued | {f"workflow.inputs.{slot}": {"$exists": False}},
                            {"$set": {f"workflow.inputs.{slot}": value},
                             "$inc": {"workflow.pending": -1}})
            jobs.update_one(queued | {"workflow.pending": {"$lte": 0}, "workflow.due_by": None},
                            {"$set": {"workflow.due_by": by, "parent": by}})
        record = self.get(job_id)
        if record is None or record["state"] != "queued" or record.get("broker_id") is not None:
            return None
        return record if (record.get("workflow") or {}).get("due_by") == by else None

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._db() as jobs:
            doc = jobs.find_one(_live({"_id": job_id}))
        return None if doc is None else _from_doc(doc)

    def find(
        self, *, state: str | None = None, task: str | None = None, queue: str | None = None,
        before: str | None = None, limit: int = 100,
    ) -> list[dict[str, Any]]:
        query: dict[str, Any] = {k: v for k, v in (("state", state), ("task", task), ("queue", queue))
                                 if v is not None}
        with self._db() as jobs:
            if before is not None:  # keyset paging: after that record in (created_at, _id) order
                cursor = jobs.find_one({"_id": before}, {"created_at": 1})
                if cursor is None:
                    return []
                query["$or"] = [{"created_at": {"$lt": cursor.get("created_at")}},
                                {"created_at": cursor.get("created_at"), "_id": {"$lt": before}}]
            docs = list(jobs.find(_live(query)).sort("created_at", pymongo.DESCENDING).limit(limit))
            if len(docs) == limit:  # records created at the same time as the last may lie past the limit
                docs += jobs.find(_live({"$and": [query, {"created_at": docs[-1].get("created_at")}]}))
        return [_from_doc(doc) for doc in _newest_first(docs)[:limit]]

    def finished_per_minute(self, since: float) -> dict[int, dict[str, int]]:
        counts: dict[int, dict[str, int]] = {}
        with self._db() as jobs:  # the index on finished_at bounds the documents read
            docs = jobs.find({"finished_at": {"$gte": since}}, {"_id": 0, "finished_at": 1, "state": 1})
            for doc in docs:
                per_state = counts.setdefault(int(doc["finished_at"] // 60), {})
                per_state[doc["state"]] = per_state.get(doc["state"], 0) + 1
        return counts

    def counts(self) -> dict[str, int]:
        pipeline = [{"$match": _live({})}, {"$group": {"_id": "$state", "n": {"$sum": "$n"}}}]
        with self._db() as jobs:
            rows = list(jobs.database["job_counts"].aggregate(pipeline))
        return {row["_id"]: row["n"] for row in rows if row["_id"] is not None and row["n"] > 0}

    def cancelled(self, job_ids: Collection[str]) -> set[str]:
        if not job_ids:
            return set()
        with self._db() as jobs:
            docs = jobs.find({"_id": {"$in": list(job_ids)}, "state": "cancelled"}, {"_id": 1})
            return {doc["_id"] for doc in docs}

    def delete(self, job_id: str) -> None:
        with self._db() as jobs:
            before = jobs.find_one_and_delete({"_id": job_id}, projection={"state": 1, "expires_at": 1})
            if before is not None:
                move_count(jobs, before, None)

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

    def beat_worker(self, record: dict[str, Any]) -> None:
        doc = {"last_seen": record["last_seen"], "forget_at": _date(record["last_seen"] + FORGET_WORKER_S),
               "record": json.dumps(record, separators=(",", ":"))}
        with self._db() as jobs:
            jobs.database["workers"].update_one({"_id": record["name"]}, {"$set": doc}, upsert=True)

    def workers(self, seen_since: float) -> list[dict[str, Any]]:
        with self._db() as jobs:
            docs = list(jobs.database["workers"].find({"last_seen": {"$gte": seen_since}}).sort("_id", 1))
        return [json.loads(doc["record"]) for doc in docs]

    def forget_worker(self, name: str) -> None:
        with self._db() as jobs:
            jobs.database["workers"].delete_one({"_id": name})


def _create_indexes(jobs: Any) -> None:
    try:
        jobs.create_index([("state", 1), ("created_at", 1)])
        jobs.create_index([("task", 1), ("created_at", 1)])
        jobs.create_index("created_at")
        jobs.create_index([("finished_at", 1), ("state", 1)])
        jobs.create_index("lease_until", sparse=True)
        jobs.create_index("expires_at", expireAfterSeconds=0)
        jobs.database["job_counts"].create_index("expires_at", expireAfterSeconds=0)
        jobs.database["workers"].create_index("forget_at", expireAfterSeconds=0)
        build_counts(jobs)
        jobs.database["leases"].create_index([("key", 1), ("until", 1)])
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


def _newest_first(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Documents once each, newest first: by ``created_at``, then ``_id`` (created at the same time)."""
    unique = {doc["_id"]: doc for doc in docs}
    return sorted(unique.values(), key=lambda d: (d.get("created_at") or 0, d["_id"]), reverse=True)


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
            doc[key] = _field_to_bson(value)
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
        elif key in _JSON_FIELDS and value is not None:
            record[key] = _field_from_bson(value)
        elif key == "broker_id" and isinstance(value, int):  # written before ids were strings
            record[key] = str(value)
        elif key == "expires_at" and isinstance(value, dt.datetime):
            aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
            record[key] = aware.timestamp()
        elif key in record:
            record[key] = value
    return record


def _field_to_bson(value: Any) -> Any:
    """``value`` (args, kwargs or result) as stored: a scalar is wrapped, as bare text means JSON text."""
    return _to_bson(value, 0) if isinstance(value, (dict, list, tuple)) else _wrap(value)


def _field_from_bson(stored: Any) -> Any:
    """The value a field holds: a string is the JSON text of a record written before native storage."""
    return json.loads(stored) if isinstance(stored, str) else _from_bson(stored)


def _to_bson(value: Any, depth: int) -> Any:
    """``value`` as native BSON where that is exact and safe, else its JSON text in a wrapper.

    ``depth`` counts the containers around ``value`` inside its field.
    """
    if isinstance(value, dict):
        if depth >= MAX_NATIVE_DEPTH or not all(map(_safe_key, value)):
            return _wrap(value)
        return {key: _to_bson(item, depth + 1) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        if depth >= MAX_NATIVE_DEPTH:
            return _wrap(value)
        return [_to_bson(item, depth + 1) for item in value]
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return int(value) if _INT64_MIN <= value <= _INT64_MAX else _wrap(value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else _wrap(value)
    if isinstance(value, str) and _utf8(value):
        return str(value)
    return _wrap(value)  # lone surrogates; or not JSON at all, and json.dumps says why


def _from_bson(stored: Any) -> Any:
    """The JSON value of a stored native value: wrappers decoded, BSON's Int64 back to ``int``."""
    if isinstance(stored, dict):
        text = stored.get(_WRAPPER)
        if len(stored) == 1 and isinstance(text, str):
            return json.loads(text)
        return {key: _from_bson(item) for key, item in stored.items()}
    if isinstance(stored, list):
        return [_from_bson(item) for item in stored]
    if isinstance(stored, int) and not isinstance(stored, bool):
        return int(stored)
    return stored


def _safe_key(key: Any) -> bool:
    """True for a key MongoDB stores as it is and never reads as an operator or a path."""
    return (isinstance(key, str) and key != "" and key != _WRAPPER and not key.startswith("$")
            and "." not in key and "\0" not in key and _utf8(key))


def _wrap(value: Any) -> dict[str, str]:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    if not _utf8(text):
        text = json.dumps(value, separators=(",", ":"))  # lone surrogates as \u escapes
    return {_WRAPPER: text}


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
