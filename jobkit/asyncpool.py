"""The asyncio pool (``jobkit worker --pool asyncio -c N``): N jobs at once on one event loop.

Threads, each with one job:

- the **loop** thread runs every job as an asyncio task (``async def`` tasks
  directly; sync tasks in the loop's default executor) and never waits on
  the broker or the backend;
- the **reserver** thread waits for room (fewer than N jobs running),
  reserves the next message and claims its job, then hands the attempt to
  the loop;
- a few **io** threads store outcomes and settle messages;
- the **heartbeat** (shared with the thread pool, :mod:`jobkit.worker`)
  touches running jobs, reads cancellations, writes progress and enforces
  time limits.

A message must be settled over the connection that reserved it, and a
connection is used by one thread at a time: so each running job keeps the
consumer that reserved it (a :class:`Holder`) until it is settled, and the
reserver takes the idle one (or opens one) for the next reserve; at most
N + 1 connections are open, and one idle. An ``async def`` task stops itself at its time
limit (``asyncio.timeout``) and is cancelled as an asyncio task when its job
is cancelled. A job stopped by force (it overran its limit, or ignored its
cancellation for ``cancel_grace_s``) is settled by the heartbeat and its
asyncio task cancelled again; a coroutine that blocks the loop blocks every
job of the pool, so none should.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from jobkit.brokers.base import Consumer, Delivery
from jobkit.errors import BackendError, BrokerConnectionLost, BrokerUnavailable
from jobkit.runner import Attempt, Outcome
from jobkit.worker import IDLE_RESERVE_S, SIGNAL_CHECK_S, Backoff, JobHolder, Worker, priority_of

if TYPE_CHECKING:
    from jobkit.app import App

log = logging.getLogger("jobkit.worker")
IO_THREADS = 4  # threads that store outcomes and settle messages
ROOM_CHECK_S = 1.0  # how often a reserver waiting for room looks for a stop
LOOP_STOP_S = 1.0  # how long jobs left at shutdown get to end after their cancellation


class Holder:
    """A consumer connection and the job it holds, if any."""

    def __init__(self, consumer: Consumer) -> None:
        self.consumer = consumer
        self.lock = threading.Lock()
        self.attempt: Attempt | None = None
        self.job: asyncio.Task[None] | None = None  # the asyncio task running `attempt`

    def take_over(self, attempt: Attempt) -> bool:
        """Take ``attempt`` away from its asyncio task; False when it finished first."""
        with self.lock:
            if attempt.done or attempt.abandoned or self.attempt is not attempt:
                return False
            attempt.abandoned = True
            self.attempt = None
            return True


class AsyncWorker(Worker):
    """Runs up to ``concurrency`` jobs at once as asyncio tasks on one event loop thread.

    Takes the arguments of :class:`~jobkit.worker.Worker`.
    """

    def __init__(self, app: App, **options: Any) -> None:
        super().__init__(app, **options)
        self.loop = asyncio.new_event_loop()
        self._room = threading.Semaphore(self.concurrency)
        self._lock = threading.Lock()  # guards the sets of holders and `_reserving`
        self._idle: list[Holder] = []
        self._busy: set[Holder] = set()
        self._reserving: Holder | None = None
        self._io = ThreadPoolExecutor(IO_THREADS, thread_name_prefix="jobkit-io")
        self._loop_thread = threading.Thread(target=self._run_loop, name="jobkit-loop", daemon=True)
        self._reserver = threading.Thread(target=self._reserve_loop, name="jobkit-reserver", daemon=True)

    def start(self) -> None:
        """Start the loop, the reserver and the heartbeat in background threads."""
        log.info("worker %s: asyncio pool of %d on queues %s", self.name, self.concurrency,
                 ",".join(self.queues))
        self.heartbeat.thread.start()
        self._loop_thread.start()
        self._reserver.start()

    def holders(self) -> Sequence[JobHolder]:
        with self._lock:
            return list(self._busy)

    def record(self) -> dict[str, Any]:
        record = super().record()
        holders = self.holders()
        record["jobs"] = [attempt.envelope.id for h in holders if (attempt := h.attempt) is not None]
        record["busy"] = len(holders)
        return record

    def running(self) -> int:
        """How many jobs run now."""
        with self._lock:
            return len(self._busy)

    def stop(self, graceful: bool = True) -> None:
        super().stop(graceful)
        self._room.release()  # a reserver waiting for room wakes up to the stop
        with self._lock:
            if self._reserving is not None:
                self._reserving.consumer.interrupt()

    # -- the reserver thread -----------------------------------------------

    def _reserve_loop(self) -> None:
        backoff, pause = Backoff(), Backoff(first_s=0.5)
        while not self.stopping.is_set():
            if not self._room.acquire(timeout=ROOM_CHECK_S):
                continue
            holder = self._idle_holder()
            delivery = self._reserve(holder, backoff)
            if delivery is None:
                self._done_with(holder)
            elif self.stopping.is_set():  # reserved just as the stop came: give it back
                holder.consumer.release(delivery, priority=priority_of(delivery.body), delay_s=0)
                self._done_with(holder)
            else:
                self._admit(holder, delivery, pause)

    def _idle_holder(self) -> Holder:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return Holder(self.app.broker.consumer(self.queues))

    def _reserve(self, holder: Holder, backoff: Backoff) -> Delivery | None:
        with self._lock:
            if self.stopping.is_set():
                return None
            self._reserving = holder
        try:
            delivery = holder.consumer.reserve(IDLE_RESERVE_S)
        except BrokerUnavailable as exc:
            if isinstance(exc, BrokerConnectionLost):
                backoff.reset()
            if not self.stopping.is_set():
                log.warning("broker unavailable (%s); retrying", exc)
                self.stopping.wait(backoff.next())
            return None
        finally:
            with self._lock:
                self._reserving = None
        backoff.reset()
        return delivery

    def _admit(self, holder: Holder, delivery: Delivery, pause: Backoff) -> None:
        """Claim the delivery's job and hand it to the loop (or settle it here when it must not run)."""
        try:
            attempt = self.runner.prepare(holder.consumer, delivery)
            pause.reset()
        except BackendError as exc:
            log.warning("backend unavailable (%s); pausing", exc)
            self.stopping.wait(pause.next())
            attempt = None
        except Exception:
            log.exception("reserver: unexpected error; the job goes back to the broker")
            self._start_afresh(holder)
            attempt = None
        if attempt is None:
            self._done_with(holder)
            return
        with self._lock:
            holder.attempt = attempt
            self._busy.add(holder)
        self.heartbeat.watch(attempt)
        self.loop.call_soon_threadsafe(self._start_job, holder, attempt)

    # -- the loop thread ---------------------------------------------------

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
            jobs = asyncio.all_tasks(self.loop)
            for job in jobs:
                job.cancel()
            if jobs:
                _, pending = self.loop.run_until_complete(asyncio.wait(jobs, timeout=LOOP_STOP_S))
                if pending:
                    log.warning("%d job(s) ignored their cancellation at shutdown", len(pending))
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()

    def _start_job(self, holder: Holder, attempt: Attempt) -> None:
        holder.job = self.loop.create_task(self._job(holder, attempt), name=f"job-{attempt.envelope.id}")

    async def _job(self, holder: Holder, attempt: Attempt) -> None:
        outcome = await self.runner.execute_async(attempt)
        with holder.lock:
            if attempt.abandoned:  # the heartbeat or shutdown settled it and freed its holder
                return
            holder.attempt = None
            attempt.done = True
        await self.loop.run_in_executor(self._io, self._settle, holder, attempt, outcome)

    # -- the io threads ----------------------------------------------------

    def _settle(self, holder: Holder, attempt: Attempt, outcome: Outcome) -> None:
        try:
            self.runner.settle(holder.consumer, attempt, outcome)
        except BackendError as exc:
            log.warning("backend unavailable (%s); job %s goes back to the broker", exc,
                        attempt.envelope.id)
        except Exception:
            log.exception("job %s: unexpected error while settling it", attempt.envelope.id)
            self._start_afresh(holder)
        finally:
            self._done_with(holder)

    def _start_afresh(self, holder: Holder) -> None:
        """Swap the holder's connection for a new one; closing the old one makes its jobs ready again."""
        old, holder.consumer = holder.consumer, self.app.broker.consumer(self.queues)
        old.close()

    def _done_with(self, holder: Holder) -> None:
        """Make room for another job; keep ``holder``'s connection for the next reserve, or close it.

        Only one connection is kept idle, and none while the reserver waits on
        another: a consumer that a broker pushes messages to (AMQP, prefetch 1)
        takes one as soon as it holds none, and an idle one would keep it
        from every worker.
        """
        with self._lock:
            self._busy.discard(holder)
            keep = not self._idle and self._reserving is None and not self.stopping.is_set()
            if keep:
                self._idle.append(holder)
        if not keep:
            holder.consumer.close()
        self._room.release()

    # -- stopping jobs -----------------------------------------------------

    def force_stop(self, slot: JobHolder, attempt: Attempt, outcome: Outcome, why: str,
                   exit_code: int) -> None:
        """Settle ``attempt`` with ``outcome``, cancel its asyncio task and free its holder."""
        holder = slot if isinstance(slot, Holder) else None
        if holder is None or not holder.take_over(attempt):
            return
        job = holder.job
        try:
            self.runner.settle(holder.consumer, attempt, outcome)
        except BackendError:
            pass  # released for a later attempt by settle
        finally:
            if job is not None:
                with contextlib.suppress(RuntimeError):  # the loop is closed: nothing to cancel
                    self.loop.call_soon_threadsafe(job.cancel)
            self._done_with(holder)
        log.error("job %s %s: its asyncio task is cancelled", attempt.envelope.id, why)

    def join(self) -> None:
        """After a stop: wait up to ``grace_s`` for running jobs, then release those left."""
        deadline = time.monotonic() + self.grace_s
        while self.running() and not self._hurry.is_set() and time.monotonic() < deadline:
            self._take_signals()
            time.sleep(min(SIGNAL_CHECK_S, max(0.0, deadline - time.monotonic())))
        if self._reserver.ident is not None:
            self._reserver.join()
        self.heartbeat.stop()
        for holder in list(self.holders()):
            attempt = holder.attempt
            if attempt is not None and holder.take_over(attempt):
                log.warning("job %s released unfinished", attempt.envelope.id)
                self.runner.give_back(holder.consumer, attempt)
        if self._loop_thread.ident is not None:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._loop_thread.join()
        self._io.shutdown(wait=True)
        with self._lock:
            holders = self._idle + list(self._busy)
        for holder in holders:
            holder.consumer.close()
        self._forget()
        self.done.set()
