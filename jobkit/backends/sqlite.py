"""SQLite result backend: the embedded default.

URL: ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``.
Options (query string): ``synchronous=normal|full`` (default ``normal``:
survives a killed process; ``full`` also survives power loss, slower),
``timeout=<seconds>`` to wait on a locked database (default 30).

Features: WAL journal, so any number of worker processes and API processes
may share one file; one connection per thread; every write is a single
upsert statement (atomic), except that a worker stores one job's outcome and
claims its next job in one transaction (:meth:`batch`); args, kwargs, result,
error and progress are stored as JSON text; expired rows are pruned by :meth:`prune` and
hidden from reads until then. Listings are newest first in the order the
records were written (rowid); no index covers the task or the hot states
(queued, running, succeeded), so an enqueue writes the row and its id, and a
job's claim its row alone; a job's finish adds entries to two indexes, by
expiry and by ``finished_at`` (the dashboard's throughput chart). Paging goes
by keyset (``before``: the rows after a job id's rowid), never by offset.
Counts by state are kept in ``job_counts`` by triggers on ``jobs`` (every
writer, the pruner included, keeps them right), so :meth:`counts` reads six
rows at any size; they include finished records past their expiry until the
next prune deletes them. Worker heartbeats live in ``workers``. Needs SQLite
3.35+ (``RETURNING``).
"""
from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

from jobkit.backends.base import FORGET_WORKER_S, FREE_LEASE_KEEP_S, Backend, take_input
from jobkit.backends.sqlite_wal import Checkpointer
from jobkit.grouping import GroupWriter
from jobkit.errors import BackendError, BackendUnavailable, ConfigError
from jobkit.job import FINISHED_STATES, RECORD_FIELDS
from jobkit.message import compact_encoder

_JSON_FIELDS = frozenset({"args", "kwargs", "result", "error", "children", "workflow", "waiting",
                          "progress"})
_COLUMNS = ", ".join(RECORD_FIELDS)
_FINISHED = "('" + "','".join(sorted(FINISHED_STATES)) + "')"
_COLUMN_TYPES = {"lease_until": "REAL"}  # of the columns added after the first schema; else TEXT
_ATTENTION_STATES = ("cancelled", "failed", "retrying")  # each has a partial index
_ADD_DEFAULTS = {"state": "queued", "attempts": 0}
#: (field, stored as JSON text, value when absent) for every column, in RECORD_FIELDS order
_ADD_FIELDS = tuple((f, f in _JSON_FIELDS, _ADD_DEFAULTS.get(f)) for f in RECORD_FIELDS)
#: where add's parameters hold the fields a repeated add refreshes
_ID, _BROKER_ID, _PRIORITY, _QUEUE = map(RECORD_FIELDS.index, ("id", "broker_id", "priority", "queue"))
_COUNT_NEW = ("INSERT INTO job_counts (state, n) VALUES (new.state, 1)"
              " ON CONFLICT (state) DO UPDATE SET n = n + 1;")
_COUNT_OLD = "UPDATE job_counts SET n = n - 1 WHERE state = old.state;"


SQLITE_BUSY = 5
log = logging.getLogger("jobkit.backends.sqlite")
SPINS = 16  # retries after only yielding the CPU, before the naps
SPIN_THREADS = 4  # main, heartbeat, one worker slot, the WAL checkpoints
FIRST_NAP_S, LAST_NAP_S = 25e-6, 0.001
_yield = getattr(os, "sched_yield", lambda: time.sleep(0))


