"""One job's way through a worker: decode, claim, run, store, settle.

Delivery semantics (at-least-once): a message is deleted only after its
outcome is stored; a job whose record is already finished is settled without
running again; failures are retried with backoff (release) until retries run
out, then buried as dead letters; a job whose outcome cannot be stored goes
back to the broker with a delay.

A message for a task this worker does not know may be for another worker (a
fleet mid-deploy, a worker of another app on the same queue): it is released
with a delay (``JOBKIT_UNKNOWN_TASK_DELAY``, 5 s) with its record still
``queued``, so that a worker that knows the task can take it; it is buried as
``unknown task 'x'`` once the broker counts ``max_retries`` +
``JOBKIT_UNKNOWN_TASK_RELEASES`` (12) releases of it (the job's own retries
are not held against it; 0 buries at first sight). The count lives in the
broker (:meth:`Consumer.releases`), so a restarted worker keeps counting
where the last one stopped; a broker that cannot count has it buried at once. See docs/guarantees.md.

A claim makes this worker the job's holder with a lease (see
:mod:`jobkit.leases`): an outcome is stored only while the worker still
holds the job at that attempt, and a copy that a reconciler replaced is
deleted without running.
"""
from __future__ import annotations

import asyncio
import logging
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobkit import workflows
from jobkit.aio import call_async
from jobkit.brokers.base import DEFAULT_PRIORITY, Consumer, Delivery
from jobkit.config import Settings
from jobkit.context import JobContext
from jobkit.errors import BackendError, BrokerError, PayloadError, PoisonMessage, Retry
from jobkit.leases import stale_copy
from jobkit.limits import Limits
from jobkit.logs import job_context, job_fields
from jobkit.message import Envelope, dumps
from jobkit.metrics import JobStats

if TYPE_CHECKING:
    from jobkit.app import App
    from jobkit.task import Task

log = logging.getLogger("jobkit.worker")
TRACEBACK_LIMIT = 16_384  # characters of traceback kept in a record
OUTAGE_DELAY_S = 5  # how long a job waits in the broker when its outcome could not be stored
MESSAGE_LIMIT = 4_096  # characters of an error message kept in a record
CANCEL_CHECK_S = 0.5  # how often the heartbeat reads whether running jobs were cancelled
#: an async task stops itself at its time limit (asyncio.timeout); the heartbeat stops
#: it by force only this much later, when its event loop is stuck
ASYNC_LIMIT_SLACK_S = 1.0


@dataclass
class Outcome:
    """What one attempt produced."""

    ok: bool
    result: Any = None
    error: dict[str, Any] | None = None
    retry: bool = False  # the failure earns another attempt
    retry_delay_s: float | None = None
    duration_s: float | None = None  # how long the task ran (None: it was stopped, see settle)


@dataclass
class Attempt:
    """A job a slot is running; the heartbeat touches it, looks for its cancellation,
    writes its progress and enforces its time limit."""

    delivery: Delivery
    envelope: Envelope
    task: Task[Any, Any]
    attempts: int
    started: float = field(default_factory=time.monotonic)
    touched: float = 0.0  # monotonic time of the last touch (or the start)
    checked: float = 0.0  # monotonic time the heartbeat last read whether it was cancelled
    force_at: float | None = None  # cancelled: when it is stopped by force unless it ended
    done: bool = False  # the slot took the outcome
    abandoned: bool = False  # the heartbeat or shutdown took the job away from the slot
    workflow: dict[str, Any] | None = None  # the record's workflow state, when it is part of one
    context: JobContext = field(init=False)

    def __post_init__(self) -> None:
        self.touched = self.checked = self.started
        self.context = JobContext(self.envelope.id, self.attempts)

    @property
    def next_due(self) -> float:
        """When the heartbeat must next look at this attempt (monotonic seconds)."""
        due = [self.touched + self.touch_every_s, self.checked + CANCEL_CHECK_S]
        due += [at for at in (self.limit_at, self.force_at) if at is not None]
        return min(due)

    @property
    def touch_every_s(self) -> float:
        return max(0.5, self.envelope.ttr / 2)

    @property
    def limit_at(self) -> float | None:
        limit = self.task.options.time_limit
        if limit is None:
            return None
        return self.started + limit + (ASYNC_LIMIT_SLACK_S if self.task.is_async else 0.0)


def lost_worker_limit(max_retries: int) -> int:
    """How many reserves without an outcome a job gets before it is buried as a crash loop.

    ``max_retries + 1``, but never less than 2: one lost worker (a deploy, an
    OOM kill, a dead node) is no verdict on the job, so even a task without
    retries runs again once after its worker vanished.
    """
    return max(max_retries, 1) + 1


