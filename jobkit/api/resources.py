"""Falcon resources: validate the request, call the App, shape the answer.

No broker or backend code lives here: jobkit errors propagate and are mapped
to HTTP by :mod:`jobkit.api.errors`.
"""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import falcon

from jobkit.api import validate, views
from jobkit.api.errors import RETRY_AFTER_S
from jobkit.api.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from jobkit.api.metrics import Metrics
from jobkit.app import App
from jobkit.config import Settings
from jobkit.errors import JobTimeout
from jobkit.job import JobState
from jobkit.message import JOB_ID_RE

#: Seconds a client polling ``/v1/jobs/{id}/result`` is asked to wait between polls.
POLL_AFTER_S = 1


class LongPolls:
    """At most ``limit`` requests at once may block a server thread waiting for an outcome.

    waitress has a fixed number of threads: with every one of them waiting
    (``/result?wait=30``), nothing else is answered, ``/healthz`` included.
    A request that finds no free slot does not wait; it answers at once.

    Args:
        limit: slots in this process (0: no request ever waits).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots = threading.Semaphore(limit)

    @contextmanager
    def slot(self) -> Iterator[bool]:
        """Take a slot for the ``with`` block if one is free; yield whether one was taken."""
        taken = self._slots.acquire(blocking=False)
        try:
            yield taken
        finally:
            if taken:
                self._slots.release()


@dataclass(frozen=True)
class Api:
    """What the resources share: settings, the App, the metrics and the long-poll slots."""

    settings: Settings
    app: App
    metrics: Metrics
    long_polls: LongPolls


def accept(api: Api, req: falcon.Request, resp: falcon.Response, task: str, args: list[Any],
           kwargs: dict[str, Any] | None = None, **options: Any) -> None:
    """Enqueue a job and answer 202 (200 for a repeated ``Idempotency-Key``) with its id."""
    job = api.app.send(task, args, kwargs, idempotency_key=validate.idempotency_key(req), **options)
    if job.created:
        api.metrics.accepted(task)
    resp.status = falcon.HTTP_202 if job.created else falcon.HTTP_200
    resp.location = f"/v1/jobs/{job.id}"
    resp.data = id_body(job.id)
    resp.content_type = falcon.MEDIA_JSON


def id_body(job_id: str) -> bytes:
    """``{"id": job_id}`` as JSON bytes.

    perf: a job id is URL-safe (letters, digits, ``-``, ``_``), nothing JSON
    escapes, so the body is formatted directly rather than through the media
    handler and an encoder, once per enqueue.
    """
    if not JOB_ID_RE.match(job_id):  # never, for ids jobkit makes; still, never malformed JSON
        return json.dumps({"id": job_id}).encode()
    return b'{"id":"%s"}' % job_id.encode()


class Seed:
    """The seed's routes: ``POST /`` and ``GET /{job_id}`` (``/{job_id}/`` too)."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Enqueue the default task with the body (any JSON value) as its one argument."""
        accept(self.api, req, resp, self.api.settings.default_task, [validate.read_json(req)])

    def on_get_status(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        """The broker's stats-job while it holds the job (where it can peek), else the stored outcome."""
        status = self.api.app.status(validate.job_id(job_id))
        if status.state.finished:
            resp.media = views.seed_outcome(status)
            return
        stats = self.api.app.broker_view(status.id, status.broker_id)  # None: cannot peek, or is down
        resp.media = views.seed_stats(stats) if stats is not None else views.seed_outcome(status)


class Jobs:
    """``/v1/jobs`` and one job: read, wait for the result, cancel, retry."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Enqueue ``{"task", "args"?, "kwargs"?, "queue"?, "priority"?, "delay"?, "ttr"?}``."""
        job = validate.job_request(validate.read_json(req))
        accept(self.api, req, resp, job.task, job.args, job.kwargs, **job.options)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Records, newest first, filtered by ``state`` and ``task``."""
        state, task, limit = validate.list_params(req)
        resp.media = {"jobs": self.api.app.jobs(state=state, task=task, limit=limit)}

    def on_get_item(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        """The record, plus ``"broker"``: the broker's stats-job while it holds the job, else null."""
        status = self.api.app.status(validate.job_id(job_id))
        stats = None
        if status.state is not JobState.SUCCEEDED:
            stats = self.api.app.broker_view(status.id, status.broker_id)
        resp.media = status.record | {"broker": stats}

    def on_delete_item(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        """Cancel: 200 with the record; 409 when it already succeeded or was cancelled."""
        resp.media = self.api.app.cancel(validate.job_id(job_id)).record

    def on_get_result(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        """200 with the outcome once finished (check ``state``); 202 while not, after ``?wait=S``.

        When every long-poll slot is taken, the answer comes at once, as if ``wait`` were 0.
        """
        wait_s = validate.wait_param(req)
        job_id = validate.job_id(job_id)
        if wait_s > 0:
            with self.api.long_polls.slot() as free:
                if free:
                    self._wait(job_id, wait_s)
        status = self.api.app.status(job_id)
        resp.media = views.outcome(status)
        if not status.state.finished:
            resp.status = falcon.HTTP_202
            resp.set_header("Retry-After", str(POLL_AFTER_S))

    def _wait(self, job_id: str, wait_s: float) -> None:
        try:
            self.api.app.wait(job_id, wait_s)
        except JobTimeout:
            pass

    def on_post_retry(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        """Run a failed or cancelled job again: 202 with the record; 409 in any other state."""
        status = self.api.app.retry(validate.job_id(job_id))
        resp.status = falcon.HTTP_202
        resp.location = f"/v1/jobs/{status.id}"
        resp.media = status.record


class Tasks:
    """``GET /v1/tasks`` and ``POST /v1/tasks/{name}``."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Every registered task with its options."""
        tasks = sorted(self.api.app.tasks.values(), key=lambda t: t.name)
        schedules = self.api.app.schedules
        resp.media = {"tasks": [views.task_info(task, schedules.get(task.name)) for task in tasks]}

    def on_post_item(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        """Enqueue ``name`` with the body (any JSON value) as its one argument."""
        accept(self.api, req, resp, name, [validate.read_json(req)])


class Schedules:
    """``GET /v1/schedules``: every schedule with its last and next run."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"schedules": self.api.app.list_schedules()}


class Queues:
    """``GET /v1/queues``: per-queue broker counts."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"queues": self.api.app.queues()}


class Workers:
    """``GET /v1/workers``: live workers from their heartbeats, waiting connections from the broker."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = views.workers(self.api.app.workers(), self.api.app.queues())


class Health:
    """``GET /healthz`` (the process answers) and ``GET /readyz`` (broker and backend answer)."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"status": "ok"}

    def on_get_ready(self, req: falcon.Request, resp: falcon.Response) -> None:
        results = self.api.app.ping()
        if any(result != "ok" for result in results.values()):
            raise NotReady(results)
        resp.media = {"status": "ok"} | results


class NotReady(falcon.HTTPServiceUnavailable):
    """503 from ``/readyz``; the body says which part is unavailable."""

    def __init__(self, checks: dict[str, str]) -> None:
        down = ", ".join(name for name, result in checks.items() if result != "ok")
        super().__init__(description=f"unavailable: {down}", retry_after=RETRY_AFTER_S)
        self.checks = checks

    def to_dict(self, obj_type: Any = dict) -> Any:
        data = super().to_dict(obj_type)
        data.update(self.checks)
        return data


class Document:
    """``GET /openapi.json``."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self.document


class MetricsPage:
    """``GET /metrics``: Prometheus text format."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.data = self.api.metrics.render()
        resp.content_type = METRICS_CONTENT_TYPE

