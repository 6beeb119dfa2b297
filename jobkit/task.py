"""Tasks: registered functions, their options, and how they are sent.

A task is typed by its function: ``Task[P, R]`` takes the function's
parameters ``P`` and its jobs are ``Job[R]``. An ``async def`` function
becomes an :class:`AsyncTask`, whose jobs carry the coroutine's result type
and whose direct call returns the coroutine, as calling the function would.
"""
from __future__ import annotations

import inspect
import math
import random
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, Protocol, TypeVar, overload

from jobkit.brokers.base import DEFAULT_PRIORITY, DEFAULT_TTR, MAX_PRIORITY, MIN_TTR
from jobkit.brokers.beanstalk import MAX_U32, queue_name_problem
from jobkit.canvas import Signature, eta_delay
from jobkit.errors import ConfigError, PayloadError
from jobkit.limits import check_concurrency, parse_rate
from jobkit.message import NAME_RE

if TYPE_CHECKING:
    from jobkit.app import App
    from jobkit.job import Job

P = ParamSpec("P")
R = TypeVar("R")


@dataclass(frozen=True)
class TaskOptions:
    """How a task's jobs are queued, run and retried. Every time is in seconds.

    Attributes:
        queue: the queue (beanstalkd tube) its jobs go to.
        priority: beanstalkd priority, 0 most urgent.
        ttr: seconds a worker may hold a job before beanstalkd hands it to
            another; the worker touches running jobs every ttr/2, so this only
            matters when a worker dies or is cut off.
        max_retries: further attempts after a failed one (0: fail at once).
        retry_backoff: the first retry's delay; each further one doubles it.
        retry_backoff_max: the cap on a retry's delay.
        retry_on: exception types that earn a retry; others fail at once.
        time_limit: seconds one attempt may run; None for no limit.
        rate_limit: ``"N/s"``, ``"N/m"`` or ``"N/h"``: at most N starts in any
            such period, over all workers together (see :mod:`jobkit.limits`).
        concurrency_limit: at most this many jobs running at once, over all workers.
        concurrency_key: the name of an argument: the concurrency limit then
            holds per value of that argument.
    """

    queue: str = "default"
    priority: int = DEFAULT_PRIORITY
    ttr: int = DEFAULT_TTR
    max_retries: int = 0
    retry_backoff: float = 1.0
    retry_backoff_max: float = 600.0
    retry_on: tuple[type[BaseException], ...] = field(default=(Exception,))
    time_limit: float | None = None
    rate_limit: str | None = None
    concurrency_limit: int | None = None
    concurrency_key: str | None = None

    def __post_init__(self) -> None:
        check_queue(self.queue)
        check_priority(self.priority)
        check_ttr(self.ttr)
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ConfigError(f"max_retries must be an int >= 0, not {self.max_retries!r}")
        if self.retry_backoff < 0 or self.retry_backoff_max < 0:
            raise ConfigError("retry_backoff and retry_backoff_max must be >= 0 seconds")
        if self.time_limit is not None and self.time_limit <= 0:
            raise ConfigError(f"time_limit must be > 0 seconds, not {self.time_limit!r}")
        if self.rate_limit is not None:
            parse_rate(self.rate_limit)

    def backoff(self, retry: int) -> int:
        """Seconds to wait before retry number ``retry`` (1-based): exponential,
        capped, with full jitter over its upper half, rounded up for beanstalkd."""
        ceiling = min(self.retry_backoff_max, self.retry_backoff * 2 ** (retry - 1))
        return math.ceil(random.uniform(ceiling / 2, ceiling))


def check_queue(queue: Any) -> str:
    """Return ``queue`` when the broker takes it as a queue name, else raise ConfigError."""
    problem = queue_name_problem(queue)
    if problem is not None:
        raise ConfigError(f"invalid queue name {queue!r}: {problem}")
    return str(queue)


def check_delay(delay: Any) -> int:
    """Return ``delay`` as the whole seconds sent to the broker (rounded up), else raise ConfigError.

    The range is checked after rounding: 4294967295.5 s would round up to 2**32, past beanstalkd's.
    """
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or not delay >= 0:
        raise ConfigError(f"delay must be a number of seconds >= 0, not {delay!r}")
    delay_s = math.ceil(delay) if isinstance(delay, float) and delay != math.inf else delay
    if not delay_s <= MAX_U32:
        raise ConfigError(f"delay must be at most {MAX_U32} seconds once rounded up, not {delay!r}")
    return int(delay_s)


def check_ttr(ttr: Any) -> int:
    """Return ``ttr`` when it is a usable time-to-run in seconds, else raise ConfigError."""
    if isinstance(ttr, bool) or not isinstance(ttr, int) or not MIN_TTR <= ttr < 2**32:
        raise ConfigError(f"ttr must be a whole number of seconds from {MIN_TTR} to {2**32 - 1},"
                          f" not {ttr!r}")
    return ttr


