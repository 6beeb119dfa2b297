"""One contract, every broker (memory, beanstalkd, Redis, RabbitMQ, and a broker with only
the required core).

A test of an optional capability checks ``broker.can(…)``: a broker that has it
must do it, a broker that lacks it must say so with :class:`Unsupported`. Every
contract test also runs on ``memory://?capabilities=none`` (see the end of this file).
"""
from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator

import greenstalk
import pytest

from jobkit.brokers import Broker, broker_from_url
from jobkit.brokers import beanstalk as beanstalk_module
from jobkit.brokers.base import (
    ALL_CAPABILITIES,
    DELAY,
    DELETE,
    KICK,
    PEEK,
    PRIORITY,
    STATS,
    TOUCH,
    Consumer,
    Delivery,
)
from jobkit.brokers.beanstalk import MAX_U32
from jobkit.embedded import Beanstalkd, free_port
from jobkit.errors import BrokerError, BrokerUnavailable, BrokerUnconfirmed, ConfigError, Unsupported
from jobkit.task import check_queue
from tests.helpers import eventually

CORE_ONLY = "memory://?capabilities=none"


def put(broker: Broker, queue: str, body: bytes = b"x", *, priority: int = 1024,
        delay_s: int = 0, ttr_s: int = 60) -> str:
    broker_id = broker.put(body, queue=queue, priority=priority, delay_s=delay_s, ttr_s=ttr_s)
    assert isinstance(broker_id, str) and broker_id
    return broker_id


def gone(broker: Broker, broker_id: str) -> bool:
    """True when the broker no longer has the message (where it can look; else taken on trust)."""
    return broker.peek(broker_id) is None if broker.can(PEEK) else True


def reserve_within(consumer: Consumer, timeout_s: float) -> Delivery | None:
    """Reserve with 1 s waits until ``timeout_s`` passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        delivery = consumer.reserve(1)
        if delivery is not None:
            return delivery
    return None


def test_put_reserve_delete(broker: Broker, queue: str) -> None:
    broker_id = put(broker, queue, b'{"a":1}')
    consumer = broker.consumer([queue])
    delivery = consumer.reserve(1)
    assert delivery is not None and delivery.broker_id == broker_id and delivery.body == b'{"a":1}'
    if broker.can(STATS) and not broker.url.startswith("amqp"):  # AMQP 0-9-1 does not count unacked
        assert broker.stats()[queue]["reserved"] == 1
    assert consumer.delete(delivery) is True
    assert gone(broker, broker_id)
    assert consumer.reserve(0) is None
    consumer.close()


def test_pipelined_delete_is_done_by_the_next_command_or_close(broker: Broker, queue: str) -> None:
    """``delete_nowait`` may wait for the consumer's next command; close or interrupt sends it."""
    ids = [put(broker, queue, b"%d" % i) for i in range(3)]
    consumer = broker.consumer([queue])
    first = consumer.reserve(1)
    assert first is not None
    consumer.delete_nowait(first)
    second = consumer.reserve(1)  # carries the delete
    assert second is not None and second.broker_id in ids and second.broker_id != first.broker_id
    assert gone(broker, first.broker_id)
    consumer.delete_nowait(second)
    consumer.close()
    assert gone(broker, second.broker_id)
    other = broker.consumer([queue])
    third = other.reserve(1)
    assert third is not None and third.broker_id in ids  # the first two did not come back
    other.delete_nowait(third)
    other.interrupt()
    other.close()
    eventually(lambda: gone(broker, third.broker_id), what="the delete sent by interrupt()")
    last = broker.consumer([queue])
    assert last.reserve(1) is None  # all three deletes were done: nothing came back
    last.close()


def test_reserve_times_out_empty(broker: Broker, queue: str) -> None:
    consumer = broker.consumer([queue])
    started = time.monotonic()
    assert consumer.reserve(1) is None
    assert time.monotonic() - started >= 0.9
    consumer.close()


