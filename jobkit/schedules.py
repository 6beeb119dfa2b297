"""Schedules: when a periodic task's ticks fall, and what each tick enqueues.

A schedule is a cron expression (parsed by ``croniter``, in the schedule's
time zone, UTC by default) or a period in seconds (``every``; ticks fall on
whole multiples of it since the Unix epoch, so every scheduler computes the
same ticks without talking to the others). Each tick is one job whose
idempotency key is ``periodic:<schedule>:<tick time, ISO 8601 UTC>``: any
number of schedulers may enqueue the same tick, the first one creates the job
and the others get it back (see :meth:`jobkit.app.App.send`).

The last tick enqueued is kept in the backend as a lease that ends at the
tick (see :func:`last_tick`, :func:`record_tick`), so that a scheduler that
starts after downtime knows which ticks it missed.
"""
from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from jobkit.errors import ConfigError
from jobkit.message import NAME_RE, dumps

if TYPE_CHECKING:
    from jobkit.backends import Backend

UTC = dt.UTC
MIN_EVERY_S = 1  # brokers delay by whole seconds; a shorter period is not kept


@dataclass(frozen=True)
class Schedule:
    """When a task runs by itself, and with which arguments.

    Attributes:
        name: the schedule's name (the task's name unless given); part of each tick's key.
        task: the task each tick enqueues.
        cron: a cron expression (5 fields, or 6 with seconds last), or None.
        every: a period in whole seconds, or None (exactly one of cron and every is set).
        tz: the IANA time zone the cron expression is read in (``every`` ignores it).
        args: positional arguments of each tick's job (JSON data).
        kwargs: keyword arguments of each tick's job (JSON data).
    """

    name: str
    task: str
    cron: str | None = None
    every: int | None = None
    tz: str = "UTC"
    args: Sequence[Any] = ()
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not NAME_RE.match(self.name):
            raise ConfigError(f"invalid schedule name {self.name!r}")
        if (self.cron is None) == (self.every is None):
            raise ConfigError(f"schedule {self.name}: give exactly one of cron= and every=")
        if self.every is not None:
            every = self.every
            if isinstance(every, bool) or not isinstance(every, (int, float)) or every < MIN_EVERY_S \
                    or every != int(every):
                raise ConfigError(f"schedule {self.name}: every= is a whole number of seconds "
                                  f">= {MIN_EVERY_S}, not {every!r}")
            object.__setattr__(self, "every", int(every))
        if self.cron is not None and (not isinstance(self.cron, str) or not croniter.is_valid(self.cron)):
            raise ConfigError(f"schedule {self.name}: {self.cron!r} is not a cron expression")
        self.zone  # noqa: B018 - an unknown time zone fails at registration, not at the first tick
        try:
            dumps([list(self.args), dict(self.kwargs)])
        except Exception as exc:  # noqa: BLE001 - PayloadError or a type error from list()/dict()
            raise ConfigError(f"schedule {self.name}: arguments must be JSON data ({exc})") from None

    @property
    def zone(self) -> ZoneInfo:
        """The time zone cron expressions are read in."""
        try:
            return ZoneInfo(self.tz)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ConfigError(f"schedule {self.name}: unknown time zone {self.tz!r}") from None

    @property
    def expression(self) -> str:
        """The schedule as text: the cron expression, or ``every N s``."""
        return self.cron if self.cron is not None else f"every {self.every} s"

    def tick_at_or_before(self, now: dt.datetime) -> dt.datetime:
        """The latest tick at or before ``now`` (an aware datetime), in UTC."""
        if self.every is not None:
            return _utc(math.floor(now.timestamp() / self.every) * self.every)
        local = now.astimezone(self.zone)
        before = croniter(str(self.cron), local).get_prev(dt.datetime)  # strictly before ``now``
        after = croniter(str(self.cron), before).get_next(dt.datetime)
        return (after if after <= local else before).astimezone(UTC)

    def tick_after(self, moment: dt.datetime) -> dt.datetime:
        """The first tick strictly after ``moment`` (an aware datetime), in UTC."""
        if self.every is not None:
            return _utc((math.floor(moment.timestamp() / self.every) + 1) * self.every)
        local = moment.astimezone(self.zone)
        return croniter(str(self.cron), local).get_next(dt.datetime).astimezone(UTC)

    def ticks_between(self, after: dt.datetime, until: dt.datetime, most: int) -> list[dt.datetime]:
        """Ticks in ``(after, until]``, oldest first; only the newest ``most`` of them."""
        ticks: list[dt.datetime] = []
        tick = self.tick_at_or_before(until)
        while tick > after and len(ticks) < most:
            ticks.append(tick)
            tick = self.tick_at_or_before(tick - dt.timedelta(microseconds=1))
        return ticks[::-1]

    def key(self, tick: dt.datetime) -> str:
        """The idempotency key of ``tick``'s job: the same tick, the same job, whoever sends it."""
        return f"periodic:{self.name}:{iso(tick)}"

    def describe(self) -> dict[str, Any]:
        """The schedule's settings as JSON data (no run times: see :func:`status`)."""
        return {"name": self.name, "task": self.task, "cron": self.cron, "every": self.every,
                "tz": self.tz, "args": list(self.args), "kwargs": dict(self.kwargs)}


def iso(moment: dt.datetime) -> str:
    """``moment`` in UTC as ISO 8601 (``2026-01-01T00:05:00+00:00``)."""
    return moment.astimezone(UTC).isoformat()


def _utc(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, UTC)


# -- the last tick, kept in the backend ----------------------------------------

def _tick_key(schedule: Schedule) -> str:
    return f"schedule:{schedule.name}"


def record_tick(backend: Backend, schedule: Schedule, tick: dt.datetime) -> None:
    """Remember that ``tick`` was enqueued, unless a later tick was already remembered.

    The backend's one lease of ``schedule:<name>`` ends at the last tick: a
    lease taken "now = tick" is free when it ended at or before the tick,
    so only a later tick moves it, whichever scheduler gets there first.
    """
    at = tick.timestamp()
    backend.acquire(_tick_key(schedule), iso(tick), slots=1, now=at, until=at)


def last_tick(backend: Backend, schedule: Schedule) -> dt.datetime | None:
    """The last tick enqueued for ``schedule`` by any scheduler, or None when it never ran."""
    ends = [lease["until"] for lease in backend.leases(_tick_key(schedule)) if lease["holder"]]
    return _utc(max(ends)) if ends else None


def status(backend: Backend, schedule: Schedule, now: dt.datetime | None = None) -> dict[str, Any]:
    """The schedule's settings with ``last_run`` and ``next_run`` (ISO 8601 UTC; last may be null)."""
    now = dt.datetime.now(UTC) if now is None else now
    last = last_tick(backend, schedule)
    return schedule.describe() | {"last_run": None if last is None else iso(last),
                                  "next_run": iso(schedule.tick_after(now))}
