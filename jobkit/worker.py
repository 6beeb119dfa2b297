"""The worker: slots that reserve and run jobs, a heartbeat, and shutdown.

Each slot is one thread with its own broker connection: blocking reserve ->
run -> store -> delete, everything for a job on the connection that reserved
it; while a job's outcome is stored the slot already holds the next ready
job, so that the two share one backend transaction (see
:meth:`jobkit.runner.Runner.settle`). A heartbeat thread touches running jobs every TTR/2 and stops jobs that
overrun their task's ``time_limit``: it records them as failed by timeout
and settles them; the thread pool then abandons the stuck thread and starts
a fresh slot, while a process-pool child exits so that its supervisor
replaces it (see :mod:`jobkit.pool`). Twice a second it also reads, in one
backend query, which of the running jobs were cancelled (their
:func:`~jobkit.current_job` turns ``cancelled``; an async task is cancelled
on its loop), stops by force in the same way a job still running
``cancel_grace_s`` later (its record stays ``cancelled``), and writes the
progress tasks reported. The heartbeat thread also rewrites the
worker's record in the backend every few seconds (see :meth:`Worker.record`),
which lists it as live; a worker that stops cleanly removes it. On the same
beat it renews the leases of the jobs it runs and re-enqueues those of
vanished workers (see :mod:`jobkit.leases`).
SIGTERM/SIGINT stop reserving and let running jobs finish within ``grace_s``;
then (or at a second signal) the jobs still running are released and the
worker returns.
"""
from __future__ import annotations

import logging
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from jobkit.backends.base import BEAT_EVERY_S, LIVE_FOR_S
from jobkit.brokers.base import DEFAULT_PRIORITY, TOUCH, Consumer, Delivery
from jobkit.errors import (
    BrokerError,
    BackendError,
    BrokerConnectionLost,
    BrokerUnavailable,
    ConfigError,
    JobCancelled,
    PoisonMessage,
    TimeLimitExceeded,
)
from jobkit.leases import Reconciler, renew_every_s
from jobkit.message import Envelope
from jobkit.metrics import JobStats
from jobkit.runner import CANCEL_CHECK_S, Attempt, Outcome, Runner, describe
from jobkit.task import check_queue

if TYPE_CHECKING:
    from jobkit.app import App

log = logging.getLogger("jobkit.worker")
IDLE_RESERVE_S = 30  # a blocking reserve wakes this often when idle (cost: ~0 CPU)
PRUNE_EVERY_S = 3600.0
SIGNAL_CHECK_S = 0.1  # how often join() looks for signals while running jobs finish
EXIT_TIME_LIMIT = 70  # a process-pool child's exit code after it stopped an overrunning job
EXIT_CANCELLED = 71  # ... after it stopped a job that went on running once cancelled
DEFAULT_CANCEL_GRACE_S = 10.0


class Backoff:
    """Delays that double from ``first_s`` to ``max_s`` while failures repeat."""

    def __init__(self, first_s: float = 0.1, max_s: float = 10.0) -> None:
        self.first_s, self.max_s, self._next = first_s, max_s, first_s

    def next(self) -> float:
        delay, self._next = self._next, min(self._next * 2, self.max_s)
        return delay

    def reset(self) -> None:
        self._next = self.first_s


def priority_of(body: bytes) -> int:
    """The priority a message was sent with (the default for a message that does not decode)."""
    try:
        return Envelope.decode(body).priority
    except PoisonMessage:
        return DEFAULT_PRIORITY


class JobHolder(Protocol):
    """Where a job runs, as the heartbeat sees it: the attempt, the connection that holds
    its message, and the lock guarding both."""

    lock: threading.Lock
    attempt: Attempt | None
    consumer: Consumer

    def take_over(self, attempt: Attempt) -> bool:
        """Take ``attempt`` away from whoever runs it; False when it finished first."""


