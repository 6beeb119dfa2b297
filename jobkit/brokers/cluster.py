"""A cluster of independent beanstalkd servers, distributed client-side (beanstalkd's FAQ).

URL: ``beanstalk://h1:p1,h2:p2,…`` (two hosts or more; each host follows the
one-server URL's rules: port 11300 by default; ``connect_timeout=<seconds>``
in the query applies to every server). A one-host URL is the plain
:class:`~jobkit.brokers.beanstalk.BeanstalkBroker`.

Features: all of beanstalkd's (peek, delete, kick, touch, delay, priority,
stats), each job on one server:

- **Puts** go round-robin over the servers. A server whose put fails is
  marked down for a short backoff (0.5 s, doubling to 5 s) and the put goes to
  the next one; :class:`~jobkit.errors.BrokerUnavailable` only when every
  server failed. A put that failed after it was sent (no answer in time) may
  still have been stored by that server; it is put on the next server all the
  same: delivery is at-least-once, and the job id dedupes at the worker (a
  copy whose record is finished is deleted without running).
- **Broker ids** are ``"<host>:<port>/<id on that server>"``: peek, delete
  and kick go to the server named there. An id naming no server of the URL
  (a server removed, or a record from before the cluster) is "gone".
- **A consumer** keeps one connection per server, each with a thread that
  blocks in ``reserve-with-timeout`` only while the consumer's caller waits in
  :meth:`ClusterConsumer.reserve`: no polling, and no job is held reserved for
  a caller who is busy. A job reserved by a server's wait that outlasted the
  caller's (another server answered first) is released at once, same
  priority, no delay. Delete, release, bury and touch go over the connection
  that reserved the job. A server that dies is reconnected in the background
  with backoff (0.1 s, doubling to 5 s); after a restart on its binlog its
  jobs come back to the workers.
- **Stats** add up per queue over the servers that answer; **ping** succeeds
  when at least one server answers (the cluster takes puts while one does).

Guarantees: a job lives on one server (a server lost for good without its
binlog loses its jobs); priorities and FIFO order hold within a server, not
across servers.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import TypeVar
from urllib.parse import urlsplit, urlunsplit

from jobkit.brokers.base import ALL_CAPABILITIES, Broker, Consumer, Peeked
from jobkit.brokers.beanstalk import BeanstalkBroker, parse_url
from jobkit.brokers.cluster_consumer import Backoff, ClusterConsumer
from jobkit.errors import BrokerUnavailable, ConfigError

T = TypeVar("T")
PUT_BACKOFF_S = (0.5, 5.0)  # a server whose put failed is skipped this long (first, longest)


def parse_cluster_url(url: str) -> list[tuple[str, str]]:
    """Return ``(name, one-server URL)`` for each host of ``beanstalk://h1:p1,h2:p2,…``.

    The name is ``host:port`` (the default port filled in), as broker ids carry it.

    Raises:
        ConfigError: fewer than two hosts, an empty or repeated host, or a
            host the one-server URL rules refuse.
    """
    parts = urlsplit(url)
    servers: list[tuple[str, str]] = []
    for entry in parts.netloc.split(","):
        if not entry.strip():
            raise ConfigError(f"bad beanstalk URL {url!r}: an empty host in the list")
        one = urlunsplit((parts.scheme, entry.strip(), parts.path, parts.query, ""))
        (host, port), _ = parse_url(one)
        name = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if name in (known for known, _ in servers):
            raise ConfigError(f"bad beanstalk URL {url!r}: {name} is listed twice")
        servers.append((name, one))
    if len(servers) < 2:
        raise ConfigError(f"bad beanstalk URL {url!r}: a cluster lists two hosts or more")
    return servers


class _Member:
    """One server as the producer side sees it: its broker and whether puts should skip it."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.broker = BeanstalkBroker(url)
        self.down_until = 0.0  # monotonic seconds; skipped (tried last) until then
        self.backoff = Backoff(PUT_BACKOFF_S)

    def down(self) -> bool:
        return time.monotonic() < self.down_until

    def mark(self, up: bool) -> None:
        if up:
            self.down_until = 0.0
            self.backoff.reset()
        else:
            self.down_until = time.monotonic() + self.backoff.take()