def test_priority_orders_reserves(broker: Broker, queue: str) -> None:
    """A more urgent job is reserved first: among the jobs of one server, in a cluster.

    (A cluster's ids name their server before the "/"; three lows then three
    highs put round-robin give each of its servers a low, then a high.)
    """
    if not broker.can(PRIORITY):  # any order, but every job
        ids = {put(broker, queue, b"low", priority=2000), put(broker, queue, b"high", priority=5)}
        consumer = broker.consumer([queue])
        taken = [consumer.reserve(1) for _ in range(2)]
        assert {d.broker_id for d in taken if d is not None} == ids
        consumer.close()
        return
    for priority in (2000, 2000, 2000, 5, 5, 5):
        put(broker, queue, b"%d" % priority, priority=priority)
    consumer = broker.consumer([queue])
    taken = [consumer.reserve(1) for _ in range(6)]
    by_server: dict[str, list[bytes]] = {}
    for delivery in taken:
        assert delivery is not None
        by_server.setdefault(str(delivery.broker_id).rpartition("/")[0], []).append(delivery.body)
    for bodies in by_server.values():
        assert bodies == sorted(bodies, key=len), "the more urgent (b'5') before the less (b'2000')"
    consumer.close()


def test_only_watched_queues_are_reserved(broker: Broker, queue: str) -> None:
    put(broker, queue + "-other")
    consumer = broker.consumer([queue])
    assert consumer.reserve(0) is None
    consumer.close()


def test_delay_holds_a_job_back(broker: Broker, queue: str) -> None:
    if not broker.can(DELAY):
        with pytest.raises(Unsupported):
            put(broker, queue, delay_s=1)
        return
    broker_id = put(broker, queue, delay_s=1)
    if broker.can(PEEK):
        peeked = broker.peek(broker_id)
        assert peeked is not None and peeked.stats["state"] == "delayed"
    consumer = broker.consumer([queue])
    assert consumer.reserve(0) is None
    delivery = consumer.reserve(3)
    assert delivery is not None and delivery.broker_id == broker_id
    consumer.close()


def test_release_with_delay_and_stats(broker: Broker, queue: str) -> None:
    broker_id = put(broker, queue)
    consumer = broker.consumer([queue])
    delivery = consumer.reserve(1)
    assert delivery is not None
    if not broker.can(DELAY):
        with pytest.raises(Unsupported):
            consumer.release(delivery, priority=7, delay_s=1)
        assert consumer.release(delivery, priority=7, delay_s=0) is True
    else:
        assert consumer.release(delivery, priority=7, delay_s=1) is True
    if broker.can(PEEK) and broker.can(DELAY):
        stats = broker.peek(broker_id)
        assert stats is not None
        assert stats.stats["state"] == "delayed" and stats.stats["releases"] == 1
        assert stats.stats["pri"] == 7 and stats.stats["reserves"] == 1
    again = consumer.reserve(3)
    assert again is not None and again.broker_id == broker_id
    assert consumer.lost_deliveries(again) == 0  # a release is no lost delivery
    assert consumer.releases(again) == 1
    consumer.close()


def test_releases_are_counted_for_the_unknown_task_rule(broker: Broker, queue: str) -> None:
    """Every broker here counts releases (the worker releases a message for a task it lacks, up to
    a limit): across consumers, and neither a lost delivery nor a bury and kick counts as one."""
    broker_id = put(broker, queue)
    consumer = broker.consumer([queue])
    for count in range(3):
        delivery = reserve_within(consumer, 3)
        assert delivery is not None and delivery.broker_id == broker_id
        assert consumer.releases(delivery) == count
        assert consumer.release(delivery, priority=1024, delay_s=0)
    consumer.close()
    consumer = broker.consumer([queue])
    delivery = consumer.reserve(2)
    assert delivery is not None and consumer.releases(delivery) == 3
    consumer.close()  # a lost delivery, not a release
    consumer = broker.consumer([queue])
    delivery = consumer.reserve(2)
    assert delivery is not None and consumer.releases(delivery) == 3
    if broker.can(KICK):
        assert consumer.bury(delivery, priority=1024) and broker.kick(broker_id)
        delivery = consumer.reserve(2)
        assert delivery is not None and consumer.releases(delivery) == 3
    assert consumer.releases(Delivery("nope", b"", delivery.session)) is None
    assert consumer.delete(delivery)
    consumer.close()


