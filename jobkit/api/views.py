"""The JSON shapes the API answers with, built from records, tasks and broker stats."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from jobkit import limits
from jobkit.brokers.base import STATS_JOB_KEYS
from jobkit.job import JobState, JobStatus
from jobkit.schedules import Schedule
from jobkit.task import Task


def seed_stats(stats: Mapping[str, Any]) -> dict[str, Any]:
    """beanstalkd's ``stats-job`` as the seed showed it: its order, ``time-left`` as ``timeLeft``."""
    return {("timeLeft" if key == "time-left" else key): stats.get(key) for key in STATS_JOB_KEYS}


def seed_outcome(status: JobStatus) -> dict[str, Any]:
    """The seed's stored document: ``{"_id", **result}`` when succeeded.

    Otherwise ``{"_id", "state", "error"?}``; a result that is not a dict is ``{"_id", "result"}``.
    """
    if status.state is JobState.SUCCEEDED:
        if isinstance(status.result, dict):
            return {"_id": status.id} | {k: v for k, v in status.result.items() if k != "_id"}
        return {"_id": status.id, "result": status.result}
    view: dict[str, Any] = {"_id": status.id, "state": status.state.value}
    if status.error is not None:
        view["error"] = status.error
    return view


def outcome(status: JobStatus) -> dict[str, Any]:
    """``{"id", "state"}`` plus ``result`` (succeeded) or ``error`` (failed, when stored)."""
    view: dict[str, Any] = {"id": status.id, "state": status.state.value}
    if status.state is JobState.SUCCEEDED:
        view["result"] = status.result
    elif status.error is not None:
        view["error"] = status.error
    return view


def task_info(task: Task[Any, Any], schedule: Schedule | None = None) -> dict[str, Any]:
    """A task's name, options, limits and schedule (seconds for every time)."""
    opts = task.options
    return {
        "name": task.name, "queue": opts.queue, "priority": opts.priority, "ttr": opts.ttr,
        "max_retries": opts.max_retries, "retry_backoff": opts.retry_backoff,
        "retry_backoff_max": opts.retry_backoff_max,
        "retry_on": [kind.__name__ for kind in opts.retry_on], "time_limit": opts.time_limit,
        "doc": (task.__doc__ or "").strip() or None,
        **limits.describe(task), "schedule": schedule.describe() if schedule is not None else None,
    }


def workers(live: Iterable[Mapping[str, Any]], queues: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
    """Live workers (their heartbeat records) and the connections waiting on each queue.

    ``running`` (the busy slots) and ``jobs`` (the ids they run) keep the
    first version's fields.
    """
    return {
        "workers": [dict(worker) | {"running": worker.get("busy", 0)} for worker in live],
        "waiting": {queue: counts.get("waiting", 0) for queue, counts in sorted(queues.items())},
    }
