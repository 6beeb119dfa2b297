"""The OpenAPI 3.1 document of the HTTP API, served at ``/openapi.json``.

``tests/test_api_openapi.py`` compares it with the routes and methods the
Falcon app really has, so the two cannot drift apart.
"""
from __future__ import annotations

import re
from typing import Any

from jobkit.api.dashboard import ROUTES
from jobkit.brokers.base import STATS_JOB_KEYS
from jobkit.job import RECORD_FIELDS, JobState
from jobkit.message import JOB_ID_RE

_JSON = "application/json"
_STATES = [state.value for state in JobState]
_ANY: dict[str, Any] = {}


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"#/components/{kind}/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {_JSON: {"schema": schema}}}


def _path_param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema, "description": description}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_ID_PATTERN = "^" + JOB_ID_RE.pattern.removesuffix("\\Z") + "$"
_JOB_ID = _path_param("job_id", {"type": "string", "pattern": _ID_PATTERN}, "a job id (else a 404)")
_IDEMPOTENCY = {"name": "Idempotency-Key", "in": "header", "required": False,
                "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                "description": "a repeat with the same key returns the first job (200) instead of a new one"}


def _op(summary: str, responses: dict[str, Any], *, description: str = "", tag: str = "v1",
        params: list[dict[str, Any]] | None = None, body: dict[str, Any] | None = None,
        public: bool = False) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses}
    if description:
        op["description"] = description
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": {_JSON: {"schema": body}}}
    if public:
        op["security"] = []
    return op


def _errors(*codes: str) -> dict[str, Any]:
    names = {"400": "BadRequest", "401": "Unauthorized", "404": "NotFound", "409": "Conflict",
             "413": "TooLarge", "415": "UnsupportedMediaType", "422": "Unprocessable",
             "503": "Unavailable"}
    return {code: _ref("responses", names[code]) for code in ("401",) + codes}


def _enqueue_responses() -> dict[str, Any]:
    accepted = _json(_ref("schemas", "Accepted"), "accepted; `Location: /v1/jobs/{id}`")
    repeat = _json(_ref("schemas", "Accepted"), "an Idempotency-Key repeat: the first job")
    return {"202": accepted, "200": repeat,
            **_errors("400", "404", "413", "415", "422", "503")}


def _seed_paths() -> dict[str, Any]:
    # exclusive branches: SeedStats has every stats key and nothing else, SeedDocument has "_id"
    status = {"oneOf": [_ref("schemas", "SeedStats"), _ref("schemas", "SeedDocument")]}
    get_status = _op(
        "A job as the seed showed it", {"200": _json(status, "stats-job or the stored document"),
                                        **_errors("404", "503")},
        tag="seed", params=[_JOB_ID],
        description="`/{job_id}/` too. While the broker holds the job (where it can look jobs "
                    "up; else the record answers): its stats-job with `timeLeft`. Succeeded: "
                    "`{\"_id\", **result}` (dict results) or "
                    "`{\"_id\", \"result\"}`. Otherwise `{\"_id\", \"state\", \"error\"?}`.")
    return {
        "/": {"post": _op(
            "Enqueue the default task (seed parity)", _enqueue_responses(), tag="seed",
            description="Any JSON value as the body; it becomes the one argument of "
                        "`JOBKIT_DEFAULT_TASK` (`hash_payload` by default).",
            params=[_IDEMPOTENCY], body=_ANY)},
        "/{job_id}": {"get": get_status},
        "/{job_id}/": {"get": get_status | {"summary": "A job as the seed showed it (the seed's own URL)"}},
    }


def _job_paths() -> dict[str, Any]:
    record = _ref("schemas", "JobRecord")
    return {
        "/v1/jobs": {
            "post": _op("Enqueue a job", _enqueue_responses(), params=[_IDEMPOTENCY],
                        body=_ref("schemas", "JobRequest")),
            "get": _op("List jobs, newest first", {
                "200": _json({"type": "object", "properties": {"jobs": {"type": "array", "items": record}}},
                             "records"), **_errors("400", "503")},
                params=[_query("state", {"type": "string", "enum": _STATES}, "only jobs in this state"),
                        _query("task", {"type": "string"}, "only jobs of this task"),
                        _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100},
                               "at most this many")]),
        },
        "/v1/jobs/{job_id}": {
            "get": _op("A job's record and live broker stats", {
                "200": _json(record, "the record; `broker`: the broker's stats-job while it holds "
                                     "the job (and can peek), else null"),
                **_errors("404", "503")}, params=[_JOB_ID]),
            "delete": _op("Cancel a job", {
                "200": _json(record, "cancelled: deleted from the broker, or flagged if running"),
                **_errors("404", "409", "503")}, params=[_JOB_ID],
                description="409 when the job already succeeded or was cancelled."),
        },
        "/v1/jobs/{job_id}/result": {"get": _op("A job's outcome, waiting up to `wait` seconds", {
            "200": _json(_ref("schemas", "Outcome"), "finished: check `state` (succeeded/failed/cancelled)"),
            "202": _json(_ref("schemas", "Outcome"), "not finished; `Retry-After` says when to ask again"),
            **_errors("400", "404", "503")}, params=[_JOB_ID, _query(
                "wait", {"type": "number", "minimum": 0, "maximum": 30, "default": 0},
                "seconds to wait for the outcome (capped at 30)")])},
        "/v1/jobs/{job_id}/retry": {"post": _op("Run a failed or cancelled job again", {
            "202": _json(record, "queued again (a buried job is kicked, else enqueued anew)"),
            **_errors("404", "409", "503")}, params=[_JOB_ID])},
    }


