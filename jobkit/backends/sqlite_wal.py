"""The SQLite backend's WAL checkpoints, run by a thread of their own, never by a request.

SQLite's own checkpoints (after a commit that takes the WAL past 1000 pages)
never wait: with connections writing and reading back to back they rarely
find a moment without readers, the WAL is never started afresh and grows
without bound, and every commit then checkpoints a little and syncs the file
(measured: 160 MB of WAL and a sync every other job over 20,000 jobs). So
those are off, and each process using the file checkpoints it itself.

Where: once, whichever request or worker slot found a checkpoint due ran it
inline, and a RESTART checkpoint waited up to 200 ms for readers while
holding the write lock: the slowest jobs took 195–355 ms at 100 jobs/s. Now
a thread per process does it every :data:`EVERY_S` while the process uses
the file: a PASSIVE checkpoint copies the WAL into the database (writers go
on meanwhile, readers too); only when the WAL has grown past
:data:`RESTART_PAGES` does a RESTART start it afresh, waiting at most
:data:`RESTART_WAIT_S` for readers, which bounds what writers wait then.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading

log = logging.getLogger("jobkit.backends.sqlite")

#: Seconds between checkpoints while the process uses the file.
EVERY_S = 0.5
#: WAL pages (4 KiB) past which the WAL is started afresh (RESTART), not only copied.
RESTART_PAGES = 4096
#: The most a RESTART waits for readers and writers (it holds the write lock meanwhile), in seconds.
RESTART_WAIT_S = 0.01


class Checkpointer:
    """Checkpoint one SQLite file from a daemon thread while this process uses it.

    :meth:`start` (idempotent, fork-aware) starts the thread; the backend
    sets :attr:`used` whenever it touches the file, and the thread does
    nothing in a period when nobody did (an idle worker costs no wake-up work).

    Args:
        path: the database file.
        synchronous: the backend's ``PRAGMA synchronous`` (a checkpoint syncs as it says).
    """

    def __init__(self, path: str, synchronous: str) -> None:
        self.path, self.synchronous = path, synchronous
        self.used = False
        self.runs = 0  # checkpoints done by this process's thread
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the thread in this process, unless it runs already."""
        if self._thread is not None and self._pid == os.getpid():
            return
        with self._lock:
            if self._thread is None or self._pid != os.getpid():  # none yet, or the parent's (forked)
                self._stop = threading.Event()
                self._pid = os.getpid()
                self._thread = threading.Thread(target=self._run, args=(self._stop,),
                                                name="jobkit-sqlite-checkpoint", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        """Stop the thread (it closes its connection); :meth:`start` makes a new one."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None and self._pid == os.getpid() and thread is not threading.current_thread():
            thread.join(1.0)

    def _run(self, stop: threading.Event) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while not stop.wait(EVERY_S):
                if not self.used:
                    continue
                self.used = False
                try:
                    conn = conn or self._connect()
                    checkpoint(conn)
                    self.runs += 1
                except sqlite3.Error as exc:  # the next one will do
                    log.debug("sqlite %s: checkpoint skipped: %s", self.path, exc)
        finally:
            if conn is not None:
                conn.close()

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        return conn


def checkpoint(conn: sqlite3.Connection) -> None:
    """Copy the WAL into the database; start it afresh when it has grown past :data:`RESTART_PAGES`."""
    busy, pages, _copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    if busy or pages < RESTART_PAGES:
        return
    conn.execute(f"PRAGMA busy_timeout = {max(1, int(RESTART_WAIT_S * 1000))}")
    try:
        conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
    finally:
        conn.execute("PRAGMA busy_timeout = 0")
