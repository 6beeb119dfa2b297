"""The scheduler ("beat"): enqueues each schedule's ticks as they come due.

It sleeps until the next tick of any schedule (no polling; at most
:data:`MAX_SLEEP_S` at a time, so a clock that jumps is noticed), then sends
every tick due since its last one, each with the tick's idempotency key (see
:mod:`jobkit.schedules`): any number of schedulers may run, one job per tick.

Missed ticks: a scheduler that starts sends only the most recent tick that
no scheduler enqueued (downtime costs one run, not one per missed tick), and
none for a schedule that never ran; a running scheduler that falls behind
(a busy machine, a backend outage) sends each late tick, up to
:data:`MAX_LATE_TICKS`, the newest ones.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import logging
import multiprocessing
import signal
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from jobkit.errors import JobkitError
from jobkit.schedules import UTC, Schedule, iso, last_tick, record_tick

if TYPE_CHECKING:
    from jobkit.app import App

log = logging.getLogger("jobkit.beat")
MAX_SLEEP_S = 60.0  # a wall-clock jump is noticed within this
MAX_LATE_TICKS = 60  # a scheduler further behind than this many ticks sends only the newest ones
WAKE_LATE_S = 0.002
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 10.0  # pauses while the broker or backend is unavailable


class Beat:
    """Sends the ticks of ``app``'s schedules until stopped.

    Args:
        app: the app whose schedules (:attr:`App.schedules`) run.
        now: the clock, a function returning an aware datetime (tests give their own).
    """

    def __init__(self, app: App, now: Any = None) -> None:
        self.app = app
        self.now = now or (lambda: dt.datetime.now(UTC))
        self.stopping = threading.Event()
        self.sent: dict[str, dt.datetime] = {}  # schedule name -> last tick known enqueued

    def run(self) -> None:
        """Send ticks as they come due until :meth:`stop` (blocks)."""
        schedules = list(self.app.schedules.values())
        log.info("beat: %d schedule(s): %s", len(schedules),
                 ", ".join(f"{s.name} ({s.expression})" for s in schedules) or "none")
        pause = RETRY_FIRST_S
        while not self.stopping.is_set():
            try:
                self.tick_all(schedules)
                pause = RETRY_FIRST_S
            except JobkitError as exc:
                log.warning("beat: %s; trying again in %s s", exc, pause)
                self.stopping.wait(pause)
                pause = min(pause * 2, RETRY_MAX_S)
                continue
            self.stopping.wait(self._sleep_s(schedules))

    def stop(self) -> None:
        """Stop :meth:`run` (from any thread or a signal handler)."""
        self.stopping.set()

    def tick_all(self, schedules: list[Schedule]) -> int:
        """Send every schedule's due ticks; return how many jobs this call created."""
        now = self.now()
        return sum(self._tick(schedule, now) for schedule in schedules)

    def _tick(self, schedule: Schedule, now: dt.datetime) -> int:
        if schedule.name not in self.sent:
            self.sent[schedule.name] = self._starting_point(schedule, now)
        created = 0
        for tick in schedule.ticks_between(self.sent[schedule.name], now, MAX_LATE_TICKS):
            created += self.send(schedule, tick)
            self.sent[schedule.name] = tick
        return created

    def _starting_point(self, schedule: Schedule, now: dt.datetime) -> dt.datetime:
        """The tick after which this scheduler sends: all but the most recent missed one are skipped."""
        latest = schedule.tick_at_or_before(now)
        last = last_tick(self.app.backend, schedule)
        if last is None:  # never ran: it starts with its next tick
            return latest
        if last < latest:
            log.info("beat: %s missed its ticks since %s: running the one of %s once",
                     schedule.name, iso(last), iso(latest))
        return max(last, schedule.tick_at_or_before(latest - dt.timedelta(microseconds=1)))

    def send(self, schedule: Schedule, tick: dt.datetime) -> bool:
        """Enqueue ``tick``'s job (once, whoever else sends it); True when this call created it."""
        job = self.app.send(schedule.task, schedule.args, schedule.kwargs,
                            idempotency_key=schedule.key(tick))
        record_tick(self.app.backend, schedule, tick)
        if job.created:
            log.info("beat: %s: tick %s -> job %s", schedule.name, iso(tick), job.id)
        return job.created

    def _sleep_s(self, schedules: list[Schedule]) -> float:
        """Seconds until the soonest next tick (a hair more: waking early would find nothing due)."""
        if not schedules:
            return MAX_SLEEP_S
        now = self.now()
        soonest = min(s.tick_after(now) for s in schedules)
        return min(MAX_SLEEP_S, (soonest - now).total_seconds() + WAKE_LATE_S)


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