def test_bury_peek_buried_and_kick(broker: Broker, queue: str) -> None:
    broker_id = put(broker, queue, b"dead")
    consumer = broker.consumer([queue])
    delivery = consumer.reserve(1)
    assert delivery is not None and consumer.bury(delivery, priority=1024)
    assert consumer.reserve(0) is None  # a dead letter is not delivered
    if broker.can(STATS):
        assert broker.stats()[queue]["buried"] == 1
    if broker.can(PEEK):
        buried = broker.peek_buried(queue)
        assert buried is not None and buried.broker_id == broker_id and buried.body == b"dead"
        assert buried.stats["state"] == "buried" and buried.stats["buries"] == 1
    if not broker.can(KICK):
        with pytest.raises(Unsupported):
            broker.kick(broker_id)
        consumer.close()
        return
    assert broker.kick(broker_id) is True
    assert broker.kick(broker_id) is False  # ready now: nothing to kick
    again = consumer.reserve(1)
    assert again is not None and again.broker_id == broker_id
    assert consumer.lost_deliveries(again) == 0  # buried, then kicked: no delivery was lost
    consumer.close()


def test_closing_a_consumer_returns_its_jobs(broker: Broker, queue: str) -> None:
    broker_id = put(broker, queue)
    first = broker.consumer([queue])
    held = first.reserve(1)
    assert held is not None and first.lost_deliveries(held) == 0
    first.close()
    second = broker.consumer([queue])
    delivery = second.reserve(2)
    assert delivery is not None and delivery.broker_id == broker_id
    assert second.lost_deliveries(delivery) == 1  # the first delivery ended with its consumer
    second.close()


def test_lost_deliveries_count_only_deliveries_that_ended_unsettled(broker: Broker, queue: str) -> None:
    """What the worker's crash-loop rule reads: closes count, releases do not."""
    put(broker, queue)
    for lost in range(3):
        consumer = broker.consumer([queue])
        delivery = consumer.reserve(2)
        assert delivery is not None and consumer.lost_deliveries(delivery) == lost
        assert consumer.release(delivery, priority=1024, delay_s=0)  # not a loss
        delivery = consumer.reserve(2)
        assert delivery is not None and consumer.lost_deliveries(delivery) == lost
        consumer.close()  # a loss: the next delivery counts it


def lost_its_timer(broker: Broker, broker_id: str) -> bool:
    """True when beanstalkd shows its lost-tick defect: the job is still reserved past its TTR.

    beanstalkd (1.12, and its code today) drops a connection's timer when the
    timer fires in the very microsecond of the job's deadline: ``conn_timeout``
    finds ``deadline_at >= now``, expires nothing and does not schedule the
    connection again. The job then stays ``reserved`` with a negative
    ``time-left`` until its connection sends a command or closes. See
    "TTR and touch" in docs/guarantees.md.
    """
    if not broker.url.startswith("beanstalk://"):
        return False
    peeked = broker.peek(broker_id)
    return (peeked is not None and peeked.stats.get("state") == "reserved"
            and int(peeked.stats.get("time-left", 0)) < 0)


def test_ttr_expiry_returns_a_job_and_touch_prevents_it(broker: Broker, queue: str) -> None:
    """A held message comes back when its TTR runs out; on a broker without TTR (RabbitMQ: no
    ``TOUCH`` either) it stays held past it, until its consumer's connection ends."""
    expiring = put(broker, queue, b"a", ttr_s=2)  # 1 s is unreliable in beanstalkd: see MIN_TTR
    consumer, other = broker.consumer([queue]), broker.consumer([queue])
    held = consumer.reserve(1)
    assert held is not None and held.broker_id == expiring
    stolen = reserve_within(other, 5)  # after TTR the job is ready again
    if stolen is None and lost_its_timer(broker, expiring):
        consumer.lost_deliveries(held)  # any command on the holder's connection re-arms its timer
        stolen = reserve_within(other, 3)
    if stolen is None:  # no TTR: held until the connection ends
        assert not broker.can(TOUCH), "a broker that can touch has a TTR to restart"
        consumer.close()
        consumer = broker.consumer([queue])
        stolen = other.reserve(2)
        assert consumer.delete(held) is False  # a new connection holds nothing
    assert stolen is not None and stolen.broker_id == expiring
    assert other.lost_deliveries(stolen) == 1  # its TTR ran out: a lost delivery
    assert consumer.delete(held) is False  # no longer ours
    assert other.delete(stolen) is True
    other.close()  # (an idle AMQP consumer may be handed the next message ahead of its reserve)

    touched = put(broker, queue, b"b", ttr_s=2)
    held = consumer.reserve(1)
    assert held is not None and held.broker_id == touched
    other = broker.consumer([queue])
    if not broker.can(TOUCH):
        with pytest.raises(Unsupported):
            consumer.touch(held)
    else:
        for _ in range(4):
            time.sleep(0.7)
            assert consumer.touch(held)
        assert other.reserve(0) is None
        if broker.can(PEEK):
            peeked = broker.peek(touched)
            assert peeked is not None and peeked.stats["timeouts"] == 0
    assert consumer.delete(held)
    consumer.close()
    other.close()


