"""One error tree for jobkit.

Everything jobkit raises on purpose derives from :class:`JobkitError`.
Library exceptions (greenstalk, pymongo, sqlite3, socket errors) are wrapped
at the broker/backend boundary and never reach callers or HTTP clients.
"""
from __future__ import annotations

from typing import Any


class JobkitError(Exception):
    """Root of every error jobkit raises on purpose."""


class ConfigError(JobkitError):
    """Raised when a setting, URL or app reference cannot be used."""


class PayloadError(JobkitError):
    """Raised when a job's arguments or result are not plain JSON data.

    JSON only, never pickle: anything ``json.dumps`` cannot write, nesting
    deeper than :data:`jobkit.message.MAX_DEPTH`, or non-finite floats.
    """


class PayloadTooLarge(PayloadError):
    """Raised when an encoded job is larger than the broker accepts."""


class PoisonMessage(JobkitError):
    """Raised when a broker message is not a jobkit envelope.

    The worker buries such a message with this error's text as the reason.

    Attributes:
        job_id: the job id read from the message, when one could be read.
    """

    def __init__(self, reason: str, job_id: str | None = None) -> None:
        super().__init__(reason)
        self.job_id = job_id


class BrokerError(JobkitError):
    """Raised when the broker refuses or fails an operation."""


class BrokerUnavailable(BrokerError):
    """Raised when the broker cannot be reached (down, draining, cut off)."""


class BrokerConnectionLost(BrokerUnavailable):
    """Raised when an established broker connection breaks: a new outage, not a repeated one."""


class BrokerUnconfirmed(BrokerUnavailable):
    """Raised when a message reached the broker but its answer did not come back.

    A timeout or a connection lost after the command was sent: the broker may
    hold the message (and run it later) or not. Sending again with the same
    idempotency key is the safe way to find out (see :meth:`jobkit.App.send`).
    """


class Unsupported(BrokerError):
    """Raised when a broker is asked for a capability it does not have (see ``Broker.capabilities``)."""


class BackendError(JobkitError):
    """Raised when the result backend refuses or fails an operation."""


class BackendUnavailable(BackendError):
    """Raised when the result backend cannot be reached."""


class TaskNotFound(JobkitError):
    """Raised when a task name is not registered with the app."""


class JobNotFound(JobkitError):
    """Raised when no record exists for a job id (it was never enqueued, or expired)."""


class InvalidState(JobkitError):
    """Raised when a job's state does not allow an operation (cancel a finished job, retry a running one)."""


class JobFailed(JobkitError):
    """Raised by :meth:`jobkit.Job.get` when the job ended in state ``failed``.

    Attributes:
        job_id: the job's id.
        error: the stored error: ``{"type", "message", "traceback"}``.
    """

    def __init__(self, job_id: str, error: dict[str, Any] | None) -> None:
        self.job_id = job_id
        self.error = dict(error or {})
        kind = self.error.get("type", "Error")
        super().__init__(f"job {job_id} failed: {kind}: {self.error.get('message', '')}")


class JobCancelled(JobkitError):
    """Raised by :meth:`jobkit.Job.get` when the job was cancelled."""


class NotInJob(JobkitError):
    """Raised by :func:`jobkit.current_job` when no job is running in the calling thread or asyncio task."""


class JobTimeout(JobkitError):
    """Raised by :meth:`jobkit.Job.get` when no outcome arrived within the timeout."""


class TimeLimitExceeded(JobkitError):
    """Recorded as a job's error when it ran longer than its task's ``time_limit``."""


class Retry(JobkitError):
    """Raise inside a task to ask for another attempt.

    Args:
        delay: seconds to wait before the next attempt; ``None`` uses the
            task's exponential backoff.
        reason: text stored as the error message of this attempt.

    A retry counts against the task's ``max_retries``; once they are spent the
    job fails with this error.
    """

    def __init__(self, delay: float | None = None, reason: str = "retry requested") -> None:
        self.delay = delay
        super().__init__(reason)