class Slot:
    """One consumer connection and the thread that uses it."""

    def __init__(self, worker: Worker, index: int) -> None:
        self.worker = worker
        self.consumer = worker.app.broker.consumer(worker.queues)
        self.lock = threading.Lock()  # guards `attempt` and consumer use by other threads
        self.attempt: Attempt | None = None
        self.busy = False
        self.retired = False
        self.thread = threading.Thread(target=self._loop, name=f"jobkit-slot-{index}", daemon=True)

    def _loop(self) -> None:
        """Reserve and run jobs until the worker stops or this slot is retired.

        Nothing a job does may end this loop: an unexpected error is logged,
        the slot starts afresh on a new connection (the jobs the old one held
        go back to ready) and pauses before it reserves again.
        """
        backoff, pause = Backoff(), Backoff(first_s=0.5)
        try:
            while not self.worker.stopping.is_set() and not self.retired:
                delivery = self._reserve(backoff)
                if delivery is not None:
                    self._run(delivery, pause)
        except BaseException:
            log.critical("%s stopped by an unexpected error", self.thread.name, exc_info=True)
            raise
        finally:
            if not self.retired:  # a retired slot's connection belongs to who took its job over
                self.consumer.close()

    def _reserve(self, backoff: Backoff) -> Delivery | None:
        """The next delivery, or None (idle, or the broker is unavailable: then after a pause)."""
        stopping = self.worker.stopping
        try:
            delivery = self.consumer.reserve(IDLE_RESERVE_S)
        except BrokerUnavailable as exc:
            if isinstance(exc, BrokerConnectionLost):
                backoff.reset()  # it was connected: a new outage starts with a short pause
            if not stopping.is_set():
                log.warning("broker unavailable (%s); retrying", exc)
                stopping.wait(backoff.next())
            return None
        backoff.reset()
        return delivery

    def _run(self, delivery: Delivery, pause: Backoff) -> None:
        """Handle a delivery; after an outage or an unexpected error, pause."""
        stopping = self.worker.stopping
        with self.lock:
            self.busy = True
        try:
            if stopping.is_set():  # reserved just as the stop came: give it back
                self.consumer.release(delivery, priority=priority_of(delivery.body), delay_s=0)
                return
            self._handle(delivery)
            pause.reset()
        except BackendError as exc:
            log.warning("backend unavailable (%s); pausing", exc)
            stopping.wait(pause.next())
        except Exception:
            log.exception("%s: unexpected error; its jobs go back to the broker", self.thread.name)
            self._start_afresh()
            stopping.wait(pause.next())
        finally:
            with self.lock:
                self.busy = False

    def _start_afresh(self) -> None:
        """Swap the connection for a new one; closing the old one makes its jobs ready again."""
        with self.lock:
            if self.retired:
                return
            self.attempt = None
            old, self.consumer = self.consumer, self.worker.app.broker.consumer(self.worker.queues)
        old.close()

    def _handle(self, delivery: Delivery) -> None:
        """Run a delivery, then the jobs reserved ahead while storing each outcome."""
        runner = self.worker.runner
        attempt = runner.prepare(self.consumer, delivery)
        while attempt is not None and self._start(attempt):
            self.worker.heartbeat.watch(attempt)
            outcome = runner.execute(attempt)
            with self.lock:
                self.attempt = None
                if attempt.abandoned:  # the heartbeat or shutdown settled it already
                    return
                attempt.done = True
            attempt = runner.settle(self.consumer, attempt, outcome, ahead=self._reserve_ahead())

    def _start(self, attempt: Attempt) -> bool:
        """Make ``attempt`` this slot's running job; False, with the job given back, when stopping.

        Decided under the lock that :meth:`take_over` takes, so that no job
        starts after :meth:`Worker.join` looked for running ones.
        """
        with self.lock:
            if not self.worker.stopping.is_set():
                self.attempt = attempt
                return True
        self.worker.runner.give_back(self.consumer, attempt)
        return False

    def _reserve_ahead(self) -> Any:
        """The next job when one is ready now (None when not, when stopping, or when the consumer
        does not reserve ahead: :attr:`Consumer.reserves_ahead`).

        perf: reserved before the outcome is stored, so that the outcome and
        the next claim share one transaction and the previous delete rides
        with this reserve.
        """
        if self.worker.stopping.is_set() or self.retired or not self.consumer.reserves_ahead:
            return None
        try:
            return self.consumer.reserve(0)
        except BrokerUnavailable:
            return None  # the outcome is stored all the same; the loop's reserve reconnects

    def take_over(self, attempt: Attempt) -> bool:
        """Take ``attempt`` and this slot's connection away from its thread; False when it finished first.

        The slot is retired: its thread, stuck in the task, never uses the
        connection again, and the taker settles the job and closes it.
        """
        with self.lock:
            if attempt.done or attempt.abandoned or self.attempt is not attempt:
                return False
            attempt.abandoned = True
            self.retired = True
            return True

    def interrupt_if_idle(self) -> None:
        with self.lock:
            if not self.busy:
                self.consumer.interrupt()