class BeanstalkCluster(Broker):
    """Several independent beanstalkd servers as one broker (see the module docstring)."""

    capabilities = ALL_CAPABILITIES

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.members = [_Member(name, one) for name, one in parse_cluster_url(url)]
        self._by_name = {member.name: member for member in self.members}
        self._turn = 0
        self._lock = threading.Lock()

    def _rotation(self) -> list[_Member]:
        """Every server, the next one in turn first and those marked down last."""
        with self._lock:
            start, self._turn = self._turn, (self._turn + 1) % len(self.members)
        rotated = self.members[start:] + self.members[:start]
        return sorted(rotated, key=_Member.down)  # stable: the round-robin order stays

    def _named(self, broker_id: str) -> tuple[_Member, str] | None:
        name, _, inner = broker_id.rpartition("/")
        member = self._by_name.get(name)
        return None if member is None or not inner else (member, inner)

    def _on_each(self, action: Callable[[_Member], T], *, first_only: bool = False) -> list[T]:
        """``action`` on the servers in turn, skipping those marked down once one has answered.

        Raises:
            BrokerUnavailable: no server answered.
        """
        answers: list[T] = []
        errors: list[str] = []
        for member in self._rotation():
            if answers and (first_only or member.down()):
                break  # the rotation puts the servers marked down last
            try:
                answers.append(action(member))
            except BrokerUnavailable as exc:
                member.mark(up=False)
                errors.append(str(exc))
        if not answers:
            raise BrokerUnavailable("no beanstalkd server of the cluster answers: " + "; ".join(errors))
        return answers

    def check_queue(self, name: str) -> str:
        return self.members[0].broker.check_queue(name)

    def put(self, body: bytes, *, queue: str, priority: int, delay_s: int, ttr_s: int) -> str:
        """Put on the next server in turn; on the one after it when that one is down (see module)."""
        errors = []
        for member in self._rotation():
            try:
                inner = member.broker.put(body, queue=queue, priority=priority, delay_s=delay_s,
                                          ttr_s=ttr_s)
            except BrokerUnavailable as exc:
                member.mark(up=False)
                errors.append(str(exc))
                continue
            member.mark(up=True)
            return f"{member.name}/{inner}"
        raise BrokerUnavailable("every beanstalkd server of the cluster is down: " + "; ".join(errors))

    def consumer(self, queues: Sequence[str]) -> Consumer:
        return ClusterConsumer([(m.name, m.broker) for m in self.members], queues)

    def peek(self, broker_id: str) -> Peeked | None:
        named = self._named(broker_id)
        if named is None:
            return None
        member, inner = named
        return _renamed(member.name, member.broker.peek(inner))

    def peek_buried(self, queue: str) -> Peeked | None:
        """The buried message of ``queue`` that has waited longest, over every server that answers."""
        found = [_renamed(m.name, m.broker.peek_buried(queue)) for m in self.members
                 if not m.down()]
        buried = [peeked for peeked in found if peeked is not None]
        return max(buried, key=lambda p: p.stats.get("age") or 0, default=None)

    def delete(self, broker_id: str) -> bool:
        named = self._named(broker_id)
        return named is not None and named[0].broker.delete(named[1])

    def kick(self, broker_id: str) -> bool:
        named = self._named(broker_id)
        return named is not None and named[0].broker.kick(named[1])

    def stats(self) -> dict[str, dict[str, int]]:
        """Per-queue counts added up over the servers that answer (one down is left out)."""
        totals: dict[str, dict[str, int]] = {}
        for counts in self._on_each(lambda m: m.broker.stats()):
            for queue, row in counts.items():
                total = totals.setdefault(queue, {})
                for key, value in row.items():
                    total[key] = total.get(key, 0) + value
        return totals

    def ping(self) -> None:
        """Succeed when at least one server answers: the cluster takes puts while one does."""
        self._on_each(lambda m: m.broker.ping(), first_only=True)

    def close(self) -> None:
        for member in self.members:
            member.broker.close()


def _renamed(name: str, peeked: Peeked | None) -> Peeked | None:
    """A server's peeked message under its cluster id."""
    if peeked is None:
        return None
    broker_id = f"{name}/{peeked.broker_id}"
    return Peeked(broker_id, peeked.body, peeked.stats | {"id": broker_id})