def _other_paths() -> dict[str, Any]:
    obj = {"type": "object"}
    return {
        "/v1/tasks": {"get": _op("Registered tasks and their options", {
            "200": _json({"type": "object", "properties": {
                "tasks": {"type": "array", "items": _ref("schemas", "Task")}}}, "tasks"), **_errors()})},
        "/v1/tasks/{name}": {"post": _op(
            "Enqueue a task with the body as its one argument", _enqueue_responses(), body=_ANY,
            params=[_path_param("name", {"type": "string"}, "a registered task"), _IDEMPOTENCY])},
        "/v1/schedules": {"get": _op("Periodic tasks with their last and next run", {
            "200": _json({"type": "object", "properties": {
                "schedules": {"type": "array", "items": _ref("schemas", "Schedule")}}}, "schedules"),
            **_errors("503")}, description="Times are ISO 8601 in UTC; `last_run` is the last tick "
                                           "any scheduler enqueued (null: never).")},
        "/v1/queues": {"get": _op("Per-queue broker counts", {"200": _json({"type": "object", "properties": {
            "queues": {"type": "object", "additionalProperties": _ref("schemas", "QueueCounts")}}},
            "counts by queue"), **_errors("503")})},
        "/v1/workers": {"get": _op("Live workers and waiting connections", {
            "200": _json(_ref("schemas", "Workers"), "live workers and waiting connections"),
            **_errors("503")}, description="`workers`: every worker whose heartbeat record (rewritten "
                                           "every 5 s) is under 15 s old, by name; a process pool lists "
                                           "each child, with the pool's name in `pool`. `waiting`: "
                                           "connections blocked on each queue (idle worker slots).")},
        "/healthz": {"get": _op("The process answers (no token needed)",
                                {"200": _json(obj, "ok")}, tag="ops", public=True)},
        "/readyz": {"get": _op("Broker and backend answer", {
            "200": _json(obj, "both reachable"), "503": _ref("responses", "Unavailable"), **_errors()},
            tag="ops")},
        "/openapi.json": {"get": _op("This document", {"200": _json(obj, "OpenAPI 3.1"), **_errors()},
                                     tag="ops")},
        "/metrics": {"get": _op("Prometheus metrics", {"200": {
            "description": "text exposition format",
            "content": {"text/plain": {"schema": {"type": "string"}}}},
            **_errors()}, tag="ops")},
    }


def _dashboard_paths() -> dict[str, Any]:
    """The dashboard's pages (HTML) and forms (url-encoded, 303 back to a page)."""
    page = {"description": "a self-contained HTML page",
            "content": {"text/html": {"schema": {"type": "string"}}}}
    form = {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
        "type": "object", "required": ["csrf"], "properties": {"csrf": {"type": "string"}}}}}}
    paths: dict[str, Any] = {}
    for path, _, _, methods in ROUTES:
        for method, summary in methods.items():
            answers = {"200": page} if method == "get" else {
                "303": {"description": "done: back to the page the form was on"}, "403": page}
            params = [_path_param(name, {"type": "string"}, f"the {name.replace('_', ' ')}")
                      for name in re.findall(r"{(\w+)}", path)]
            op = _op(summary, answers | _errors(), tag="dashboard", params=params)
            if method == "post":
                op["requestBody"] = form
            paths.setdefault(path, {})[method] = op
    return paths


