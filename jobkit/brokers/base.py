"""The broker boundary: a small required core, and capabilities a broker declares.

A broker holds messages in named queues. The producer side (:class:`Broker`)
puts messages; a :class:`Consumer` is one connection that reserves messages
and settles each one it holds (delete, release, bury) over that same
connection. When a consumer's connection ends, the messages it held return to
ready; a message held past its TTR (seconds) without being settled returns to
ready too (how exactly is the broker's: beanstalkd's TTR, a Redis visibility
timeout, AMQP's unacked messages returning when a channel closes).

Required of every broker (the core, as small as dramatiq's):
``Broker.put``, ``Broker.consumer``, ``Consumer.reserve``, ``delete``,
``release``, ``bury``, ``interrupt``, ``close``.

Optional capabilities, declared in :attr:`Broker.capabilities` (the defaults
here raise :class:`~jobkit.errors.Unsupported`, never fake success):

- ``PEEK``: :meth:`Broker.peek` a message by broker id, with its stats;
  :meth:`Broker.peek_buried`.
- ``DELETE``: :meth:`Broker.delete` a message nobody holds, by broker id.
- ``KICK``: :meth:`Broker.kick` a buried (dead-lettered) message back to ready.
- ``TOUCH``: :meth:`Consumer.touch` restarts a held message's TTR clock.
- ``DELAY``: ``put``/``release`` with ``delay_s > 0`` are held by the broker
  (without it they raise ``Unsupported``; ``delay_s=0`` always works).
- ``PRIORITY``: priorities order delivery (0 most urgent); without it they
  are accepted and delivery order is the broker's.
- ``STATS``: :meth:`Broker.stats` per-queue counts.

Where a capability is missing, :class:`jobkit.App` answers without it (from
the job's record) and the worker does without it; ``memory://?capabilities=none``
is the smallest broker this boundary allows, and the contract suite
(``tests/test_broker_contract.py``) runs on it.

Broker ids are opaque strings: jobkit stores them in records and hands them
back to the broker that made them, and never parses them.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from jobkit.errors import JobkitError, Unsupported

DEFAULT_PRIORITY = 1024  # beanstalkd's convention: 0 is most urgent
DEFAULT_TTR = 60
#: beanstalkd 1.12 does not always hand a job whose 1 s TTR ran out to a worker
#: already waiting in reserve (its 1 s safety margin); 2 s is the least that is reliable.
MIN_TTR = 2
MAX_PRIORITY = 2**32 - 1

# Capabilities a broker may declare in :attr:`Broker.capabilities`.
PEEK = "peek"
DELETE = "delete"
KICK = "kick"
TOUCH = "touch"
DELAY = "delay"
PRIORITY = "priority"
STATS = "stats"
ALL_CAPABILITIES = frozenset({PEEK, DELETE, KICK, TOUCH, DELAY, PRIORITY, STATS})

#: Keys of :attr:`Peeked.stats`, named as beanstalkd's ``stats-job`` names them.
STATS_JOB_KEYS = ("id", "tube", "state", "pri", "age", "delay", "ttr", "time-left", "file",
                  "reserves", "timeouts", "releases", "buries", "kicks")
#: Keys of each queue in :meth:`Broker.stats`.
QUEUE_STATS_KEYS = ("ready", "reserved", "delayed", "buried", "urgent", "total", "waiting")


@dataclass(frozen=True)
class Delivery:
    """A message a consumer holds reserved.

    Attributes:
        broker_id: the broker's opaque id for the message.
        body: the message body.
        session: which connection of the consumer reserved it; settling a
            delivery from an older session is a no-op (it is back in ready).
        lost: how many earlier deliveries of this message ended without being
            settled (their consumer died, or its TTR ran out), when the broker
            knows it at reserve time; None when it does not (then
            :meth:`Consumer.lost_deliveries` may ask the broker).
    """

    broker_id: str
    body: bytes
    session: int = 0
    lost: int | None = None


@dataclass(frozen=True)
class Peeked:
    """A message looked at without reserving it: its body and ``stats-job`` fields."""

    broker_id: str
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

    #: perf: a worker slot reserves its next job with ``reserve(0)`` before
    #: storing an outcome, so that both share one transaction. False where
    #: that look costs more than it saves (it is then not made).
    reserves_ahead: ClassVar[bool] = True

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
        can pipeline the command override this; by default it is :meth:`delete`.
        """
        self.delete(delivery)

    @abstractmethod
    def release(self, delivery: Delivery, *, priority: int, delay_s: int) -> bool:
        """Put a message back, ready again after ``delay_s`` seconds (a redelivery, not a loss)."""

    @abstractmethod
    def bury(self, delivery: Delivery, *, priority: int) -> bool:
        """Set a message aside as a dead letter (until it is kicked, where the broker can)."""

    def touch(self, delivery: Delivery) -> bool:
        """Restart the message's TTR clock (capability ``TOUCH``)."""
        raise Unsupported(f"{type(self).__name__} cannot touch a reserved message")

    def lost_deliveries(self, delivery: Delivery) -> int:
        """How many earlier deliveries of this message ended unsettled (see :attr:`Delivery.lost`).

        Asked rarely (only when a job's record counts many starts), so a broker
        may look it up here at the cost of a round trip. By default: what the
        delivery carries, else 0.
        """
        return delivery.lost or 0

    def releases(self, delivery: Delivery) -> int | None:
        """How many times the message was released before this delivery; None when the broker
        cannot tell (the default).

        Asked rarely (a message for a task this worker lacks is released for
        another worker, up to a limit), so a broker may look it up here at the
        cost of a round trip.
        """
        return None

    @abstractmethod
    def interrupt(self) -> None:
        """Wake a blocked :meth:`reserve` from another thread and end this consumer."""

    @abstractmethod
    def close(self) -> None:
        """End the connection; messages still held return to ready."""


