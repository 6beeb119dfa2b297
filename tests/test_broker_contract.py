"""One contract, every broker (memory, beanstalkd)."""
from __future__ import annotations

import threading
import time

import greenstalk
import pytest

from jobkit.brokers import Broker, broker_from_url
from jobkit.embedded import Beanstalkd, free_port
from jobkit.errors import BrokerUnavailable, ConfigError
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
    assert second is not None and second.broker_id in ids and second.broker_id != first.broker_id
    assert broker.peek(first.broker_id) is None
    consumer.delete_nowait(second)
    consumer.close()
    assert broker.peek(second.broker_id) is None
    other = broker.consumer([queue])
    third = other.reserve(1)
    assert third is not None and third.broker_id in ids
    other.delete_nowait(third)
    other.interrupt()
    other.close()
    eventually(lambda: broker.peek(third.broker_id) is None, what="the delete sent by interrupt()")


def test_reserve_times_out_empty(broker: Broker, queue: str) -> None:
    consumer = broker.consumer([queue])
    started = time.monotonic()
    assert consumer.reserve(1) is None
    assert time.monotonic() - started >= 0.9
    consumer.close()


def test_priority_orders_reserves(broker: Broker, queue: str) -> None:
    """A more urgent job is reserved first: among the jobs of one server, in a cluster.

    (A cluster's ids name their server before the "/"; three lows then three
    highs put round-robin give each of its servers a low, then a high.)
    """
    for priority in (2000, 2000, 2000, 5, 5, 5):
        put(broker, queue, b"%d" % priority, priority=priority)
    consumer = broker.consumer([queue])
    taken = [consumer.reserve(1) for _ in range(6)]
    by_server: dict[str, list[bytes]] = {}
    for delivery in taken:
        assert delivery is not None
        by_server.setdefault(str(delivery.broker_id).rpartition("/")[0], []).append(delivery.body)
    for bodies in by_server.values():
        assert bodies == sorted(bodies, key=len), "the more urgent (b'5') before the less (b'2000')"
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
    ids = [put(broker, queue), put(broker, queue)]
    consumer = broker.consumer([queue])
    delivery = consumer.reserve(1)
    assert delivery is not None and delivery.broker_id in ids
    held = delivery.broker_id
    ready = ids[1 - ids.index(held)]
    assert broker.delete(held) is False  # reserved by a consumer
    assert broker.delete(ready) is True
    assert broker.delete(ready) is False
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
