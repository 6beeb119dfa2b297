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

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from jobkit.brokers.base import (
    ALL_CAPABILITIES,
    DEFAULT_PRIORITY,
    Broker,
    Consumer,
    Delivery,
    Peeked,
)
from jobkit.brokers.beanstalk import BeanstalkBroker, parse_url
from jobkit.errors import BrokerError, BrokerUnavailable, ConfigError

T = TypeVar("T")
PUT_BACKOFF_S = (0.5, 5.0)  # a server whose put failed is skipped this long (first, longest)
RECONNECT_BACKOFF_S = (0.1, 5.0)  # a consumer's server reconnects after this long (first, longest)
JOIN_S = 10.0  # how long close() waits for a server thread to end


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


def _inner_id(text: str) -> Any:
    """A server's own id from its text: an int where it is one (the server's broker takes either)."""
    return int(text) if text.isdigit() else text


class _Backoff:
    """Pauses that double from ``first_s`` to ``longest_s``; :meth:`reset` after a success."""

    def __init__(self, limits: tuple[float, float]) -> None:
        self.first_s, self.longest_s = limits
        self.next_s = self.first_s

    def take(self) -> float:
        pause, self.next_s = self.next_s, min(self.next_s * 2, self.longest_s)
        return pause

    def reset(self) -> None:
        self.next_s = self.first_s


class _Member:
    """One server as the producer side sees it: its broker and whether puts should skip it."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.broker = BeanstalkBroker(url)
        self.down_until = 0.0  # monotonic seconds; skipped (tried last) until then
        self.backoff = _Backoff(PUT_BACKOFF_S)

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

    def _named(self, broker_id: str) -> tuple[_Member, Any] | None:
        name, _, inner = broker_id.rpartition("/")
        member = self._by_name.get(name)
        return None if member is None or not inner else (member, _inner_id(inner))

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


@dataclass
class _Want:
    """A caller waiting in :meth:`ClusterConsumer.reserve`, until ``deadline`` (monotonic)."""

    deadline: float
    delivery: Delivery | None = None


class _Server:
    """One server as one consumer sees it: its connection, and the thread that waits on it."""

    def __init__(self, name: str, producer: BeanstalkBroker, queues: Sequence[str]) -> None:
        self.name = name
        self.producer = producer  # to read a job's priority before giving it back
        self.inner = producer.consumer(queues)
        self.lock = threading.Lock()  # one command at a time on the connection
        self.healthy = True  # False from a failed command until a reserve succeeds again
        self.retry_at = 0.0  # monotonic time of the next reconnect attempt when not healthy
        self.backoff = _Backoff(RECONNECT_BACKOFF_S)
        self.pipelined = False  # a delete waits to go out with this connection's next command
        self.thread: threading.Thread | None = None

    def reserve(self, timeout_s: int) -> Delivery | None:
        """Reserve on this server (lock held); a failure marks it down instead of raising."""
        try:
            delivery = self.inner.reserve(timeout_s)
        except BrokerUnavailable:
            self.healthy = False
            self.retry_at = time.monotonic() + self.backoff.take()
            return None
        self.healthy, self.pipelined = True, False
        self.backoff.reset()
        if delivery is None:
            return None
        return Delivery(f"{self.name}/{delivery.broker_id}", delivery.body, delivery.session,
                        delivery.lost)

    def give_back(self, delivery: Delivery) -> None:
        """Release a job nobody waits for any more: ready again at once, at its own priority."""
        inner = _unwrapped(delivery)
        inner_id: Any = inner.broker_id  # an int for today's BeanstalkBroker, which takes either
        try:
            peeked = self.producer.peek(inner_id)
        except BrokerError:
            peeked = None
        priority = int(peeked.stats.get("pri") or DEFAULT_PRIORITY) if peeked else DEFAULT_PRIORITY
        self.inner.release(inner, priority=priority, delay_s=0)


def _unwrapped(delivery: Delivery) -> Delivery:
    """The server's own delivery inside a cluster delivery."""
    inner = _inner_id(delivery.broker_id.rpartition("/")[2])
    return Delivery(inner, delivery.body, delivery.session, delivery.lost)


