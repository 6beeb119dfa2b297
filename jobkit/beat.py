"""The scheduler ("beat"): enqueues each schedule's ticks as they come due.

Any number of schedulers may run; one of them leads and sends the ticks. The
leader holds a lease in the backend (:data:`LEAD_FOR_S` seconds, renewed
every :data:`RENEW_EVERY_S`); the others try to take it over at that pace,
so a scheduler that dies is replaced within :data:`LEAD_FOR_S` +
:data:`RENEW_EVERY_S` seconds. Each tick's job has the tick's idempotency
key (see :mod:`jobkit.schedules`): a tick sent twice (a stalled leader that
wakes after losing its lease) is still one job.

The leader sleeps until the next tick of any schedule or its next renewal
(no polling), then sends every tick due since its last one.

Missed ticks: a leader that takes over sends the ticks missed since the last
one sent, each one, when the first of them is recent (a takeover: within
:data:`TAKEOVER_S`); after longer downtime it sends only the most recent
missed tick, once; a schedule that never ran starts with its next tick. A
leader that falls behind (a busy machine, a backend outage) sends each late
tick, up to :data:`MAX_LATE_TICKS`, the newest ones.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import multiprocessing
import os
import signal
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from jobkit.errors import JobkitError
from jobkit.schedules import UTC, Schedule, iso, last_tick, record_tick

if TYPE_CHECKING:
    from jobkit.app import App

log = logging.getLogger("jobkit.beat")
LEAD_FOR_S = 15.0  # the leader's lease
RENEW_EVERY_S = 5.0  # how often the leader renews it and the others try to take it
TAKEOVER_S = LEAD_FOR_S + RENEW_EVERY_S  # missed ticks are each sent when the first is this recent
MAX_LATE_TICKS = 60  # a leader further behind than this many ticks sends only the newest ones
WAKE_LATE_S = 0.002  # waking a hair after a tick, never before it
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 10.0  # pauses while the broker or backend is unavailable


class Beat:
    """Sends the ticks of ``app``'s schedules while it leads, until stopped.

    Args:
        app: the app whose schedules (:attr:`App.schedules`) run.
        now: the clock, returning an aware datetime (tests pass their own).
    """

    def __init__(self, app: App, now: Callable[[], dt.datetime] | None = None) -> None:
        self.app = app
        self.now = now or (lambda: dt.datetime.now(UTC))
        self.stopping = threading.Event()
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.leading = False
        self.sent: dict[str, dt.datetime] = {}  # schedule name -> last tick known enqueued

    @property
    def lead_key(self) -> str:
        return f"beat:{self.app.name}"

    def run(self) -> None:
        """Lead (or wait to) and send ticks as they come due until :meth:`stop` (blocks)."""
        schedules = list(self.app.schedules.values())
        log.info("beat %s: %d schedule(s): %s", self.name, len(schedules),
                 ", ".join(f"{s.name} ({s.expression})" for s in schedules) or "none")
        pause = RETRY_FIRST_S
        try:
            while not self.stopping.is_set():
                try:
                    self.step(schedules)
                    pause = RETRY_FIRST_S
                except JobkitError as exc:
                    log.warning("beat: %s; trying again in %s s", exc, pause)
                    self.stopping.wait(pause)
                    pause = min(pause * 2, RETRY_MAX_S)
                    continue
                self.stopping.wait(self._sleep_s(schedules))
        finally:
            self._step_down()

    def stop(self) -> None:
        """Stop :meth:`run` (from any thread or a signal handler)."""
        self.stopping.set()

    def step(self, schedules: list[Schedule]) -> int:
        """Renew or take the lead; when leading, send the due ticks. Returns how many jobs it created."""
        if not self._lead():
            return 0
        now = self.now()
        return sum(self._tick(schedule, now) for schedule in schedules)

    def _lead(self) -> bool:
        """Whether this scheduler leads now (renewing or taking the lease)."""
        now = self.now().timestamp()
        backend = self.app.backend
        if self.leading and backend.hold(self.lead_key, self.name, until=now + LEAD_FOR_S):
            return True
        was_leading = self.leading
        self.leading = not backend.acquire(self.lead_key, self.name, slots=1, now=now,
                                           until=now + LEAD_FOR_S)
        if self.leading != was_leading:
            log.info("beat %s: %s", self.name, "leads: sending ticks" if self.leading
                     else "lost the lead: another scheduler sends the ticks")
            self.sent.clear()  # a new leader starts from the last tick anyone sent
        return self.leading

    def _step_down(self) -> None:
        """Give the lead up at once, so that another scheduler takes over at its next try."""
        if self.leading:
            self.leading = False
            with contextlib.suppress(JobkitError):
                self.app.backend.hold(self.lead_key, self.name, until=self.now().timestamp())

    def _tick(self, schedule: Schedule, now: dt.datetime) -> int:
        if schedule.name not in self.sent:
            self.sent[schedule.name] = self._starting_point(schedule, now)
        created = 0
        for tick in schedule.ticks_between(self.sent[schedule.name], now, MAX_LATE_TICKS):
            created += self.send(schedule, tick)
            self.sent[schedule.name] = tick
        return created

    def _starting_point(self, schedule: Schedule, now: dt.datetime) -> dt.datetime:
        """The tick after which a new leader sends (see the module docstring, "Missed ticks")."""
        latest = schedule.tick_at_or_before(now)
        last = last_tick(self.app.backend, schedule)
        if last is None:  # never ran: it starts with its next tick
            return latest
        if last >= latest or (now - schedule.tick_after(last)).total_seconds() <= TAKEOVER_S:
            return last  # nothing missed, or a takeover: each missed tick is sent
        log.info("beat: %s missed its ticks since %s: running the one of %s once",
                 schedule.name, iso(last), iso(latest))
        return schedule.tick_at_or_before(latest - dt.timedelta(microseconds=1))

    def send(self, schedule: Schedule, tick: dt.datetime) -> bool:
        """Enqueue ``tick``'s job (once, whoever else sends it); True when this call created it."""
        job = self.app.send(schedule.task, schedule.args, schedule.kwargs,
                            idempotency_key=schedule.key(tick))
        record_tick(self.app.backend, schedule, tick)
        if job.created:
            log.info("beat: %s: tick %s -> job %s", schedule.name, iso(tick), job.id)
        return job.created

    def _sleep_s(self, schedules: list[Schedule]) -> float:
        """Seconds until the next renewal, or the soonest next tick when the leader's is sooner."""
        if not self.leading or not schedules:
            return RENEW_EVERY_S
        now = self.now()
        soonest = min(s.tick_after(now) for s in schedules)
        return min(RENEW_EVERY_S, (soonest - now).total_seconds() + WAKE_LATE_S)