def describe(exc: BaseException, with_traceback: bool = True) -> dict[str, Any]:
    """The stored form of an error: ``{"type", "message", "traceback"}``; never raises.

    A task may raise anything, including an exception whose ``__str__``,
    ``__repr__`` or traceback formatting raises: what cannot be described is
    stored as a placeholder saying so, since no task may take its slot down.
    Text is cut to what a record keeps, and lone surrogates and NULs are
    escaped so that every backend can store it.
    """
    kind = _type_name(exc)
    try:
        message = str(exc)
    except BaseException as inner:  # noqa: BLE001 - whatever __str__ raises
        message = f"<unprintable {kind}: __str__ raised {_type_name(inner)}>"
    text = _traceback(exc, kind) if with_traceback else ""
    return {"type": kind, "message": _storable(message[:MESSAGE_LIMIT]),
            "traceback": _storable(text[-TRACEBACK_LIMIT:])}


def _type_name(exc: BaseException) -> str:
    try:
        return str(type(exc).__name__)
    except BaseException:  # noqa: BLE001 - a metaclass may make even this raise
        return "<unknown exception type>"


def _traceback(exc: BaseException, kind: str) -> str:
    try:
        return "".join(traceback.format_exception(exc))
    except BaseException as inner:  # noqa: BLE001 - formatting runs the exception's own code
        try:
            frames = "".join(traceback.format_tb(exc.__traceback__))
        except BaseException:  # noqa: BLE001
            frames = ""
        failed = f"<traceback formatting raised {_type_name(inner)}>"
        return f"Traceback (most recent call last):\n{frames}{kind}: {failed}\n"


def _storable(text: str) -> str:
    """``text`` with lone surrogates and NULs escaped (no backend stores them as they are)."""
    if text.isascii() and "\0" not in text:
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\0", "\\x00")


