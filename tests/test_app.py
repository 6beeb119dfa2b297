"""The Python API: App, @app.task, Task.delay/apply_async, Job, cancel/retry/kick."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from jobkit import App, Job, JobState
from jobkit.brokers.base import PEEK
from jobkit.embedded import free_port
from jobkit.errors import (
    BrokerUnavailable,
    ConfigError,
    InvalidState,
    JobCancelled,
    JobNotFound,
    JobTimeout,
    PayloadError,
    TaskNotFound,
    Unsupported,
)
from jobkit.worker import Worker
from tests.helpers import eventually


@pytest.fixture
def app(broker_url: str, backend_url: str) -> Iterator[App]:
    """An app over each broker and each backend."""
    app = App("t", broker=broker_url, backend=backend_url)
    yield app
    app.close()


def test_decorating_never_connects() -> None:
    app = App("t", broker=f"beanstalk://127.0.0.1:{free_port()}", backend=f"mongodb://127.0.0.1:{free_port()}/x")

    @app.task
    def plain(x: int) -> int:
        return x * 2

    @app.task(name="custom", queue="images", priority=100, ttr=120, max_retries=5,
              retry_backoff=2.0, time_limit=60)
    def resize(url: str, width: int) -> str:
        return f"{url}@{width}"

    assert plain(4) == 8 and resize("u", 10) == "u@10"  # direct calls run in-process
    assert set(app.tasks) == {"plain", "custom"}
    opts = app.tasks["custom"].options
    assert (opts.queue, opts.priority, opts.ttr, opts.max_retries, opts.retry_backoff, opts.time_limit) == (
        "images", 100, 120, 5, 2.0, 60)
    with pytest.raises(BrokerUnavailable):  # sending is what connects
        plain.delay(1)


@pytest.mark.parametrize("options", [{"priority": -1}, {"priority": 2**32}, {"ttr": 0}, {"ttr": 1},
                                     {"queue": "-bad"}, {"queue": "a b"}, {"max_retries": -1},
                                     {"time_limit": 0}, {"nonsense": 1}])
def test_bad_task_options_fail_at_decoration(options: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        App().task(**options)(lambda: None)


def test_a_name_cannot_be_registered_twice() -> None:
    app = App()
    app.task(name="x")(lambda: 1)
    with pytest.raises(ConfigError, match="already registered"):
        app.task(name="x")(lambda: 2)


def test_delay_records_the_job_as_queued(app: App) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    job = add.delay(1, 2)
    assert isinstance(job, Job) and job.created
    status = job.status()
    assert status.state is JobState.QUEUED and status.attempts == 0
    assert status.record["args"] == [1, 2] and status.record["task"] == "add"
    located = app.locate(job.id, status.record["broker_id"])
    if app.broker.can(PEEK):
        assert located is not None and located["state"] == "ready"
    else:  # the broker cannot look: callers answer from the record
        assert located is None


def test_apply_async_options_reach_the_broker(app: App) -> None:
    @app.task
    def add(a: int, b: int) -> int:
        return a + b

    job = add.apply_async((1,), {"b": 2}, queue="other", priority=3, delay=30, ttr=9)
    record = job.status().record
    assert record["kwargs"] == {"b": 2} and record["queue"] == "other"
    stats = app.locate(job.id, record["broker_id"])
    if not app.broker.can(PEEK):  # nothing to see: it answers from the record
        assert stats is None
        return
    assert stats is not None
    assert (stats["tube"], stats["pri"], stats["ttr"], stats["state"]) == ("other", 3, 9, "delayed")


@pytest.mark.parametrize("call", [
    lambda t: t.delay({1, 2}),
    lambda t: t.apply_async((), {"k": object()}),
    lambda t: t.delay(float("nan")),
    lambda t: t.apply_async(5),
    lambda t: t.apply_async("abc"),
])
def test_arguments_must_be_json(app: App, call: object) -> None:
    task = app.task(name="t")(lambda *a, **k: None)
    with pytest.raises(PayloadError):
        call(task)  # type: ignore[operator]
    assert app.backend.counts() == {}


@pytest.mark.parametrize("options", [{"priority": -1}, {"delay": -1}, {"delay": "soon"}, {"ttr": 0},
                                     {"queue": "with space"}, {"queue": "x" * 201}, {"idempotency_key": ""}])
def test_bad_send_options_are_refused(app: App, options: dict[str, object]) -> None:
    task = app.task(name="t")(lambda: None)
    with pytest.raises(ConfigError):
        task.apply_async(**options)  # type: ignore[arg-type]
    assert app.backend.counts() == {}


@pytest.mark.parametrize("options", [
    {"delay": 4294967295.5}, {"delay": 2**32}, {"delay": float("inf")}, {"delay": float("nan")},
    {"delay": -0.5}, {"delay": True}, {"priority": 2**32}, {"ttr": 2**32}, {"queue": "a:b"},
    {"queue": "-a"}, {"queue": ""}, {"queue": "café"}, {"queue": 5}], ids=str)
def test_values_the_broker_would_refuse_are_refused_before_anything_is_recorded(
        app: App, queue: str, options: dict[str, object]) -> None:
    """Ranges hold for the values actually sent: a delay is checked after it is rounded up."""
    task = app.task(name="t", queue=queue)(lambda: None)
    for key in (None, "k"):
        with pytest.raises(ConfigError):
            task.apply_async(idempotency_key=key, **options)  # type: ignore[arg-type]
    assert app.backend.counts() == {} and queue not in app.broker.stats()


def test_the_largest_values_the_broker_takes(app: App, queue: str) -> None:
    task = app.task(name="t")(lambda: None)
    if app.broker.url.startswith("amqp"):  # RabbitMQ holds a delay for at most about 49 days
        with pytest.raises(ConfigError, match="at most 4294967 seconds"):
            task.apply_async(queue=queue, delay=4294967294.5)
        task.apply_async(queue=queue, delay=4294967, priority=2**32 - 1, ttr=2**32 - 1)
        return
    job = task.apply_async(queue=queue, delay=4294967294.5, priority=2**32 - 1, ttr=2**32 - 1)
    stats = app.locate(job.id, job.status().record["broker_id"])
    assert stats is not None and (stats["delay"], stats["pri"], stats["ttr"]) == (2**32 - 1,) * 3


def test_unknown_tasks_and_jobs(app: App) -> None:
    with pytest.raises(TaskNotFound):
        app.send("nope")
    with pytest.raises(JobNotFound):
        app.job("0" * 32).status()
    with pytest.raises(JobNotFound):
        app.job("0" * 32).get(timeout=1)


def test_get_times_out_while_queued(app: App) -> None:
    job = app.task(name="t")(lambda: None).delay()
    with pytest.raises(JobTimeout):
        job.get(timeout=0.1)


def test_idempotency_key_returns_the_first_job(app: App, queue: str) -> None:
    task = app.task(name="t", queue=queue)(lambda x: x)
    first = task.apply_async((1,), idempotency_key="order-42")
    again = task.apply_async((2,), idempotency_key="order-42")
    assert first.created and not again.created and again.id == first.id
    assert first.status().record["args"] == [1]
    assert app.broker.stats()[queue]["total"] == 1


def test_broker_down_leaves_no_record(backend_url: str) -> None:
    app = App("t", broker=f"beanstalk://127.0.0.1:{free_port()}", backend=backend_url)
    task = app.task(name="t")(lambda: None)
    for key in (None, "k1"):
        with pytest.raises(BrokerUnavailable):
            task.apply_async(idempotency_key=key)
    assert app.backend.counts() == {}


def test_cancel_a_queued_job_removes_it_from_the_broker(app: App) -> None:
    job = app.task(name="t")(lambda: None).delay()
    broker_id = job.status().record["broker_id"]
    assert job.cancel().state is JobState.CANCELLED
    if app.broker.can(PEEK):  # (without DELETE, the worker that reserves it deletes it)
        assert app.broker.peek(broker_id) is None
    with pytest.raises(JobCancelled):
        job.get(timeout=1)
    with pytest.raises(InvalidState):
        job.cancel()


def test_retry_kicks_a_dead_letter_and_kick_brings_queues_back(broker_url: str, sqlite_url: str,
                                                                 queue: str) -> None:
    app = App("t", broker=broker_url, backend=sqlite_url)
    state = {"fail": True}

    @app.task(queue=queue)
    def sometimes() -> str:
        if state["fail"]:
            raise RuntimeError("down")
        return "up"

    worker = Worker(app, concurrency=1)
    worker.start()
    try:
        jobs = [sometimes.delay() for _ in range(3)]
        eventually(lambda: all(j.status().state is JobState.FAILED for j in jobs), what="failed")
        # dead letters: each buried right after its outcome is stored (the record is written first)
        eventually(lambda: app.broker.stats()[queue]["buried"] == 3, what="three dead letters")
        state["fail"] = False
        # the worker may take the kicked job before retry() reads the record back
        assert app.retry(jobs[0].id).state in (JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED)
        assert jobs[0].get(timeout=10) == "up"
        assert app.kick(queue=queue) == 2
        assert [job.get(timeout=10) for job in jobs[1:]] == ["up", "up"]
        assert jobs[1].status().attempts == 1  # a kicked job starts its count afresh
        with pytest.raises(InvalidState):
            app.retry(jobs[0].id)  # succeeded: nothing to retry
    finally:
        worker.shutdown(graceful=False)


def test_stats_counts_queues_and_states(app: App, queue: str) -> None:
    task = app.task(name="t", queue=queue)(lambda: None)
    task.delay()
    task.delay()
    stats = app.stats()
    assert stats["queues"][queue]["ready"] == 2 and stats["jobs"] == {"queued": 2}


# -- on the smallest broker: every read and action still works, from the records -------

CORE_ONLY = "memory://?capabilities=none"


@pytest.fixture
def core_app(backend_url: str) -> Iterator[App]:
    """An app whose broker has only the required core (no peek, delete, kick, touch, delay, stats)."""
    app = App("core", broker=CORE_ONLY, backend=backend_url)
    yield app
    app.close()


def run_one(app: App, queue: str) -> None:
    """Reserve one message and take it through a worker's steps."""
    from jobkit.runner import Runner

    runner, consumer = Runner(app, "w"), app.broker.consumer([queue])
    try:
        delivery = consumer.reserve(2)
        assert delivery is not None
        attempt = runner.prepare(consumer, delivery)
        if attempt is not None:
            runner.settle(consumer, attempt, runner.execute(attempt))
    finally:
        consumer.close()


