"""Prometheus metrics of one API instance, in a registry of its own (never the global one).

- ``jobkit_api_requests_total{route,method,status}``: requests answered.
- ``jobkit_api_request_duration_seconds{route}``: time to answer.
- ``jobkit_api_jobs_accepted_total{task}``: jobs enqueued through the API.
- ``jobkit_queue_jobs{queue,state}``, ``jobkit_queue_waiting_connections{queue}``,
  ``jobkit_broker_up``: read from the broker at each scrape.

With ``--processes N`` the processes count in prometheus_client's
multiprocess mode (see :func:`jobkit.metrics.multiprocess_dir`, entered by the
server before it forks): whichever process answers a scrape adds up the
counts of all of them.
"""
from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from jobkit import metrics
from jobkit.app import App
from jobkit.errors import JobkitError

CONTENT_TYPE = CONTENT_TYPE_LATEST
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_QUEUE_STATES = ("ready", "reserved", "delayed", "buried")
_MAX_CACHED = 1024  # an unusual method name is a key of its own: never let those grow the cache


class Metrics:
    """The counters the API updates, and the text it serves at ``/metrics``.

    Args:
        app: the App asked for queue depths at each scrape.
    """

    def __init__(self, app: App) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.requests = Counter("jobkit_api_requests", "HTTP requests answered",
                                ["route", "method", "status"], registry=self.registry)
        self.duration = Histogram("jobkit_api_request_duration_seconds", "Seconds to answer a request",
                                  ["route"], registry=self.registry)
        self.jobs_accepted = Counter("jobkit_api_jobs_accepted", "Jobs enqueued through the API",
                                     ["task"], registry=self.registry)
        path = metrics.active_dir()
        if path is None:
            self.registry.register(QueueCollector(app))
            self.scraped = self.registry
        else:  # this registry's values live in files; a scrape reads every process's files
            self.scraped = metrics.registry_for(path, QueueCollector(app))
        # Label children by their labels: a dict lookup per request instead of .labels(),
        # which validates and locks each time. Keys are bounded (routes, methods, statuses,
        # registered tasks), as the children themselves are.
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self._accepted_children: dict[str, Counter] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        key = (route, method, status)
        children = self._request_children.get(key)
        if children is None:
            label = method if method in _METHODS else "OTHER"
            children = (self.requests.labels(route, label, str(status)), self.duration.labels(route))
            if len(self._request_children) < _MAX_CACHED:
                self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def accepted(self, task: str) -> None:
        """Count one job enqueued for ``task``."""
        child = self._accepted_children.get(task)
        if child is None:
            child = self._accepted_children[task] = self.jobs_accepted.labels(task)
        child.inc()

    def render(self) -> bytes:
        """The Prometheus text exposition: this process's counts, or every process's."""
        return generate_latest(self.scraped)


class QueueCollector:
    """Queue depths from the broker, read when scraped (never at registration)."""

    def __init__(self, app: App) -> None:
        self.app = app

    def describe(self) -> list[Metric]:
        return list(self._families())

    def collect(self) -> Iterator[Metric]:
        depth, waiting, up = self._families()
        try:
            stats = self.app.queues()
        except JobkitError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        for queue, counts in sorted(stats.items()):
            for state in _QUEUE_STATES:
                depth.add_metric([queue, state], counts.get(state, 0))
            waiting.add_metric([queue], counts.get("waiting", 0))
        yield from (depth, waiting, up)

    @staticmethod
    def _families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        return (
            GaugeMetricFamily("jobkit_queue_jobs", "Jobs in each queue, by state", labels=["queue", "state"]),
            GaugeMetricFamily("jobkit_queue_waiting_connections",
                              "Consumer connections blocked waiting on each queue", labels=["queue"]),
            GaugeMetricFamily("jobkit_broker_up", "1 when the broker answered this scrape"),
        )
