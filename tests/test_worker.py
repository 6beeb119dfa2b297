"""The worker loop in this process: every outcome, retries, dead letters, limits, shutdown."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jobkit import App, Job, JobState
from jobkit.errors import BackendUnavailable, JobFailed, TaskNotFound
from jobkit.message import Envelope
from jobkit.brokers.base import DELETE, Consumer
from jobkit.runner import Attempt, Runner
from jobkit.worker import Slot, Worker
from tests import taskapp
from tests.helpers import eventually


@pytest.fixture
def app(broker_url: str, sqlite_url: str, queue: str) -> Iterator[App]:
    """The test tasks on each broker, results in SQLite, routed to a queue of this test's own."""
    app = App("worker-tests", broker=broker_url, backend=sqlite_url)
    for name, task in taskapp.app.tasks.items():
        app.task(name=name, **{**task.options.__dict__, "queue": queue})(task.fn)
    yield app
    app.close()


@pytest.fixture
def worker(app: App) -> Iterator[Worker]:
    worker = Worker(app, concurrency=2, grace_s=5, unknown_task_releases=1, unknown_task_delay_s=1)
    worker.start()
    yield worker
    worker.shutdown(graceful=False)


def calls(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def test_runs_jobs_and_stores_results(app: App, worker: Worker) -> None:
    jobs = [app.tasks["add"].delay(i, i) for i in range(50)]
    assert [job.get(timeout=10) for job in jobs] == [2 * i for i in range(50)]
    status = jobs[0].status()
    assert status.state is JobState.SUCCEEDED and status.attempts == 1
    assert status.record["worker"] == worker.name
    assert status.record["finished_at"] >= status.record["started_at"]


def test_a_raising_task_fails_with_type_message_and_traceback(app: App, worker: Worker, queue: str) -> None:
    job = app.tasks["boom"].delay("bad input")
    with pytest.raises(JobFailed) as caught:
        job.get(timeout=10)
    assert caught.value.error["type"] == "ValueError"
    assert caught.value.error["message"] == "bad input"
    assert "raise ValueError(message)" in caught.value.error["traceback"]
    assert job.status().state is JobState.FAILED
    # a dead letter: buried right after its outcome is stored (the record is written first)
    eventually(lambda: app.broker.stats()[queue]["buried"] == 1, what="the dead letter")


def test_retries_with_backoff_then_succeeds(app: App, worker: Worker, tmp_path: Path) -> None:
    path = tmp_path / "calls"
    job = app.tasks["flaky"].delay(str(path), 2)
    assert job.get(timeout=15) == 3
    assert job.status().attempts == 3


def test_retries_run_out_then_buried(app: App, worker: Worker, tmp_path: Path, queue: str) -> None:
    path = tmp_path / "calls"
    job = app.tasks["always_fails"].delay(str(path))
    with pytest.raises(JobFailed):
        job.get(timeout=15)
    assert calls(path) == 3  # max_retries=2: three attempts in all
    status = job.status()
    assert status.attempts == 3 and status.error is not None and status.error["type"] == "RuntimeError"
    eventually(lambda: app.broker.stats()[queue]["buried"] == 1, what="a dead letter")


def test_retry_on_limits_what_is_retried(app: App, worker: Worker, tmp_path: Path) -> None:
    path = tmp_path / "calls"
    with pytest.raises(JobFailed):
        app.tasks["picky"].delay(str(path)).get(timeout=10)
    assert calls(path) == 1


def test_raise_retry_asks_for_another_attempt(app: App, worker: Worker, tmp_path: Path) -> None:
    path = tmp_path / "calls"
    job = app.tasks["asks_retry"].delay(str(path))
    eventually(lambda: job.status().state is JobState.RETRYING, what="state retrying")
    assert job.status().error == {"type": "Retry", "message": "not yet", "traceback": ""}
    assert job.get(timeout=10) == 2


def test_a_result_that_is_not_json_fails_the_job(app: App, worker: Worker) -> None:
    with pytest.raises(JobFailed) as caught:
        app.tasks["unserialisable"].delay().get(timeout=10)
    assert caught.value.error["type"] == "PayloadError"


def test_poison_messages_are_buried_with_the_reason(app: App, worker: Worker, queue: str) -> None:
    put = app.broker.put
    put(b"\xff\xfe not json", queue=queue, priority=0, delay_s=0, ttr_s=5)
    unknown = Envelope(id="unknowntask1", task="no_such_task", queue=queue)
    put(unknown.encode(), queue=queue, priority=0, delay_s=0, ttr_s=5)
    put(b'{"v": 1, "id": "badargs1", "task": "add", "args": 5}', queue=queue, priority=0,
        delay_s=0, ttr_s=5)
    eventually(lambda: app.broker.stats()[queue]["buried"] == 3, what="three buried messages")
    for job_id, reason in (("unknowntask1", "unknown task 'no_such_task'"), ("badargs1", "malformed")):
        with pytest.raises(JobFailed) as caught:
            app.job(job_id).get(timeout=10)
        assert caught.value.error["type"] == "PoisonMessage"
        assert reason in caught.value.error["message"]
    assert app.tasks["add"].delay(1, 1).get(timeout=10) == 2  # the worker carries on
    broker_id = app.job("unknowntask1").status().record["broker_id"]
    app.retry("unknowntask1")  # kicks that very message, in its own queue: buried again
    eventually(lambda: app.job("unknowntask1").status().state is JobState.FAILED, what="re-buried")
    eventually(lambda: app.broker.stats()[queue]["buried"] == 3, what="three buried again")
    assert app.job("unknowntask1").status().record["broker_id"] == broker_id  # not a new message
    if not app.broker.can(DELETE):
        return
    app.broker.delete(app.job("unknowntask1").status().record["broker_id"])  # gone from the broker:
    with pytest.raises(TaskNotFound):  # a retry would have to enqueue a task nobody can run
        app.retry("unknowntask1")
    assert app.job("unknowntask1").status().state is JobState.FAILED


def test_a_redelivered_finished_job_is_not_run_again(app: App, worker: Worker, queue: str,
                                                     tmp_path: Path) -> None:
    path = tmp_path / "calls"
    job = app.tasks["flaky"].delay(str(path), 0)
    assert job.get(timeout=10) == 1
    # the same message again, as if the worker had died between storing and deleting
    record = job.status().record
    env = Envelope(id=job.id, task="flaky", args=record["args"], queue=queue)
    app.broker.put(env.encode(), queue=queue, priority=0, delay_s=0, ttr_s=5)
    eventually(lambda: not any(app.broker.stats()[queue][k] for k in ("ready", "reserved")),
               what="the redelivered message settled")
    assert calls(path) == 1 and job.status().attempts == 1


def test_time_limit_abandons_the_thread_and_work_goes_on(app: App, tmp_path: Path) -> None:
    worker = Worker(app, concurrency=1, grace_s=1)
    worker.start()
    try:
        path = tmp_path / "calls"
        started = time.monotonic()
        job = app.tasks["overruns"].delay(str(path), 3)
        with pytest.raises(JobFailed) as caught:
            job.get(timeout=10)
        assert caught.value.error["type"] == "TimeLimitExceeded"
        assert time.monotonic() - started < 2.5  # stopped at its limit, not when it finished
        assert app.tasks["add"].delay(2, 2).get(timeout=5) == 4  # a fresh slot took over
    finally:
        worker.shutdown(graceful=False)


def test_long_jobs_are_touched_so_they_run_once(app: App, worker: Worker, tmp_path: Path) -> None:
    path = tmp_path / "calls"
    job = app.tasks["long_job"].delay(str(path), 6.5)  # more than 3x its TTR of 2 s
    assert job.get(timeout=15) == 6.5
    assert calls(path) == 1
    assert job.status().attempts == 1


def started_in_a_slot(worker: Worker, job_id: str) -> bool:
    """The job runs in a slot: from then on a stop lets it finish (before, it is given back).

    Its record says ``running`` a moment earlier, from the claim: a stop in
    between gives the job back, as it should (a fresh-clone CI run hit that
    window when these tests waited for the record).
    """
    return any(slot.attempt is not None and slot.attempt.envelope.id == job_id for slot in worker.slots)


def test_stop_lets_running_jobs_finish_within_grace(app: App, tmp_path: Path) -> None:
    worker = Worker(app, concurrency=1, grace_s=10)
    worker.start()
    job = app.tasks["sleepy"].delay(1.0)
    eventually(lambda: started_in_a_slot(worker, job.id), what="running in a slot")
    worker.stop()
    waiting = app.tasks["add"].delay(1, 2)  # sent after the stop: must not be taken
    worker.join()
    assert job.status().state is JobState.SUCCEEDED
    assert waiting.status().state is JobState.QUEUED


def test_stop_after_grace_releases_running_jobs(app: App, queue: str) -> None:
    worker = Worker(app, concurrency=1, grace_s=0.3)
    worker.start()
    job = app.tasks["sleepy"].delay(3.0)
    eventually(lambda: started_in_a_slot(worker, job.id), what="running in a slot")
    stopper = threading.Thread(target=worker.stop)
    stopper.start()
    started = time.monotonic()
    worker.join()
    assert time.monotonic() - started < 2
    status = job.status()
    assert status.state is JobState.QUEUED and status.attempts == 0  # not counted
    eventually(lambda: (app.broker.stats()[queue]["ready"], app.broker.stats()[queue]["reserved"]) == (1, 0),
               what="the job ready again")  # RabbitMQ requeues a closed connection's messages a moment later
    again = Worker(app, concurrency=1)
    again.start()
    try:
        assert job.get(timeout=10) == 3.0
    finally:
        again.shutdown(graceful=False)


class ClaimedOnRelease:
    """A consumer whose release lets another worker claim the job at once, as a fast peer would."""

    def __init__(self, app: App, consumer: object, envelope: Envelope) -> None:
        self.app, self.consumer, self.envelope = app, consumer, envelope

    def release(self, delivery: object, *, priority: int, delay_s: int) -> bool:
        released = self.consumer.release(delivery, priority=priority, delay_s=delay_s)  # type: ignore[attr-defined]
        self.app.backend.claim(self.envelope.record() | {"worker": "peer", "started_at": time.time()})
        return bool(released)


def test_give_back_resets_the_record_before_the_release() -> None:
    app = App("give-back", broker="memory://", backend="memory://")
    app.tasks = taskapp.app.tasks
    job = app.send("add", (1, 2))
    consumer = app.broker.consumer(["default"])
    delivery = consumer.reserve(1)
    assert delivery is not None
    runner = Runner(app, "leaving")
    attempt = runner.prepare(consumer, delivery)
    assert attempt is not None
    runner.give_back(ClaimedOnRelease(app, consumer, attempt.envelope), attempt)  # type: ignore[arg-type]
    record = app.backend.get(job.id)
    assert record is not None
    assert (record["state"], record["attempts"], record["worker"]) == ("running", 1, "peer")


class StopsOnReserve:
    """A consumer whose reserve brings a job just as the worker is told to stop."""

    def __init__(self, consumer: object, worker: Worker) -> None:
        self.consumer, self.worker = consumer, worker

    def reserve(self, timeout_s: float) -> object:
        delivery = self.consumer.reserve(timeout_s)  # type: ignore[attr-defined]
        self.worker.stopping.set()
        return delivery

    def __getattr__(self, name: str) -> object:
        return getattr(self.consumer, name)


def test_a_job_reserved_as_the_stop_comes_goes_back_with_its_priority() -> None:
    app = App("stop-race", broker="memory://", backend="memory://")
    app.tasks = taskapp.app.tasks
    job = app.send("add", (1, 2), priority=7)
    worker = Worker(app, concurrency=1)
    slot = Slot(worker, 0)
    slot.consumer = StopsOnReserve(slot.consumer, worker)  # type: ignore[assignment]
    slot._loop()
    broker_id = job.status().record["broker_id"]
    peeked = app.broker.peek(broker_id)
    assert peeked is not None and peeked.stats["state"] == "ready" and peeked.stats["pri"] == 7
    assert job.status().state is JobState.QUEUED


class RecordsReserves:
    """A consumer that notes each reserve's timeout; the worker stops once ``done()`` says so."""

    def __init__(self, consumer: Consumer, worker: Worker, done: Callable[[], bool]) -> None:
        self.consumer, self.worker, self.done = consumer, worker, done
        self.timeouts: list[float] = []

    def reserve(self, timeout_s: float) -> object:
        self.timeouts.append(timeout_s)
        if self.done():
            self.worker.stopping.set()
            return None
        return self.consumer.reserve(timeout_s)

    def __getattr__(self, name: str) -> object:
        return getattr(self.consumer, name)


def test_a_slot_looks_ahead_only_where_its_consumer_says_it_pays(app: App, queue: str) -> None:
    """RabbitMQ's look ahead is a basic.get round trip that costs more than it saves: not made there."""
    jobs = [app.tasks["add"].delay(i, i) for i in range(5)]
    worker = Worker(app, concurrency=1)
    slot = Slot(worker, 0)
    recording = RecordsReserves(slot.consumer, worker,
                                lambda: all(job.status().state is JobState.SUCCEEDED for job in jobs))
    slot.consumer = recording  # type: ignore[assignment]
    slot._loop()
    assert [job.get(timeout=0) for job in jobs] == [0, 2, 4, 6, 8]
    looks_ahead = type(recording.consumer).reserves_ahead
    assert looks_ahead is (not app.broker.url.startswith("amqp"))
    assert (0 in recording.timeouts) is looks_ahead  # five jobs waiting: a slot that looks ahead did
    slot.consumer.close()


def start_three_times(ending: str) -> Job:
    """Start an ``add`` job (max_retries 0) three times; end the first two starts by ``ending``."""
    app = App("lost", broker="memory://", backend="memory://")
    app.tasks = taskapp.app.tasks
    runner, job = Runner(app, "w"), app.send("add", (1, 2))
    consumer = app.broker.consumer(["default"])
    for start in range(3):
        delivery = consumer.reserve(1)
        assert delivery is not None
        attempt = runner.prepare(consumer, delivery)
        if start < 2 and ending == "release":  # the outcome could not be stored
            consumer.release(delivery, priority=0, delay_s=0)
        elif start < 2:  # the worker vanished: its connection closed
            consumer.close()
            consumer = app.broker.consumer(["default"])
    assert (attempt is None) is (ending == "crash")
    consumer.close()
    return job


def test_starts_that_ended_in_a_release_are_no_crash_loop() -> None:
    status = start_three_times("release").status()
    assert status.state is JobState.RUNNING and status.attempts == 3


def test_starts_that_ended_with_the_worker_are_a_crash_loop() -> None:
    status = start_three_times("crash").status()
    assert status.state is JobState.FAILED and status.error is not None
    assert status.error["type"] == "WorkerLost" and "2 of them without an outcome" in status.error["message"]


def start_first_of_two(backend_url: str) -> tuple[App, Job, Job, Consumer, Runner, Attempt]:
    """Enqueue two ``add`` jobs on a memory broker and start the first as a slot does."""
    app = App("ahead", broker="memory://", backend=backend_url)
    app.tasks = taskapp.app.tasks
    first, second = app.send("add", (1, 2)), app.send("add", (3, 4))
    consumer = app.broker.consumer(["default"])
    runner = Runner(app, "w")
    delivery = consumer.reserve(1)
    assert delivery is not None
    attempt = runner.prepare(consumer, delivery)
    assert attempt is not None
    return app, first, second, consumer, runner, attempt


def test_settle_claims_the_job_reserved_ahead_with_the_outcome(tmp_path: Path) -> None:
    app, first, second, consumer, runner, attempt = start_first_of_two(f"sqlite:///{tmp_path / 'jobs.db'}")
    following = runner.settle(consumer, attempt, runner.execute(attempt), ahead=consumer.reserve(0))
    assert first.status().state is JobState.SUCCEEDED and first.get(timeout=1) == 3
    assert following is not None and following.envelope.id == second.id
    assert second.status().state is JobState.RUNNING and second.status().attempts == 1
    assert runner.settle(consumer, following, runner.execute(following), ahead=consumer.reserve(0)) is None
    assert second.get(timeout=1) == 7
    consumer.reserve(0)  # sends the pipelined delete, where the broker pipelines
    stats = app.broker.stats()["default"]
    assert stats["ready"] == stats["reserved"] == 0
    consumer.close()
    app.close()


class FailingBatch:
    """A backend whose batched writes fail (an outage between a job's run and its outcome)."""

    def __init__(self, backend: object) -> None:
        self.backend = backend

    def batch(self) -> object:
        raise BackendUnavailable("the database went away")

    def __getattr__(self, name: str) -> object:
        return getattr(self.backend, name)


def test_an_outage_while_settling_releases_both_jobs() -> None:
    app, _, _, consumer, runner, attempt = start_first_of_two("memory://")
    outcome, ahead = runner.execute(attempt), consumer.reserve(0)
    assert ahead is not None
    app._backend = FailingBatch(app.backend)  # type: ignore[assignment]
    with pytest.raises(BackendUnavailable):
        runner.settle(consumer, attempt, outcome, ahead=ahead)
    stats = app.broker.stats()["default"]
    assert stats["reserved"] == 0 and stats["delayed"] == 2  # both back, for a later attempt
    consumer.close()