def test_reads_without_broker_capabilities_answer_from_the_records(core_app: App, queue: str) -> None:
    import falcon.testing

    from jobkit.api import create_app
    from jobkit.config import Settings

    job = core_app.task(name="t", queue=queue)(lambda: None).delay()
    assert core_app.locate(job.id, job.status().broker_id) is None
    assert core_app.queues() == {} and core_app.stats() == {"queues": {}, "jobs": {"queued": 1}}
    assert core_app.ping() == {"broker": "ok", "backend": "ok"}
    client = falcon.testing.TestClient(create_app(Settings(default_task="t"), core_app))
    assert client.simulate_get(f"/{job.id}/").json == {"_id": job.id, "state": "queued"}
    assert client.simulate_get(f"/v1/jobs/{job.id}").json["broker"] is None
    assert client.simulate_get("/v1/queues").json == {"queues": {}}
    assert client.simulate_get("/readyz").status_code == 200


def test_a_delay_the_broker_cannot_hold_is_refused_before_anything_is_recorded(
        core_app: App, queue: str) -> None:
    import falcon.testing

    from jobkit.api import create_app
    from jobkit.config import Settings

    task = core_app.task(name="t", queue=queue)(lambda: None)
    for key in (None, "k"):
        with pytest.raises(Unsupported, match="cannot delay"):
            task.apply_async(delay=5, idempotency_key=key)
    client = falcon.testing.TestClient(create_app(Settings(default_task="t"), core_app))
    answer = client.simulate_post("/v1/jobs", json={"task": "t", "queue": queue, "delay": 5})
    assert answer.status_code == 422 and "cannot delay" in answer.json["description"]
    assert core_app.counts() == {}


