"""Rate limits and concurrency limits, for all workers together, kept in the backend.

Both are leases (:meth:`jobkit.backends.base.Backend.acquire`): a key has N
leases, a job starts only with one of them, and the backend hands each lease
to one caller at a time, whatever the number of workers, processes and
machines sharing it.

- ``rate_limit="N/s|m|h"``: key ``rate:<task>``, N leases each held for the
  period from a start. Each lease sees its starts at least one period apart,
  so no window of one period holds more than N starts (a sliding window, no
  burst at window edges). The lease is not given back early.
- ``concurrency_limit=N`` (with ``concurrency_key="kwarg"``): key
  ``concurrency:<task>[:<value of the argument>]``, N leases held from the
  start until the outcome is stored, or until the job's TTR runs out (the
  heartbeat renews it while the job runs): a dead worker's lease frees itself
  when its job's TTR would hand the job to another worker.

A job over a limit goes back to the broker with a delay (it waits there,
holding no worker slot) and its record says so: state ``queued``, with
``waiting = {"limit", "until", "times"}``. That is not an attempt: it does
not count against ``max_retries``. Its ``started_at`` is the moment it got
its leases, so records show exactly what the limits allowed.
"""
from __future__ import annotations

import inspect
import logging
import math
import random
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jobkit.errors import BackendError, ConfigError
from jobkit.message import dumps

if TYPE_CHECKING:
    from jobkit.app import App
    from jobkit.brokers.base import Consumer, Delivery
    from jobkit.message import Envelope
    from jobkit.task import Task

log = logging.getLogger("jobkit.worker")
PERIODS_S = {"s": 1, "m": 60, "h": 3600}
MAX_RATE = 10_000  # leases per key: a larger rate wants a shorter period ("100/s", not "360000/h")
RATE_RE = re.compile(r"\A\s*(\d+)\s*/\s*([smh])\s*\Z")
MAX_RECHECK_S = 10  # the longest a job waits on a concurrency limit before it looks again
MAX_KEY_TEXT = 200  # characters of an argument's JSON kept in a lease key (longer: a hash)


@dataclass(frozen=True)
class Rate:
    """``count`` starts per ``period_s`` seconds."""

    count: int
    period_s: int

    def __str__(self) -> str:
        unit = {v: k for k, v in PERIODS_S.items()}[self.period_s]
        return f"{self.count}/{unit}"


def parse_rate(text: str) -> Rate:
    """``"100/m"`` -> Rate(100, 60).

    Raises:
        ConfigError: not ``N/s``, ``N/m`` or ``N/h`` with 1 <= N <= :data:`MAX_RATE`.
    """
    match = RATE_RE.match(text) if isinstance(text, str) else None
    if match is None or not 1 <= int(match[1]) <= MAX_RATE:
        raise ConfigError(f"rate_limit must be 'N/s', 'N/m' or 'N/h' with N from 1 to {MAX_RATE}, "
                          f"not {text!r}")
    return Rate(int(match[1]), PERIODS_S[match[2]])


def check_concurrency(limit: Any, key: Any, fn: Any) -> None:
    """Raise ConfigError unless ``limit`` is an int >= 1 and ``key`` names a parameter of ``fn``."""
    if key is not None and limit is None:
        raise ConfigError("concurrency_key needs a concurrency_limit")
    if limit is None:
        return
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigError(f"concurrency_limit must be an int >= 1, not {limit!r}")
    if key is None:
        return
    params = inspect.signature(fn).parameters
    if key not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        raise ConfigError(f"concurrency_key {key!r} is not a parameter of {fn.__name__}")


def describe(task: Task[Any, Any]) -> dict[str, Any]:
    """A task's limits as JSON data (``null`` where none)."""
    opts = task.options
    return {"rate_limit": opts.rate_limit, "concurrency_limit": opts.concurrency_limit,
            "concurrency_key": opts.concurrency_key}


