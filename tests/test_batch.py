"""Batch enqueue: Broker.put_many on every broker, App.send_many and Task.map."""
from __future__ import annotations

from collections.abc import Iterator

import pytest

from jobkit import App, Signature
from jobkit.brokers import Broker, broker_from_url
from jobkit.brokers.base import PEEK, STATS, Outgoing
from jobkit.embedded import Beanstalkd
from jobkit.errors import ConfigError, PayloadError, PayloadTooLarge, TaskNotFound
from jobkit.worker import Worker
from tests.test_canvas import tasks_on


def test_put_many_puts_in_order_into_each_queue(broker: Broker, queue: str) -> None:
    other = queue + "b"
    messages = [Outgoing(b"m%d" % i, other if i % 3 == 0 else queue, 10 + i, 30 if i == 5 else 0, 60)
                for i in range(1200)]  # more than one pipelined write
    ids = broker.put_many(messages)
    assert len(ids) == 1200 and len(set(ids)) == 1200
    if broker.can(PEEK):
        assert [broker.peek(ids[i]).body for i in (0, 1, 1199)] == [b"m0", b"m1", b"m1199"]  # type: ignore[union-attr]
    if broker.can(STATS):
        stats = broker.stats()
        assert stats[queue]["ready"] + stats[queue]["delayed"] == 800 and stats[other]["ready"] == 400
    assert broker.put_many([]) == []


def test_put_many_is_all_or_nothing_when_a_put_is_refused(queue: str) -> None:
    with Beanstalkd(max_job_size=1000) as server:
        broker = broker_from_url(server.url)
        small = [Outgoing(b"x", queue, 1, 0, 60)] * 3
        with pytest.raises(PayloadTooLarge):
            broker.put_many([*small, Outgoing(b"x" * 2000, queue, 1, 0, 60), *small])
        assert broker.stats()[queue]["ready"] == 0
        assert len(broker.put_many(small)) == 3  # the connection is still in step
        broker.close()


@pytest.fixture
def app(beanstalkd: Beanstalkd, backend_url: str, queue: str) -> Iterator[App]:
    app = App("batch-tests", broker=beanstalkd.url, backend=backend_url)
    tasks_on(app, queue)
    yield app
    app.close()


def test_map_enqueues_one_job_per_argument_tuple(app: App, queue: str) -> None:
    jobs = app.tasks["add"].map([(1, 2), (3, 4)] + [(i, i) for i in range(98)])
    assert len(jobs) == 100 and app.backend.counts() == {"queued": 100}
    assert app.broker.stats()[queue]["ready"] == 100
    record = jobs[0].status().record
    assert record["args"] == [1, 2] and record["broker_id"] is not None
    worker = Worker(app, concurrency=2)
    worker.start()
    try:
        assert [job.get(timeout=10) for job in jobs[:2]] == [3, 7]
    finally:
        worker.shutdown(graceful=False)


def test_map_refuses_an_item_that_is_not_an_argument_tuple(app: App, queue: str) -> None:
    with pytest.raises(PayloadError, match=r"jobs\[1\]: args must be a list or tuple"):
        app.tasks["add"].map([(1, 2), 3])
    assert app.backend.counts() == {}


def test_send_many_takes_options_per_job(app: App, queue: str) -> None:
    jobs = app.send_many([Signature("add", (1, 2), priority=5), Signature("add", (1, 2), delay=60),
                          Signature("mul", (2, 3), queue=queue + "x")])
    stats = [app.locate(job.id, job.status().record["broker_id"]) for job in jobs]
    assert stats[0] is not None and stats[0]["pri"] == 5
    assert stats[1] is not None and stats[1]["state"] == "delayed"
    assert stats[2] is not None and stats[2]["tube"] == queue + "x"


@pytest.mark.parametrize(("bad", "error", "says"), [
    (Signature("nope", (1,)), TaskNotFound, "jobs\\[2\\]: no task named 'nope'"),
    (Signature("add", ({1, 2},)), PayloadError, "jobs\\[2\\]: "),
    (Signature("add", (1,), priority=-1), ConfigError, "jobs\\[2\\]: priority"),
    (Signature("add", (1,), delay="soon"), ConfigError, "jobs\\[2\\]: delay"),
])
def test_one_bad_item_rejects_the_batch_and_nothing_is_enqueued(
        app: App, queue: str, bad: Signature, error: type[Exception], says: str) -> None:
    with pytest.raises(error, match=says):
        app.send_many([Signature("add", (1, 2)), Signature("add", (3, 4)), bad, Signature("add", (5, 6))])
    assert app.backend.counts() == {}
    assert app.broker.stats().get(queue, {}).get("total", 0) == 0