def test_producer_delete_spares_reserved_jobs(broker: Broker, queue: str) -> None:
    ids = [put(broker, queue), put(broker, queue)]
    consumer = broker.consumer([queue])
    delivery = consumer.reserve(1)
    assert delivery is not None and delivery.broker_id in ids
    held = delivery.broker_id
    ready = ids[1 - ids.index(held)]
    if not broker.can(DELETE):
        with pytest.raises(Unsupported):
            broker.delete(ready)
        consumer.close()
        return
    assert broker.delete(held) is False  # reserved by a consumer
    assert broker.delete(ready) is True
    assert broker.delete(ready) is False
    consumer.close()


def test_interrupt_wakes_a_blocked_reserve(broker: Broker, queue: str) -> None:
    consumer = broker.consumer([queue])
    outcome: list[object] = []

    def reserve() -> None:
        try:
            outcome.append(consumer.reserve(30))
        except BrokerUnavailable as exc:
            outcome.append(exc)

    thread = threading.Thread(target=reserve)
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    consumer.interrupt()
    thread.join(5)
    assert not thread.is_alive() and time.monotonic() - started < 5
    assert outcome and (outcome[0] is None or isinstance(outcome[0], BrokerUnavailable))
    consumer.close()


def test_stats_and_ping(broker: Broker, queue: str) -> None:
    put(broker, queue)
    broker.ping()
    if not broker.can(STATS):
        with pytest.raises(Unsupported):
            broker.stats()
        return
    if broker.can(DELAY):
        put(broker, queue, delay_s=60)
    row = broker.stats()[queue]
    assert (row["ready"], row["delayed"], row["reserved"], row["buried"]) == (
        1, int(broker.can(DELAY)), 0, 0)
    assert row["total"] >= 1


def test_ids_the_broker_never_gave_find_nothing(broker: Broker, queue: str) -> None:
    """Ids are opaque: a malformed one (or another broker's) is a clean miss, never a crash."""
    put(broker, queue)
    consumer = broker.consumer([queue])
    held = consumer.reserve(1)
    assert held is not None
    for stray in ("", "nope", "-1", "0", "1 2", "7\r\ndelete 1", "99999999999999999999999", "h1:1/2"):
        if broker.can(PEEK):
            assert broker.peek(stray) is None
        if broker.can(DELETE):
            assert broker.delete(stray) is False
        if broker.can(KICK):
            assert broker.kick(stray) is False
        assert consumer.delete(Delivery(stray, b"", held.session)) is False
    assert consumer.delete(held) is True
    consumer.close()


def test_undeclared_capabilities_raise_unsupported(broker: Broker, queue: str) -> None:
    """Every optional method of a capability the broker does not declare says so, never fakes it."""
    assert broker.capabilities <= ALL_CAPABILITIES
    broker_id = put(broker, queue)
    consumer = broker.consumer([queue])
    held = consumer.reserve(1)
    assert held is not None
    calls: dict[str, list[Callable[[], object]]] = {
        PEEK: [lambda: broker.peek(broker_id), lambda: broker.peek_buried(queue)],
        DELETE: [lambda: broker.delete(broker_id)], KICK: [lambda: broker.kick(broker_id)],
        TOUCH: [lambda: consumer.touch(held)], STATS: [broker.stats],
        DELAY: [lambda: put(broker, queue, delay_s=5)], PRIORITY: [],
    }
    for capability in ALL_CAPABILITIES - broker.capabilities:
        for call in calls[capability]:
            with pytest.raises(Unsupported, match="cannot"):
                call()
    assert consumer.delete(held)
    consumer.close()


def test_check_queue_takes_the_names_jobkit_uses(broker: Broker, queue: str) -> None:
    for name in (queue, "default", "images", "a.b-c_d"):
        assert broker.check_queue(name) == name


