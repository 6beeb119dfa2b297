"""What the Redis and RabbitMQ brokers do beyond the shared contract (tests/test_broker_contract.py)."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable

import pytest

from jobkit.brokers import Broker, broker_from_url
from jobkit.brokers.base import PEEK, PRIORITY, TOUCH, Outgoing
from jobkit.brokers import kombu as kombu_broker
from jobkit.brokers.kombu import delay_queue
from jobkit.embedded import free_port
from jobkit.errors import BrokerUnavailable, BrokerUnconfirmed, ConfigError, Unsupported
from tests.brokerservers import RabbitServer, RedisServer
from tests.faultkit import TcpProxy
from tests.helpers import eventually


def put(broker: Broker, queue: str, body: bytes = b"x", *, delay_s: int = 0, ttr_s: int = 60) -> str:
    return broker.put(body, queue=queue, priority=1024, delay_s=delay_s, ttr_s=ttr_s)


@pytest.mark.parametrize("url", ["redis://127.0.0.1:{port}/0", "amqp://guest:guest@127.0.0.1:{port}//"])
def test_a_broker_that_is_down_is_unavailable_at_once(url: str) -> None:
    broker = broker_from_url(url.format(port=free_port()))
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        put(broker, "default")
    with pytest.raises(BrokerUnavailable):
        broker.consumer(["default"]).reserve(1)
    assert time.monotonic() - started < 6


def test_redis_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="prefix"):
        broker_from_url("redis://127.0.0.1:1/0?visibility_timeout=5")


def test_redis_prefix_keeps_two_apps_apart(redis_server: RedisServer, queue: str) -> None:
    one = broker_from_url(redis_server.url + "?prefix=one:")
    two = broker_from_url(redis_server.url + "?prefix=two:")
    put(one, queue)
    assert two.consumer([queue]).reserve(0) is None
    assert one.consumer([queue]).reserve(0) is not None


def test_redis_counts_lost_deliveries(redis_server: RedisServer, queue: str) -> None:
    """A consumer that closes holding a message, or whose TTR runs out, is a lost delivery."""
    broker = broker_from_url(redis_server.url)
    put(broker, queue, ttr_s=2)
    first = broker.consumer([queue])
    assert (d := first.reserve(1)) is not None and d.lost == 0
    first.close()
    second, third = broker.consumer([queue]), broker.consumer([queue])
    assert (d := second.reserve(1)) is not None and d.lost == 1
    assert (d := third.reserve(5)) is not None and d.lost == 2  # second's TTR ran out
    assert third.release(d, priority=1, delay_s=0)  # a release is no loss
    assert (d := third.reserve(1)) is not None and d.lost == 2
    third.close()
    second.close()


def test_redis_priorities_span_beanstalkds_range(redis_server: RedisServer, queue: str) -> None:
    broker = broker_from_url(redis_server.url)
    assert broker.can(PRIORITY)
    for priority in (2**32 - 1, 0, 2**31, 1):
        broker.put(b"%d" % priority, queue=queue, priority=priority, delay_s=0, ttr_s=60)
    consumer = broker.consumer([queue])
    bodies = [d.body for d in iter(lambda: consumer.reserve(0), None)]
    assert bodies == [b"0", b"1", b"%d" % 2**31, b"%d" % (2**32 - 1)]
    consumer.close()


def test_amqp_declares_only_what_it_has(rabbitmq_server: RabbitServer, queue: str) -> None:
    broker = broker_from_url(rabbitmq_server.url)
    assert not broker.can(PEEK) and not broker.can(TOUCH) and not broker.can(PRIORITY)
    with pytest.raises(Unsupported, match="amqp://"):
        broker.peek("x")
    consumer = broker.consumer([queue])
    put(broker, queue)
    delivery = consumer.reserve(2)
    assert delivery is not None
    with pytest.raises(Unsupported):
        consumer.touch(delivery)
    consumer.close()


def test_amqp_counts_lost_deliveries_across_releases(rabbitmq_server: RabbitServer, queue: str) -> None:
    """RabbitMQ's x-delivery-count, plus a header carried when a message is published again."""
    broker = broker_from_url(rabbitmq_server.url)
    put(broker, queue)
    first = broker.consumer([queue])
    assert (d := first.reserve(2)) is not None and d.lost == 0
    first.close()  # its connection ends: the message returns, a lost delivery
    second = broker.consumer([queue])
    assert (d := second.reserve(2)) is not None and d.lost == 1
    assert second.release(d, priority=1, delay_s=0)
    assert (d := second.reserve(2)) is not None and d.lost == 1
    assert second.delete(d)
    second.close()