class Runner:
    """Runs deliveries for one worker; shared by its slots, holds no per-job state."""

    def __init__(self, app: App, worker_name: str, stats: JobStats | None = None, *,
                 unknown_task_releases: int = Settings.unknown_task_releases,
                 unknown_task_delay_s: float = Settings.unknown_task_delay,
                 lease_s: float = Settings.lease) -> None:
        self.app = app
        self.lease_s = lease_s
        self.worker_name = worker_name
        self.limits = Limits(app)
        self.stats = JobStats() if stats is None else stats
        self.unknown_task_releases = unknown_task_releases
        self.unknown_task_delay_s = unknown_task_delay_s

    # -- before running ----------------------------------------------------

    def prepare(self, consumer: Consumer, delivery: Delivery) -> Attempt | None:
        """Decode and claim a delivery; settle it at once when it must not run.

        Returns:
            The attempt to run, or None when the delivery was settled here.

        Raises:
            BackendError: the claim could not be written (the job was released).
        """
        decoded = self._decode(consumer, delivery)
        if decoded is None:
            return None
        try:
            record = self._claim(decoded[0], delivery)
        except BackendError:
            _release_for_outage(consumer, delivery, decoded[0])
            raise
        return self._admit(consumer, delivery, *decoded, record)

    def _decode(self, consumer: Consumer, delivery: Delivery) -> tuple[Envelope, Task[Any, Any]] | None:
        """The envelope and task of a delivery; None when it was buried as poison."""
        try:
            env = Envelope.decode(delivery.body)
        except PoisonMessage as exc:
            self._poison(consumer, delivery, exc.job_id, str(exc), None)
            return None
        task = self.app.tasks.get(env.task)
        if task is None:
            self._unknown_task(consumer, delivery, env)
            return None
        return env, task

    def _unknown_task(self, consumer: Consumer, delivery: Delivery, env: Envelope) -> None:
        """Release a message for a task this worker lacks, for another worker; bury it at the limit.

        The rule is in the module docstring; the record stays ``queued`` meanwhile.
        """
        limit = env.max_retries + self.unknown_task_releases
        releases = self._releases(consumer, delivery, limit)
        if releases >= limit:
            self._poison(consumer, delivery, env.id, f"unknown task {env.task!r}", env)
            return
        log.warning("job %s: no task %r in this worker; back to the broker for another worker in "
                    "%s s (release %d of %d)", env.id, env.task, self.unknown_task_delay_s,
                    releases + 1, limit)
        consumer.release(delivery, priority=env.priority,
                         delay_s=int(max(0, self.unknown_task_delay_s) + 0.999))

    def _releases(self, consumer: Consumer, delivery: Delivery, limit: int) -> int:
        """How often the broker has released a message; ``limit`` when it cannot say (bury it now)."""
        releases = consumer.releases(delivery)
        return limit if releases is None else releases

    def _claim(self, env: Envelope, delivery: Delivery) -> dict[str, Any]:
        """Hold the job: this worker, a lease (see :mod:`jobkit.leases`), the copy it runs."""
        now = time.time()
        return self.app.backend.claim(env.record() | {
            "worker": self.worker_name, "started_at": now, "lease_until": now + self.lease_s,
            "broker_id": delivery.broker_id})

    def _admit(self, consumer: Consumer, delivery: Delivery, env: Envelope, task: Task[Any, Any],
               record: dict[str, Any]) -> Attempt | None:
        """The attempt to run for a claimed job, or None when its record says it must not run."""
        state, attempts = record["state"], record.get("attempts") or 0
        flow = record.get("workflow")
        if stale_copy(record, delivery.broker_id):
            consumer.delete(delivery)  # a fresh copy replaced it (see jobkit.leases): not new work
        elif state in ("succeeded", "cancelled"):
            if self._replayed(consumer, delivery, env, record):
                consumer.delete(delivery)  # its outcome is stored: a redelivery, not new work
        elif state == "failed":
            if self._replayed(consumer, delivery, env, record):
                consumer.bury(delivery, priority=env.priority)  # a dead letter stays one
        elif attempts > lost_worker_limit(env.max_retries) and (
                lost := consumer.lost_deliveries(delivery)) >= lost_worker_limit(env.max_retries):
            error = {"type": "WorkerLost", "traceback": "", "message": f"reserved {attempts} times, "
                     f"{lost} of them without an outcome: its worker died each time"}
            self._store_then(consumer, delivery, env, "failed", Outcome(False, error=error), attempts, flow)
        elif self._within_limits(consumer, delivery, env, task, record):
            return Attempt(delivery, env, task, attempts, workflow=flow)
        return None

    def _replayed(self, consumer: Consumer, delivery: Delivery, env: Envelope,
                  record: dict[str, Any]) -> bool:
        """Redo a finished workflow job's effect on its workflow before its message goes.

        Its worker may have died after storing the outcome and before putting
        the jobs it made due (see :mod:`jobkit.workflows`). False when that
        could not be done now: the message was released, to come back later.
        """
        if not record.get("workflow"):
            return True
        try:
            workflows.dispatch(self.app, workflows.replay(self.app.backend, record))
        except (BackendError, BrokerError) as exc:
            log.warning("job %s: workflow not moved on yet (%s); back to the broker", env.id, exc)
            _release_for_outage(consumer, delivery, env)
            return False
        return True

    def _within_limits(self, consumer: Consumer, delivery: Delivery, env: Envelope,
                       task: Task[Any, Any], record: dict[str, Any]) -> bool:
        """Take the job's rate and concurrency leases, else send it back to wait (see jobkit.limits)."""
        try:
            return self.limits.admit(consumer, delivery, env, task, record)
        except BackendError:
            _release_for_outage(consumer, delivery, env)
            raise

    def _poison(self, consumer: Consumer, delivery: Delivery, job_id: str | None,
                reason: str, env: Envelope | None) -> None:
        log.error("burying message %s (job %s): %s", delivery.broker_id, job_id, reason,
                  extra=job_fields(job_id, env.task if env is not None else None, worker=self.worker_name))
        priority = env.priority if env is not None else DEFAULT_PRIORITY
        if job_id is not None:
            error = {"type": "PoisonMessage", "message": reason, "traceback": ""}
            insert = (env.record() if env is not None else {"task": None}) | {
                "broker_id": delivery.broker_id}  # so that a retry kicks this very message
            try:
                self.app.backend.finish(job_id, "failed", error=error, insert=insert)
            except BackendError:
                log.warning("could not record why job %s was buried", job_id)
        consumer.bury(delivery, priority=priority)

    # -- running -----------------------------------------------------------

    def execute(self, attempt: Attempt) -> Outcome:
        """Call the task as the current job, its log lines tagged with the job (see
        :mod:`jobkit.logs`); an ``async def`` task on a loop of its own. Never raises."""
        began = self._started(attempt)
        try:
            with job_context(self._log_fields(attempt)), attempt.context.running():
                outcome = self._call(attempt)
        finally:
            self.stats.returned()
        outcome.duration_s = time.monotonic() - began
        return outcome

    async def execute_async(self, attempt: Attempt) -> Outcome:
        """:meth:`execute` on the running event loop (a sync task runs in its executor); never raises."""
        env = attempt.envelope
        began = self._started(attempt)
        try:
            with job_context(self._log_fields(attempt)), attempt.context.running():
                try:
                    outcome = succeeded(await call_async(attempt.context, attempt.task, env.args,
                                                         env.kwargs))
                except BaseException as exc:  # noqa: BLE001 - a task's failure is data here
                    outcome = failed(attempt, exc)
        finally:
            self.stats.returned()
        outcome.duration_s = time.monotonic() - began
        return outcome

    def _started(self, attempt: Attempt) -> float:
        """Count the start (see :mod:`jobkit.metrics`); returns when it was (monotonic seconds)."""
        env = attempt.envelope
        first = attempt.attempts == 1 and env.enqueued_at
        self.stats.started(env.task, time.time() - env.enqueued_at if first else None)
        return time.monotonic()

    def _log_fields(self, attempt: Attempt) -> Any:
        env = attempt.envelope
        return job_fields(env.id, env.task, attempt.attempts, self.worker_name)

    @staticmethod
    def _call(attempt: Attempt) -> Outcome:
        env = attempt.envelope
        try:
            if attempt.task.is_async:
                result = asyncio.run(call_async(attempt.context, attempt.task, env.args, env.kwargs))
            else:
                result = attempt.task.fn(*env.args, **env.kwargs)
        except BaseException as exc:  # noqa: BLE001 - a task's failure is data here
            return failed(attempt, exc)
        return succeeded(result)

    # -- after running -----------------------------------------------------

    def settle(self, consumer: Consumer, attempt: Attempt, outcome: Outcome,
               ahead: Delivery | None = None) -> Attempt | None:
        """Store the outcome, then delete, release or bury the message.

        Args:
            ahead: a delivery reserved meanwhile, to claim in the same
                transaction as the outcome where the backend groups writes
                (one commit for two writes); see :meth:`prepare`.

        Returns:
            The attempt to run for ``ahead`` (None without one, or when it
            must not run).

        Raises:
            BackendError: the writes could not be made (both jobs were released).
        """
        decoded = self._decode(consumer, ahead) if ahead is not None else None
        state = self._state_after(attempt, outcome)
        try:
            with self.app.backend.batch():
                self.write_progress(attempt)
                stored = self._store(attempt.envelope, state, outcome, attempt.attempts)
                due = self._advance(attempt.envelope, attempt.workflow, state, outcome, stored)
                record = self._claim(decoded[0], ahead) if decoded is not None and ahead else None
        except BackendError:
            _outcome_lost(consumer, attempt.delivery, attempt.envelope)
            if ahead is not None and decoded is not None:
                _release_for_outage(consumer, ahead, decoded[0])
            raise
        self._count(attempt, state, outcome, stored)
        if not stored:
            log.warning("job %s: outcome of attempt %d not stored: the job was cancelled, or re-enqueued "
                        "after this worker's lease ran out (a duplicate run)", attempt.envelope.id,
                        attempt.attempts, extra=job_fields(attempt.envelope.id, attempt.envelope.task,
                                                           attempt.attempts, self.worker_name))
        if self._dispatched(consumer, attempt.delivery, attempt.envelope, due):
            self._then(consumer, attempt.delivery, attempt.envelope, state, outcome, attempt.attempts,
                       stored)
        self.limits.release(attempt.task, attempt.envelope, attempt.attempts)
        if ahead is None or decoded is None or record is None:
            return None
        return self._admit(consumer, ahead, *decoded, record)

    def write_progress(self, attempt: Attempt) -> None:
        """Store the progress the task reported since it was last stored, if any."""
        job_id, backend = attempt.envelope.id, self.app.backend
        attempt.context.write_progress(lambda fraction, meta: backend.progress(job_id, fraction, meta))

    def _count(self, attempt: Attempt, state: str, outcome: Outcome, stored: bool) -> None:
        """Count a stored outcome (see :mod:`jobkit.metrics`); a stopped attempt ran until now."""
        label = ("retried" if state == "retrying" else state) if stored else "cancelled"
        duration_s = outcome.duration_s
        if duration_s is None:
            duration_s = time.monotonic() - attempt.started
        self.stats.settled(attempt.envelope.task, label, duration_s)

    @staticmethod
    def _state_after(attempt: Attempt, outcome: Outcome) -> str:
        if outcome.ok:
            return "succeeded"
        if outcome.retry and attempt.attempts <= attempt.envelope.max_retries:
            return "retrying"
        return "failed"

    def _store(self, env: Envelope, state: str, outcome: Outcome, attempts: int) -> bool:
        result = {"result": outcome.result} if outcome.ok else {}
        return self.app.backend.finish(env.id, state, error=outcome.error,  # only while it holds the job
                                       held_by=(self.worker_name, attempts), **result)

    def _store_then(self, consumer: Consumer, delivery: Delivery, env: Envelope, state: str,
                    outcome: Outcome, attempts: int, flow: dict[str, Any] | None = None) -> None:
        try:
            with self.app.backend.batch():
                stored = self._store(env, state, outcome, attempts)
                self._advance(env, flow, state, outcome, stored)
        except BackendError:
            _outcome_lost(consumer, delivery, env)
            raise
        self._then(consumer, delivery, env, state, outcome, attempts, stored)

    def _advance(self, env: Envelope, flow: dict[str, Any] | None, state: str, outcome: Outcome,
                 stored: bool) -> list[dict[str, Any]]:
        """Move the job's workflow on, in the write that stores its outcome; the jobs made due."""
        if flow is None or not stored:  # not stored: cancelled, and the cancel failed its downstream
            return []
        return workflows.after_outcome(self.app.backend, env, flow, state, outcome.result, outcome.error)

    def _dispatched(self, consumer: Consumer, delivery: Delivery, env: Envelope,
                    due: list[dict[str, Any]]) -> bool:
        """Put the jobs an outcome made due; False when the broker would not (message released)."""
        if not due:
            return True
        try:
            workflows.dispatch(self.app, due)
        except BrokerError as exc:
            log.warning("job %s: next workflow step not sent (%s); back to the broker", env.id, exc)
            _release_for_outage(consumer, delivery, env)
            return False
        return True

    def _then(self, consumer: Consumer, delivery: Delivery, env: Envelope, state: str,
              outcome: Outcome, attempts: int, stored: bool) -> None:
        """Delete, release or bury a message once its outcome is stored."""
        if not stored or state == "succeeded":  # not stored: cancelled meanwhile
            consumer.delete_nowait(delivery)  # perf: sent with the next reserve
        elif state == "retrying":
            delay = outcome.retry_delay_s
            delay_s = self.app.get_task(env.task).options.backoff(attempts) if delay is None else delay
            log.info("job %s: attempt %d failed (%s), retrying in %s s", env.id, attempts,
                     (outcome.error or {}).get("type"), delay_s,
                     extra=job_fields(env.id, env.task, attempts, self.worker_name))
            consumer.release(delivery, priority=env.priority, delay_s=int(max(0, delay_s) + 0.999))
        else:
            log.warning("job %s failed for good after %d attempt(s): %s", env.id, attempts,
                        (outcome.error or {}).get("message"),
                        extra=job_fields(env.id, env.task, attempts, self.worker_name))
            consumer.bury(delivery, priority=env.priority)

    def give_back(self, consumer: Consumer, attempt: Attempt) -> None:
        """Release a job the worker stops running (shutdown); the attempt is not counted.

        The record is reset before the release: once released, another worker
        may claim the job at once, and its claim must not be overwritten.
        """
        env = attempt.envelope
        try:
            self.app.backend.update_held(env.id, {"state": "queued", "attempts": attempt.attempts - 1,
                                                  "lease_until": None},
                                         worker=self.worker_name, attempts=attempt.attempts)
        except BackendError:
            log.warning("job %s released, but its record still says running", env.id)
        consumer.release(attempt.delivery, priority=env.priority, delay_s=0)
        self.limits.release(attempt.task, env, attempt.attempts)