def test_cancel_without_delete_leaves_the_message_for_the_worker_to_drop(core_app: App, queue: str) -> None:
    runs: list[int] = []
    job = core_app.task(name="t", queue=queue)(lambda: runs.append(1)).delay()
    assert job.cancel().state is JobState.CANCELLED
    run_one(core_app, queue)  # the message is delivered, and dropped unrun
    assert runs == [] and job.status().state is JobState.CANCELLED
    consumer = core_app.broker.consumer([queue])
    assert consumer.reserve(0) is None  # settled for good
    consumer.close()


def test_retry_and_kick_without_kick_enqueue_from_the_record(core_app: App, queue: str) -> None:
    state = {"fail": True}

    @core_app.task(queue=queue)
    def sometimes() -> str:
        if state["fail"]:
            raise RuntimeError("down")
        return "up"

    jobs = [sometimes.delay() for _ in range(3)]
    for _ in jobs:
        run_one(core_app, queue)
    assert all(job.status().state is JobState.FAILED for job in jobs)
    state["fail"] = False
    assert core_app.retry(jobs[0].id).state is JobState.QUEUED
    run_one(core_app, queue)
    assert jobs[0].get(timeout=1) == "up"
    assert core_app.kick(queue=queue + "x") == 0  # another queue's failed jobs only
    assert core_app.kick(queue=queue) == 2
    run_one(core_app, queue)
    run_one(core_app, queue)
    assert [job.get(timeout=1) for job in jobs[1:]] == ["up", "up"]


def test_a_worker_on_a_broker_without_touch_never_touches(sqlite_url: str, queue: str,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """The heartbeat's touch would raise Unsupported in its thread; it leaves the TTR to the broker."""
    import threading
    import time

    failures: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: failures.append(args.exc_value))
    app = App("core", broker=CORE_ONLY, backend=sqlite_url)
    task = app.task(name="slow", queue=queue, ttr=2)(lambda: time.sleep(1.5) or "done")
    worker = Worker(app, queues=[queue], concurrency=1)
    worker.start()
    try:
        assert task.delay().get(timeout=20) == "done"  # a touch was due every second
    finally:
        worker.shutdown(graceful=False)
        app.close()
    assert failures == []
