"""What a worker counts about its jobs, and Prometheus metrics across processes.

A worker's :class:`JobStats` counts the attempts it runs, for its heartbeat
record (``jobs_done``, ``jobs_failed``) and, with ``--metrics-port``, for
Prometheus:

- ``jobkit_jobs_total{task,outcome}``: attempts settled; ``outcome`` is
  ``succeeded``, ``failed`` (for good), ``retried`` or ``cancelled`` (the job
  was cancelled while it ran: its outcome was discarded).
- ``jobkit_job_duration_seconds{task}``: seconds an attempt ran (histogram).
- ``jobkit_job_queue_seconds{task}``: seconds from enqueue to the start of a
  job's first attempt (histogram; retries are left out, their wait is backoff).
- ``jobkit_jobs_running``: attempts running now (summed over live processes).

Several processes (``jobkit worker --pool process``, ``jobkit api
--processes N``) serve one sum through prometheus_client's multiprocess mode:
:func:`multiprocess_dir` makes a private directory before the processes
fork, each process writes its values to files there, and whichever process
answers a scrape reads all of them (:func:`registry_for`).
"""
from __future__ import annotations

import glob
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server, values
from prometheus_client import multiprocess

from jobkit.errors import ConfigError

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus_client's own name for it
_DIR_PREFIX = "jobkit-metrics-"  # then the pid of the process that made it
#: Histogram buckets in seconds: jobs last from milliseconds to an hour.
SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600,
                   1800, 3600, float("inf"))
OUTCOMES = ("succeeded", "failed", "retried", "cancelled")


class PrometheusJobs:
    """The worker's Prometheus metrics, in ``registry`` (never the global one)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.jobs = Counter("jobkit_jobs", "Job attempts settled, by task and outcome",
                            ["task", "outcome"], registry=registry)
        self.duration = Histogram("jobkit_job_duration_seconds", "Seconds a job attempt ran",
                                  ["task"], buckets=SECONDS_BUCKETS, registry=registry)
        self.queued = Histogram("jobkit_job_queue_seconds", "Seconds from enqueue to a job's first start",
                                ["task"], buckets=SECONDS_BUCKETS, registry=registry)
        self.running = Gauge("jobkit_jobs_running", "Job attempts running now",
                             registry=registry, multiprocess_mode="livesum")


class JobStats:
    """Counts of the attempts one worker process runs; thread-safe.

    Args:
        prometheus: where to record them for Prometheus too (None: counts only).
    """

    def __init__(self, prometheus: PrometheusJobs | None = None) -> None:
        self.prometheus = prometheus
        self.done = 0  # attempts settled with any outcome
        self.failed = 0  # of them, those that failed (retried or for good)
        self._lock = threading.Lock()

    def started(self, task: str, queued_s: float | None) -> None:
        """An attempt of ``task`` starts; ``queued_s``: its wait since enqueue (first attempts)."""
        if self.prometheus is not None:
            self.prometheus.running.inc()
            if queued_s is not None:
                self.prometheus.queued.labels(task).observe(max(0.0, queued_s))

    def returned(self) -> None:
        """The task function of an attempt returned (or raised)."""
        if self.prometheus is not None:
            self.prometheus.running.dec()

    def settled(self, task: str, outcome: str, duration_s: float) -> None:
        """An attempt's outcome (one of :data:`OUTCOMES`) was stored."""
        with self._lock:
            self.done += 1
            self.failed += outcome in ("failed", "retried")
        if self.prometheus is not None:
            self.prometheus.jobs.labels(task, outcome).inc()
            self.prometheus.duration.labels(task).observe(duration_s)


# -- several processes, one sum ---------------------------------------------

@contextmanager
def multiprocess_dir() -> Iterator[str]:
    """Put this process (and the processes it forks inside the block) in multiprocess mode.

    prometheus_client picks where values live when it is imported, from
    ``PROMETHEUS_MULTIPROC_DIR``; jobkit imports it earlier, so the choice is
    made again here, once the private directory exists. Afterwards the
    directory is removed and the previous mode restored.
    """
    _remove_orphans()
    path = tempfile.mkdtemp(prefix=f"{_DIR_PREFIX}{os.getpid()}-")
    previous_env, previous_class = os.environ.get(MULTIPROC_ENV), values.ValueClass
    os.environ[MULTIPROC_ENV] = path
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    try:
        yield path
    finally:
        values.ValueClass = previous_class
        if previous_env is None:
            os.environ.pop(MULTIPROC_ENV, None)
        else:
            os.environ[MULTIPROC_ENV] = previous_env
        shutil.rmtree(path, ignore_errors=True)


def _remove_orphans() -> None:
    """Remove the directories of processes that were killed before they could (SIGKILL)."""
    for path in glob.glob(os.path.join(tempfile.gettempdir(), f"{_DIR_PREFIX}*-*")):
        pid = os.path.basename(path).removeprefix(_DIR_PREFIX).split("-", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's
    return True


def active_dir() -> str | None:
    """The multiprocess directory in force in this process, if any."""
    path = os.environ.get(MULTIPROC_ENV)
    return path if path and os.path.isdir(path) and values.ValueClass is not values.MutexValue else None


def registry_for(path: str | None, *collectors: Any) -> CollectorRegistry:
    """A registry to scrape: the sum of every process's files under ``path``, plus ``collectors``."""
    registry = CollectorRegistry(auto_describe=False)
    if path is not None:
        multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    for collector in collectors:
        registry.register(collector)
    return registry


def process_died(pid: int, path: str | None) -> None:
    """Drop a dead process's "live" gauges (its counters stay: they happened)."""
    if path is not None:
        multiprocess.mark_process_dead(pid, path)  # type: ignore[no-untyped-call]


def serve(registry: CollectorRegistry, host: str, port: int) -> Any:
    """Serve ``registry`` at ``http://host:port/metrics`` from a daemon thread; returns the server.

    Raises:
        ConfigError: the address cannot be bound.
    """
    try:
        server, _thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError(f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}") from None
    return server
