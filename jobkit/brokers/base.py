"""The broker boundary: beanstalkd's model, which every broker implements.

A broker holds messages in named queues (beanstalkd tubes). A producer side
(:class:`Broker`) puts messages and looks at them; a :class:`Consumer` is one
connection that reserves messages and settles each one it holds (delete,
release, bury, touch) over that same connection. When a consumer's
connection ends, the messages it held return to ready at once; a message
held past its TTR (seconds) without a touch also returns to ready.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_PRIORITY = 1024  # beanstalkd's convention: 0 is most urgent
DEFAULT_TTR = 60
#: beanstalkd 1.12 does not always hand a job whose 1 s TTR ran out to a worker
#: already waiting in reserve (its 1 s safety margin); 2 s is the least that is reliable.
MIN_TTR = 2
MAX_PRIORITY = 2**32 - 1

#: Keys of :attr:`Peeked.stats`, named as beanstalkd's ``stats-job`` names them.
STATS_JOB_KEYS = ("id", "tube", "state", "pri", "age", "delay", "ttr", "time-left", "file",
                  "reserves", "timeouts", "releases", "buries", "kicks")


@dataclass(frozen=True)
class Delivery:
    """A message a consumer holds reserved.

    Attributes:
        broker_id: the broker's id for the message (unique per broker run only).
        body: the message body.
        session: which connection of the consumer reserved it; settling a
            delivery from an older session is a no-op (it is back in ready).
    """

    broker_id: int
    body: bytes
    session: int = 0


@dataclass(frozen=True)
class Peeked:
    """A message looked at without reserving it: its body and ``stats-job`` fields."""

    broker_id: int
    body: bytes
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outgoing:
    """A message to put, with how the broker holds it (see :meth:`Broker.put`)."""

    body: bytes
    queue: str
    priority: int
    delay_s: int
    ttr_s: int


class Consumer(ABC):
    """One connection that reserves messages and settles them.

    Not thread-safe: one thread reserves; another thread may call
    :meth:`touch` only under the caller's own lock, and :meth:`interrupt`
    at any time. Each settle method returns False when the message is no
    longer held by this consumer (its connection was lost in between).
    """

    @abstractmethod
    def reserve(self, timeout_s: float) -> Delivery | None:
        """Wait up to ``timeout_s`` seconds for a message; None when none came.

        Raises:
            BrokerConnectionLost: the connection broke (call again to reconnect).
            BrokerUnavailable: the broker cannot be reached (call again to reconnect).
        """

    @abstractmethod
    def delete(self, delivery: Delivery) -> bool:
        """Remove a settled message for good."""

    def delete_nowait(self, delivery: Delivery) -> None:
        """Remove a message whose outcome is stored, without waiting for the broker's answer.

        For callers the answer changes nothing for: a message that was not
        deleted comes back and is settled by its stored outcome. Brokers that
        can pipeline the command (read its answer before the next one) override
        this; by default it is :meth:`delete`.
        """
        self.delete(delivery)

    @abstractmethod
    def release(self, delivery: Delivery, *, priority: int, delay_s: int) -> bool:
        """Put a message back, ready again after ``delay_s`` seconds."""

    @abstractmethod
    def bury(self, delivery: Delivery, *, priority: int) -> bool:
        """Set a message aside (the dead-letter state) until it is kicked."""

    @abstractmethod
    def touch(self, delivery: Delivery) -> bool:
        """Restart the message's TTR clock."""

    @abstractmethod
    def interrupt(self) -> None:
        """Wake a blocked :meth:`reserve` from another thread and end this consumer."""

    @abstractmethod
    def close(self) -> None:
        """End the connection; messages still held return to ready."""


class Broker(ABC):
    """The producer side: put messages, look at them, manage the dead letters.

    Thread-safe. Connects lazily and reconnects by itself.

    Args:
        url: the broker URL; each implementation documents its form.
    """

    def __init__(self, url: str) -> None:
        self.url = url

    @abstractmethod
    def put(self, body: bytes, *, queue: str, priority: int, delay_s: int, ttr_s: int) -> int:
        """Store a message; return its broker id.

        Raises:
            BrokerUnavailable: the broker is down or draining.
            PayloadTooLarge: the body is larger than the broker accepts.
        """

    def put_many(self, messages: Sequence[Outgoing]) -> list[int]:
        """Store several messages; return their broker ids, in order.

        All or nothing, as far as the broker allows: when one put fails, the
        messages already put are deleted again (best effort), then the error
        is raised. Brokers that can pipeline puts override this loop.

        Raises:
            BrokerUnavailable, PayloadTooLarge: as :meth:`put`.
        """
        ids: list[int] = []
        try:
            for m in messages:
                ids.append(self.put(m.body, queue=m.queue, priority=m.priority,
                                    delay_s=m.delay_s, ttr_s=m.ttr_s))
        except Exception:
            for broker_id in ids:
                try:
                    self.delete(broker_id)
                except Exception:  # noqa: BLE001 - best effort: the first error is the one to raise
                    break
            raise
        return ids

    @abstractmethod
    def consumer(self, queues: Sequence[str]) -> Consumer:
        """Return a new consumer reserving from ``queues`` (it connects on first use)."""

    @abstractmethod
    def peek(self, broker_id: int) -> Peeked | None:
        """Return a message by broker id with its stats, or None when it is gone."""

    @abstractmethod
    def peek_buried(self, queue: str) -> Peeked | None:
        """Return the oldest buried message of ``queue``, or None."""

    @abstractmethod
    def delete(self, broker_id: int) -> bool:
        """Delete a message nobody holds reserved; False when it is gone or reserved."""

    @abstractmethod
    def kick(self, broker_id: int) -> bool:
        """Make a buried or delayed message ready; False when it is not buried or delayed."""

    @abstractmethod
    def stats(self) -> dict[str, dict[str, int]]:
        """Return per queue: ``ready``, ``reserved``, ``delayed``, ``buried``, ``urgent``,
        ``total``, ``waiting`` (consumers blocked on it)."""

    def ping(self) -> None:
        """Check that the broker answers.

        Raises:
            BrokerUnavailable: it does not.
        """
        self.stats()

    def close(self) -> None:
        """Close pooled connections; the broker reconnects if used again."""
