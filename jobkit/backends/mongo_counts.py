"""Counts by state for the MongoDB backend, kept in the ``job_counts`` collection.

Unfinished records are counted per state (``_id`` = the state). Finished
ones, which MongoDB's TTL monitor deletes without telling anyone, are
counted per state and hour of expiry (``_id`` = ``state@hour``), in
documents with an ``expires_at`` of their own that the same TTL mechanism
removes when the hour is over. A write that changes a record's state gets
back the state it replaced (``find_one_and_update``, returning the document
before), then moves one count with a single ``bulk_write``.
"""
from __future__ import annotations

import datetime as dt
from typing import Any

from pymongo import ReturnDocument, UpdateOne
from pymongo import errors as mongo_errors

COUNTED = {"state": 1, "expires_at": 1}  # what a write must know of a record to move its count
COUNT_BUCKET_S = 3600  # finished records are counted per hour of expiry
_BUILT = "_built"  # the marker document of job_counts: the counts exist


def write_counted(jobs: Any, query: dict[str, Any], changes: dict[str, Any],
                  doc: dict[str, Any] | None) -> bool:
    """Change the record ``query`` matches, else insert ``doc`` (when given); move its count.

    Returns:
        True when a record was written; False when none matched and ``doc``
        was None, or its id exists in a state ``query`` leaves out.
    """
    for _ in range(2):  # an insert that finds the id taken looks again: a racing insert may match
        before = jobs.find_one_and_update(query, changes, projection=COUNTED,
                                          return_document=ReturnDocument.BEFORE)
        if before is not None:
            move_count(jobs, before, _after(before, changes["$set"]))
            return True
        if doc is None:
            return False
        try:
            jobs.insert_one(doc)
        except mongo_errors.DuplicateKeyError:
            continue
        move_count(jobs, None, doc)
        return True
    return False


def _after(before: dict[str, Any], changed: dict[str, Any]) -> dict[str, Any]:
    return {key: changed[key] if key in changed else before.get(key) for key in COUNTED}


def move_count(jobs: Any, before: dict[str, Any] | None, after: dict[str, Any] | None) -> None:
    """Move one record's count from its state ``before`` a write to its state ``after`` it."""
    old, new = _count_key(before), _count_key(after)
    if old == new:
        return
    ops = []
    if old is not None:
        ops.append(UpdateOne({"_id": old[0]}, {"$inc": {"n": -1}}))  # an hour already over: nothing
    if new is not None:
        ops.append(UpdateOne({"_id": new[0]}, {"$inc": {"n": 1}, "$setOnInsert": {
            "state": new[1], "expires_at": new[2]}}, upsert=True))
    jobs.database["job_counts"].bulk_write(ops, ordered=False)


def count_inserted(jobs: Any, docs: list[dict[str, Any]]) -> None:
    """Count records just inserted (a group of adds), with one ``bulk_write`` for all of them."""
    tally: dict[tuple[str, str, dt.datetime | None], int] = {}
    for doc in docs:
        key = _count_key(doc)
        if key is not None:
            tally[key] = tally.get(key, 0) + 1
    _add_tally(jobs.database["job_counts"], tally)


def _add_tally(counts: Any, tally: dict[tuple[str, str, dt.datetime | None], int]) -> None:
    ops = [UpdateOne({"_id": key[0]}, {"$inc": {"n": n}, "$setOnInsert": {
        "state": key[1], "expires_at": key[2]}}, upsert=True) for key, n in tally.items()]
    if ops:
        counts.bulk_write(ops, ordered=False)


def _count_key(doc: dict[str, Any] | None) -> tuple[str, str, dt.datetime | None] | None:
    """(id, state, expiry) of the count document a record belongs to (None for no record)."""
    if doc is None or doc.get("state") is None:
        return None
    state, seconds = doc["state"], _seconds(doc.get("expires_at"))
    if seconds is None:
        return state, state, None
    hour = int(seconds // COUNT_BUCKET_S) * COUNT_BUCKET_S
    return f"{state}@{hour}", state, _date(hour + COUNT_BUCKET_S)


def _seconds(value: Any) -> float | None:
    """Unix seconds of a stored date (some wire servers project dates as ISO text), else None."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, dt.datetime):
        return None
    return value.replace(tzinfo=value.tzinfo or dt.UTC).timestamp()


def build_counts(jobs: Any) -> None:
    """Count the records of a database made before the counts, once (the marker's inserter does)."""
    counts = jobs.database["job_counts"]
    try:
        counts.insert_one({"_id": _BUILT, "state": None, "n": 0})
    except mongo_errors.DuplicateKeyError:
        return
    tally: dict[tuple[str, str, dt.datetime | None], int] = {}
    for doc in jobs.find({}, projection=COUNTED):
        key = _count_key(doc)
        if key is not None:
            tally[key] = tally.get(key, 0) + 1
    _add_tally(counts, tally)


def _date(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)
