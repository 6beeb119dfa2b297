"""``POST /v1/jobs/batch`` and ``POST /v1/workflows``: many jobs, or a workflow, in one request.

Both are all or nothing: every job is checked before any is sent, and one
bad job rejects the request with a message that says where it is
(``jobs[3]: …``, ``workflow.chain[1].group[0]: …``); nothing is enqueued then.
"""
from __future__ import annotations

from typing import Any

import falcon

from jobkit import canvas
from jobkit.api import validate
from jobkit.api.resources import Api
from jobkit.canvas import GroupJob, Signature

#: Most jobs one ``POST /v1/jobs/batch`` or ``POST /v1/workflows`` may hold.
MAX_JOBS = 1000


class Batch:
    """``POST /v1/jobs/batch`` ``{"jobs": [<POST /v1/jobs body>, …]}`` → 202 ``{"ids": […]}``."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Enqueue up to :data:`MAX_JOBS` jobs: one backend transaction, pipelined broker puts."""
        _refuse_idempotency_key(req)
        signatures = [_signature(item, i) for i, item in enumerate(_jobs(validate.read_json(req)))]
        jobs = self.api.app.send_many(signatures)
        for sig in signatures:
            self.api.metrics.accepted(sig.task)
        resp.status = falcon.HTTP_202
        resp.media = {"ids": [job.id for job in jobs]}


class Workflows:
    """``POST /v1/workflows`` ``{"chain": […]}`` | ``{"group": […]}`` | ``{"chord": {"header", "body"}}``."""

    def __init__(self, api: Api) -> None:
        self.api = api

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Enqueue a workflow → 202 ``{"id"}`` (the job with its result) or ``{"ids"}`` (a group's)."""
        _refuse_idempotency_key(req)
        body = validate.read_json(req)
        if not isinstance(body, dict):
            raise falcon.HTTPBadRequest(description=WORKFLOW_SHAPE)
        flow = canvas.from_dict(body, self.api.app)  # bad fields 422, unknown task 404
        if isinstance(flow, Signature):
            raise falcon.HTTPUnprocessableEntity(
                description=f"{WORKFLOW_SHAPE}; one job goes to POST /v1/jobs")
        signatures = list(flow.signatures())
        if len(signatures) > MAX_JOBS:
            raise falcon.HTTPUnprocessableEntity(
                description=f"a workflow holds at most {MAX_JOBS} jobs, not {len(signatures)}")
        handle = flow.delay(app=self.api.app)
        for sig in signatures:
            self.api.metrics.accepted(sig.task)
        resp.status = falcon.HTTP_202
        if isinstance(handle, GroupJob):
            resp.media = {"ids": handle.ids}
        else:
            resp.location = f"/v1/jobs/{handle.id}"
            resp.media = {"id": handle.id}


WORKFLOW_SHAPE = ('the body is {"chain": [...]}, {"group": [...]} or '
                  '{"chord": {"header": [...], "body": {...}}}')


def _refuse_idempotency_key(req: falcon.Request) -> None:
    """Batches and workflows take no ``Idempotency-Key``: refused, never silently ignored."""
    if req.get_header("Idempotency-Key") is not None:
        raise falcon.HTTPBadRequest(
            title="Idempotency-Key not supported here",
            description="batches and workflows take no Idempotency-Key: a repeat would enqueue them"
                        " again; send keyed jobs one by one to POST /v1/jobs")


def _jobs(body: Any) -> list[Any]:
    if not isinstance(body, dict) or not isinstance(body.get("jobs"), list) or set(body) != {"jobs"}:
        raise falcon.HTTPBadRequest(description='the body must be {"jobs": [<job>, ...]}')
    jobs: list[Any] = body["jobs"]
    if not 0 < len(jobs) <= MAX_JOBS:
        raise falcon.HTTPUnprocessableEntity(
            description=f"a batch holds 1 to {MAX_JOBS} jobs, not {len(jobs)}")
    return jobs


def _signature(item: Any, index: int) -> Signature:
    """One ``POST /v1/jobs`` body of the batch; its errors say which one."""
    try:
        job = validate.job_request(item)
    except falcon.HTTPError as exc:
        raise falcon.HTTPError(exc.status, title=exc.title, description=f"jobs[{index}]: {exc.description}") \
            from None
    return Signature(job.task, job.args, job.kwargs, **job.options)