class Broker(ABC):
    """The producer side: put messages; optionally look at them and manage dead letters.

    Thread-safe. Connects lazily and reconnects by itself.

    Args:
        url: the broker URL; each implementation documents its form.
    """

    #: The optional capabilities this broker has (see the module docstring).
    capabilities: ClassVar[frozenset[str]] = frozenset()
    #: perf: :meth:`put_each` sends its puts together (one round trip), so the App gathers the
    #: sends of concurrent callers into one call of it. False: each caller puts on its own.
    pipelines_puts: ClassVar[bool] = False

    def __init__(self, url: str) -> None:
        self.url = url

    def can(self, capability: str) -> bool:
        """Whether this broker has ``capability`` (one of the module's constants)."""
        return capability in self.capabilities

    def check_queue(self, name: str) -> str:
        """Return ``name`` when this broker accepts it as a queue name.

        Raises:
            ConfigError: it does not (the message says the rule).
        """
        return name

    @abstractmethod
    def put(self, body: bytes, *, queue: str, priority: int, delay_s: int, ttr_s: int) -> str:
        """Store a message; return its broker id once the broker has it durably.

        Raises:
            BrokerUnavailable: the broker is down or draining; the message is not stored.
            PayloadTooLarge: the body is larger than the broker accepts.
        """

    def put_each(self, messages: Sequence[Outgoing]) -> list[str | JobkitError]:
        """Store each message on its own account: its broker id, or the error that refused it alone.

        For the sends of concurrent callers, gathered (see :attr:`pipelines_puts`):
        one refused message fails only its own send.

        Raises:
            BrokerUnavailable: the broker could not be reached; no message is stored.
        """
        outcomes: list[str | JobkitError] = []
        for m in messages:
            try:
                outcomes.append(self.put(m.body, queue=m.queue, priority=m.priority,
                                         delay_s=m.delay_s, ttr_s=m.ttr_s))
            except JobkitError as exc:
                outcomes.append(exc)
        return outcomes

    def put_many(self, messages: Sequence[Outgoing]) -> list[str]:
        """Store several messages; return their broker ids, in order.

        All or nothing, as far as the broker allows: when one put fails, the
        messages already put are deleted again (best effort), then the error
        is raised. Brokers that can pipeline puts override this loop.

        Raises:
            BrokerUnavailable, PayloadTooLarge: as :meth:`put`.
        """
        ids: list[str] = []
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

    def peek(self, broker_id: str) -> Peeked | None:
        """Return a message by broker id with its stats, or None when it is gone (``PEEK``)."""
        raise self._unsupported("look at a message by id")

    def peek_buried(self, queue: str) -> Peeked | None:
        """Return the oldest buried message of ``queue``, or None (``PEEK``)."""
        raise self._unsupported("look at its dead letters")

    def delete(self, broker_id: str) -> bool:
        """Delete a message nobody holds reserved; False when it is gone or reserved (``DELETE``)."""
        raise self._unsupported("delete a message by id")

    def kick(self, broker_id: str) -> bool:
        """Make a buried or delayed message ready; False when it is neither (``KICK``)."""
        raise self._unsupported("kick a message by id")

    def stats(self) -> dict[str, dict[str, int]]:
        """Return per queue the counts named in :data:`QUEUE_STATS_KEYS` (``STATS``)."""
        raise self._unsupported("count its queues")

    def ping(self) -> None:
        """Check that the broker answers (by default with :meth:`stats`: a broker without
        ``STATS`` overrides this).

        Raises:
            BrokerUnavailable: it does not.
        """
        self.stats()

    def close(self) -> None:
        """Close pooled connections; the broker reconnects if used again."""

    def _unsupported(self, what: str) -> Unsupported:
        return Unsupported(f"the {type(self).__name__} broker ({self.url.split('://')[0]}://) "
                           f"cannot {what}")