class Limits:
    """Takes and gives back a worker's leases; does nothing for a task without limits."""

    def __init__(self, app: App) -> None:
        self.app = app

    def admit(self, consumer: Consumer, delivery: Delivery, env: Envelope, task: Task[Any, Any],
              record: dict[str, Any]) -> bool:
        """Take the job's leases, or send it back to wait; True when it may run now.

        Called after the claim (the record says ``running``); a job sent back
        has its record set back to ``queued`` with ``waiting``, its attempt
        uncounted.
        """
        opts = task.options
        if opts.rate_limit is None and opts.concurrency_limit is None:
            return True
        now = time.time()
        holder = _holder(env.id, record)
        concurrency = self._concurrency_key(task, env)
        wait, limit = 0.0, ""
        if concurrency is not None:
            wait, limit = self._take(concurrency, holder, opts.concurrency_limit or 1, now, now + env.ttr), \
                "concurrency_limit"
        if not wait and opts.rate_limit is not None:
            rate = parse_rate(opts.rate_limit)
            wait, limit = self._take(f"rate:{task.name}", holder, rate.count, now, now + rate.period_s), \
                "rate_limit"
            if wait and concurrency is not None:
                self.app.backend.hold(concurrency, holder, until=None)
        if not wait:
            self.app.backend.update(env.id, {"started_at": now, "waiting": None},
                                    unless=("succeeded", "failed", "cancelled"))
            return True
        self._defer(consumer, delivery, env, record, limit, wait)
        return False

    def release(self, task: Task[Any, Any], env: Envelope, attempts: int) -> None:
        """Give back the job's concurrency lease once its outcome is stored (rate leases run out).

        Never raises: a lease that could not be given back ends with its TTR.
        """
        self._hold(task, env, attempts, None)

    def renew(self, task: Task[Any, Any], env: Envelope, attempts: int) -> None:
        """Keep a running job's concurrency lease for another TTR (the heartbeat touched the job)."""
        self._hold(task, env, attempts, time.time() + env.ttr)

    def _hold(self, task: Task[Any, Any], env: Envelope, attempts: int, until: float | None) -> None:
        key = self._concurrency_key(task, env)
        if key is None:
            return
        try:
            self.app.backend.hold(key, f"{env.id}#{attempts}", until=until)
        except BackendError as exc:
            log.warning("job %s: concurrency lease not %s (%s); it ends with its TTR", env.id,
                        "given back" if until is None else "renewed", exc)

    def _take(self, key: str, holder: str, slots: int, now: float, until: float) -> float:
        return self.app.backend.acquire(key, holder, slots=slots, now=now, until=until)

    @staticmethod
    def _concurrency_key(task: Task[Any, Any], env: Envelope) -> str | None:
        opts = task.options
        if opts.concurrency_limit is None:
            return None
        if opts.concurrency_key is None:
            return f"concurrency:{task.name}"
        return f"concurrency:{task.name}:{_argument_text(task, env, opts.concurrency_key)}"

    def _defer(self, consumer: Consumer, delivery: Delivery, env: Envelope, record: dict[str, Any],
               limit: str, wait_s: float) -> None:
        """Send the job back to wait in the broker, its record ``queued`` with ``waiting``."""
        times = ((record.get("waiting") or {}).get("times") or 0) + 1
        delay_s = _delay_s(limit, wait_s, times)
        waiting = {"limit": limit, "until": time.time() + delay_s, "times": times}
        self.app.backend.update(
            env.id, {"state": "queued", "attempts": max(0, (record.get("attempts") or 1) - 1),
                     "started_at": None, "worker": None, "waiting": waiting},
            unless=("succeeded", "failed", "cancelled"))
        log.debug("job %s waits %s s on its %s", env.id, delay_s, limit)
        consumer.release(delivery, priority=env.priority, delay_s=delay_s)


def _holder(job_id: str, record: dict[str, Any]) -> str:
    """Who holds a lease: this start of this job (a later start is another holder)."""
    return f"{job_id}#{record.get('attempts') or 0}"


def _argument_text(task: Task[Any, Any], env: Envelope, name: str) -> str:
    """The JSON text of the job's argument ``name``, given by keyword or by position."""
    try:
        value = inspect.signature(task.fn).bind_partial(*env.args, **env.kwargs).arguments.get(name)
    except TypeError:  # arguments that do not fit: the task fails when it runs; keyed as given
        value = env.kwargs.get(name)
    text = dumps(value)
    if len(text) > MAX_KEY_TEXT:
        import hashlib

        text = "sha1:" + hashlib.sha1(text.encode()).hexdigest()
    return text


def _delay_s(limit: str, wait_s: float, times: int) -> int:
    """Whole seconds a job waits in the broker before it asks again.

    Rate limits: until the first lease frees (known exactly), plus a spread
    that grows with the job's wait count, so that a crowd of waiting jobs
    does not come back all in the same second. Concurrency limits: a lease
    usually frees long before its TTR ends (when its job finishes), so the
    job looks again after 1, 2, 4... seconds (with jitter), up to
    :data:`MAX_RECHECK_S`, never later than the lease's end.
    """
    if limit == "rate_limit":
        return max(1, math.ceil(wait_s)) + random.randint(0, min(times - 1, MAX_RECHECK_S))
    backoff = min(2 ** (times - 1), MAX_RECHECK_S)
    return max(1, min(math.ceil(wait_s), random.randint(math.ceil(backoff / 2), backoff)))
