"""A put without an answer (BrokerUnconfirmed): an idempotency key always leads to exactly one job.

The broker here is the in-process one with a fault injected into its next
put: the message lands and the answer is lost, or it is lost too, or the
broker refuses it for sure. Real beanstalkd stalls are in
``tests/api/test_faults.py``.
"""
from __future__ import annotations

from collections.abc import Iterator
import pytest

from jobkit import App, JobState
from jobkit import app as app_module
from jobkit.brokers.memory import MemoryBroker
from jobkit.errors import BrokerUnavailable, BrokerUnconfirmed
from jobkit.runner import Runner


class FaultyBroker(MemoryBroker):
    """The memory broker, whose next put fails as :attr:`fault` says."""

    def __init__(self) -> None:
        super().__init__()
        self.fault: str | None = None

    def put(self, body: bytes, *, queue: str, priority: int, delay_s: int, ttr_s: int) -> int:
        fault, self.fault = self.fault, None
        if fault == "refused":
            raise BrokerUnavailable("refused (injected)")
        if fault == "lost":
            raise BrokerUnconfirmed("sent, then lost before the broker read it (injected)")
        broker_id = super().put(body, queue=queue, priority=priority, delay_s=delay_s, ttr_s=ttr_s)
        if fault == "landed":
            raise BrokerUnconfirmed("the broker took it, its answer was lost (injected)")
        return broker_id


@pytest.fixture
def faulty() -> FaultyBroker:
    return FaultyBroker()


@pytest.fixture
def runs() -> list[str]:
    """The tags of the ``count`` jobs that ran, in order."""
    return []


@pytest.fixture
def app(faulty: FaultyBroker, backend_url: str, runs: list[str]) -> Iterator[App]:
    """An app with a ``count`` task that notes each run in ``runs``, over each backend."""
    app = App("t", broker=faulty, backend=backend_url)

    @app.task
    def count(tag: str) -> str:
        runs.append(tag)
        return tag

    yield app
    app.close()


def run_all(app: App) -> None:
    """Run every message the broker holds, one at a time, as a worker does."""
    runner = Runner(app, "test-worker")
    consumer = app.broker.consumer(["default"])
    try:
        while (delivery := consumer.reserve(0)) is not None:
            attempt = runner.prepare(consumer, delivery)
            if attempt is not None:
                runner.settle(consumer, attempt, runner.execute(attempt))
    finally:
        consumer.close()


def messages(app: App) -> int:
    return app.broker.stats().get("default", {}).get("total", 0)


def assert_ran_once(app: App, runs: list[str], job_id: str, tag: str) -> None:
    run_all(app)
    status = app.status(job_id)
    assert runs == [tag]
    assert status.state is JobState.SUCCEEDED and status.result == tag
    assert app.backend.counts() == {"succeeded": 1}  # one record
    assert app.broker.stats()["default"]["ready"] == 0  # every copy settled


def test_unconfirmed_put_that_landed_keeps_the_record_and_a_repeat_runs_it_once(
        app: App, faulty: FaultyBroker, runs: list[str]) -> None:
    faulty.fault = "landed"
    with pytest.raises(BrokerUnconfirmed):
        app.send("count", ["first"], idempotency_key="order-1")
    pending = app.backend.find(task="count")
    assert len(pending) == 1 and pending[0]["state"] == "queued" and pending[0]["broker_id"] is None
    repeat = app.send("count", ["first"], idempotency_key="order-1")
    assert not repeat.created and repeat.id == pending[0]["id"]
    assert app.status(repeat.id).record["broker_id"] is not None
    assert messages(app) == 2  # the copy that landed and the one put again: one job id
    assert_ran_once(app, runs, repeat.id, "first")


