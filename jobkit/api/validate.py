"""Request validation at the HTTP edge: JSON bodies, v1 job fields, query parameters, ids.

Status codes, consistently: the body is not acceptable JSON (malformed, not
UTF-8, NUL, lone surrogate, nested deeper than 64, a number out of range) or
a v1 body is not an object → 400; a field has the wrong type or an
unacceptable value → 422; a query parameter is invalid → 400; a job id that
cannot exist → 404, decided without reading the backend.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import falcon

from jobkit.errors import PayloadError
from jobkit.job import JobState
from jobkit.message import JOB_ID_RE, NAME_RE, loads

#: Integers must fit in a signed 64-bit word (I-JSON; MongoDB; most languages' JSON).
INT_LIMIT = 2**63
#: The longest ``?wait=`` the result route blocks a server thread for, in seconds.
MAX_WAIT_S = 30.0
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
MAX_KEY_LENGTH = 255
JOB_FIELDS = ("task", "args", "kwargs", "queue", "priority", "delay", "ttr")


def read_json(req: falcon.Request) -> Any:
    """Parse the request body (read by :class:`~jobkit.api.middleware.JsonBody`).

    Raises:
        falcon.HTTPBadRequest: the body is empty.
        PayloadError: the body breaks the JSON rules (mapped to 400).
    """
    body: bytes = getattr(req.context, "body", b"")
    if not body:
        raise falcon.HTTPBadRequest(description="a JSON body is required")
    value = loads(body)
    check_numbers(value)
    return value


def check_numbers(value: Any) -> None:
    """Refuse integers outside the signed 64-bit range and non-finite numbers (``1e999``).

    Raises:
        PayloadError: such a number is present.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, bool) or item is None or isinstance(item, str):
            continue
        if isinstance(item, int) and not -INT_LIMIT <= item < INT_LIMIT:
            raise PayloadError("integers must fit in 64 bits (-2**63 to 2**63-1)")
        if isinstance(item, float) and not math.isfinite(item):
            raise PayloadError("number out of range: JSON numbers must be finite doubles")
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def job_id(value: str) -> str:
    """Return ``value`` when it can be a job id, else 404 (no backend read)."""
    if not JOB_ID_RE.match(value):
        raise falcon.HTTPNotFound(description="no such job (never enqueued, or expired)")
    return value


def idempotency_key(req: falcon.Request) -> str | None:
    """The ``Idempotency-Key`` header: 1 to 255 characters, or absent."""
    key = req.get_header("Idempotency-Key")
    if key is not None and not 0 < len(key) <= MAX_KEY_LENGTH:
        raise falcon.HTTPInvalidHeader(f"must be 1 to {MAX_KEY_LENGTH} characters", "Idempotency-Key")
    return key


@dataclass(frozen=True)
class JobRequest:
    """A validated ``POST /v1/jobs`` body; ``options`` holds only the options given."""

    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    options: dict[str, Any] = field(default_factory=dict)


def job_request(body: Any) -> JobRequest:
    """Check the fields of a ``POST /v1/jobs`` body (ranges are left to the App: 422 too).

    ``null`` counts as absent for the optional fields.
    """
    if not isinstance(body, dict):
        raise falcon.HTTPBadRequest(
            description='the body must be a JSON object: {"task": "name", "args": [...]}')
    unknown = [key for key in body if key not in JOB_FIELDS]
    if unknown:
        raise _unprocessable(f"unknown field(s) {', '.join(map(repr, unknown[:5]))}; "
                             f"known: {', '.join(JOB_FIELDS)}")
    task = body.get("task")
    if not isinstance(task, str) or not task:
        raise _unprocessable('"task" must be the name of a task (a string)')
    args = _typed(body, "args", list, "an array", [])
    kwargs = _typed(body, "kwargs", dict, "an object", {})
    options = {
        "queue": _typed(body, "queue", str, "a string", None),
        "priority": _typed(body, "priority", int, "an integer from 0 to 4294967295", None),
        "delay": _typed(body, "delay", (int, float), "a number of seconds >= 0", None),
        "ttr": _typed(body, "ttr", int, "a whole number of seconds from 2 to 4294967295", None),
    }
    return JobRequest(task, args, kwargs, {k: v for k, v in options.items() if v is not None})


def _typed(body: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str, default: Any) -> Any:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, kind):
        raise _unprocessable(f'"{name}" must be {what}, not {type(value).__name__}')
    return value


def _unprocessable(description: str) -> falcon.HTTPUnprocessableEntity:
    return falcon.HTTPUnprocessableEntity(description=description)


def wait_param(req: falcon.Request) -> float:
    """``?wait=S``: seconds to wait for an outcome, 0 by default, capped at :data:`MAX_WAIT_S`."""
    raw = req.get_param("wait")
    if raw is None or raw == "":
        return 0.0
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise falcon.HTTPInvalidParam("must be a number of seconds >= 0", "wait")
    return min(value, MAX_WAIT_S)


def list_params(req: falcon.Request) -> tuple[str | None, str | None, int]:
    """``?state=&task=&limit=`` of ``GET /v1/jobs``: a JobState, a task name, 1 to 1000."""
    state = req.get_param("state") or None
    if state is not None and state not in {s.value for s in JobState}:
        raise falcon.HTTPInvalidParam(f"must be one of {', '.join(s.value for s in JobState)}", "state")
    task = req.get_param("task") or None
    if task is not None and not NAME_RE.match(task):
        raise falcon.HTTPInvalidParam("must be a task name", "task")
    limit = req.get_param_as_int("limit", min_value=1, max_value=MAX_LIMIT, default=DEFAULT_LIMIT)
    return state, task, int(limit)