def _workflow_paths() -> dict[str, Any]:
    created = _errors("400", "404", "413", "415", "422", "503")
    return {
        "/v1/jobs/batch": {"post": _op(
            "Enqueue many jobs at once", {
                "202": _json(_ref("schemas", "BatchAccepted"), "every job accepted; ids in the order sent"),
                **created}, body=_ref("schemas", "BatchRequest"),
            description="1 to 1000 jobs (and the body within JOBKIT_MAX_BODY): one backend transaction, "
                        "pipelined broker puts. All or nothing: one bad job rejects the batch, the "
                        "message starting `jobs[<index>]:`, and nothing is enqueued.")},
        "/v1/workflows": {"post": _op(
            "Enqueue a chain, group or chord", {
                "202": _json(_ref("schemas", "WorkflowAccepted"),
                             "accepted: `id` of the job with the workflow's result (a chain's last "
                             "job, a chord's callback; `Location` points to it), or `ids` of a group's jobs"),
                **created}, body=_ref("schemas", "Workflow"),
            description="Each result is passed first in the next job's args (unless `immutable`); a "
                        "chord's callback gets the list of its header's results, once. At most 1000 "
                        "jobs, nested at most 16 levels; all or nothing, errors say where "
                        "(`workflow.chain[1]: ...`).")},
    }


