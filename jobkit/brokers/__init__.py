"""Brokers: where jobs wait for workers. See :mod:`jobkit.brokers.base`."""
from __future__ import annotations

from jobkit.brokers.base import Broker, Consumer, Delivery, Peeked
from jobkit.urls import load_class

#: URL scheme -> implementation, imported only when its scheme is used.
BROKERS = {
    "beanstalk": "jobkit.brokers.beanstalk:BeanstalkBroker",
    "memory": "jobkit.brokers.memory:MemoryBroker",
    "redis": "jobkit.brokers.redis_broker:RedisBroker",
    "amqp": "jobkit.brokers.kombu:AMQPBroker",
}


def broker_from_url(url: str) -> Broker:
    """Create the broker for ``url`` (nothing connects until it is first used).

    Raises:
        ConfigError: unknown scheme or malformed URL.
    """
    broker: Broker = load_class(url, BROKERS, "broker")(url)
    return broker


__all__ = ["BROKERS", "Broker", "Consumer", "Delivery", "Peeked", "broker_from_url"]