class Heartbeat:
    """Touches running jobs every TTR/2 and enforces time limits; prunes expired records.

    It sleeps until the earliest thing due; a slot starting a job wakes it
    only when that job is due sooner than the heartbeat's next wake-up.
    """

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.cond = threading.Condition()
        self.closed = False
        self.next_prune = time.monotonic()
        self.next_report = time.monotonic()
        self.report_every_s = min(BEAT_EVERY_S, renew_every_s(worker.lease_s))
        self.reconciler = Reconciler(worker.app, worker.name, worker.lease_s)
        self.touches = worker.app.broker.can(TOUCH)  # else the broker's own TTR rule holds
        self._idle_wake_s = float(PRUNE_EVERY_S)  # perf: see _beat
        self._wake_at = 0.0
        self._sleeping = False
        self._dirty = False
        self.thread = threading.Thread(target=self._loop, name="jobkit-heartbeat", daemon=True)

    def watch(self, attempt: Attempt) -> None:
        """Tell the heartbeat a slot started ``attempt``."""
        self._idle_wake_s = min(self._idle_wake_s, attempt.touch_every_s)
        attempt.context.wake_with(self.poke)
        with self.cond:
            if not self._sleeping or attempt.next_due < self._wake_at:
                self._dirty = True
                self.cond.notify()

    def poke(self) -> None:
        """Beat now (a task asked for a touch)."""
        with self.cond:
            self._dirty = True
            self.cond.notify()

    def stop(self) -> None:
        """Stop the heartbeat and wait until its thread is done with the connections it uses."""
        with self.cond:
            self.closed = True
            self.cond.notify()
        if self.thread.ident is not None:  # started
            self.thread.join()

    def _loop(self) -> None:
        while True:
            try:
                wait = self._beat(time.monotonic())
            except Exception:  # a bug here must not stop the touches of every later job
                log.exception("heartbeat: unexpected error; going on")
                wait = 1.0
            with self.cond:
                if self.closed:
                    return
                if self._dirty:
                    self._dirty = False
                    continue
                self._wake_at, self._sleeping = time.monotonic() + wait, True
                self.cond.wait(wait)
                self._sleeping = False

    def _beat(self, now: float) -> float:
        """Do what is due; return seconds until something else will be."""
        if now >= self.next_prune:
            self._prune()
        if now >= self.next_report:
            self._report(now)
        # perf: idle, it still wakes every touch interval seen so far (every 30 s for the
        # default TTR), so that a job starting after a short one needs no notify()
        wake = min(self.next_prune, self.next_report, now + self._idle_wake_s)
        running = [(slot, attempt) for slot in self.worker.holders()
                   if (attempt := slot.attempt) is not None]
        if any(now >= attempt.checked + CANCEL_CHECK_S for _, attempt in running):
            self._read_cancels(running, now)
        for slot, attempt in running:
            if attempt.limit_at is not None and now >= attempt.limit_at:
                self.worker.time_limit_hit(slot, attempt)
                continue
            if attempt.force_at is not None and now >= attempt.force_at:
                self.worker.cancel_grace_over(slot, attempt)
                continue
            if attempt.context.take_touch() or now - attempt.touched >= attempt.touch_every_s:
                with slot.lock:
                    if self.touches and slot.attempt is attempt and not (attempt.done or attempt.abandoned):
                        slot.consumer.touch(attempt.delivery)
                self.worker.runner.limits.renew(attempt.task, attempt.envelope, attempt.attempts)
                attempt.touched = now
            self._write_progress(attempt)
            wake = min(wake, attempt.next_due)
        return max(0.05, wake - now)

    def _read_cancels(self, running: list[tuple[JobHolder, Attempt]], now: float) -> None:
        """Read, in one query, which running jobs were cancelled, and tell them."""
        unseen = [(slot, attempt) for slot, attempt in running if attempt.force_at is None]
        for _, attempt in running:
            attempt.checked = now
        try:
            cancelled = self.worker.app.backend.cancelled([a.envelope.id for _, a in unseen])
        except BackendError as exc:
            log.warning("could not read whether running jobs were cancelled: %s", exc)
            return
        for slot, attempt in unseen:
            if attempt.envelope.id in cancelled:
                self.worker.cancel_seen(slot, attempt, now)

    def _write_progress(self, attempt: Attempt) -> None:
        try:
            self.worker.runner.write_progress(attempt)
        except BackendError as exc:
            log.warning("job %s: could not store its progress: %s", attempt.envelope.id, exc)

    def _report(self, now: float) -> None:
        """Renew leases, rewrite the worker's heartbeat record, reconcile (an outage only delays them)."""
        self.next_report = now + self.report_every_s
        try:
            self._renew_leases()
            self.worker.app.backend.beat_worker(self.worker.record())
            self.reconciler.run()
        except (BackendError, BrokerError) as exc:
            log.debug("heartbeat record or leases not written: %s", exc)

    def _renew_leases(self) -> None:
        """Extend the lease of each job this worker runs (a job it no longer holds is left alone)."""
        worker = self.worker
        until = time.time() + worker.lease_s
        for slot in worker.live_slots():
            attempt = slot.attempt
            if attempt is not None and not (attempt.done or attempt.abandoned):
                worker.app.backend.update_held(attempt.envelope.id, {"lease_until": until},
                                               worker=worker.name, attempts=attempt.attempts)

    def _prune(self) -> None:
        self.next_prune = time.monotonic() + self.worker.prune_every_s
        try:
            removed = self.worker.app.backend.prune()
        except BackendError as exc:
            log.warning("could not prune expired records: %s", exc)
            return
        if removed:
            log.info("pruned %d expired job records", removed)


