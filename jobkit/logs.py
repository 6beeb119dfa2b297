"""Logging for every command: text for people, or one JSON object per line for log shippers.

``--log-format json`` writes each record as one line:
``{"ts", "level", "logger", "message"}`` plus, where they apply, ``job_id``,
``task``, ``attempt`` and ``worker``, and ``exception`` (the traceback) when
one was logged. The job fields come from ``extra=`` at the worker's log calls
(:func:`job_fields`), or from the job a slot thread is running
(:func:`job_context`), so that a task's own log lines carry them too.
"""
from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The fields a job adds to a log line, in the order they are written.
JOB_FIELDS = ("job_id", "task", "attempt", "worker")

_current_job: contextvars.ContextVar[Mapping[str, Any] | None] = contextvars.ContextVar(
    "jobkit_current_job", default=None)


def job_fields(job_id: str | None, task: str | None, attempt: int | None = None,
               worker: str | None = None) -> dict[str, Any]:
    """The ``extra=`` of a log call about one job (``None`` values are left out)."""
    values = (job_id, task, attempt, worker)
    return {name: value for name, value in zip(JOB_FIELDS, values, strict=True) if value is not None}


@contextmanager
def job_context(fields: Mapping[str, Any]) -> Iterator[None]:
    """Tag the log lines this thread writes inside the block with ``fields`` (see :func:`job_fields`)."""
    token = _current_job.set(fields)
    try:
        yield
    finally:
        with suppress(ValueError):  # an async job's coroutine closed by the garbage collector
            _current_job.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in messages are escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = _current_job.get() or {}
        for name in JOB_FIELDS:
            value = getattr(record, name, context.get(name))
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(level: str = "INFO", fmt: str = "text") -> None:
    """Send every logger's records to stderr in ``fmt`` (``text`` or ``json``), from ``level`` up.

    Replaces the root logger's handlers, so that calling it again (tests,
    ``jobkit up``) never doubles lines.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