def succeeded(result: Any) -> Outcome:
    """The outcome of a task that returned ``result``: a failure when it cannot be stored."""
    try:
        dumps(result)  # a result that cannot be stored is a failure now, not later
    except PayloadError as exc:
        return Outcome(False, error=describe(exc, False) | {"message": f"result: {exc}"})
    return Outcome(True, result=result)


def failed(attempt: Attempt, exc: BaseException) -> Outcome:
    """The outcome of a task that raised ``exc``: retried when its options say so."""
    if isinstance(exc, Retry):
        return Outcome(False, error=describe(exc, False), retry=True, retry_delay_s=exc.delay)
    return Outcome(False, error=describe(exc), retry=isinstance(exc, attempt.task.options.retry_on))


def _release_for_outage(consumer: Consumer, delivery: Delivery, env: Envelope) -> None:
    """Give a job back to the broker for a later attempt while the backend is unavailable."""
    consumer.release(delivery, priority=env.priority, delay_s=OUTAGE_DELAY_S)


def _outcome_lost(consumer: Consumer, delivery: Delivery, env: Envelope) -> None:
    """Give back a job whose outcome could not be stored (it runs again later)."""
    log.warning("job %s: outcome not stored, back to the broker in %s s", env.id, OUTAGE_DELAY_S)
    _release_for_outage(consumer, delivery, env)
