"""Redis broker: beanstalkd's model kept in Redis by atomic Lua scripts.

URL: ``redis://[:password@]host:6379/0`` (``rediss://`` for TLS); options in
the query string: ``prefix`` (key prefix, default ``jobkit:``). Standalone
Redis (or a primary with replicas), not Redis Cluster. See
:mod:`jobkit.brokers.kombu` for the broker table; the script keys are
described in :mod:`jobkit.brokers.redis_scripts`.

Every capability is declared: peek, delete and kick by id, touch, delay,
priority (beanstalkd's full 0..2**32-1 range, FIFO within a priority) and
stats. A reservation is a TTR deadline per message on the server's clock, not
a visibility timeout per connection: a consumer that dies without closing
gives its messages back when their TTR runs out; one that closes gives them
back at once. Durability is Redis's: run it with ``appendonly yes`` and
``appendfsync always`` so a put that returned survives a crash of Redis.
"""
from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit, urlunsplit

import redis

from jobkit.brokers import redis_scripts as lua
from jobkit.brokers.base import (DELAY, DELETE, KICK, PEEK, PRIORITY, QUEUE_STATS_KEYS, STATS,
                                 TOUCH, Broker, Consumer, Delivery, Peeked)
from jobkit.errors import BrokerConnectionLost, BrokerError, BrokerUnavailable, ConfigError

#: The longest one blocking wait lasts before a consumer looks again (seconds).
WAIT_SLICE_S = 1.0
CONNECT_TIMEOUT_S = 2.0


def _client(url: str, max_connections: int) -> tuple[redis.Redis, str]:
    """A redis-py client for ``url`` (without jobkit's own options) and the key prefix."""
    parts = urlsplit(url)
    options = parse_qs(parts.query)
    prefix = options.pop("prefix", ["jobkit:"])[0]
    if options:
        raise ConfigError(f"unknown redis broker option(s) {sorted(options)} in {url!r}: known: prefix")
    plain = urlunsplit(parts._replace(query=""))
    try:
        client = redis.Redis.from_url(plain, socket_connect_timeout=CONNECT_TIMEOUT_S,
                                      socket_timeout=WAIT_SLICE_S + 10, max_connections=max_connections)
    except ValueError as exc:
        raise ConfigError(f"bad redis broker URL {url!r}: {exc}") from None
    return client, prefix


@contextmanager
def _wrapped(lost: bool = False) -> Iterator[None]:
    """Turn redis-py errors into jobkit's; ``lost`` when an established connection broke."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise (BrokerConnectionLost if lost else BrokerUnavailable)(f"redis: {exc}") from None
    except redis.RedisError as exc:
        raise BrokerError(f"redis: {exc}") from None


class _Scripts:
    """The Lua scripts registered on one client; each call passes the key prefix first."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.prefix = prefix
        self._scripts = {name: client.register_script(getattr(lua, name))
                         for name in ("PUT", "RESERVE", "UNWAIT", "DELETE_HELD", "RELEASE", "BURY",
                                      "TOUCH", "DROP", "DELETE_FREE", "KICK", "PEEK", "STATS")}

    def __call__(self, name: str, *args: str | int | bytes) -> Any:
        return self._scripts[name](args=[self.prefix, *args])


class RedisBroker(Broker):
    """Producer side over one thread-safe redis-py connection pool."""

    capabilities: ClassVar[frozenset[str]] = frozenset({PEEK, DELETE, KICK, TOUCH, DELAY, PRIORITY, STATS})

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self._client, prefix = _client(url, max_connections=64)
        self._run = _Scripts(self._client, prefix)

    def put(self, body: bytes, *, queue: str, priority: int, delay_s: int, ttr_s: int) -> str:
        with _wrapped():
            return str(self._run("PUT", queue, body, priority, max(0, delay_s), max(1, ttr_s)).decode())

    def consumer(self, queues: Sequence[str]) -> Consumer:
        return RedisConsumer(self.url, queues)

    def peek(self, broker_id: str) -> Peeked | None:
        with _wrapped():
            reply = self._run("PEEK", broker_id)
        if not reply:
            return None
        now, due = int(reply[0]), reply[1]
        fields = {reply[i].decode(): reply[i + 1] for i in range(2, len(reply), 2)}
        return Peeked(broker_id, bytes(fields["body"]), _job_stats(broker_id, fields, now, due))

    def peek_buried(self, queue: str) -> Peeked | None:
        with _wrapped():
            oldest: list[Any] = list(self._client.zrange(f"{self._run.prefix}q:{queue}:buried", 0, 0))
        return self.peek(bytes(oldest[0]).decode()) if oldest else None

    def delete(self, broker_id: str) -> bool:
        with _wrapped():
            return bool(self._run("DELETE_FREE", broker_id))

    def kick(self, broker_id: str) -> bool:
        with _wrapped():
            return bool(self._run("KICK", broker_id))

    def stats(self) -> dict[str, dict[str, int]]:
        with _wrapped():
            flat = self._run("STATS")
        width = len(QUEUE_STATS_KEYS) + 1
        return {flat[i].decode(): dict(zip(QUEUE_STATS_KEYS, map(int, flat[i + 1:i + width]), strict=True))
                for i in range(0, len(flat), width)}

    def ping(self) -> None:
        with _wrapped():
            self._client.ping()

    def close(self) -> None:
        self._client.close()


