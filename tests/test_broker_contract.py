"""One contract, every broker (memory, beanstalkd)."""
from __future__ import annotations

import os
import signal
import threading
import time

import greenstalk
import pytest

from jobkit.brokers import Broker, broker_from_url
from jobkit.brokers import beanstalk as beanstalk_module
from jobkit.brokers.beanstalk import MAX_U32
from jobkit.embedded import Beanstalkd, free_port
from jobkit.errors import BrokerError, BrokerUnavailable, BrokerUnconfirmed, ConfigError
from jobkit.task import check_queue
from tests.helpers import eventually


def put(broker: Broker, queue: str, body: bytes = b"x", *, priority: int = 1024,
        delay_s: int = 0, ttr_s: int = 60) -> int:
    return broker.put(body, queue=queue, priority=priority, delay_s=delay_s, ttr_s=ttr_s)


def test_put_reserve_delete(broker: Broker, queue: str) -> None:
    broker_id = put(broker, queue, b'{"a":1}')
    consumer = broker.consumer([queue])
    delivery = consumer.reserve(1)
    assert delivery is not None and delivery.broker_id == broker_id and delivery.body == b'{"a":1}'
    assert broker.stats()[queue]["reserved"] == 1
    assert consumer.delete(delivery) is True
    assert broker.peek(broker_id) is None
    assert consumer.reserve(0) is None
    consumer.close()


def test_pipelined_delete_is_done_by_the_next_command_or_close(broker: Broker, queue: str) -> None:
    """``delete_nowait`` may wait for the consumer's next command; close or interrupt sends it."""
    ids = [put(broker, queue, b"%d" % i) for i in range(3)]
    consumer = broker.consumer([queue])
    first = consumer.reserve(1)
    assert first is not None
    consumer.delete_nowait(first)
    second = consumer.reserve(1)  # carries the delete
    assert second is not None and second.broker_id == ids[1]
    assert broker.peek(ids[0]) is None
    consumer.delete_nowait(second)
    consumer.close()
    assert broker.peek(ids[1]) is None
    other = broker.consumer([queue])
    third = other.reserve(1)
    assert third is not None
    other.delete_nowait(third)
    other.interrupt()
    other.close()
    eventually(lambda: broker.peek(ids[2]) is None, what="the delete sent by interrupt()")


def test_reserve_times_out_empty(broker: Broker, queue: str) -> None:
    consumer = broker.consumer([queue])
    started = time.monotonic()
    assert consumer.reserve(1) is None
    assert time.monotonic() - started >= 0.9
    consumer.close()


def test_priority_orders_reserves(broker: Broker, queue: str) -> None:
    low = put(broker, queue, b"low", priority=2000)
    high = put(broker, queue, b"high", priority=5)
    consumer = broker.consumer([queue])
    first, second = consumer.reserve(1), consumer.reserve(1)
    assert first is not None and second is not None
    assert (first.broker_id, second.broker_id) == (high, low)
    consumer.close()


def test_only_watched_queues_are_reserved(broker: Broker, queue: str) -> None:
    put(broker, queue + "-other")
    consumer = broker.consumer([queue])
    assert consumer.reserve(0) is None
    consumer.close()


def test_delay_holds_a_job_back(broker: Broker, queue: str) -> None:
    broker_id = put(broker, queue, delay_s=1)
    peeked = broker.peek(broker_id)
    assert peeked is not None and peeked.stats["state"] == "delayed"
    consumer = broker.consumer([queue])
    assert consumer.reserve(0) is None
    delivery = consumer.reserve(3)
    assert delivery is not None and delivery.broker_id == broker_id
    consumer.close()


def test_release_with_delay_and_stats(broker: Broker, queue: str) -> None:
    broker_id = put(broker, queue)
    consumer = broker.consumer([queue])
    delivery = consumer.reserve(1)
    assert delivery is not None
    assert consumer.release(delivery, priority=7, delay_s=1) is True
    stats = broker.peek(broker_id)
    assert stats is not None
    assert stats.stats["state"] == "delayed" and stats.stats["releases"] == 1
    assert stats.stats["pri"] == 7 and stats.stats["reserves"] == 1
    again = consumer.reserve(3)
    assert again is not None and again.broker_id == broker_id
    consumer.close()


def test_bury_peek_buried_and_kick(broker: Broker, queue: str) -> None:
    broker_id = put(broker, queue, b"dead")
    consumer = broker.consumer([queue])
    delivery = consumer.reserve(1)
    assert delivery is not None and consumer.bury(delivery, priority=1024)
    assert broker.stats()[queue]["buried"] == 1
    buried = broker.peek_buried(queue)
    assert buried is not None and buried.broker_id == broker_id and buried.body == b"dead"
    assert buried.stats["state"] == "buried" and buried.stats["buries"] == 1
    assert consumer.reserve(0) is None
    assert broker.kick(broker_id) is True
    assert broker.kick(broker_id) is False  # ready now: nothing to kick
    again = consumer.reserve(1)
    assert again is not None and again.broker_id == broker_id
    consumer.close()


