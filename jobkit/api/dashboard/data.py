"""Everything the dashboard reads or changes, through the App: the one place to adapt.

Each function takes the :class:`~jobkit.App` and returns plain JSON-like
data; the pages never see a broker or a backend.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jobkit.api import views
from jobkit.app import App
from jobkit.errors import JobNotFound
from jobkit.job import JobState

#: The most running records read to list busy workers (as ``GET /v1/workers`` does).
MAX_RUNNING = 1000


@dataclass(frozen=True)
class Filters:
    """What the jobs list shows: records in ``state``, of ``task``, on ``queue`` (None: any)."""

    state: str | None = None
    task: str | None = None
    queue: str | None = None


def queues(app: App) -> dict[str, dict[str, int]]:
    """Per queue: ``ready``, ``reserved``, ``delayed``, ``buried``, ``waiting`` (``GET /v1/queues``)."""
    return app.queues()


def counts(app: App) -> dict[str, int]:
    """Records by state."""
    return app.counts()


def finished_per_minute(app: App, since: float) -> dict[int, dict[str, int]]:
    """Jobs finished since ``since`` (unix seconds), by minute and state."""
    return app.finished_per_minute(since)


def jobs(app: App, filters: Filters, *, before: str | None, limit: int) -> list[dict[str, Any]]:
    """Records newest first, after the job ``before`` (a page's last one) when given."""
    return app.jobs(state=filters.state, task=filters.task, queue=filters.queue,
                    before=before, limit=limit)


def job(app: App, job_id: str) -> dict[str, Any] | None:
    """One job's record, or None."""
    try:
        return app.status(job_id).record
    except JobNotFound:
        return None


def in_broker(app: App, record: dict[str, Any]) -> dict[str, Any] | None:
    """The broker's stats for a job it holds (state, delay, time left), else None."""
    return app.locate(record["id"], record.get("broker_id"))


def workers(app: App) -> dict[str, Any]:
    """What ``GET /v1/workers`` answers: ``{"workers": [{…}], "waiting": {queue: n}}``."""
    running = app.jobs(state=JobState.RUNNING.value, limit=MAX_RUNNING)
    return views.workers(running, app.queues())


def task_names(app: App) -> list[str]:
    """The registered tasks, for the jobs list's filter."""
    return sorted(app.tasks)


def retry(app: App, job_id: str) -> None:
    """Run a failed or cancelled job again (InvalidState otherwise)."""
    app.retry(job_id)


def cancel(app: App, job_id: str) -> None:
    """Cancel a job that has not finished (InvalidState otherwise)."""
    app.cancel(job_id)


def kick(app: App, queue: str | None) -> int:
    """Bring back the buried jobs of ``queue`` (of every queue when None); how many."""
    return app.kick(queue=queue)
