"""What the Redis and RabbitMQ brokers do beyond the shared contract (tests/test_broker_contract.py)."""
from __future__ import annotations

import time

import pytest

from jobkit.brokers import Broker, broker_from_url
from jobkit.brokers.base import PEEK, PRIORITY, TOUCH
from jobkit.brokers.kombu import delay_queue
from jobkit.embedded import free_port
from jobkit.errors import BrokerUnavailable, ConfigError, Unsupported
from tests.brokerservers import RabbitServer, RedisServer


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