class ClusterConsumer(Consumer):
    """Reserves from every server of a cluster; settles each job over the connection that reserved it.

    :meth:`reserve` first asks each idle, healthy server for a ready job
    without waiting (servers holding a pipelined delete first, so that it goes
    out); with nothing ready it posts a *want* and every server's thread
    blocks in ``reserve-with-timeout`` for the time left. The first job to
    arrive fills the want; a later one is given back (see the module).

    A caller that reserves with a timeout while it holds a job may see that
    job's settling wait for its server's blocked reserve (at most the
    timeout): the worker reserves with a timeout only when it holds nothing.
    """

    def __init__(self, servers: Sequence[tuple[str, BeanstalkBroker]], queues: Sequence[str]) -> None:
        self._servers = [_Server(name, producer, queues) for name, producer in servers]
        self._by_name = {server.name: server for server in self._servers}
        self._cond = threading.Condition()  # guards _want and _closed; wakes the server threads
        self._want: _Want | None = None
        self._closed = False
        self._turn = 0

    # -- reserving ------------------------------------------------------------

    def reserve(self, timeout_s: float) -> Delivery | None:
        self._check_open()
        self._start_threads()
        delivery = self._sweep()
        if delivery is None and not any(server.healthy for server in self._servers):
            raise BrokerUnavailable("no beanstalkd server of the cluster answers: "
                                    + ", ".join(server.name for server in self._servers))
        if delivery is not None or timeout_s <= 0:
            return delivery
        return self._wait(timeout_s)

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerUnavailable("consumer was interrupted")

    def _sweep(self) -> Delivery | None:
        """A job ready now on a healthy server whose connection is idle, or None."""
        self._turn = (self._turn + 1) % len(self._servers)
        rotated = self._servers[self._turn:] + self._servers[:self._turn]
        for server in sorted(rotated, key=lambda s: not s.pipelined):
            if not server.healthy or not server.lock.acquire(blocking=False):
                continue  # down (its thread reconnects), or its thread is waiting in a reserve
            try:
                delivery = server.reserve(0)
            finally:
                server.lock.release()
            if delivery is not None:
                return delivery
            if not server.healthy:
                self._wake()  # its thread starts reconnecting
        return None

    def _wait(self, timeout_s: float) -> Delivery | None:
        """Post a want, let the server threads wait on it, take the first job that fills it."""
        want = _Want(time.monotonic() + timeout_s)
        with self._cond:
            self._want = want
            self._cond.notify_all()
            self._cond.wait_for(lambda: want.delivery is not None or self._closed, timeout_s)
            self._want = None
        if want.delivery is None:
            self._check_open()
        return want.delivery

    def _start_threads(self) -> None:
        for server in self._servers:
            if server.thread is None:
                server.thread = threading.Thread(target=self._serve, args=(server,), daemon=True,
                                                 name=f"jobkit-cluster-{server.name}")
                server.thread.start()

    def _serve(self, server: _Server) -> None:
        """A server's thread: wait on its connection while a want is open; reconnect when down."""
        while (timeout_s := self._next_turn(server)) is not None:
            with server.lock:
                if self._closed:
                    return
                delivery = server.reserve(timeout_s)
                if delivery is not None and not self._fill(delivery):
                    server.give_back(delivery)

    def _next_turn(self, server: _Server) -> int | None:
        """Block until the server should reserve; return how long to wait (s), None when closed.

        A healthy server waits while a want is open; a server that is down
        tries to reconnect (a reserve without waiting) when its pause is over.
        """
        with self._cond:
            while not self._closed:
                now, want = time.monotonic(), self._want
                wanted = want is not None and want.delivery is None and want.deadline > now
                if not server.healthy and now < server.retry_at:
                    self._cond.wait(server.retry_at - now)
                elif wanted and want is not None:
                    return max(1, math.ceil(want.deadline - now))
                elif not server.healthy:
                    return 0
                else:
                    self._cond.wait()
        return None

    def _fill(self, delivery: Delivery) -> bool:
        """Hand ``delivery`` to the waiting caller; False when nobody waits for one now."""
        with self._cond:
            want = self._want
            if want is None or want.delivery is not None or self._closed:
                return False
            want.delivery = delivery
            self._cond.notify_all()
            return True

    # -- settling -------------------------------------------------------------

    def _server_of(self, delivery: Delivery) -> _Server | None:
        return self._by_name.get(delivery.broker_id.rpartition("/")[0])

    def _on_server(self, delivery: Delivery, command: Callable[[Consumer, Delivery], bool]) -> bool:
        """Run ``command`` over the connection that reserved ``delivery``; False when none did."""
        server = self._server_of(delivery)
        if server is None:
            return False
        with server.lock:
            return command(server.inner, _unwrapped(delivery))

    def delete(self, delivery: Delivery) -> bool:
        return self._on_server(delivery, lambda c, d: c.delete(d))

    def delete_nowait(self, delivery: Delivery) -> None:
        """Queue the delete on its server's connection; the next reserve there sends it."""
        server = self._server_of(delivery)
        if server is not None:
            with server.lock:
                server.inner.delete_nowait(_unwrapped(delivery))
                server.pipelined = True

    def release(self, delivery: Delivery, *, priority: int, delay_s: int) -> bool:
        return self._on_server(delivery, lambda c, d: c.release(d, priority=priority, delay_s=delay_s))

    def bury(self, delivery: Delivery, *, priority: int) -> bool:
        return self._on_server(delivery, lambda c, d: c.bury(d, priority=priority))

    def touch(self, delivery: Delivery) -> bool:
        return self._on_server(delivery, lambda c, d: c.touch(d))

    def lost_deliveries(self, delivery: Delivery) -> int:
        server = self._server_of(delivery)
        if server is None:
            return delivery.lost or 0
        with server.lock:
            return server.inner.lost_deliveries(_unwrapped(delivery))

    # -- ending ---------------------------------------------------------------

    def _wake(self, closing: bool = False) -> None:
        with self._cond:
            self._closed = self._closed or closing
            self._cond.notify_all()

    def interrupt(self) -> None:
        self._wake(closing=True)
        for server in self._servers:
            server.inner.interrupt()

    def close(self) -> None:
        """Close every connection; an idle one first sends its pipelined deletes and reads the answers."""
        self._wake(closing=True)
        for server in self._servers:
            if server.lock.acquire(blocking=False):
                try:
                    server.inner.close()
                finally:
                    server.lock.release()
            else:
                server.inner.interrupt()  # wakes its thread's reserve
        for server in self._servers:
            if server.thread is not None and server.thread is not threading.current_thread():
                server.thread.join(JOIN_S)
            server.inner.close()