class Worker:
    """Runs jobs from ``queues`` with ``concurrency`` thread slots in this process.

    Args:
        app: the app whose tasks run here.
        queues: queue names to reserve from (default: every queue of the app's tasks).
        concurrency: how many jobs run at once.
        grace_s: seconds running jobs get to finish after a stop.
        exit_on_time_limit: exit the process when a job overruns its time
            limit (process-pool children) instead of abandoning its thread.
        prune_every_s: seconds between deletions of expired records (the
            first one runs at start).
        unknown_task_releases: releases of a message for a task this worker
            does not know before it is buried (see :mod:`jobkit.runner`);
            default: the app's settings (``JOBKIT_UNKNOWN_TASK_RELEASES``).
        unknown_task_delay_s: seconds such a message waits in the broker for
            another worker; default: the app's settings (``JOBKIT_UNKNOWN_TASK_DELAY``).
        stats: counts of the jobs run here (with Prometheus metrics, when wanted).
        pool: the name of the process pool this worker is a child of, for its record.
        cancel_grace_s: seconds a cancelled job may run on after the worker
            saw the cancellation, before it is stopped by force.
        lease_s: seconds it holds a running job between renewals (see
            :mod:`jobkit.leases`); default: the app's settings (``JOBKIT_LEASE``).
    """

    def __init__(self, app: App, *, queues: Sequence[str] | None = None, concurrency: int = 1,
                 grace_s: float = 30.0, exit_on_time_limit: bool = False,
                 prune_every_s: float = PRUNE_EVERY_S, unknown_task_releases: int | None = None,
                 unknown_task_delay_s: float | None = None, stats: JobStats | None = None,
                 pool: str | None = None, cancel_grace_s: float = DEFAULT_CANCEL_GRACE_S,
                 lease_s: float | None = None) -> None:
        if concurrency < 1:
            raise ConfigError("concurrency must be at least 1")
        if app.broker.url.startswith("memory:") and exit_on_time_limit:
            raise ConfigError("the memory:// broker lives in one process: use --pool thread")
        self.app = app
        self.queues = [check_queue(q) for q in queues or sorted(
            {t.options.queue for t in app.tasks.values()} or {"default"})]
        self.concurrency = concurrency
        self.grace_s = grace_s
        self.cancel_grace_s = cancel_grace_s
        self.exit_on_time_limit = exit_on_time_limit
        self.prune_every_s = prune_every_s
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.pool = pool
        self.started_at = time.time()
        settings = app.settings
        self.lease_s = settings.lease if lease_s is None else lease_s
        self.runner = Runner(app, self.name, stats, unknown_task_releases=settings.unknown_task_releases
                             if unknown_task_releases is None else unknown_task_releases,
                             unknown_task_delay_s=settings.unknown_task_delay
                             if unknown_task_delay_s is None else unknown_task_delay_s,
                             lease_s=self.lease_s)
        self.stopping = threading.Event()
        self.done = threading.Event()
        self._hurry = threading.Event()
        self._signals: list[int] = []  # appended by the signal handler, taken by run() and join()
        self._wake_w: int | None = None  # the write end of run()'s wake-up pipe
        self.slots: list[Slot] = []
        self._slots_lock = threading.Lock()
        self.heartbeat = Heartbeat(self)

    def start(self) -> None:
        """Start the slots and the heartbeat in background threads."""
        log.info("worker %s: %d slot(s) on queues %s", self.name, self.concurrency, ",".join(self.queues))
        self.heartbeat.thread.start()
        for index in range(self.concurrency):
            self._add_slot(index)

    def record(self) -> dict[str, Any]:
        """This worker's heartbeat record, as ``GET /v1/workers`` lists it."""
        slots = self.live_slots()
        running = [attempt.envelope.id for slot in slots if (attempt := slot.attempt) is not None]
        stats = self.runner.stats
        return {"name": self.name, "host": socket.gethostname(), "pid": os.getpid(), "pool": self.pool,
                "queues": self.queues, "concurrency": self.concurrency,
                "busy": sum(slot.busy for slot in slots), "jobs": running,
                "started_at": self.started_at, "last_seen": time.time(),
                "jobs_done": stats.done, "jobs_failed": stats.failed}

    def live_slots(self) -> list[Slot]:
        """The slots not retired."""
        with self._slots_lock:
            return [slot for slot in self.slots if not slot.retired]

    def holders(self) -> Sequence[JobHolder]:
        """Where the heartbeat looks for running jobs."""
        return self.live_slots()

    def _add_slot(self, index: int) -> None:
        slot = Slot(self, index)
        with self._slots_lock:
            self.slots.append(slot)
        slot.thread.start()

    def run(self, install_signals: bool = True) -> None:
        """Start, then block until stopped by :meth:`stop` or a signal.

        The main thread sleeps in ``select()`` on a pipe that signals (through
        :func:`signal.set_wakeup_fd`) and :meth:`stop` write to: no polling.
        """
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        self._wake_w = wake_w
        if install_signals:
            self._install_signals()
            signal.set_wakeup_fd(wake_w)
        self.start()
        try:
            while not self.stopping.is_set():
                select.select([wake_r], [], [])
                os.read(wake_r, 512)
                self._take_signals()
        finally:
            if install_signals:
                signal.set_wakeup_fd(-1)
            self._wake_w = None
            os.close(wake_r)
            os.close(wake_w)
        self.join()

    def _wake(self) -> None:
        """Wake :meth:`run`'s main thread (safe from any thread, takes no lock)."""
        wake_w = self._wake_w
        if wake_w is not None:
            try:
                os.write(wake_w, b"\0")
            except OSError:  # full (it is awake anyway) or closed (it is done)
                pass

    def stop(self, graceful: bool = True) -> None:
        """Stop reserving; running jobs get ``grace_s`` unless ``graceful`` is False."""
        if not graceful or self.stopping.is_set():
            self._hurry.set()
        self.stopping.set()
        self._wake()
        with self._slots_lock:
            slots = list(self.slots)
        for slot in slots:
            slot.interrupt_if_idle()

    def _install_signals(self) -> None:
        def handler(signum: int, frame: Any) -> None:
            # No locks here (stop() and logging take some): a handler interrupts the main
            # thread anywhere, even inside another handler, and would deadlock on them.
            self._signals.append(signum)
        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _take_signals(self) -> None:
        """Act on the signals received since the last call, in the main thread."""
        while self._signals:
            signum = self._signals.pop(0)
            log.warning("worker %s: %s, %s", self.name, signal.Signals(signum).name,
                        "releasing running jobs now" if self.stopping.is_set()
                        else f"finishing running jobs (up to {self.grace_s} s)")
            self.stop()

    def shutdown(self, graceful: bool = True) -> None:
        """Stop (see :meth:`stop`) and wait until the worker is done (see :meth:`join`)."""
        self.stop(graceful)
        self.join()

    def join(self) -> None:
        """After a stop: wait up to ``grace_s`` for running jobs, then release those left.

        No connection is closed while another thread can use it: the
        heartbeat is stopped and joined first; then each slot thread either
        ends (joined: it can only be reserving, claiming or storing, since no
        job starts once the worker stops) or, stuck in a task, has its job
        taken over and given back, and its connection closed here.
        """
        self._wait_for_slots(time.monotonic() + self.grace_s)
        self.heartbeat.stop()
        for slot in self._all_slots():
            attempt = slot.attempt
            if attempt is not None and slot.take_over(attempt):
                log.warning("job %s released unfinished", attempt.envelope.id)
                self.runner.give_back(slot.consumer, attempt)
        for slot in self._all_slots():
            if slot.retired:
                slot.consumer.close()
            elif slot.thread.ident is not None:
                slot.thread.join()
        self._forget()
        self.done.set()

    def _all_slots(self) -> list[Slot]:
        with self._slots_lock:
            return list(self.slots)

    def _wait_for_slots(self, deadline: float) -> None:
        """Let running jobs finish until ``deadline`` (monotonic) or a second signal."""
        for slot in self._all_slots():
            while slot.thread.is_alive() and not slot.retired and not self._hurry.is_set():
                self._take_signals()
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                slot.thread.join(min(left, SIGNAL_CHECK_S))

    def _forget(self) -> None:
        """Remove the heartbeat record once the heartbeat thread can no longer rewrite it."""
        try:
            self.app.backend.forget_worker(self.name)
        except BackendError as exc:
            log.warning("worker %s: record not removed (it drops out of the list in %d s): %s",
                        self.name, LIVE_FOR_S, exc)

    def time_limit_hit(self, slot: JobHolder, attempt: Attempt) -> None:
        """Record an overrunning attempt as failed by timeout and stop waiting for it."""
        limit = attempt.task.options.time_limit
        error = describe(TimeLimitExceeded(f"ran longer than its time limit of {limit} s"), False)
        outcome = Outcome(False, error=error,
                          retry=issubclass(TimeLimitExceeded, attempt.task.options.retry_on))
        self.force_stop(slot, attempt, outcome, "overran its time limit", EXIT_TIME_LIMIT)

    def cancel_seen(self, slot: JobHolder, attempt: Attempt, now: float) -> None:
        """Tell a running job it was cancelled; it is stopped by force ``cancel_grace_s`` from ``now``."""
        log.info("job %s was cancelled: stopping it (by force in %s s)", attempt.envelope.id,
                 self.cancel_grace_s)
        attempt.force_at = now + self.cancel_grace_s
        attempt.context.cancel()

    def cancel_grace_over(self, slot: JobHolder, attempt: Attempt) -> None:
        """Stop a cancelled job that is still running (its record stays ``cancelled``)."""
        error = describe(JobCancelled(f"still running {self.cancel_grace_s} s after it was cancelled"),
                         False)
        self.force_stop(slot, attempt, Outcome(False, error=error), "went on after its cancellation",
                        EXIT_CANCELLED)

    def force_stop(self, slot: JobHolder, attempt: Attempt, outcome: Outcome, why: str,
                   exit_code: int) -> None:
        """Settle ``attempt`` with ``outcome`` and stop waiting for it.

        The thread running it is abandoned and a fresh slot takes its place;
        a process-pool child exits with ``exit_code`` instead, so that its
        supervisor replaces it.
        """
        if not slot.take_over(attempt):
            return
        try:
            self.runner.settle(slot.consumer, attempt, outcome)
        except BackendError:
            pass  # released for a later attempt by settle
        finally:
            slot.consumer.close()  # the slot's thread, stuck in the task, no longer uses it
        if self.exit_on_time_limit:
            log.error("job %s %s: exiting so the pool replaces this process", attempt.envelope.id, why)
            os._exit(exit_code)
        log.error("job %s %s: its thread is abandoned", attempt.envelope.id, why)
        if not self.stopping.is_set():
            with self._slots_lock:
                index = len(self.slots)
            self._add_slot(index)