def test_amqp_short_delay_is_not_stuck_behind_a_long_one(rabbitmq_server: RabbitServer, queue: str) -> None:
    """Per-message TTLs expire only at a queue's head: each delay bucket is its own queue."""
    assert delay_queue(queue, 1) == f"{queue}.delay.1" and delay_queue(queue, 3) == f"{queue}.delay.4"
    broker = broker_from_url(rabbitmq_server.url)
    put(broker, queue, b"long", delay_s=600)
    put(broker, queue, b"short", delay_s=1)
    consumer = broker.consumer([queue])
    delivery = consumer.reserve(10)
    assert delivery is not None and delivery.body == b"short"
    assert broker.stats()[queue]["delayed"] == 1
    consumer.close()


def test_amqp_settling_after_the_connection_broke_is_false(rabbitmq_server: RabbitServer, queue: str) -> None:
    broker = broker_from_url(rabbitmq_server.url)
    put(broker, queue)
    consumer = broker.consumer([queue])
    delivery = consumer.reserve(2)
    assert delivery is not None
    consumer.close()
    assert consumer.delete(delivery) is False
    again = broker.consumer([queue])
    assert (d := again.reserve(2)) is not None and d.broker_id == delivery.broker_id
    again.close()


def finishes(call: Callable[[], None], what: str, within_s: float = 30) -> None:
    """Run ``call`` in a thread; fail with ``what`` when it is still running after ``within_s``."""
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(within_s)
    assert not thread.is_alive(), what


@pytest.mark.parametrize("many", [False, True])
def test_amqp_a_publish_never_confirmed_is_unconfirmed_not_a_hang(
        rabbitmq_server: RabbitServer, queue: str, monkeypatch: pytest.MonkeyPatch, many: bool) -> None:
    """RabbitMQ takes the message but its confirm never comes back (cut off, or blocked).

    The put fails as unconfirmed (RabbitMQ may hold the message: here it
    does) within the confirm timeout instead of waiting for ever, and the
    next put uses a new connection, not one a late confirm could still reach.
    """
    monkeypatch.setattr(kombu_broker, "ANSWER_TIMEOUT_S", 1.0)
    proxy = TcpProxy(("127.0.0.1", rabbitmq_server.port))
    broker = broker_from_url(f"amqp://guest:guest@127.0.0.1:{proxy.port}//")
    outcome: list[BaseException | str] = []

    def send() -> None:
        try:
            if many:
                outcome.extend(broker.put_many([Outgoing(b"unanswered", queue, 1024, 0, 60)] * 3))
            else:
                outcome.append(put(broker, queue, b"unanswered"))
        except BaseException as exc:  # noqa: BLE001 - looked at below
            outcome.append(exc)

    try:
        put(broker, queue, b"first")  # connected, the queue declared, confirms flowing
        proxy.hold_answers()
        finishes(send, "the put still waits for a confirm")
        assert len(outcome) == 1 and isinstance(outcome[0], BrokerUnconfirmed), outcome
        proxy.hold_answers(False)
        assert put(broker, queue, b"after")  # on a new connection
        eventually(lambda: broker.stats()[queue]["ready"] == 2 + (3 if many else 1))  # it was taken
    finally:
        broker.close()
        proxy.close()