def _busy(exc: sqlite3.OperationalError) -> bool:
    """True when SQLite said the database is locked by another connection (SQLITE_BUSY)."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    return str(exc).startswith("database is locked") if code is None else code & 0xFF == SQLITE_BUSY


class _Connection:
    """A connection whose statements wait for a lock held by another connection.

    perf: SQLite's own busy handler sleeps a whole millisecond first, then
    longer, where a writer holds the lock for tens of microseconds: processes
    sharing the file (API, workers, producers) lost most of their time asleep,
    and each sleep costs a context switch. A statement that finds the database
    locked did nothing, so it is run again: first after only yielding the CPU,
    up to :data:`SPINS` times, in a process of at most :data:`SPIN_THREADS`
    threads (a worker's process-pool child, a script: the yield lets the other
    process's writer finish; among many threads it hands the GIL around
    instead, which costs more than it saves), then after naps of 25 µs
    doubling to 1 ms, for up to ``timeout_s`` in all.
    """

    __slots__ = ("conn", "timeout_s", "begin_pending", "lock", "closed")

    def __init__(self, conn: sqlite3.Connection, timeout_s: float) -> None:
        self.conn, self.timeout_s = conn, timeout_s
        self.begin_pending = False  # the next statement starts a write transaction first
        self.lock = threading.RLock()  # held while in use: close() waits for it (see SQLiteBackend.close)
        self.closed = False

    @property
    def in_transaction(self) -> bool:
        return self.conn.in_transaction

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        if self.begin_pending:
            self.begin_pending = False
            self.execute("BEGIN IMMEDIATE")  # the write lock now: no upgrade to fail later
        try:
            return self.conn.execute(sql, params)
        except sqlite3.OperationalError as exc:
            if not _busy(exc):
                raise
        return self._wait_and_execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> sqlite3.Cursor:
        """Run ``sql`` for every row; only inside a write transaction (no lock to wait for)."""
        if self.begin_pending:
            self.begin_pending = False
            self.execute("BEGIN IMMEDIATE")
        return self.conn.executemany(sql, rows)

    def _wait_and_execute(self, sql: str, params: Sequence[Any]) -> sqlite3.Cursor:
        deadline, nap = time.monotonic() + self.timeout_s, FIRST_NAP_S
        spins = SPINS if threading.active_count() <= SPIN_THREADS else 0
        while True:
            if spins:
                spins -= 1
                _yield()
            else:
                time.sleep(nap)
                nap = min(nap * 2, LAST_NAP_S)
            try:
                return self.conn.execute(sql, params)
            except sqlite3.OperationalError as exc:
                if not _busy(exc) or time.monotonic() > deadline:
                    raise

    def close(self) -> None:
        with self.lock:
            self.closed = True
            self.conn.close()


class _Add(NamedTuple):
    """One :meth:`SQLiteBackend.add`: its parameters (in RECORD_FIELDS order) and whether to tell created."""

    params: list[Any]
    report_created: bool


class SQLiteBackend(Backend):
    """Job records in one SQLite table, ``jobs``."""

    DDL = (
        """CREATE TABLE IF NOT EXISTS jobs (
            id TEXT PRIMARY KEY, task TEXT, args TEXT, kwargs TEXT, queue TEXT,
            state TEXT NOT NULL, broker_id TEXT, priority INTEGER,
            attempts INTEGER NOT NULL DEFAULT 0, result TEXT, error TEXT,
            created_at REAL, started_at REAL, finished_at REAL, expires_at REAL,
            worker TEXT, idempotency_key TEXT, parent TEXT, root TEXT, children TEXT,
            workflow TEXT, waiting TEXT, progress TEXT, lease_until REAL, superseded TEXT)""",
        # perf: each index is one more b-tree every enqueue writes, so the row order stands
        # for creation order: listings walk the table newest first by rowid (the order the
        # records were written, within milliseconds of their creation), filtering by task
        # or hot state (queued, running, succeeded) as they go. Only the states worth
        # finding among many (failed, retrying, cancelled) have partial indexes, which
        # claim and finish of a job that succeeds do not touch; their entries are in rowid
        # order too.
        *(f"CREATE INDEX IF NOT EXISTS jobs_{state}_rows ON jobs (state) WHERE state = '{state}'"
          for state in _ATTENTION_STATES),
        # only finished records expire: queued and running ones stay out of this index
        "CREATE INDEX IF NOT EXISTS jobs_expiring ON jobs (expires_at) WHERE expires_at IS NOT NULL",
        # leases of limits and schedules (see Backend.acquire): one row per (key, slot)
        """CREATE TABLE IF NOT EXISTS leases (
            key TEXT NOT NULL, slot INTEGER NOT NULL, holder TEXT, until REAL NOT NULL,
            PRIMARY KEY (key, slot)) WITHOUT ROWID""",
        # a free lease of a key found at once among thousands held (a rate of "5000/s")
        "CREATE INDEX IF NOT EXISTS leases_ending ON leases (key, until)",
        # the throughput chart counts the jobs finished in the last hour from this index alone
        "CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at, state) WHERE finished_at IS NOT NULL",
        # the reconciler looks here for expired leases (a claim adds the entry, an outcome drops it)
        "CREATE INDEX IF NOT EXISTS jobs_leased ON jobs (lease_until) WHERE lease_until IS NOT NULL",
        # indexes of earlier schemas, each a cost to every write
        *(f"DROP INDEX IF EXISTS {name}" for name in (
            "jobs_created", "jobs_task_created", *(f"jobs_{state}" for state in _ATTENTION_STATES))),
    )
    ADD = (f"INSERT OR IGNORE INTO jobs ({_COLUMNS})"
           f" VALUES ({', '.join('?' * len(RECORD_FIELDS))})")
    REFRESH = ("UPDATE jobs SET broker_id = coalesce(?, broker_id),"
               " priority = coalesce(?, priority), queue = coalesce(?, queue) WHERE id = ?")
    UPSERT = (ADD.replace("INSERT OR IGNORE", "INSERT", 1) + " ON CONFLICT (id) DO UPDATE SET"
              " broker_id = coalesce(excluded.broker_id, broker_id),"
              " priority = coalesce(excluded.priority, priority), queue = coalesce(excluded.queue, queue)")
    CLAIM = (
        "INSERT INTO jobs (id, task, args, kwargs, queue, priority, created_at, state, attempts,"
        " started_at, worker, lease_until, broker_id) VALUES (?, ?, ?, ?, ?, ?, ?, 'running', 1, ?, ?, ?, ?) "
        "ON CONFLICT (id) DO UPDATE SET state = 'running', attempts = attempts + 1,"
        " started_at = excluded.started_at, worker = excluded.worker, lease_until = excluded.lease_until"
        f" WHERE state NOT IN {_FINISHED}"
        " AND (superseded IS NULL OR superseded IS NOT excluded.broker_id)"  # a copy a reconciler replaced
        f" RETURNING {_COLUMNS}"
    )

    #: Counts by state, kept by triggers; built once from the rows of a database made before them.
    COUNTS_DDL = (
        "CREATE TABLE job_counts (state TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID",
        f"CREATE TRIGGER jobs_counted_insert AFTER INSERT ON jobs BEGIN {_COUNT_NEW} END",
        "CREATE TRIGGER jobs_counted_update AFTER UPDATE OF state ON jobs"
        f" WHEN old.state IS NOT new.state BEGIN {_COUNT_OLD} {_COUNT_NEW} END",
        f"CREATE TRIGGER jobs_counted_delete AFTER DELETE ON jobs BEGIN {_COUNT_OLD} END",
        "INSERT INTO job_counts (state, n) SELECT state, count(*) FROM jobs GROUP BY state",
    )
    WORKERS_DDL = ("CREATE TABLE IF NOT EXISTS workers ("
                   "name TEXT PRIMARY KEY, last_seen REAL NOT NULL, record TEXT NOT NULL)")

    def __init__(self, url: str, **options: Any) -> None:
        super().__init__(url, **options)
        parts = urlsplit(url)
        self.path = parts.path.removeprefix("/")
        if not self.path or self.path == ":memory:":
            raise ConfigError(f"{url!r}: give sqlite a file path (memory:// keeps records in memory)")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.synchronous = query.get("synchronous", "normal").upper()
        if self.synchronous not in ("NORMAL", "FULL", "EXTRA"):
            raise ConfigError(f"{url!r}: synchronous must be normal, full or extra")
        self.timeout_s = float(query.get("timeout", 30))
        self._local = threading.local()
        self._pid = os.getpid()
        self._all: list[_Connection] = []
        self._all_lock = threading.Lock()
        self._schema_ready = False
        self._checkpointer = Checkpointer(self.path, self.synchronous)
        self._adds: GroupWriter[_Add, bool] = GroupWriter(self._write_adds)

    # -- connections -------------------------------------------------------

    def _conn(self) -> _Connection:
        if self._pid != os.getpid():  # forked: the parent's connections are not ours
            self._local, self._all, self._pid = threading.local(), [], os.getpid()
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._all_lock:
                self._all.append(conn)
        return conn

    def _connect(self) -> _Connection:
        if sqlite3.sqlite_version_info < (3, 35):
            raise ConfigError(f"SQLite {sqlite3.sqlite_version} is too old: jobkit needs 3.35+")
        try:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a file where a folder should be, no permission, ...
            folder = Path(self.path).parent
            raise BackendUnavailable(
                f"sqlite {self.path}: cannot make folder {folder}: {exc.strerror}") from None
        conn = sqlite3.connect(self.path, timeout=0, isolation_level=None,  # waits: _Connection
                               check_same_thread=False)
        wrapped = _Connection(conn, self.timeout_s)
        wrapped.execute(f"PRAGMA synchronous={self.synchronous}")
        wrapped.execute("PRAGMA wal_autocheckpoint = 0")  # see jobkit.backends.sqlite_wal
        with self._all_lock:
            if not self._schema_ready:
                self._set_up(wrapped)
                self._schema_ready = True
        self._checkpointer.start()
        return wrapped

    def _set_up(self, conn: _Connection) -> None:
        """Switch to WAL and create the table (a connection waits while another process does)."""
        conn.execute("PRAGMA journal_mode=WAL")
        _add_missing_columns(conn)  # first: the broker-id upgrade copies every column
        self._upgrade_broker_ids(conn)
        for statement in (*self.DDL, self.WORKERS_DDL):
            conn.execute(statement)
        if not _has_table(conn, "job_counts"):
            self._add_counts(conn)

    def _add_counts(self, conn: _Connection) -> None:
        """Create the counts and their triggers, and count the rows there are (one transaction)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            if not _has_table(conn, "job_counts"):  # another process may have done it meanwhile
                for statement in self.COUNTS_DDL:
                    conn.execute(statement)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _upgrade_broker_ids(self, conn: _Connection) -> None:
        """Give a file made when broker ids were numbers a TEXT ``broker_id`` column.

        An INTEGER column turns an opaque id that looks like a number into one
        (``"007"`` reads back as 7, ``"12e4"`` as 120000), and SQLite cannot
        change a column's type: the table is copied once, rowids (the listing
        order) and all, in one transaction. The indexes are made again by :attr:`DDL`.
        """
        conn.execute("BEGIN IMMEDIATE")
        try:
            types = {row[1]: row[2] for row in conn.execute("PRAGMA table_info(jobs)")}
            if types.get("broker_id", "TEXT").upper() != "TEXT":
                conn.execute(self.DDL[0].replace(" jobs (", " jobs_upgrade (", 1))
                values = _COLUMNS.replace("broker_id", "CAST(broker_id AS TEXT)")
                conn.execute(f"INSERT INTO jobs_upgrade (rowid, {_COLUMNS}) SELECT rowid, {values} FROM jobs")
                conn.execute("DROP TABLE jobs")
                conn.execute("ALTER TABLE jobs_upgrade RENAME TO jobs")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _db(self) -> Iterator[_Connection]:
        try:
            conn = self._conn()
            with conn.lock:
                if conn.closed:  # closed by another thread since this one took it
                    raise BackendUnavailable(f"sqlite {self.path}: the backend was closed")
                self._checkpointer.used = True
                yield conn
        except sqlite3.OperationalError as exc:
            raise BackendUnavailable(f"sqlite {self.path}: {exc}") from None
        except sqlite3.Error as exc:
            raise BackendError(f"sqlite {self.path}: {exc}") from None

    @contextmanager
    def batch(self) -> Iterator[None]:
        with self._db() as db:
            db.begin_pending = True  # perf: the write lock is taken by the first statement
            try:
                yield
            except BaseException:
                if db.in_transaction:  # SQLite ends it itself after some errors
                    db.execute("ROLLBACK")
                raise
            finally:
                db.begin_pending = False
            if db.in_transaction:
                db.execute("COMMIT")

    @contextmanager
    def _transaction(self) -> Iterator[_Connection]:
        """The connection, inside a write transaction: the caller's :meth:`batch`, else one of its own."""
        with self._db() as db:
            if db.in_transaction or db.begin_pending:
                yield db
                return
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def close(self) -> None:
        """Close every thread's connection, each once no thread is using it.

        A thread that used a connection when it was closed gets a
        :class:`BackendUnavailable` (never a crash); any later use reconnects.
        """
        with self._all_lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
        self._local = threading.local()
        self._checkpointer.stop()

    # -- the contract ------------------------------------------------------

    def add(self, record: dict[str, Any], *, report_created: bool = True) -> bool:
        """Insert a new job's record; concurrent adds of this process share one transaction.

        perf: the record is encoded here, in the caller's thread; the write is
        a :class:`~jobkit.grouping.GroupWriter` group (one write lock,
        one commit for every add that arrived meanwhile), and this returns once
        the transaction holding this record has committed. Inside this thread's
        own :meth:`batch` it is a statement of that transaction instead.
        """
        get = record.get  # the record over {"state": "queued", "attempts": 0}, JSON fields encoded
        params = [v if v is None or not as_json else _encode(v)
                  for f, as_json, default in _ADD_FIELDS for v in (get(f, default),)]
        add = _Add(params, report_created)
        if self._in_batch():
            with self._db() as db:
                return self._add_one(db, add)
        return self._adds.submit(add)

    def _in_batch(self) -> bool:
        conn: _Connection | None = getattr(self._local, "conn", None)
        return conn is not None and (conn.begin_pending or conn.in_transaction)

    def _write_adds(self, adds: list[_Add]) -> list[bool]:
        """Write a group of adds: one statement alone, several in one transaction (all or none)."""
        if len(adds) == 1:
            with self._db() as db:
                return [self._add_one(db, adds[0])]
        with self.batch(), self._db() as db:
            return [self._add_one(db, add) for add in adds]

    def _add_one(self, db: _Connection, add: _Add) -> bool:
        params = add.params
        if not add.report_created:  # one statement: the same write as ADD, then REFRESH
            db.execute(self.UPSERT, params)
            return True
        if db.execute(self.ADD, params).rowcount:
            return True
        db.execute(self.REFRESH, (params[_BROKER_ID], params[_PRIORITY], params[_QUEUE], params[_ID]))
        return False

    def add_many(self, records: Sequence[dict[str, Any]]) -> None:
        rows = [[v if v is None or not as_json else _encode(v)
                 for f, as_json, default in _ADD_FIELDS for v in (r.get(f, default),)] for r in records]
        if len(rows) == 1 and not self._in_batch():
            with self._db() as db:  # perf: one statement commits alone (no BEGIN, no COMMIT)
                db.execute(self.UPSERT, rows[0])
            return
        with self._transaction() as db:
            db.executemany(self.UPSERT, rows)

    def feed(self, job_id: str, slot: int, value: str, *, by: str) -> dict[str, Any] | None:
        with self._transaction() as db:
            row = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            record = _record(row)
            changed, hand_over = take_input(record, slot, value, by)
            if changed:
                db.execute("UPDATE jobs SET workflow = ?, parent = ? WHERE id = ?",
                           (_encode(record["workflow"]), record["parent"], job_id))
        return record if hand_over else None

    def claim(self, record: dict[str, Any]) -> dict[str, Any]:
        r = record
        args, kwargs = r.get("args", []), r.get("kwargs", {})
        args_text, kwargs_text = _json(args), _json(kwargs)
        with self._db() as db:
            row = db.execute(self.CLAIM, (
                r["id"], r.get("task"), args_text, kwargs_text, r.get("queue"), r.get("priority"),
                r.get("created_at"), r["started_at"], r.get("worker"), r.get("lease_until"),
                r.get("broker_id"),
            )).fetchone()
        if row is not None:  # args and kwargs stored as sent need no decoding
            return _record(row, {"args": (args_text, args), "kwargs": (kwargs_text, kwargs)})
        current = self.get(r["id"])  # finished: left as it was
        if current is None:  # finished long ago and expired: start afresh
            self.delete(r["id"])
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
        names = tuple(fields)
        with self._db() as db:
            params = [_out(n, fields[n]) for n in names] + [job_id, *unless]
            # perf: the record nearly always exists (a worker's claim wrote it), so try the
            # plain UPDATE first; the upsert, with every column to encode, is the fallback
            if db.execute(_update_sql(names, len(unless)), params).rowcount > 0:
                return True
            if insert is None:
                return False
            full = {"state": "queued", "attempts": 0} | insert | fields | {"id": job_id}
            cols = tuple(full)
            params = [_out(c, full[c]) for c in cols] + list(unless)
            return db.execute(_upsert_sql(cols, names, len(unless)), params).rowcount > 0

    def update_held(self, job_id: str, fields: dict[str, Any], *, worker: str, attempts: int) -> bool:
        names = tuple(fields)
        sets = ", ".join(f"{n} = ?" for n in names)
        sql = f"UPDATE jobs SET {sets} WHERE id = ? AND state = 'running' AND worker = ? AND attempts = ?"
        with self._db() as db:
            params = [_out(n, fields[n]) for n in names] + [job_id, worker, attempts]
            return db.execute(sql, params).rowcount > 0

    def expired_leases(self, now: float, limit: int = 100) -> list[dict[str, Any]]:
        with self._db() as db:  # reads the index jobs_leased
            rows = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE lease_until < ?"
                              " ORDER BY lease_until LIMIT ?", (now, limit)).fetchall()
        return [_record(row) for row in rows]

    def get(self, job_id: str) -> dict[str, Any] | None:
        with self._db() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE id = ? AND (expires_at IS NULL OR expires_at > ?)",
                (job_id, time.time())).fetchone()
        return None if row is None else _record(row)

    def find(
        self, *, state: str | None = None, task: str | None = None, queue: str | None = None,
        before: str | None = None, limit: int = 100,
    ) -> list[dict[str, Any]]:
        where, params = ["(expires_at IS NULL OR expires_at > ?)"], [time.time()]
        source = "jobs"
        if state in _ATTENTION_STATES:  # a literal, as the partial index jobs_<state> says it
            where.append(f"state = '{state}'")
            source = f"jobs INDEXED BY jobs_{state}_rows"
        elif state is not None:
            where.append("state = ?")
            params.append(state)  # type: ignore[arg-type]
        for column, value in (("task", task), ("queue", queue)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)  # type: ignore[arg-type]
        if before is not None:  # keyset paging: the rows after that one in rowid order
            where.append("rowid < (SELECT rowid FROM jobs WHERE id = ?)")
            params.append(before)  # type: ignore[arg-type]
        sql = (f"SELECT {_COLUMNS} FROM {source} WHERE {' AND '.join(where)}"
               " ORDER BY rowid DESC LIMIT ?")
        with self._db() as db:
            rows = db.execute(sql, [*params, limit]).fetchall()
        return [_record(row) for row in rows]

    def finished_per_minute(self, since: float) -> dict[int, dict[str, int]]:
        counts: dict[int, dict[str, int]] = {}
        with self._db() as db:  # reads the index jobs_finished only
            rows = db.execute(
                "SELECT CAST(finished_at / 60 AS INTEGER) AS minute, state, count(*) FROM jobs"
                " WHERE finished_at >= ? GROUP BY minute, state", (since,)).fetchall()
        for minute, state, n in rows:
            counts.setdefault(minute, {})[state] = n
        return counts

    def counts(self) -> dict[str, int]:
        with self._db() as db:
            rows = db.execute("SELECT state, n FROM job_counts WHERE n > 0").fetchall()
        return {state: n for state, n in rows}

    def cancelled(self, job_ids: Collection[str]) -> set[str]:
        ids = list(job_ids)
        if not ids:
            return set()
        with self._db() as db:
            rows = db.execute(f"SELECT id FROM jobs WHERE id IN ({', '.join('?' * len(ids))})"
                              " AND state = 'cancelled'", ids).fetchall()
        return {row[0] for row in rows}

    def delete(self, job_id: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def ping(self) -> None:
        with self._db() as db:
            db.execute("SELECT 1").fetchone()

    def prune(self, now: float | None = None) -> int:
        now = time.time() if now is None else now
        with self._db() as db:
            db.execute("DELETE FROM workers WHERE last_seen < ?", (now - FORGET_WORKER_S,))
            db.execute("DELETE FROM leases WHERE holder IS NULL AND until <= ?", (now - FREE_LEASE_KEEP_S,))
            cur = db.execute("DELETE FROM jobs WHERE expires_at <= ?", (now,))
        return cur.rowcount

    # -- leases --------------------------------------------------------------

    #: one statement, so atomic: the first free lease (ended by ``now``) becomes the holder's
    TAKE_LEASE = ("UPDATE leases SET holder = ?, until = ? WHERE key = ? AND slot = ("
                  "SELECT slot FROM leases WHERE key = ? AND slot < ? AND until <= ? LIMIT 1)")

    MAKE_LEASES = ("INSERT OR IGNORE INTO leases (key, slot, holder, until) WITH RECURSIVE"
                   " n(slot) AS (SELECT 0 UNION ALL SELECT slot + 1 FROM n WHERE slot + 1 < ?)"
                   " SELECT ?, slot, NULL, 0 FROM n")

    def acquire(self, key: str, holder: str, *, slots: int, now: float, until: float) -> float:
        with self._db() as db:
            while True:
                if db.execute(self.TAKE_LEASE, (holder, until, key, key, slots, now)).rowcount:
                    return 0.0
                made, first_end = db.execute(
                    "SELECT count(*), min(until) FROM leases WHERE key = ? AND slot < ?",
                    (key, slots)).fetchone()
                if made >= slots:
                    return max(float(first_end) - now, 1e-6)
                db.execute(self.MAKE_LEASES, (slots, key))  # the key's first use: its leases, free

    def hold(self, key: str, holder: str, *, until: float | None) -> bool:
        with self._db() as db:
            if until is None:
                cur = db.execute("UPDATE leases SET holder = NULL, until = ? WHERE key = ? AND holder = ?",
                                 (time.time(), key, holder))
            else:
                cur = db.execute("UPDATE leases SET until = ? WHERE key = ? AND holder = ?",
                                 (until, key, holder))
        return cur.rowcount > 0

    def leases(self, key: str) -> list[dict[str, Any]]:
        with self._db() as db:
            rows = db.execute("SELECT slot, holder, until FROM leases WHERE key = ? ORDER BY slot",
                              (key,)).fetchall()
        return [{"slot": slot, "holder": holder, "until": until} for slot, holder, until in rows]

    def beat_worker(self, record: dict[str, Any]) -> None:
        with self._db() as db:
            db.execute("INSERT INTO workers (name, last_seen, record) VALUES (?, ?, ?) ON CONFLICT (name)"
                       " DO UPDATE SET last_seen = excluded.last_seen, record = excluded.record",
                       (record["name"], record["last_seen"], _encode(record)))

    def workers(self, seen_since: float) -> list[dict[str, Any]]:
        with self._db() as db:
            rows = db.execute("SELECT record FROM workers WHERE last_seen >= ? ORDER BY name",
                              (seen_since,)).fetchall()
        return [json.loads(text) for text, in rows]

    def forget_worker(self, name: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM workers WHERE name = ?", (name,))


_encode = compact_encoder(allow_nan=True)


def _has_table(conn: _Connection, name: str) -> bool:
    found = conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,))
    return found.fetchone() is not None