def test_beanstalk_check_queue_is_beanstalkds_rule(beanstalkd: Beanstalkd) -> None:
    broker = broker_from_url(beanstalkd.url)
    for bad in ("a:b", "-a", "", "x" * 201, "café"):
        with pytest.raises(ConfigError, match="queue name"):
            broker.check_queue(bad)


def test_beanstalk_down_is_unavailable() -> None:
    broker = broker_from_url(f"beanstalk://127.0.0.1:{free_port()}")
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        put(broker, "default")
    with pytest.raises(BrokerUnavailable):
        broker.consumer(["default"]).reserve(1)
    assert time.monotonic() - started < 2


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match="amqp://, beanstalk://, memory://, redis://"):
        broker_from_url("kafka://localhost")


def test_beanstalk_stats_skips_a_tube_that_vanished_after_listing(
        beanstalkd: Beanstalkd, queue: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tube goes away once it is empty and unwatched, possibly between list-tubes and stats-tube."""
    broker = broker_from_url(beanstalkd.url)
    put(broker, queue)
    listed = greenstalk.Client.tubes
    monkeypatch.setattr(greenstalk.Client, "tubes", lambda self: [*listed(self), f"{queue}gone"])
    try:
        stats = broker.stats()
        assert stats[queue]["ready"] == 1 and f"{queue}gone" not in stats
    finally:
        broker.close()


# -- beanstalkd: a connection never falls out of step ----------------------------------

@pytest.mark.parametrize("bad", [{"delay_s": 2**32}, {"priority": 2**32}, {"ttr_s": 2**32}],
                         ids=["delay", "priority", "ttr"])
def test_beanstalk_a_refused_put_leaves_no_connection_out_of_step(
        beanstalkd: Beanstalkd, queue: str, bad: dict[str, int]) -> None:
    """beanstalkd answers BAD_FORMAT, then reads the body as a command (UNKNOWN_COMMAND).

    A connection pooled after that would hand every later put the answer of
    the one before: the next put fails, and the one after returns another job's id.
    """
    broker = broker_from_url(beanstalkd.url)
    try:
        with pytest.raises(BrokerError):
            put(broker, queue, b"refused", **bad)
        for body in (b"first", b"second", b"third"):
            broker_id = put(broker, queue, body)
            peeked = broker.peek(broker_id)
            assert peeked is not None and peeked.body == body  # its own id, not another job's
    finally:
        broker.close()


def test_beanstalk_consumer_drops_a_connection_after_an_unexpected_answer(
        beanstalkd: Beanstalkd, queue: str) -> None:
    """An error answer to release (BAD_FORMAT) is no library error for the caller: the job is
    no longer held (the connection is dropped, so the job is ready again) and the consumer goes on."""
    broker = broker_from_url(beanstalkd.url)
    broker_id = put(broker, queue, b"mine")
    consumer = broker.consumer([queue])
    try:
        delivery = consumer.reserve(1)
        assert delivery is not None
        assert consumer.release(delivery, priority=2**32, delay_s=0) is False
        again = consumer.reserve(1)
        assert again is not None and (again.broker_id, again.body) == (broker_id, b"mine")
        assert consumer.delete(again) is True
    finally:
        consumer.close()
        broker.close()


def test_beanstalk_a_release_delay_past_the_range_waits_the_longest(
        beanstalkd: Beanstalkd, queue: str) -> None:
    broker = broker_from_url(beanstalkd.url)
    put(broker, queue)
    consumer = broker.consumer([queue])
    try:
        delivery = consumer.reserve(1)
        assert delivery is not None
        assert consumer.release(delivery, priority=1, delay_s=2**40) is True
        peeked = broker.peek(delivery.broker_id)
        assert peeked is not None and peeked.stats["state"] == "delayed"
        assert peeked.stats["delay"] == MAX_U32
    finally:
        consumer.close()
        broker.close()


def test_beanstalk_a_put_without_answer_is_unconfirmed_and_never_sent_twice(
        beanstalk: Beanstalkd, monkeypatch: pytest.MonkeyPatch) -> None:
    """A put that times out may have reached beanstalkd: it is reported as such, not retried
    on another connection (a second copy), and its connection is not reused."""
    monkeypatch.setattr(beanstalk_module, "OP_TIMEOUT_S", 1.0)
    broker = broker_from_url(beanstalk.url)
    assert beanstalk.proc is not None
    try:
        put(broker, "default", b"before")  # the pool now holds a connection using "default"
        os.kill(beanstalk.proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(BrokerUnconfirmed):
                put(broker, "default", b"stalled")
        finally:
            os.kill(beanstalk.proc.pid, signal.SIGCONT)
        after = put(broker, "default", b"after")
        peeked = broker.peek(after)
        assert peeked is not None and peeked.body == b"after"
        eventually(lambda: broker.stats()["default"]["total"] >= 3, what="the stalled put landing")
        assert broker.stats()["default"]["total"] == 3  # before, stalled (it landed) once, after
    finally:
        broker.close()


def test_beanstalk_a_restarted_server_costs_no_failed_put(beanstalk: Beanstalkd) -> None:
    """Pooled connections closed by the server are found out before use, not by a failed put."""
    broker = broker_from_url(beanstalk.url)
    try:
        for body in (b"a", b"b"):  # two connections in the pool, both used
            put(broker, "default", body)
        beanstalk.stop(kill=True)
        beanstalk.start()  # the same binlog: ids go on
        broker_id = put(broker, "default", b"after restart")
        peeked = broker.peek(broker_id)
        assert peeked is not None and peeked.body == b"after restart"
    finally:
        broker.close()


@pytest.mark.parametrize("name", ["a", "x" * 200, "A-Za-z0-9+/;.$_()", "(q)", "$"])
def test_beanstalk_takes_every_queue_name_jobkit_accepts(beanstalkd: Beanstalkd, name: str) -> None:
    assert check_queue(name) == name
    broker = broker_from_url(beanstalkd.url)
    consumer = broker.consumer([name])
    try:
        broker_id = put(broker, name, b"named")
        delivery = consumer.reserve(1)
        assert delivery is not None and delivery.broker_id == broker_id
        assert consumer.delete(delivery)
    finally:
        consumer.close()
        broker.close()


@pytest.mark.parametrize("name", ["a:b", "a b", "-a", "x" * 201, "", "café", "q\n", "q\x00", 5, None])
def test_queue_names_beanstalkd_refuses_are_a_config_error(name: object) -> None:
    with pytest.raises(ConfigError, match="queue name"):
        check_queue(name)


# -- the smallest broker the boundary allows --------------------------------------------

def _contract_tests() -> list[Callable[[Broker, str], None]]:
    """The contract tests above: those taking exactly a broker and a queue."""
    return [test for name, test in sorted(globals().items()) if name.startswith("test_")
            and getattr(test, "__code__", None) is not None
            and test.__code__.co_varnames[:test.__code__.co_argcount] == ("broker", "queue")]


@pytest.fixture
def core_only() -> Iterator[Broker]:
    broker = broker_from_url(CORE_ONLY)
    assert broker.capabilities == frozenset()
    yield broker
    broker.close()


@pytest.mark.parametrize("contract_test", _contract_tests(), ids=lambda test: test.__name__[5:])
def test_the_contract_holds_on_a_broker_with_only_the_core(
        contract_test: Callable[[Broker, str], None], core_only: Broker, queue: str) -> None:
    contract_test(core_only, queue)


def test_memory_capabilities_come_from_the_url() -> None:
    assert broker_from_url("memory://").capabilities == ALL_CAPABILITIES
    assert broker_from_url("memory://?capabilities=peek,stats").capabilities == {PEEK, STATS}
    with pytest.raises(ConfigError, match="unknown capabilities"):
        broker_from_url("memory://?capabilities=peek,teleport")


def test_a_consumer_without_touch_says_so() -> None:
    class Minimal(Consumer):  # the required core only, as a new broker starts
        def reserve(self, timeout_s: float) -> Delivery | None:
            return None

        def delete(self, delivery: Delivery) -> bool:
            return True

        def release(self, delivery: Delivery, *, priority: int, delay_s: int) -> bool:
            return True

        def bury(self, delivery: Delivery, *, priority: int) -> bool:
            return True

        def interrupt(self) -> None:
            pass

        def close(self) -> None:
            pass

    delivery = Delivery("1", b"x")
    with pytest.raises(Unsupported, match="cannot touch"):
        Minimal().touch(delivery)
    assert Minimal().lost_deliveries(delivery) == 0
    assert Minimal().lost_deliveries(Delivery("1", b"x", lost=2)) == 2
