"""In-process broker with beanstalkd's semantics.

URL: ``memory://``; option ``capabilities=<comma list>|none`` narrows the
capabilities it declares (default: all of them: peek, delete, kick, touch,
delay, priority, stats), so that an app can be tried on the smallest broker
the boundary allows (``memory://?capabilities=none``): an undeclared one
raises :class:`~jobkit.errors.Unsupported`, and without ``priority``
messages come first in, first out. Queues, priorities, delays and TTR in seconds,
stats named as beanstalkd names them; a consumer that closes returns its
messages to ready. Broker ids are ``"1"``, ``"2"``, …; each delivery carries
how many earlier deliveries of its message were lost (:attr:`Delivery.lost`).
Any string is a queue name. For tests and for ``jobkit up`` on a machine
without beanstalkd: producer and workers must share the process, and nothing
survives it.
"""
from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from jobkit.brokers.base import (
    ALL_CAPABILITIES,
    DEFAULT_PRIORITY,
    DELAY,
    DELETE,
    KICK,
    PEEK,
    PRIORITY,
    STATS,
    TOUCH,
    Broker,
    Consumer,
    Delivery,
    Peeked,
)
from jobkit.errors import ConfigError, Unsupported


@dataclass
class _Message:
    id: str
    seq: int  # order of arrival: first in, first out among equal priorities
    body: bytes
    queue: str
    priority: int
    ttr_s: int
    created: float
    state: str = "ready"  # ready | delayed | reserved | buried
    ready_at: float = 0.0
    deadline: float = 0.0
    holder: object = None
    reserves: int = 0
    timeouts: int = 0
    releases: int = 0
    buries: int = 0
    kicks: int = 0
    lost: int = 0  # deliveries that ended unsettled: TTR ran out, or the consumer closed
    buried_at: float = 0.0
    delay_s: int = 0