def _workflow_schemas() -> dict[str, Any]:
    step = _ref("schemas", "WorkflowStep")
    steps = {"type": "array", "minItems": 1, "items": step}
    job = {"type": "object", "required": ["task"], "properties": {
        "task": {"type": "string"}, "args": {"type": "array"}, "kwargs": {"type": "object"},
        "queue": {"type": "string"}, "priority": {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
        "delay": {"type": "number", "minimum": 0}, "ttr": {"type": "integer", "minimum": 1},
        "immutable": {"type": "boolean", "description": "the previous result is not passed to it"},
        "options": {"type": "object", "description": "the options above, as in a signature's JSON form"}}}
    chain = {"type": "object", "required": ["chain"], "additionalProperties": False,
             "properties": {"chain": steps}}
    group = {"type": "object", "required": ["group"], "additionalProperties": False,
             "properties": {"group": steps}}
    chord = {"type": "object", "required": ["chord"], "additionalProperties": False, "properties": {
        "chord": {"type": "object", "required": ["header", "body"], "additionalProperties": False,
                  "properties": {"header": steps, "body": step}}}}
    return {
        "BatchRequest": {"type": "object", "required": ["jobs"], "additionalProperties": False,
                         "properties": {"jobs": {"type": "array", "minItems": 1, "maxItems": 1000,
                                                 "items": _ref("schemas", "JobRequest")}}},
        "BatchAccepted": {"type": "object", "required": ["ids"], "properties": {
            "ids": {"type": "array", "items": {"type": "string"}}}},
        "Workflow": {"oneOf": [chain, group, chord]},
        "WorkflowStep": {"oneOf": [job, chain, group, chord]},
        "WorkflowAccepted": {"type": "object", "properties": {
            "id": {"type": "string"}, "ids": {"type": "array", "items": {"type": "string"}}}},
    }


def _schemas() -> dict[str, Any]:
    error = {"type": "object", "required": ["title"],
             "properties": {"title": {"type": "string"}, "description": {"type": "string"}}}
    stats: dict[str, Any] = {key: {"type": "string" if key in ("tube", "state") else "integer"}
                             for key in STATS_JOB_KEYS}
    stats["id"] = {"type": ["integer", "string"], "description": "the broker's own id for the message"}
    seed = {("timeLeft" if k == "time-left" else k): v for k, v in stats.items()}
    record = {key: _ANY for key in RECORD_FIELDS} | {
        "state": {"type": "string", "enum": _STATES}, "error": _ref("schemas", "JobError"),
        "broker_id": {"type": ["string", "null"],
                      "description": "the broker's opaque id for the job's latest message"},
        "broker": {"oneOf": [_ref("schemas", "StatsJob"), {"type": "null"}]},
        "waiting": {"type": ["object", "null"], "description": "queued, waiting in the broker on a limit: "
                    "`limit` (rate_limit or concurrency_limit), `until` (unix seconds), `times`"},
        "progress": {"type": ["object", "null"], "description": "the latest progress the task reported",
                     "properties": {"fraction": {"type": "number", "minimum": 0, "maximum": 1},
                                    "meta": {"type": "object"}}}}
    counts = ("ready", "reserved", "delayed", "buried", "urgent", "total", "waiting")
    return {
        "Error": error,
        "Accepted": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
        "JobRequest": {"type": "object", "required": ["task"], "additionalProperties": False, "properties": {
            "task": {"type": "string"}, "args": {"type": "array"}, "kwargs": {"type": "object"},
            "queue": {"type": "string"}, "priority": {"type": "integer", "minimum": 0, "maximum": 2**32 - 1},
            "delay": {"type": "number", "minimum": 0}, "ttr": {"type": "integer", "minimum": 1}}},
        "JobError": {"type": ["object", "null"], "properties": {
            "type": {"type": "string"}, "message": {"type": "string"}, "traceback": {"type": "string"}}},
        "JobRecord": {"type": "object", "properties": record},
        "StatsJob": {"type": "object", "properties": stats},
        "SeedStats": {"type": "object", "required": list(seed), "additionalProperties": False,
                      "properties": seed},
        "SeedDocument": {"type": "object", "required": ["_id"], "properties": {"_id": {"type": "string"}},
                         "description": "succeeded: `_id` and the keys of a dict result (any keys), or "
                                        "`_id` and `result`; else `_id`, `state` and `error` when stored"},
        "Outcome": {"type": "object", "required": ["id", "state"], "properties": {
            "id": {"type": "string"}, "state": {"type": "string", "enum": _STATES}, "result": _ANY,
            "error": _ref("schemas", "JobError")}},
        "Task": {"type": "object", "properties": {
            "name": {"type": "string"}, "queue": {"type": "string"}, "priority": {"type": "integer"},
            "ttr": {"type": "integer"}, "max_retries": {"type": "integer"},
            "rate_limit": {"type": ["string", "null"],
                           "description": "N/s, N/m or N/h, all workers together"},
            "concurrency_limit": {"type": ["integer", "null"]},
            "concurrency_key": {"type": ["string", "null"], "description": "the limit holds per value of "
                                                                           "this argument"},
            "schedule": {"oneOf": [_ref("schemas", "Schedule"), {"type": "null"}]}}},
        "Schedule": {"type": "object", "required": ["name", "task"], "properties": {
            "name": {"type": "string"}, "task": {"type": "string"},
            "cron": {"type": ["string", "null"]}, "every": {"type": ["integer", "null"]},
            "tz": {"type": "string"}, "args": {"type": "array"}, "kwargs": {"type": "object"},
            "last_run": {"type": ["string", "null"], "format": "date-time"},
            "next_run": {"type": "string", "format": "date-time"}}},
        "QueueCounts": {"type": "object", "properties": {k: {"type": "integer"} for k in counts}},
        "Workers": {"type": "object", "properties": {
            "workers": {"type": "array", "items": _ref("schemas", "Worker")},
            "waiting": {"type": "object", "additionalProperties": {"type": "integer"}}}},
        "Worker": {"type": "object", "required": ["name", "last_seen"], "properties": {
            "name": {"type": "string", "description": "host:pid"}, "host": {"type": "string"},
            "pid": {"type": "integer"},
            "pool": {"type": ["string", "null"], "description": "host:pid of its process pool, if any"},
            "queues": {"type": "array", "items": {"type": "string"}},
            "concurrency": {"type": "integer"},
            "busy": {"type": "integer", "description": "slots running a job"},
            "running": {"type": "integer", "description": "the same as busy"},
            "jobs": {"type": "array", "items": {"type": "string"}, "description": "ids of the jobs running"},
            "started_at": {"type": "number", "description": "unix seconds"},
            "last_seen": {"type": "number", "description": "unix seconds of its last heartbeat"},
            "jobs_done": {"type": "integer", "description": "attempts run to an outcome"},
            "jobs_failed": {"type": "integer", "description": "of them, attempts that failed"}}},
    }


def _responses() -> dict[str, Any]:
    def error(description: str) -> dict[str, Any]:
        return _json(_ref("schemas", "Error"), description)
    unavailable = error("the broker or the backend is unreachable; nothing was recorded as queued")
    unavailable["headers"] = {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}}
    return {
        "BadRequest": error("malformed JSON, not UTF-8, NUL, lone surrogate, nested deeper than 64, "
                            "an integer beyond 64 bits, a v1 body that is not an object, "
                            "a bad query parameter or header"),
        "Unauthorized": error("a token is configured and the bearer token is missing or wrong"),
        "NotFound": error("no such job, task or route"),
        "Conflict": error("the job's state does not allow this"),
        "TooLarge": error("the body is larger than JOBKIT_MAX_BODY"),
        "UnsupportedMediaType": error("a body that is not declared application/json"),
        "Unprocessable": error("a field has the wrong type or value "
                               "(task, args, kwargs, queue, priority, delay, ttr)"),
        "Unavailable": unavailable,
    }


def document(version: str, auth: bool) -> dict[str, Any]:
    """The OpenAPI document.

    Args:
        version: jobkit's version, shown as the API's version.
        auth: whether a bearer token is required (every route but ``/healthz``).
    """
    components: dict[str, Any] = {"schemas": _schemas() | _workflow_schemas(), "responses": _responses(),
                                  "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "jobkit", "version": version,
                 "description": "Enqueue jobs and read their outcomes. Bodies are JSON (application/json, "
                                "UTF-8) up to JOBKIT_MAX_BODY bytes; every error body is "
                                '{"title", "description"}. A trailing slash is accepted on every path. '
                                "HEAD answers on every GET route: the same status and headers, no body."},
        "paths": _seed_paths() | _job_paths() | _workflow_paths() | _other_paths() | _dashboard_paths(),
        "components": components,
        "security": [{"bearer": []}] if auth else [],
    }