def test_unconfirmed_put_that_was_lost_is_put_again_by_the_repeat(
        app: App, faulty: FaultyBroker, runs: list[str]) -> None:
    faulty.fault = "lost"
    with pytest.raises(BrokerUnconfirmed):
        app.send("count", ["first"], idempotency_key="order-2")
    assert messages(app) == 0
    repeat = app.send("count", ["first"], idempotency_key="order-2")
    assert not repeat.created and messages(app) == 1
    assert_ran_once(app, runs, repeat.id, "first")


def test_a_repeat_while_the_first_put_is_in_flight_does_not_put_it_twice(
        app: App, faulty: FaultyBroker, runs: list[str]) -> None:
    """Two copies in flight at once could run on two workers at the same time: one put only."""
    first = app.send("count", ["first"], idempotency_key="order-6")
    app.backend.update(first.id, {"broker_id": None})  # as seen while its put is still on the wire
    repeat = app.send("count", ["first"], idempotency_key="order-6")
    assert not repeat.created and repeat.id == first.id
    assert messages(app) == 1
    assert_ran_once(app, runs, first.id, "first")


def test_a_first_put_that_never_settled_is_put_again_once_old(
        app: App, faulty: FaultyBroker, runs: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """An API process that died mid-put left no mark: past PUT_SETTLED_S a repeat puts it again."""
    faulty.fault = "lost"
    with pytest.raises(BrokerUnconfirmed):
        app.send("count", ["first"], idempotency_key="order-7")
    [record] = app.backend.find(task="count")
    app.backend.update(record["id"], {"waiting": None})  # as if the process died before marking it
    assert app.send("count", ["first"], idempotency_key="order-7").id == record["id"]
    assert messages(app) == 0  # too young: its put might still be in flight
    monkeypatch.setattr(app_module, "PUT_SETTLED_S", -1.0)
    app.send("count", ["first"], idempotency_key="order-7")
    assert messages(app) == 1
    assert_ran_once(app, runs, record["id"], "first")


def test_the_repeat_puts_the_first_request_again_not_its_own_body(
        app: App, faulty: FaultyBroker, runs: list[str]) -> None:
    faulty.fault = "lost"
    with pytest.raises(BrokerUnconfirmed):
        app.send("count", ["first"], idempotency_key="order-3")
    repeat = app.send("count", ["second"], idempotency_key="order-3")
    assert_ran_once(app, runs, repeat.id, "first")


def test_a_repeat_during_the_outage_is_503_and_keeps_the_record(
        app: App, faulty: FaultyBroker, runs: list[str]) -> None:
    faulty.fault = "landed"
    with pytest.raises(BrokerUnconfirmed):
        app.send("count", ["first"], idempotency_key="order-4")
    faulty.fault = "refused"  # the repeat's put fails for sure: the first one may still have landed
    with pytest.raises(BrokerUnavailable):
        app.send("count", ["first"], idempotency_key="order-4")
    [record] = app.backend.find(task="count")
    assert record["state"] == "queued"
    assert_ran_once(app, runs, record["id"], "first")


def test_a_refused_put_removes_the_record_and_a_repeat_starts_afresh(
        app: App, faulty: FaultyBroker, runs: list[str]) -> None:
    faulty.fault = "refused"
    with pytest.raises(BrokerUnavailable) as raised:
        app.send("count", ["first"], idempotency_key="order-5")
    assert not isinstance(raised.value, BrokerUnconfirmed)
    assert app.backend.counts() == {}
    again = app.send("count", ["first"], idempotency_key="order-5")
    assert again.created
    assert_ran_once(app, runs, again.id, "first")


def test_without_a_key_an_unconfirmed_put_that_landed_runs_once_and_is_recorded(
        app: App, faulty: FaultyBroker, runs: list[str]) -> None:
    """At-least-once: the caller was told it may have been taken; the worker's claim records it."""
    faulty.fault = "landed"
    with pytest.raises(BrokerUnconfirmed):
        app.send("count", ["first"])
    assert app.backend.counts() == {}
    run_all(app)
    [record] = app.backend.find(task="count")
    assert record["state"] == "succeeded" and runs == ["first"]
