"""The process pool: a supervisor that keeps N worker processes running.

Each child is a full worker with one slot (its own broker connection and
backend connection), forked from the supervisor before anything connects.
The supervisor forwards SIGTERM/SIGINT to the children (which finish or
release their jobs as :mod:`jobkit.worker` describes), replaces children
that die (a child exits on purpose after stopping an overrunning job, or
a cancelled one that went on running), and
kills stragglers ``grace_s`` + 5 s after a stop. With ``metrics_dir`` (see
:func:`jobkit.metrics.multiprocess_dir`) each child records its Prometheus
metrics there, and a dead child's "running" gauge is dropped.
"""
from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Sequence
from multiprocessing.connection import wait
from typing import TYPE_CHECKING, Any

from jobkit.embedded import die_with_parent
from jobkit.metrics import JobStats, PrometheusJobs, process_died
from jobkit.worker import DEFAULT_CANCEL_GRACE_S, PRUNE_EVERY_S, Worker

if TYPE_CHECKING:
    from multiprocessing.process import BaseProcess

    from jobkit.app import App

log = logging.getLogger("jobkit.worker")
RESPAWN_PAUSE_S = 1.0  # a child that dies at once is not respawned faster than this


def _child(app: App, queues: Sequence[str] | None, grace_s: float, prune_every_s: float,
           metrics: bool, cancel_grace_s: float) -> None:
    signal.set_wakeup_fd(-1)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, signal.SIG_DFL)
    os.setpgrp()  # a terminal's Ctrl-C reaches the supervisor only, which forwards it once
    die_with_parent()
    from prometheus_client import CollectorRegistry

    stats = JobStats(PrometheusJobs(CollectorRegistry()) if metrics else None)  # values: files
    Worker(app, queues=queues, concurrency=1, grace_s=grace_s, exit_on_time_limit=True,
           prune_every_s=prune_every_s, stats=stats,
           pool=f"{socket.gethostname()}:{os.getppid()}", cancel_grace_s=cancel_grace_s).run()


class ProcessPool:
    """Supervises ``processes`` forked worker processes."""

    def __init__(self, app: App, *, queues: Sequence[str] | None, processes: int,
                 grace_s: float, prune_every_s: float = PRUNE_EVERY_S,
                 metrics_dir: str | None = None,
                 cancel_grace_s: float = DEFAULT_CANCEL_GRACE_S) -> None:
        self.app, self.queues, self.processes, self.grace_s = app, queues, processes, grace_s
        self.prune_every_s = prune_every_s
        self.metrics_dir = metrics_dir
        self.cancel_grace_s = cancel_grace_s
        self.ctx = multiprocessing.get_context("fork")
        self.children: dict[int, tuple[BaseProcess, float]] = {}
        self.signals = 0
        self._wake_r, self._wake_w = os.pipe()

    def run(self) -> None:
        """Start the children and supervise them until stopped by a signal."""
        os.set_blocking(self._wake_w, False)
        signal.set_wakeup_fd(self._wake_w)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        for slot in range(self.processes):
            self._spawn(slot)
        stop_deadline: float | None = None
        while self.children:
            procs = [proc.sentinel for proc, _ in self.children.values()]
            timeout = None if stop_deadline is None else max(0.0, stop_deadline - time.monotonic())
            ready = wait([*procs, self._wake_r], timeout)
            if self._wake_r in ready:
                os.read(self._wake_r, 512)
            if self.signals and stop_deadline is None:
                stop_deadline = time.monotonic() + self.grace_s + 5
            if stop_deadline is not None and time.monotonic() >= stop_deadline:
                self._kill_all()
            self._reap(respawn=not self.signals)
        signal.set_wakeup_fd(-1)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.signals += 1
        for proc, _ in self.children.values():
            if proc.pid is not None:
                try:
                    os.kill(proc.pid, signum)
                except ProcessLookupError:
                    pass

    def _spawn(self, slot: int) -> None:
        args = (self.app, self.queues, self.grace_s, self.prune_every_s, self.metrics_dir is not None,
                self.cancel_grace_s)
        proc = self.ctx.Process(target=_child, args=args, name=f"jobkit-worker-{slot}", daemon=False)
        proc.start()
        self.children[slot] = (proc, time.monotonic())

    def _reap(self, respawn: bool) -> None:
        for slot, (proc, started) in list(self.children.items()):
            if proc.is_alive():
                continue
            proc.join()
            del self.children[slot]
            if proc.pid is not None:
                process_died(proc.pid, self.metrics_dir)
            if respawn:
                log.warning("worker process %s exited with %s; starting another", proc.pid,
                            proc.exitcode)
                time.sleep(max(0.0, started + RESPAWN_PAUSE_S - time.monotonic()))
                self._spawn(slot)

    def _kill_all(self) -> None:
        for proc, _ in self.children.values():
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signal.SIGKILL)
