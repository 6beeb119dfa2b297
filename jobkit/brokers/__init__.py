"""Brokers: where jobs wait for workers. See :mod:`jobkit.brokers.base`."""
from __future__ import annotations

from urllib.parse import urlsplit

from jobkit.brokers.base import Broker, Consumer, Delivery, Peeked
from jobkit.urls import load_class, scheme_of

#: URL scheme -> implementation, imported only when its scheme is used.
BROKERS = {
    "beanstalk": "jobkit.brokers.beanstalk:BeanstalkBroker",
    "memory": "jobkit.brokers.memory:MemoryBroker",
    "redis": "jobkit.brokers.redis_broker:RedisBroker",
    "amqp": "jobkit.brokers.kombu:AMQPBroker",
}
#: URL scheme -> implementation when the URL lists several hosts (``beanstalk://h1:p1,h2:p2``).
CLUSTERS = {"beanstalk": "jobkit.brokers.cluster:BeanstalkCluster"}


def broker_from_url(url: str) -> Broker:
    """Create the broker for ``url`` (nothing connects until it is first used).

    Raises:
        ConfigError: unknown scheme or malformed URL.
    """
    several = scheme_of(url) in CLUSTERS and "," in urlsplit(url).netloc
    broker: Broker = load_class(url, CLUSTERS if several else BROKERS, "broker")(url)
    return broker


__all__ = ["BROKERS", "Broker", "Consumer", "Delivery", "Peeked", "broker_from_url"]