def _job_stats(broker_id: str, fields: dict[str, bytes], now: int, due: bytes) -> dict[str, Any]:
    """beanstalkd's ``stats-job`` fields from a message hash (times in seconds)."""
    number = {key: int(fields.get(key, b"0")) for key in
              ("pri", "ttr", "delay", "created", "reserves", "timeouts", "releases", "buries", "kicks")}
    left = max(0, (int(float(due)) - now) // 1000) if due else 0
    return {"id": broker_id, "tube": fields["queue"].decode(), "state": fields["state"].decode(),
            "pri": number["pri"], "age": (now - number["created"]) // 1000, "delay": number["delay"],
            "ttr": number["ttr"], "time-left": left, "file": 0,
            **{key: number[key] for key in ("reserves", "timeouts", "releases", "buries", "kicks")}}


class RedisConsumer(Consumer):
    """One consumer: reserves by script, waits on the queues' signal lists with BLPOP.

    Its holder token (a random id plus the message's reserve count) is what
    the settle scripts check, so a delivery whose TTR ran out and that another
    consumer took is no longer this one's to settle.
    """

    def __init__(self, url: str, queues: Sequence[str]) -> None:
        self.queues = list(queues)
        self.token = uuid.uuid4().hex
        self._client, prefix = _client(url, max_connections=4)
        self._run = _Scripts(self._client, prefix)
        self._signals = [f"{prefix}q:{q}:signal" for q in self.queues]
        self._wake_key = f"{prefix}wake:{self.token}"
        self._held: dict[str, str] = {}  # broker id -> holder
        self._interrupted = threading.Event()
        self._connected = False
        self._closing = threading.Lock()  # interrupt() against close() (see interrupt)
        self._closed = False

    def reserve(self, timeout_s: float) -> Delivery | None:
        deadline = time.monotonic() + max(0.0, timeout_s)
        while not self._interrupted.is_set():
            wait_ms = int(min(WAIT_SLICE_S, max(0.0, deadline - time.monotonic())) * 1000)
            with _wrapped(lost=self._connected):
                reply = self._run("RESERVE", self.token, wait_ms, *self.queues)
                self._connected = True
            if reply[0]:
                return self._delivery(reply)
            if wait_ms <= 0:
                break
            self._block(min(int(reply[1]), wait_ms) / 1000)
        self._unwait()
        return None

    def _delivery(self, reply: list[Any]) -> Delivery:
        broker_id, reserves = reply[0].decode(), int(reply[2])
        self._held[broker_id] = f"{self.token}:{reserves}"
        return Delivery(broker_id, bytes(reply[1]), session=reserves, lost=int(reply[3]))

    def _block(self, wait_s: float) -> None:
        """Wait for a put's signal, an interrupt, or ``wait_s`` (BLPOP's 0 would mean forever)."""
        with _wrapped(lost=True):
            self._client.blpop([*self._signals, self._wake_key], timeout=max(0.01, wait_s))

    def _unwait(self) -> None:
        """Leave the queues' waiting sets (else they count this consumer for a few seconds more)."""
        self._quietly(lambda: self._run("UNWAIT", self.token, *self.queues))

    def _settle(self, name: str, delivery: Delivery, *args: str | int) -> bool:
        """Run a settle script; False when the message is no longer this consumer's.

        Also False when Redis cannot be reached: the message stays reserved
        and comes back when its TTR runs out.
        """
        holder = self._held.pop(delivery.broker_id, None)
        if holder is None or holder != f"{self.token}:{delivery.session}":
            return False
        return self._held_script(name, delivery.broker_id, holder, *args)

    def _held_script(self, name: str, broker_id: str, holder: str, *args: str | int) -> bool:
        try:
            with _wrapped(lost=True):
                return bool(self._run(name, broker_id, holder, *args))
        except BrokerConnectionLost:
            return False

    def delete(self, delivery: Delivery) -> bool:
        return self._settle("DELETE_HELD", delivery)

    def release(self, delivery: Delivery, *, priority: int, delay_s: int) -> bool:
        return self._settle("RELEASE", delivery, priority, max(0, delay_s))

    def bury(self, delivery: Delivery, *, priority: int) -> bool:
        return self._settle("BURY", delivery, priority)

    def touch(self, delivery: Delivery) -> bool:
        holder = self._held.get(delivery.broker_id)
        if holder is None:
            return False
        return self._held_script("TOUCH", delivery.broker_id, holder)

    def releases(self, delivery: Delivery) -> int | None:
        """The message's ``releases`` counter; None when this consumer no longer holds it."""
        holder = self._held.get(delivery.broker_id)
        if holder is None or holder != f"{self.token}:{delivery.session}":
            return None
        try:
            with _wrapped(lost=True):
                now, count = self._client.hmget(f"{self._run.prefix}m:{delivery.broker_id}",
                                                ["holder", "releases"])
        except BrokerConnectionLost:
            return None
        return int(count) if now == holder.encode() and count is not None else None

    def interrupt(self) -> None:
        """Wake a blocked reserve (its BLPOP also watches this consumer's wake key).

        Called from another thread, so it may meet :meth:`close` on the
        reserving thread: the lock keeps close from closing the connection
        pool under the push (redis-py is not safe against that), and a
        closed consumer needs no wake-up.
        """
        self._interrupted.set()
        with self._closing:
            if not self._closed:
                self._quietly(lambda: self._client.lpush(self._wake_key, 1) and
                              self._client.expire(self._wake_key, 10))

    def close(self) -> None:
        """Give back what this consumer still holds (each counts as a lost delivery)."""
        held, self._held = self._held, {}
        for broker_id, holder in held.items():
            self._quietly(partial(self._run, "DROP", broker_id, holder))
        self._quietly(lambda: self._run("UNWAIT", self.token, *self.queues))
        with self._closing:
            self._closed = True
            self._client.close()

    @staticmethod
    def _quietly(call: Callable[[], object]) -> None:
        """Best effort: when Redis is down, held messages come back by their TTR instead."""
        try:
            call()
        except redis.RedisError:
            pass