def _json(value: Any) -> str:
    return _encode(value)


def _out(field: str, value: Any) -> Any:
    if field in _JSON_FIELDS and value is not None:
        return _encode(value)
    return value


def _record(row: tuple[Any, ...], known: dict[str, tuple[str, Any]] | None = None) -> dict[str, Any]:
    """A record from a row; a field whose text is ``known[field][0]`` takes ``known[field][1]``.

    """
    record = dict(zip(RECORD_FIELDS, row, strict=True))
    for field in _JSON_FIELDS:
        text = record[field]
        if text is None:
            continue
        sent = known.get(field) if known else None
        record[field] = sent[1] if sent is not None and sent[0] == text else json.loads(text)
    return record


def _add_missing_columns(conn: _Connection) -> None:
    """Give a table made by an earlier jobkit the columns added since (all nullable)."""
    have = {row[1] for row in conn.execute("PRAGMA table_info(jobs)").fetchall()}
    if not have:
        return  # no table yet: DDL makes it whole
    for name in RECORD_FIELDS:
        if name not in have:
            try:
                conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} {_COLUMN_TYPES.get(name, 'TEXT')}")
            except sqlite3.OperationalError as exc:
                if "duplicate column" not in str(exc):  # another process added it meanwhile
                    raise


@functools.lru_cache(maxsize=256)
def _update_sql(names: tuple[str, ...], guards: int) -> str:
    sets = ", ".join(f"{n} = ?" for n in names)
    guard = f" AND state NOT IN ({', '.join('?' * guards)})" if guards else ""
    return f"UPDATE jobs SET {sets} WHERE id = ?{guard}"


@functools.lru_cache(maxsize=256)
def _upsert_sql(cols: tuple[str, ...], names: tuple[str, ...], guards: int) -> str:
    sets = ", ".join(f"{n} = excluded.{n}" for n in names)
    where = f" WHERE state NOT IN ({', '.join('?' * guards)})" if guards else ""
    return (f"INSERT INTO jobs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}) "
            f"ON CONFLICT (id) DO UPDATE SET {sets}{where}")