def check_priority(priority: Any) -> int:
    """Return ``priority`` when it is a beanstalkd priority, else raise ConfigError."""
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= MAX_PRIORITY:
        raise ConfigError(f"priority must be an int from 0 to {MAX_PRIORITY}, not {priority!r}")
    return priority


class Task(Generic[P, R]):
    """A function registered with an :class:`~jobkit.App`.

    Calling the task runs the function here and now; :meth:`delay` and
    :meth:`apply_async` send it to a worker.
    """

    #: True for an ``async def`` function: workers run its jobs on an event loop.
    is_async = False

    def __init__(self, app: App, fn: Callable[P, Any], name: str, options: TaskOptions) -> None:
        if not NAME_RE.match(name):
            raise ConfigError(f"invalid task name {name!r}")
        check_concurrency(options.concurrency_limit, options.concurrency_key, fn)
        self.app = app
        self.fn: Callable[P, Any] = fn
        self.name = name
        self.options = options
        self.__doc__ = fn.__doc__
        self.__wrapped__ = fn

    def __repr__(self) -> str:
        return f"<Task {self.name}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        result: R = self.fn(*args, **kwargs)
        return result

    def delay(self, *args: P.args, **kwargs: P.kwargs) -> Job[R]:
        """Send the task with these arguments; return its :class:`~jobkit.Job`."""
        return self.apply_async(args, kwargs)

    def apply_async(
        self,
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        queue: str | None = None,
        priority: int | None = None,
        delay: float = 0,
        ttr: int | None = None,
        idempotency_key: str | None = None,
        eta: datetime | None = None,
    ) -> Job[R]:
        """Send the task with per-call options.

        Args:
            args: positional arguments (JSON data).
            kwargs: keyword arguments (JSON data).
            queue: overrides the task's queue.
            priority: overrides the task's priority (0 most urgent).
            delay: seconds before the job may run (rounded up to whole seconds).
            ttr: overrides the task's TTR, in seconds.
            idempotency_key: a repeat with the same key returns the first job.
            eta: when the job may run, instead of ``delay`` (naive means UTC;
                past means now). The broker holds the job until then.

        Raises:
            PayloadError: arguments are not JSON data or too large.
            ConfigError: an option is invalid, or both ``eta`` and ``delay`` are given.
            BrokerUnavailable: the broker cannot take the job (nothing is recorded).
        """
        if eta is not None:
            delay = eta_delay(eta, delay)
        return self.app.send(self.name, args, kwargs, queue=queue, priority=priority,
                             delay=delay, ttr=ttr, idempotency_key=idempotency_key)

    def s(self, *args: Any, **kwargs: Any) -> Signature:
        """A signature of this task (for chains, groups, chords): ``add.s(1, 2)``."""
        return Signature(self.name, args, kwargs, app=self.app)

    def si(self, *args: Any, **kwargs: Any) -> Signature:
        """An immutable signature: in a chain, the previous step's result is not passed to it."""
        return Signature(self.name, args, kwargs, app=self.app, immutable=True)

    def map(self, calls: Iterable[Iterable[Any]]) -> list[Job[R]]:
        """Enqueue one job per argument tuple, as one batch (see :meth:`jobkit.App.send_many`).

        Raises:
            PayloadError: an item is not a tuple or list of arguments (``jobs[i]: …``).
        """
        signatures = []
        for i, args in enumerate(calls):
            try:
                signatures.append(Signature(self.name, args, app=self.app))
            except PayloadError as exc:
                raise PayloadError(f"jobs[{i}]: {exc}") from None
        return self.app.send_many(signatures)

class AsyncTask(Task[P, R]):
    """A task whose function is an ``async def``: its jobs' results are the coroutine's.

    Calling it directly returns the coroutine (await it, or ``asyncio.run`` it).
    """

    is_async = True

    def __call__(  # type: ignore[override]  # the coroutine, where Task gives its result
            self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R]:
        coroutine: Coroutine[Any, Any, R] = self.fn(*args, **kwargs)
        return coroutine


class TaskDecorator(Protocol):
    """What ``app.task(name=..., ...)`` returns: it makes a task of a function."""

    @overload
    def __call__(self, fn: Callable[P, Coroutine[Any, Any, R]], /) -> AsyncTask[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> Task[P, R]: ...


def make_task(app: App, fn: Callable[..., Any], name: str, options: TaskOptions) -> Task[Any, Any]:
    """A :class:`Task`, or an :class:`AsyncTask` for an ``async def`` function."""
    kind = AsyncTask if inspect.iscoroutinefunction(fn) else Task
    return kind(app, fn, name, options)