def test_amqp_a_silent_node_fails_other_calls_too(rabbitmq_server: RabbitServer, queue: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Closing and counting wait for RabbitMQ's answers a bounded time each, then give up or fail."""
    monkeypatch.setattr(kombu_broker, "ANSWER_TIMEOUT_S", 1.0)
    proxy = TcpProxy(("127.0.0.1", rabbitmq_server.port))
    broker = broker_from_url(f"amqp://guest:guest@127.0.0.1:{proxy.port}//")
    outcome: list[BaseException | dict[str, dict[str, int]]] = []

    def close_then_count() -> None:
        broker.close()  # its idle link's close handshake is never answered
        try:
            outcome.append(broker.stats())  # a new link, whose opening is never answered
        except BaseException as exc:  # noqa: BLE001 - looked at below
            outcome.append(exc)

    try:
        put(broker, queue)
        assert broker.stats()[queue]["ready"] == 1
        proxy.hold_answers()
        finishes(close_then_count, "still waiting for RabbitMQ")
        assert len(outcome) == 1 and isinstance(outcome[0], BrokerUnavailable), outcome
    finally:
        proxy.close()


def test_amqp_put_many_sends_what_put_sends_and_waits_for_every_confirm(
        rabbitmq_server: RabbitServer, queue: str) -> None:
    """Pipelined publishes (one wait for the confirms) carry the same properties as a put's."""
    broker = broker_from_url(rabbitmq_server.url)
    single = put(broker, queue, b"one")
    many = broker.put_many([Outgoing(b"m%d" % i, queue, 1024, 0, 60) for i in range(300)])
    assert len(set(many)) == 300 and single not in many
    assert broker.stats()[queue]["ready"] == 301  # confirmed: every message is in the queue
    # (stats declared missing queues passively: a new channel, whose publishes number from 1 again)
    with broker._link() as link:  # type: ignore[attr-defined]
        first, second = (link.channel.basic_get(queue, no_ack=False) for _ in range(2))
        for message in (first, second):
            link.channel.basic_reject(message.delivery_tag, requeue=True)
    assert (first.body, second.body) == (b"one", b"m0")
    assert first.properties["message_id"] == single and second.properties["message_id"] == many[0]
    assert ({k: v for k, v in first.properties.items() if k != "message_id"}
            == {k: v for k, v in second.properties.items() if k != "message_id"})
    delayed = broker.put_many([Outgoing(b"later", queue + "d", 1024, 1, 60)])
    consumer = broker.consumer([queue + "d"])
    assert consumer.reserve(0) is None
    delivery = consumer.reserve(5)  # released by RabbitMQ from the 1 s delay queue
    assert delivery is not None and delivery.body == b"later" and delivery.broker_id == delayed[0]
    consumer.close()
    broker.close()


def test_amqp_put_many_counts_confirms_read_while_it_publishes(rabbitmq_server: RabbitServer,
                                                               queue: str) -> None:
    """py-amqp reads frames inside a publish too: a confirm read there must still count.

    With consumers in another process taking the messages at once, RabbitMQ
    confirms the first publishes of a batch while later ones are still being
    written; a batch that waited only for the confirms its own wait read
    never finished.
    """
    consumers = subprocess.Popen([sys.executable, "-c", CONSUMERS, rabbitmq_server.url, queue])
    broker = broker_from_url(rabbitmq_server.url)
    sent: list[str] = []

    def produce() -> None:
        for _ in range(40):
            sent.extend(broker.put_many([Outgoing(b"x", queue, 1024, 0, 60)] * 100))

    producer = threading.Thread(target=produce, daemon=True)
    try:
        producer.start()
        producer.join(60)
        assert not producer.is_alive(), f"put_many still waits for confirms after {len(sent)} messages"
        assert len(sent) == 4000
        eventually(lambda: broker.stats()[queue]["ready"] == 0, timeout_s=30, what="every message consumed")
    finally:
        consumers.kill()
        consumers.wait()
        broker.close()


CONSUMERS = """
import sys, threading
from jobkit.brokers import broker_from_url
broker = broker_from_url(sys.argv[1])
def consume():
    consumer = broker.consumer([sys.argv[2]])
    while True:
        delivery = consumer.reserve(1)
        if delivery is not None:
            consumer.delete(delivery)
for _ in range(8):
    threading.Thread(target=consume).start()
"""