class MemoryBroker(Broker):
    """beanstalkd's model in one process, guarded by one condition variable."""

    capabilities = ALL_CAPABILITIES

    def __init__(self, url: str = "memory://") -> None:
        super().__init__(url)
        setattr(self, "capabilities", _capabilities(url))  # noqa: B010 - per instance, from the URL
        self._cond = threading.Condition()
        self._messages: dict[str, _Message] = {}
        self._ready: dict[str, list[tuple[int, int, str]]] = {}  # queue -> heap of (priority, seq, id)
        self._ids = itertools.count(1)
        self._waiting: dict[str, int] = {}
        self._timed: list[tuple[float, str]] = []  # heap of (due, id): delays and TTR deadlines

    # -- producer side -------------------------------------------------------

    def put(self, body: bytes, *, queue: str, priority: int, delay_s: int, ttr_s: int) -> str:
        now = time.monotonic()
        priority = self._priority(priority, delay_s)
        with self._cond:
            seq = next(self._ids)
            msg = _Message(str(seq), seq, bytes(body), queue, priority, max(1, ttr_s), now)
            self._messages[msg.id] = msg
            self._ready.setdefault(queue, [])
            msg.delay_s = delay_s
            if delay_s > 0:
                msg.state, msg.ready_at = "delayed", now + delay_s
                self._schedule(msg.ready_at, msg)
            else:
                self._make_ready(msg)
            return msg.id

    def consumer(self, queues: Sequence[str]) -> Consumer:
        return MemoryConsumer(self, list(queues))

    def peek(self, broker_id: str) -> Peeked | None:
        self._require(PEEK, "look at a message by id")
        with self._cond:
            self._tick(time.monotonic())
            msg = self._messages.get(broker_id)
            return None if msg is None else self._peeked(msg)

    def peek_buried(self, queue: str) -> Peeked | None:
        self._require(PEEK, "look at its dead letters")
        with self._cond:
            buried = [m for m in self._messages.values() if m.queue == queue and m.state == "buried"]
            if not buried:
                return None
            return self._peeked(min(buried, key=lambda m: (m.buried_at, m.seq)))

    def delete(self, broker_id: str) -> bool:
        self._require(DELETE, "delete a message by id")
        with self._cond:
            msg = self._messages.get(broker_id)
            if msg is None or msg.state == "reserved":
                return False
            del self._messages[broker_id]
            return True

    def kick(self, broker_id: str) -> bool:
        self._require(KICK, "kick a message by id")
        with self._cond:
            msg = self._messages.get(broker_id)
            if msg is None or msg.state not in ("buried", "delayed"):
                return False
            msg.kicks += 1
            self._make_ready(msg)
            return True

    def stats(self) -> dict[str, dict[str, int]]:
        self._require(STATS, "count its queues")
        with self._cond:
            self._tick(time.monotonic())
            out = {q: dict.fromkeys(("ready", "reserved", "delayed", "buried", "urgent"), 0)
                   | {"total": 0, "waiting": self._waiting.get(q, 0)} for q in self._ready}
            for msg in self._messages.values():
                row = out[msg.queue]
                row[msg.state] += 1
                row["total"] += 1
                row["urgent"] += msg.state == "ready" and msg.priority < DEFAULT_PRIORITY
            return out

    def ping(self) -> None:
        """Always answers: it lives in this process."""

    def _require(self, capability: str, what: str) -> None:
        if capability not in self.capabilities:
            raise self._unsupported(what)

    def _priority(self, priority: int, delay_s: int) -> int:
        """The priority to order by; refuses a delay the broker was told it cannot hold."""
        if delay_s > 0:
            self._require(DELAY, "delay a message")
        return priority if PRIORITY in self.capabilities else DEFAULT_PRIORITY

    # -- shared with consumers (caller holds self._cond) ---------------------

    def _make_ready(self, msg: _Message) -> None:
        msg.state, msg.holder = "ready", None
        heapq.heappush(self._ready[msg.queue], (msg.priority, msg.seq, msg.id))
        self._cond.notify_all()

    def _schedule(self, due: float, msg: _Message) -> None:
        heapq.heappush(self._timed, (due, msg.id))

    def _tick(self, now: float) -> float | None:
        """Move due delayed messages and timed-out reservations to ready.

        Returns the seconds until the next such change, or None.
        """
        timed = self._timed
        while timed and timed[0][0] <= now:
            due, msg_id = heapq.heappop(timed)
            msg = self._messages.get(msg_id)
            if msg is None:
                continue
            if msg.state == "delayed" and msg.ready_at == due:
                self._make_ready(msg)
            elif msg.state == "reserved" and msg.deadline == due:
                msg.timeouts, msg.lost = msg.timeouts + 1, msg.lost + 1
                self._make_ready(msg)
        return timed[0][0] - now if timed else None

    def _pop_ready(self, queues: Sequence[str]) -> _Message | None:
        best: tuple[int, int, str] | None = None
        best_queue = ""
        for queue in queues:
            heap = self._ready.get(queue)
            while heap:
                priority, _, msg_id = heap[0]
                msg = self._messages.get(msg_id)
                if msg is not None and msg.state == "ready" and msg.priority == priority:
                    break
                heapq.heappop(heap)  # stale entry
            if heap and (best is None or heap[0] < best):
                best, best_queue = heap[0], queue
        if best is None:
            return None
        heapq.heappop(self._ready[best_queue])
        return self._messages[best[2]]

    def _peeked(self, msg: _Message) -> Peeked:
        now = time.monotonic()
        left = msg.deadline - now if msg.state == "reserved" else (
            msg.ready_at - now if msg.state == "delayed" else 0)
        stats: dict[str, Any] = {
            "id": msg.seq, "tube": msg.queue, "state": msg.state, "pri": msg.priority,
            "age": int(now - msg.created), "delay": msg.delay_s,
            "ttr": msg.ttr_s, "time-left": max(0, int(left)), "file": 0, "reserves": msg.reserves,
            "timeouts": msg.timeouts, "releases": msg.releases, "buries": msg.buries,
            "kicks": msg.kicks,
        }
        return Peeked(msg.id, msg.body, stats)


