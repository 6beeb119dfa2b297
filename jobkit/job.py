"""Job handles, job states and the job record.

A record is one dict per job id with the fields of :data:`RECORD_FIELDS`;
every backend reads and writes records in this shape (times in unix seconds;
``broker_id`` is the broker's opaque id as a string, or None). A running
job's ``worker`` holds it until ``lease_until``, which the worker's heartbeat
renews; ``superseded`` is the broker id of a copy that a reconciler replaced
with a fresh one (see :mod:`jobkit.leases`).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from jobkit.errors import JobCancelled, JobFailed

if TYPE_CHECKING:
    from jobkit.app import App

R = TypeVar("R")


class JobState(str, enum.Enum):
    """Where a job is in its life. Values are the strings stored and shown in JSON."""

    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    def __str__(self) -> str:
        return self.value

    @property
    def finished(self) -> bool:
        """True for the states a job does not leave by itself."""
        return self.value in FINISHED_STATES


#: States that end a job's run; only a kick or a retry moves a job out of them.
FINISHED_STATES = frozenset({"succeeded", "failed", "cancelled"})

RECORD_FIELDS = (
    "id", "task", "args", "kwargs", "queue", "state", "broker_id", "priority", "attempts",
    "result", "error", "created_at", "started_at", "finished_at", "expires_at", "worker",
    "idempotency_key", "parent", "root", "children", "workflow", "waiting", "progress",
    "lease_until", "superseded",
)
#: The fields of a record that place it in a workflow (see :mod:`jobkit.workflows`):
#: ``root`` is the workflow's first job, ``parent`` the job whose outcome made this one
#: due, ``children`` the jobs its outcome feeds, ``workflow`` the state of the fan-in.
WORKFLOW_FIELDS = ("parent", "root", "children", "workflow")


@dataclass(frozen=True)
class JobStatus:
    """A snapshot of a job's record.

    Attributes:
        id: the job id.
        state: where the job is.
        result: the task's return value once ``state`` is ``succeeded``.
        error: ``{"type", "message", "traceback"}`` once an attempt failed.
        attempts: how many times a worker started the job.
        record: the full stored record (JSON-ready dict).
    """

    id: str
    state: JobState
    result: Any
    error: dict[str, Any] | None
    attempts: int
    record: dict[str, Any]

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> JobStatus:
        """Build a status from a backend record."""
        return cls(
            id=record["id"], state=JobState(record["state"]), result=record.get("result"),
            error=record.get("error"), attempts=record.get("attempts") or 0, record=record,
        )

    @property
    def task(self) -> str | None:
        """The task's registered name."""
        return self.record.get("task")

    @property
    def broker_id(self) -> str | None:
        """The broker's id for the job's latest message (opaque text), or None."""
        broker_id = self.record.get("broker_id")
        return None if broker_id is None else str(broker_id)

    @property
    def progress(self) -> dict[str, Any] | None:
        """The latest progress the task reported: ``{"fraction": 0..1, "meta": {...}}``, or None."""
        progress: dict[str, Any] | None = self.record.get("progress")
        return progress


class Job(Generic[R]):
    """A handle on one job, by id. Cheap to create; reads go to the result backend.

    Typed by its task's result: ``add.delay(1, 2)`` is a ``Job[int]`` when
    ``add`` returns an ``int`` (an ``async def`` task's too), so that
    ``.get()`` is an ``int`` to a type checker.

    Attributes:
        id: the job id (URL-safe, unique across brokers and restarts).
        created: False when sending matched an earlier job's idempotency key.
    """

    def __init__(self, app: App, job_id: str, created: bool = True) -> None:
        self.app = app
        self.id = job_id
        self.created = created

    def __repr__(self) -> str:
        return f"<Job {self.id}>"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Job) and other.id == self.id and other.app is self.app

    def __hash__(self) -> int:
        return hash(self.id)

    def status(self) -> JobStatus:
        """Read the job's record.

        Raises:
            JobNotFound: no record exists for this id.
            BackendUnavailable: the result backend cannot be reached.
        """
        return self.app.status(self.id)

    def get(self, timeout: float | None = 10.0) -> R:
        """Wait for the job's outcome and return its result.

        Args:
            timeout: seconds to wait; ``None`` waits for ever.

        Raises:
            JobFailed: the job failed for good; ``.error`` holds type, message, traceback.
            JobCancelled: the job was cancelled.
            JobTimeout: no outcome within ``timeout`` seconds.
            JobNotFound: no record exists for this id.
        """
        status = self.app.wait(self.id, timeout)
        if status.state is JobState.SUCCEEDED:
            return cast(R, status.result)
        if status.state is JobState.CANCELLED:
            raise JobCancelled(self.id)
        raise JobFailed(self.id, status.error)

    def cancel(self) -> JobStatus:
        """Cancel the job: see :meth:`jobkit.App.cancel`."""
        return self.app.cancel(self.id)