def test_closing_a_consumer_returns_its_jobs(broker: Broker, queue: str) -> None:
    broker_id = put(broker, queue)
    first = broker.consumer([queue])
    assert first.reserve(1) is not None
    first.close()
    second = broker.consumer([queue])
    delivery = second.reserve(2)
    assert delivery is not None and delivery.broker_id == broker_id
    second.close()


def test_ttr_expiry_returns_a_job_and_touch_prevents_it(broker: Broker, queue: str) -> None:
    expiring = put(broker, queue, b"a", ttr_s=2)  # 1 s is unreliable in beanstalkd: see MIN_TTR
    consumer, other = broker.consumer([queue]), broker.consumer([queue])
    held = consumer.reserve(1)
    assert held is not None and held.broker_id == expiring
    stolen = other.reserve(5)  # after TTR the job is ready again
    assert stolen is not None and stolen.broker_id == expiring
    assert consumer.delete(held) is False  # no longer ours
    assert other.delete(stolen) is True

    touched = put(broker, queue, b"b", ttr_s=2)
    held = consumer.reserve(1)
    assert held is not None and held.broker_id == touched
    for _ in range(4):
        time.sleep(0.7)
        assert consumer.touch(held)
    assert other.reserve(0) is None
    peeked = broker.peek(touched)
    assert peeked is not None and peeked.stats["timeouts"] == 0
    assert consumer.delete(held)
    consumer.close()
    other.close()


def test_producer_delete_spares_reserved_jobs(broker: Broker, queue: str) -> None:
    ready, held = put(broker, queue), put(broker, queue)
    consumer = broker.consumer([queue])
    delivery = consumer.reserve(1)
    assert delivery is not None and delivery.broker_id == ready
    assert broker.delete(ready) is False  # reserved by a consumer
    assert broker.delete(held) is True
    assert broker.delete(held) is False
    consumer.close()


def test_interrupt_wakes_a_blocked_reserve(broker: Broker, queue: str) -> None:
    consumer = broker.consumer([queue])
    outcome: list[object] = []

    def reserve() -> None:
        try:
            outcome.append(consumer.reserve(30))
        except BrokerUnavailable as exc:
            outcome.append(exc)

    thread = threading.Thread(target=reserve)
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    consumer.interrupt()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - started < 5
    assert outcome and (outcome[0] is None or isinstance(outcome[0], BrokerUnavailable))
    consumer.close()


def test_stats_and_ping(broker: Broker, queue: str) -> None:
    put(broker, queue)
    put(broker, queue, delay_s=60)
    broker.ping()
    row = broker.stats()[queue]
    assert (row["ready"], row["delayed"], row["reserved"], row["buried"]) == (1, 1, 0, 0)
    assert row["total"] >= 2


def test_beanstalk_down_is_unavailable() -> None:
    broker = broker_from_url(f"beanstalk://127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        put(broker, "default")
    with pytest.raises(BrokerUnavailable):
        broker.consumer(["default"]).reserve(1)
    assert time.monotonic() - started < 2


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="beanstalk://, memory://"):
        broker_from_url("amqp://localhost")