# -- running a beat next to other things ----------------------------------------

def run_forever(app: App) -> int:
    """Run a beat in this process until SIGTERM or SIGINT (``jobkit beat``)."""
    beat = Beat(app)

    def handler(signum: int, frame: Any) -> None:
        beat.stop()  # an Event.set(): safe from a signal handler

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    beat.run()
    return 0


@contextlib.contextmanager
def alongside(app: App, *, enabled: bool = True, process: bool = False) -> Iterator[None]:
    """Run a beat while the ``with`` block runs (``jobkit worker --beat``, ``jobkit up``).

    Args:
        enabled: False runs nothing (so callers need no branch).
        process: run it in a forked child process rather than a thread; for a
            process-pool worker, whose supervisor forks children later and
            must not hold a thread's locks when it does.
    """
    if not enabled:
        yield
        return
    if process:
        child = multiprocessing.get_context("fork").Process(
            target=_child, args=(app,), name="jobkit-beat", daemon=True)
        child.start()
        try:
            yield
        finally:
            child.terminate()
            child.join(10)
        return
    beat = Beat(app)
    thread = threading.Thread(target=beat.run, name="jobkit-beat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        beat.stop()
        thread.join(10)


def _child(app: App) -> None:
    """A forked beat: SIGTERM stops it; a terminal's Ctrl-C is left to the parent, which stops it."""
    from jobkit.embedded import die_with_parent

    die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    beat = Beat(app)
    signal.signal(signal.SIGTERM, lambda signum, frame: beat.stop())
    beat.run()