class MemoryConsumer(Consumer):
    """A consumer of a :class:`MemoryBroker`; holds messages until it settles them."""

    def __init__(self, broker: MemoryBroker, queues: list[str]) -> None:
        self.broker = broker
        self.queues = queues
        self._closed = False

    def reserve(self, timeout_s: float) -> Delivery | None:
        b = self.broker
        end = time.monotonic() + max(0.0, timeout_s)
        with b._cond:
            for queue in self.queues:
                b._ready.setdefault(queue, [])
                b._waiting[queue] = b._waiting.get(queue, 0) + 1
            try:
                while not self._closed:
                    now = time.monotonic()
                    nearest = b._tick(now)
                    msg = b._pop_ready(self.queues)
                    if msg is not None:
                        msg.state, msg.holder = "reserved", self
                        msg.deadline, msg.reserves = now + msg.ttr_s, msg.reserves + 1
                        b._schedule(msg.deadline, msg)
                        return Delivery(msg.id, msg.body, lost=msg.lost)
                    if now >= end:
                        return None
                    b._cond.wait(min(end - now, nearest if nearest is not None else end - now))
            finally:
                for queue in self.queues:
                    b._waiting[queue] -= 1
        return None

    def _held(self, delivery: Delivery) -> _Message | None:
        msg = self.broker._messages.get(delivery.broker_id)
        return msg if msg is not None and msg.state == "reserved" and msg.holder is self else None

    def delete(self, delivery: Delivery) -> bool:
        with self.broker._cond:
            if self._held(delivery) is None:
                return False
            del self.broker._messages[delivery.broker_id]
            return True

    def release(self, delivery: Delivery, *, priority: int, delay_s: int) -> bool:
        priority = self.broker._priority(priority, delay_s)
        with self.broker._cond:
            msg = self._held(delivery)
            if msg is None:
                return False
            msg.priority, msg.releases, msg.delay_s = priority, msg.releases + 1, delay_s
            if delay_s > 0:
                msg.state, msg.holder, msg.ready_at = "delayed", None, time.monotonic() + delay_s
                self.broker._schedule(msg.ready_at, msg)
                self.broker._cond.notify_all()
            else:
                self.broker._make_ready(msg)
            return True

    def bury(self, delivery: Delivery, *, priority: int) -> bool:
        priority = self.broker._priority(priority, 0)
        with self.broker._cond:
            msg = self._held(delivery)
            if msg is None:
                return False
            msg.state, msg.holder, msg.priority = "buried", None, priority
            msg.buries, msg.buried_at = msg.buries + 1, time.monotonic()
            return True

    def touch(self, delivery: Delivery) -> bool:
        if TOUCH not in self.broker.capabilities:
            raise Unsupported(f"{type(self).__name__} cannot touch a reserved message")
        with self.broker._cond:
            msg = self._held(delivery)
            if msg is None:
                return False
            msg.deadline = time.monotonic() + msg.ttr_s
            self.broker._schedule(msg.deadline, msg)
            return True

    def releases(self, delivery: Delivery) -> int | None:
        with self.broker._cond:
            msg = self._held(delivery)
            return None if msg is None else msg.releases

    def interrupt(self) -> None:
        with self.broker._cond:
            self._closed = True
            self.broker._cond.notify_all()

    def close(self) -> None:
        with self.broker._cond:
            self._closed = True
            for msg in list(self.broker._messages.values()):
                if msg.state == "reserved" and msg.holder is self:
                    msg.lost += 1
                    self.broker._make_ready(msg)


def _capabilities(url: str) -> frozenset[str]:
    """The capabilities ``memory://?capabilities=…`` declares (all without the option)."""
    values = parse_qs(urlsplit(url).query).get("capabilities")
    if values is None:
        return ALL_CAPABILITIES
    names = {name.strip() for name in values[-1].split(",")} - {"none", ""}
    unknown = names - ALL_CAPABILITIES
    if unknown:
        raise ConfigError(f"{url!r}: unknown capabilities {sorted(unknown)}; "
                          f"known: {', '.join(sorted(ALL_CAPABILITIES))}")
    return frozenset(names)