def test_beanstalk_stats_skips_a_tube_that_vanished_after_listing(
        beanstalkd: Beanstalkd, queue: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tube goes away once it is empty and unwatched, possibly between list-tubes and stats-tube."""
    broker = broker_from_url(beanstalkd.url)
    put(broker, queue)
    listed = greenstalk.Client.tubes
    monkeypatch.setattr(greenstalk.Client, "tubes", lambda self: [*listed(self), f"{queue}gone"])
    try:
        stats = broker.stats()
        assert stats[queue]["ready"] == 1 and f"{queue}gone" not in stats
    finally:
        broker.close()


# -- beanstalkd: a connection never falls out of step ----------------------------------

@pytest.mark.parametrize("bad", [{"delay_s": 2**32}, {"priority": 2**32}, {"ttr_s": 2**32}],
                         ids=["delay", "priority", "ttr"])
def test_beanstalk_a_refused_put_leaves_no_connection_out_of_step(
        beanstalkd: Beanstalkd, queue: str, bad: dict[str, int]) -> None:
    """beanstalkd answers BAD_FORMAT, then reads the body as a command (UNKNOWN_COMMAND).

    A connection pooled after that would hand every later put the answer of
    the one before: the next put fails, and the one after returns another job's id.
    """
    broker = broker_from_url(beanstalkd.url)
    try:
        with pytest.raises(BrokerError):
            put(broker, queue, b"refused", **bad)
        for body in (b"first", b"second", b"third"):
            broker_id = put(broker, queue, body)
            peeked = broker.peek(broker_id)
            assert peeked is not None and peeked.body == body  # its own id, not another job's
    finally:
        broker.close()


def test_beanstalk_consumer_drops_a_connection_after_an_unexpected_answer(
        beanstalkd: Beanstalkd, queue: str) -> None:
    """An error answer to release (BAD_FORMAT) is no library error for the caller: the job is
    no longer held (the connection is dropped, so the job is ready again) and the consumer goes on."""
    broker = broker_from_url(beanstalkd.url)
    broker_id = put(broker, queue, b"mine")
    consumer = broker.consumer([queue])
    try:
        delivery = consumer.reserve(1)
        assert delivery is not None
        assert consumer.release(delivery, priority=2**32, delay_s=0) is False
        again = consumer.reserve(1)
        assert again is not None and (again.broker_id, again.body) == (broker_id, b"mine")
        assert consumer.delete(again) is True
    finally:
        consumer.close()
        broker.close()


def test_beanstalk_a_release_delay_past_the_range_waits_the_longest(
        beanstalkd: Beanstalkd, queue: str) -> None:
    broker = broker_from_url(beanstalkd.url)
    put(broker, queue)
    consumer = broker.consumer([queue])
    try:
        delivery = consumer.reserve(1)
        assert delivery is not None
        assert consumer.release(delivery, priority=1, delay_s=2**40) is True
        peeked = broker.peek(delivery.broker_id)
        assert peeked is not None and peeked.stats["state"] == "delayed"
        assert peeked.stats["delay"] == MAX_U32
    finally:
        consumer.close()
        broker.close()


def test_beanstalk_a_put_without_answer_is_unconfirmed_and_never_sent_twice(
        beanstalk: Beanstalkd, monkeypatch: pytest.MonkeyPatch) -> None:
    """A put that times out may have reached beanstalkd: it is reported as such, not retried
    on another connection (a second copy), and its connection is not reused."""
    monkeypatch.setattr(beanstalk_module, "OP_TIMEOUT_S", 1.0)
    broker = broker_from_url(beanstalk.url)
    assert beanstalk.proc is not None
    try:
        put(broker, "default", b"before")  # the pool now holds a connection using "default"
        os.kill(beanstalk.proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(BrokerUnconfirmed):
                put(broker, "default", b"stalled")
        finally:
            os.kill(beanstalk.proc.pid, signal.SIGCONT)
        after = put(broker, "default", b"after")
        peeked = broker.peek(after)
        assert peeked is not None and peeked.body == b"after"
        eventually(lambda: broker.stats()["default"]["total"] >= 3, what="the stalled put landing")
        assert broker.stats()["default"]["total"] == 3  # before, stalled (it landed) once, after
    finally:
        broker.close()


def test_beanstalk_a_restarted_server_costs_no_failed_put(beanstalk: Beanstalkd) -> None:
    """Pooled connections closed by the server are found out before use, not by a failed put."""
    broker = broker_from_url(beanstalk.url)
    try:
        for body in (b"a", b"b"):  # two connections in the pool, both used
            put(broker, "default", body)
        beanstalk.stop(kill=True)
        beanstalk.start()  # the same binlog: ids go on
        broker_id = put(broker, "default", b"after restart")
        peeked = broker.peek(broker_id)
        assert peeked is not None and peeked.body == b"after restart"
    finally:
        broker.close()


@pytest.mark.parametrize("name", ["a", "x" * 200, "A-Za-z0-9+/;.$_()", "(q)", "$"])
def test_beanstalk_takes_every_queue_name_jobkit_accepts(beanstalkd: Beanstalkd, name: str) -> None:
    assert check_queue(name) == name
    broker = broker_from_url(beanstalkd.url)
    consumer = broker.consumer([name])
    try:
        broker_id = put(broker, name, b"named")
        delivery = consumer.reserve(1)
        assert delivery is not None and delivery.broker_id == broker_id
        assert consumer.delete(delivery)
    finally:
        consumer.close()
        broker.close()


@pytest.mark.parametrize("name", ["a:b", "a b", "-a", "x" * 201, "", "café", "q\n", "q\x00", 5, None])
def test_queue_names_beanstalkd_refuses_are_a_config_error(name: object) -> None:
    with pytest.raises(ConfigError, match="queue name"):
        check_queue(name)
