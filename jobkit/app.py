"""App: the task registry, the wiring of broker and backend, and every read of them.

The API, the dashboard and the metrics read jobs, queues and health through
the App, never through its broker or backend: the App knows which optional
capabilities the broker has (:mod:`jobkit.brokers.base`) and answers without
the ones it lacks (a job's record instead of the broker's stats, a new
message instead of a kick, no queue counts).
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast, overload

from jobkit import workflows
from jobkit.backends import Backend, backend_from_url
from jobkit.backends.base import LIVE_FOR_S
from jobkit.brokers import Broker, broker_from_url
from jobkit.brokers.base import DELAY, DELETE, KICK, PEEK, STATS, Outgoing
from jobkit.config import Settings
from jobkit.grouping import GroupWriter
from jobkit.errors import (
    BackendError,
    BrokerError,
    BrokerUnconfirmed,
    ConfigError,
    InvalidState,
    JobkitError,
    JobNotFound,
    PayloadError,
    PoisonMessage,
    TaskNotFound,
    Unsupported,
)
from jobkit.job import Job, JobState, JobStatus
from jobkit.message import Envelope, new_job_id
from jobkit.schedules import Schedule
from jobkit.task import (
    AsyncTask,
    Task,
    TaskDecorator,
    TaskOptions,
    check_delay,
    check_priority,
    check_queue,
    check_ttr,
    make_task,
)

if TYPE_CHECKING:
    from jobkit.canvas import Signature

log = logging.getLogger("jobkit")
P = ParamSpec("P")
R = TypeVar("R")
_KEY_SPACE = uuid.UUID("6f1d2a8e-6b0e-4f55-9d0b-7a4c1c2b9e31")


@dataclass(frozen=True, slots=True)
class _Send:
    """A send without an idempotency key, gathered with others (see :meth:`App._write_sends`)."""

    env: Envelope
    body: bytes
    record: dict[str, Any]
    delay_s: int


class App:
    """A set of tasks and where their jobs go.

    Args:
        name: a label for logs and the API.
        broker: a broker URL or instance; default: ``settings.broker_url``.
        backend: a backend URL or instance; default: ``settings.backend_url``.
        settings: defaults to :meth:`Settings.from_env`, read on first use.

    Nothing connects until a job is sent or read.
    """

    def __init__(
        self,
        name: str = "jobkit",
        *,
        broker: str | Broker | None = None,
        backend: str | Backend | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.name = name
        self.tasks: dict[str, Task[Any, Any]] = {}
        self.schedules: dict[str, Schedule] = {}
        self._broker_spec = broker
        self._backend_spec = backend
        self._settings = settings
        self._broker: Broker | None = broker if isinstance(broker, Broker) else None
        self._backend: Backend | None = backend if isinstance(backend, Backend) else None
        self._lock = threading.Lock()  # threads racing to first use must share one broker/backend
        self._sends: GroupWriter[_Send, str] = GroupWriter(self._write_sends)  # see _write_sends

    def __repr__(self) -> str:
        return f"<App {self.name}: {len(self.tasks)} tasks>"

    # -- configuration -----------------------------------------------------

    @property
    def settings(self) -> Settings:
        """The settings in force (read from the environment on first use)."""
        if self._settings is None:
            self._settings = Settings.from_env()
        return self._settings

    def configure(
        self,
        *,
        settings: Settings | None = None,
        broker: str | Broker | None = None,
        backend: str | Backend | None = None,
    ) -> None:
        """Change settings, broker or backend before the app is used.

        Explicit ``broker``/``backend`` win over those given to the
        constructor, which win over ``settings``.
        """
        if settings is not None:
            self._settings = settings
        if broker is not None:
            self._broker_spec = broker
        if backend is not None:
            self._backend_spec = backend
        self.close()
        self._broker = self._broker_spec if isinstance(self._broker_spec, Broker) else None
        self._backend = self._backend_spec if isinstance(self._backend_spec, Backend) else None

    @property
    def broker(self) -> Broker:
        """The broker (created on first use; connects lazily)."""
        with self._lock:
            if self._broker is None:
                spec = self._broker_spec
                self._broker = broker_from_url(spec if isinstance(spec, str) else self.settings.broker_url)
            return self._broker

    @property
    def backend(self) -> Backend:
        """The result backend (created on first use; connects lazily)."""
        with self._lock:
            if self._backend is None:
                spec = self._backend_spec
                url = spec if isinstance(spec, str) else self.settings.backend_url
                self._backend = backend_from_url(url, result_ttl=self.settings.result_ttl)
            return self._backend

    def close(self) -> None:
        """Close broker and backend connections (they reopen if used again)."""
        for part in (self._broker, self._backend):
            if part is not None:
                part.close()

    # -- tasks -------------------------------------------------------------

    @overload
    def task(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> AsyncTask[P, R]: ...

    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...

    @overload
    def task(self, fn: None = None, /, *, name: str | None = None, **options: Any) -> TaskDecorator: ...

    def task(self, fn: Callable[..., Any] | None = None, /, *, name: str | None = None,
             **options: Any) -> Task[Any, Any] | TaskDecorator:
        """Register a function as a task: ``@app.task`` or ``@app.task(name=…, queue=…)``.

        Options are the fields of :class:`~jobkit.task.TaskOptions`. Never connects.
        An ``async def`` function becomes an :class:`~jobkit.task.AsyncTask`.

        Raises:
            ConfigError: an option is invalid, or the name is taken by another function.
        """
        if isinstance(options.get("retry_on"), type):
            options["retry_on"] = (options["retry_on"],)
        try:
            opts = TaskOptions(**options)
        except TypeError as exc:
            raise ConfigError(f"bad task option: {exc}") from None

        def register(func: Callable[..., Any]) -> Task[Any, Any]:
            task = make_task(self, func, name or func.__name__, opts)
            old = self.tasks.get(task.name)
            if old is not None and old.fn is not func:
                raise ConfigError(f"task name {task.name!r} is already registered")
            self.tasks[task.name] = task
            return task

        return register(fn) if fn is not None else cast(TaskDecorator, register)

    @overload
    def periodic(self, fn: Callable[P, R], /, *, cron: str | None = None, every: int | None = None,
                 tz: str = "UTC", args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None,
                 name: str | None = None, **options: Any) -> Task[P, R]: ...

    @overload
    def periodic(self, fn: None = None, /, *, cron: str | None = None, every: int | None = None,
                 tz: str = "UTC", args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None,
                 name: str | None = None, **options: Any) -> Callable[[Callable[P, R]], Task[P, R]]: ...

    def periodic(self, fn: Callable[P, R] | None = None, /, *, cron: str | None = None,
                 every: int | None = None, tz: str = "UTC", args: Iterable[Any] = (),
                 kwargs: Mapping[str, Any] | None = None, name: str | None = None,
                 **options: Any) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
        """Register a task that runs by itself: ``@app.periodic(cron="*/5 * * * *")`` or ``every=30``.

        Args:
            cron: a cron expression, read in ``tz`` (5 fields, or 6 with seconds last).
            every: or a period in whole seconds (ticks on multiples of it since the epoch).
            tz: the IANA time zone of ``cron`` (default UTC).
            args: positional arguments of every tick's job.
            kwargs: keyword arguments of every tick's job.
            name: the task's (and schedule's) name; default: the function's.
            options: task options, as for :meth:`task`.

        ``jobkit beat`` (or ``worker --beat``, or ``up``) sends the ticks.

        Raises:
            ConfigError: a bad schedule or option, or the name is taken.
        """
        def register(func: Callable[P, R]) -> Task[P, R]:
            task_name = name or func.__name__
            schedule = Schedule(task_name, task_name, cron=cron, every=every, tz=tz,
                                args=tuple(args), kwargs=dict(kwargs or {}))
            task = self.task(name=task_name, **options)(func)
            self.schedules[schedule.name] = schedule
            return task

        return register(fn) if fn is not None else register

    def list_schedules(self) -> list[dict[str, Any]]:
        """Every schedule with its ``last_run`` and ``next_run`` (ISO 8601 UTC), by name."""
        from jobkit.schedules import status

        return [status(self.backend, self.schedules[n]) for n in sorted(self.schedules)]

    def get_task(self, name: str) -> Task[Any, Any]:
        """Return the registered task called ``name``.

        Raises:
            TaskNotFound: no such task.
        """
        try:
            return self.tasks[name]
        except KeyError:
            raise TaskNotFound(f"no task named {name!r}") from None

    # -- jobs --------------------------------------------------------------

    def send(
        self,
        task_name: str,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        delay: float = 0,
        ttr: int | None = None,
        idempotency_key: str | None = None,
    ) -> Job[Any]:
        """Enqueue a job of a registered task (see :meth:`Task.apply_async`).

        The returned job's ``created`` is False when ``idempotency_key``
        matched an earlier job, which is returned instead. With a key, the
        record is written before the message is put, so that a repeat always
        finds the job: when the first put went unconfirmed (or is still in
        flight), the repeat puts the message again under the same job id.
        A worker that finds a job id's record finished settles a second copy
        of its message without running it.

        Raises:
            TaskNotFound: no such task.
            PayloadError: arguments are not JSON data, or too large.
            ConfigError: an option is invalid (out of the broker's range once
                rounded as it is sent: delays are rounded up to whole seconds).
            BrokerUnavailable: the broker refused the job or could not be
                reached; nothing is recorded.
            BrokerUnconfirmed: the put went out but got no answer (a timeout):
                the job may still run. With ``idempotency_key`` its record is
                kept; sending again with the same key makes sure it exists.
            BackendUnavailable: the job could not be recorded; it was taken back.
            Unsupported: ``delay`` > 0 and the broker cannot delay (nothing is recorded).
        """
        delay_s = check_delay(delay)
        if delay_s > 0 and not self.broker.can(DELAY):
            raise Unsupported(f"the broker at {self.broker.url.split('://')[0]}:// cannot delay a job")
        env = self.envelope(task_name, args, kwargs, queue=queue, priority=priority, ttr=ttr,
                            job_id=None if idempotency_key is None else key_job_id(idempotency_key))
        return self._enqueue(env, delay_s, idempotency_key)

    def send_many(self, signatures: Iterable[Signature]) -> list[Job[Any]]:
        """Enqueue many jobs at once: one backend transaction, pipelined broker puts.

        All or nothing: every job is checked before any is sent, and an error
        names the item (``jobs[3]: no task named 'x'``). See
        :func:`jobkit.workflows.send_many`.
        """
        return workflows.send_many(self, signatures)

    def envelope(self, task_name: str, args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None,
                 *, queue: str | None = None, priority: int | None = None, ttr: int | None = None,
                 job_id: str | None = None) -> Envelope:
        """The checked message of a job of a registered task, the task's options filling the gaps.

        Raises:
            TaskNotFound: no such task.
            PayloadError: args is not a list, kwargs not an object.
            ConfigError: an option is out of range.
        """
        task = self.get_task(task_name)
        opts = task.options
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise PayloadError("kwargs must be an object")
        if isinstance(args, (str, bytes, Mapping)) or not isinstance(args, Iterable):
            raise PayloadError("args must be a list or tuple of arguments")
        return Envelope(
            id=new_job_id() if job_id is None else job_id,
            task=task.name, args=list(args), kwargs=dict(kwargs or {}),
            queue=self.broker.check_queue(check_queue(opts.queue if queue is None else queue)),
            priority=check_priority(opts.priority if priority is None else priority),
            ttr=check_ttr(opts.ttr if ttr is None else ttr), max_retries=opts.max_retries,
            enqueued_at=time.time(),
        )

    def _enqueue(self, env: Envelope, delay_s: int, key: str | None, *, again: bool = True) -> Job[Any]:
        body = env.encode()
        record = env.record() | {"idempotency_key": key}
        if key is None and self.broker.pipelines_puts:
            self._sends.submit(_Send(env, body, record, delay_s))
            return Job(self, env.id)
        if key is not None and not self.backend.add(record):
            first = self.backend.get(env.id)
            if first is None and again:  # the first request's put was refused: it removed the record
                return self._enqueue(env, delay_s, key, again=False)
            return self._repeat(first, env, delay_s)
        broker_id = self._put(env, body, delay_s, keyed=key is not None)
        try:
            self.backend.add(record | {"broker_id": broker_id}, report_created=False)
        except BackendError:
            self._take_back(broker_id, env.id)
            raise
        return Job(self, env.id)

    def _write_sends(self, sends: list[_Send]) -> list[str | BaseException]:
        """Put the sends of concurrent callers in one go, then record those the broker took, in one write.

        perf: one leader does both steps for everyone who arrived meanwhile,
        where each send would wait its turn in the broker's group and then in
        the backend's (two hand-offs between threads a send). Each send's
        guarantee is unchanged: its caller returns once its message and its
        record both exist. A message the broker refused fails its send alone;
        when the records cannot be written, the messages are taken back and
        every send of the group fails.
        """
        outcomes: list[str | BaseException] = list(self.broker.put_each(
            [Outgoing(s.body, s.env.queue, s.env.priority, s.delay_s, s.env.ttr) for s in sends]))
        taken = [(send, broker_id) for send, broker_id in zip(sends, outcomes, strict=True)
                 if isinstance(broker_id, str)]
        try:
            self.backend.add_many([send.record | {"broker_id": broker_id} for send, broker_id in taken])
        except BackendError as exc:
            for send, broker_id in taken:
                self._take_back(broker_id, send.env.id)
            return [exc if isinstance(outcome, str) else outcome for outcome in outcomes]
        return outcomes

    def _put(self, env: Envelope, body: bytes, delay_s: int, *, keyed: bool) -> str:
        """Put the message; remove a keyed record written before only when the broker surely refused it."""
        try:
            return self.broker.put(body, queue=env.queue, priority=env.priority,
                                   delay_s=delay_s, ttr_s=env.ttr)
        except BrokerUnconfirmed:
            if keyed:  # it may be in the broker: the record stays, marked for a repeat to put again
                self._mark_unconfirmed(env.id)
            raise
        except Exception:
            if keyed:
                self._forget(env.id)
            raise

    def _mark_unconfirmed(self, job_id: str) -> None:
        try:
            self.backend.update(job_id, {"waiting": {"on": "put", "since": time.time()}})
        except BackendError:  # unmarked, it is put again once older than PUT_SETTLED_S
            log.warning("job %s: its put went unconfirmed and could not be marked so", job_id)

    def _repeat(self, first: dict[str, Any] | None, env: Envelope, delay_s: int) -> Job[Any]:
        """Answer a repeated idempotency key with the first job, and make sure that job exists.

        A record still ``queued`` without a broker id is one whose put is in
        flight, went unconfirmed, or whose API process died mid-put. Only the
        last two are put again (the message from the record, not from this
        request, under the same job id): a put marked unconfirmed, or one
        older than :data:`PUT_SETTLED_S`. A put still in flight is left alone:
        putting it again would let two workers run the job at once. A put
        that fails here leaves the record as it is: the first may have landed.
        """
        if first is not None and _put_unsettled(first):
            same_task = first.get("task") == env.task
            message = self.envelope_of(first, ttr=env.ttr if same_task else None)
            broker_id = self.broker.put(message.encode(), queue=message.queue, priority=message.priority,
                                        delay_s=delay_s, ttr_s=message.ttr)
            self.backend.update(env.id, {"broker_id": broker_id, "waiting": None})
        return Job(self, env.id, created=False)

    def _forget(self, job_id: str) -> None:
        try:
            self.backend.delete(job_id)
        except BackendError:
            log.error("job %s: broker refused it and its record could not be removed", job_id)

    def _take_back(self, broker_id: str, job_id: str) -> None:
        if not self.broker.can(DELETE):
            log.error("job %s: could not be recorded, and the broker cannot take it back:"
                      " a worker will run it and record it then", job_id)
            return
        try:
            self.broker.delete(broker_id)
        except BrokerError:
            log.error("job %s: could not be recorded nor taken back from the broker", job_id)

    def job(self, job_id: str) -> Job[Any]:
        """Return a handle on the job ``job_id`` (does not check that it exists)."""
        return Job(self, job_id)

    # -- reads -------------------------------------------------------------

    def status(self, job_id: str) -> JobStatus:
        """Return the job's record.

        Raises:
            JobNotFound: no record exists for this id.
            BackendUnavailable: the result backend cannot be reached.
        """
        record = self.backend.get(job_id)
        if record is None:
            raise JobNotFound(job_id)
        return JobStatus.from_record(record)

    def wait(self, job_id: str, timeout_s: float | None) -> JobStatus:
        """Wait up to ``timeout_s`` seconds (None: for ever) for the job to finish; return its record.

        Raises:
            JobTimeout: it did not finish in time.
            JobNotFound: no record exists for this id.
        """
        return JobStatus.from_record(self.backend.wait(job_id, timeout_s))

    def jobs(self, *, state: str | None = None, task: str | None = None, queue: str | None = None,
             before: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """Records, newest first, filtered by ``state``, ``task`` and ``queue``, after the job
        ``before`` (the last of a page) when given."""
        return self.backend.find(state=state, task=task, queue=queue, before=before, limit=limit)

    def counts(self) -> dict[str, int]:
        """How many records are in each state."""
        return self.backend.counts()

    def finished_per_minute(self, since: float) -> dict[int, dict[str, int]]:
        """Jobs finished since ``since`` (unix seconds), by minute and state."""
        return self.backend.finished_per_minute(since)

    def queues(self) -> dict[str, dict[str, int]]:
        """Per-queue broker counts (:data:`~jobkit.brokers.base.QUEUE_STATS_KEYS`); ``{}`` when
        the broker cannot count (capability ``STATS``)."""
        return self.broker.stats() if self.broker.can(STATS) else {}

    def ping(self) -> dict[str, str]:
        """``{"broker": …, "backend": …}``, each ``"ok"`` when it answers, else ``"unavailable"``."""
        return {"broker": _answers(self.broker.ping), "backend": _answers(self.backend.ping)}

    def locate(self, job_id: str, broker_id: str | None) -> dict[str, Any] | None:
        """Return the broker's ``stats-job`` fields for the job while it holds it, else None.

        None too when the broker cannot look a message up (capability
        ``PEEK``): callers answer from the record then. The message is peeked
        to make sure ``broker_id`` still names this job (beanstalkd's ids
        restart with a server that has no binlog).
        """
        if broker_id is None or not self.broker.can(PEEK):
            return None
        peeked = self.broker.peek(broker_id)
        if peeked is None or _job_id_of(peeked.body) != job_id:
            return None
        return peeked.stats

    def broker_view(self, job_id: str, broker_id: str | None) -> dict[str, Any] | None:
        """:meth:`locate` for readers: None, never an error, when the broker does not answer.

        A job's status is its record; the broker's view of it is a detail, so a
        broker outage (or a hiccup on one pooled connection) must not turn a
        status read into a 503.
        """
        try:
            return self.locate(job_id, broker_id)
        except BrokerError as exc:
            log.warning("job %s: the broker's view of it is unavailable: %s", job_id, exc)
            return None

    def cancel(self, job_id: str) -> JobStatus:
        """Cancel a job: delete it from the broker, or flag it when a worker runs it.

        A running job's outcome is then discarded and it is not retried.

        Raises:
            JobNotFound: no such job.
            InvalidState: the job succeeded already.
        """
        status = self.status(job_id)
        if status.state in (JobState.SUCCEEDED, JobState.CANCELLED):
            raise InvalidState(f"job {job_id} is {status.state.value}: nothing to cancel")
        self._delete_waiting(status)
        now = time.time()
        changed = self.backend.update(
            job_id, {"state": "cancelled", "finished_at": now,
                     "expires_at": now + self.backend.result_ttl},
            unless=("succeeded", "cancelled"))
        if not changed:
            raise InvalidState(f"job {job_id} finished before it could be cancelled")
        workflows.cancelled(self.backend, status.record)  # the rest of its workflow fails
        return self.status(job_id)

    def _delete_waiting(self, status: JobStatus) -> None:
        """Delete a cancelled job's message where the broker can (it fails harmlessly when a
        worker holds it); else the message stays, and the worker that gets it drops it unrun."""
        broker_id = status.broker_id
        if broker_id is None or not self.broker.can(DELETE):
            return
        if self.broker.can(PEEK) and self.locate(status.id, broker_id) is None:
            return  # gone, or the id names another job now
        self.broker.delete(broker_id)

    def retry(self, job_id: str) -> JobStatus:
        """Run a failed or cancelled job again: kick it when it is buried, else enqueue it anew.

        Raises:
            JobNotFound: no such job.
            InvalidState: the job is not failed or cancelled.
        """
        status = self.status(job_id)
        if status.state not in (JobState.FAILED, JobState.CANCELLED):
            raise InvalidState(
                f"job {job_id} is {status.state.value}: only failed or cancelled jobs are retried")
        rec = status.record
        fresh = {"state": "queued", "attempts": 0, "error": None, "result": None,
                 "started_at": None, "finished_at": None, "expires_at": None}
        if not self.backend.update(job_id, fresh, unless=("queued", "running", "retrying", "succeeded")):
            raise InvalidState(f"job {job_id} changed state meanwhile")
        try:
            self._requeue(rec)
        except Exception:
            self.backend.update(job_id, {k: rec.get(k) for k in fresh})  # as it was
            raise
        return self.status(job_id)

    def _requeue(self, rec: dict[str, Any]) -> None:
        """Kick the job's dead letter where the broker can, else put a new message from the record."""
        if self._kicked(rec):
            return
        env = self.envelope_of(rec)  # a message no worker can run stays buried
        broker_id = self.broker.put(env.encode(), queue=env.queue, priority=env.priority,
                                    delay_s=0, ttr_s=env.ttr)
        self.backend.update(rec["id"], {"broker_id": broker_id})

    def _kicked(self, rec: dict[str, Any]) -> bool:
        """Kick the job's own dead letter; False when the broker cannot, or holds none for it.

        Where the broker can peek, the message is checked first (beanstalkd's
        ids restart with a server that has no binlog); where it cannot, its id
        is unique (RabbitMQ's are uuids) and kick finds the dead letter or nothing.
        """
        broker_id = rec.get("broker_id")
        if broker_id is None or not self.broker.can(KICK):
            return False
        if self.broker.can(PEEK):
            stats = self.locate(rec["id"], broker_id)
            if stats is None or stats["state"] != "buried":
                return False
        return self.broker.kick(broker_id)

    def envelope_of(self, rec: dict[str, Any], ttr: int | None = None) -> Envelope:
        """The message for a job record: its task's options fill what the record lacks.

        Raises:
            TaskNotFound: the record's task is not registered here.
        """
        task = self.get_task(rec.get("task") or "")
        return Envelope(
            id=rec["id"], task=task.name, args=rec.get("args") or [],
            kwargs=rec.get("kwargs") or {}, queue=rec.get("queue") or task.options.queue,
            priority=rec["priority"] if rec.get("priority") is not None else task.options.priority,
            ttr=task.options.ttr if ttr is None else ttr, max_retries=task.options.max_retries,
            enqueued_at=rec.get("created_at") or time.time(),
        )

    def kick(self, *, queue: str | None = None, job_id: str | None = None, limit: int = 10_000) -> int:
        """Bring dead letters back: one job by id, or the buried jobs of one queue or of all.

        A broker that cannot kick, peek its dead letters or count them has
        the failed jobs' records enqueued anew instead (:meth:`retry`).

        Returns:
            How many jobs were made ready again.
        """
        if job_id is not None:
            self.retry(job_id)
            return 1
        if queue is not None:
            queue = self.broker.check_queue(check_queue(queue))
        if not all(self.broker.can(needed) for needed in (KICK, PEEK, STATS)):
            return self._retry_failed(queue, limit)
        return self._kick_buried(queue, limit)

    def _kick_buried(self, queue: str | None, limit: int) -> int:
        """Kick up to ``limit`` buried messages of ``queue`` (None: of every queue)."""
        queues = [queue] if queue is not None else [
            q for q, counts in self.broker.stats().items() if counts["buried"]]
        kicked = 0
        for name in queues:
            budget = min(limit - kicked, self.broker.stats().get(name, {}).get("buried", 0))
            for _ in range(budget):
                peeked = self.broker.peek_buried(name)
                if peeked is None:
                    break
                found = _job_id_of(peeked.body)
                if found is not None:
                    self.backend.update(found, {"state": "queued", "attempts": 0, "error": None,
                                                "finished_at": None, "expires_at": None})
                kicked += self.broker.kick(peeked.broker_id)
        return kicked

    def workers(self) -> list[dict[str, Any]]:
        """Every live worker's heartbeat record (seen within the last ``LIVE_FOR_S`` seconds), by name."""
        return self.backend.workers(time.time() - LIVE_FOR_S)

    def _retry_failed(self, queue: str | None, limit: int) -> int:
        """Enqueue anew up to ``limit`` failed jobs of ``queue`` (None: of every queue)."""
        retried = 0
        for record in self.jobs(state=JobState.FAILED.value, queue=queue, limit=limit):
            try:
                self.retry(record["id"])
            except (InvalidState, TaskNotFound, JobNotFound):
                continue  # retried meanwhile, or no worker here could run it
            retried += 1
        return retried

    def stats(self) -> dict[str, Any]:
        """Return ``{"queues": per-queue broker counts (``{}`` without ``STATS``), "jobs": record
        counts by state}``."""
        return {"queues": self.queues(), "jobs": self.counts()}


#: Seconds after which a keyed record's first put has surely ended, answered or not
#: (every broker bounds a put well below this: beanstalkd's by its 5 s command timeout).
PUT_SETTLED_S = 60.0


def _put_unsettled(record: dict[str, Any]) -> bool:
    """Whether a keyed job's record says its message may be missing from the broker."""
    if record.get("broker_id") is not None or record.get("state") != "queued":
        return False
    waiting = record.get("waiting")
    if isinstance(waiting, dict) and waiting.get("on") == "put":
        return True
    return time.time() - float(record.get("created_at") or 0) > PUT_SETTLED_S


def key_job_id(idempotency_key: str) -> str:
    """The job id an idempotency key stands for (the same key, the same job)."""
    if not isinstance(idempotency_key, str) or not 0 < len(idempotency_key) <= 255:
        raise ConfigError("an idempotency key is 1 to 255 characters")
    return uuid.uuid5(_KEY_SPACE, idempotency_key).hex


def _answers(ping: Callable[[], None]) -> str:
    try:
        ping()
    except JobkitError:
        return "unavailable"
    return "ok"


def _job_id_of(body: bytes) -> str | None:
    try:
        return Envelope.decode(body).id
    except PoisonMessage as exc:
        return exc.job_id
