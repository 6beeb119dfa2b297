"""The beanstalkd cluster (``beanstalk://h1:p1,h2:p2,…``): distribution, outages, and no polling.

The broker contract suite runs on the cluster too (``-k cluster``); these
tests pin what only a cluster has. Servers are real beanstalkd processes
(tests.clusterkit); a test that stops one owns a private cluster.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobkit import App, JobState
from jobkit.brokers import broker_from_url
from jobkit.brokers.base import Delivery
from jobkit.brokers.beanstalk import BeanstalkBroker
from jobkit.brokers.cluster import BeanstalkCluster
from jobkit.errors import BrokerUnavailable, ConfigError
from tests.clusterkit import SIZE, Cluster
from tests.faultkit import StartWorker, lines, make_app, record_count, settled
from tests.helpers import eventually


@pytest.fixture
def cluster(beanstalkd_cluster: Cluster) -> Iterator[BeanstalkCluster]:
    """A cluster broker over the session's three servers."""
    broker = broker_from_url(beanstalkd_cluster.url)
    assert isinstance(broker, BeanstalkCluster)
    yield broker
    broker.close()


def put(broker: Any, queue: str, body: bytes = b"x", priority: int = 1024) -> Any:
    return broker.put(body, queue=queue, priority=priority, delay_s=0, ttr_s=60)


def server_of(broker_id: str) -> str:
    """The ``host:port`` a cluster broker id names."""
    return broker_id.rpartition("/")[0]


def plain(servers: Cluster, index: int) -> BeanstalkBroker:
    """A one-server broker for server ``index`` of the cluster."""
    return BeanstalkBroker(f"beanstalk://{servers.name(index)}")


# -- URLs ----------------------------------------------------------------------

def test_several_hosts_make_a_cluster_and_one_host_a_plain_broker() -> None:
    broker = broker_from_url("beanstalk://10.0.0.1:11300,10.0.0.2,[::1]:11301?connect_timeout=1")
    assert isinstance(broker, BeanstalkCluster)
    assert [m.name for m in broker.members] == ["10.0.0.1:11300", "10.0.0.2:11300", "[::1]:11301"]
    assert all(m.broker.connect_timeout_s == 1 for m in broker.members)
    assert type(broker_from_url("beanstalk://10.0.0.1:11300")) is BeanstalkBroker


@pytest.mark.parametrize(("url", "message"), [
    ("beanstalk://a:1,,b:2", "empty host"),
    ("beanstalk://a:1,a:1", "listed twice"),
    ("beanstalk://a:1,b:x", "invalid port"),
])
def test_bad_cluster_urls_are_config_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        broker_from_url(url)


# -- puts ----------------------------------------------------------------------

def test_puts_spread_over_every_server(cluster: BeanstalkCluster, beanstalkd_cluster: Cluster,
                                       queue: str) -> None:
    ids = [put(cluster, queue) for _ in range(10 * SIZE)]
    names = [beanstalkd_cluster.name(i) for i in range(SIZE)]
    assert sorted({server_of(broker_id) for broker_id in ids}) == sorted(names)
    for index in range(SIZE):
        assert beanstalkd_cluster.tube_counts(index, queue)["current-jobs-ready"] == 10
    assert cluster.stats()[queue]["ready"] == 10 * SIZE


def test_peek_kick_and_delete_go_to_the_server_the_id_names(
        cluster: BeanstalkCluster, beanstalkd_cluster: Cluster, queue: str) -> None:
    ids = [put(cluster, queue, b"%d" % i) for i in range(SIZE)]
    for index, broker_id in enumerate(ids):
        peeked = cluster.peek(broker_id)
        assert peeked is not None and peeked.body == b"%d" % index and peeked.stats["id"] == broker_id
        own = plain(beanstalkd_cluster, [beanstalkd_cluster.name(i) for i in range(SIZE)]
                    .index(server_of(broker_id)))
        held = own.peek(broker_id.rpartition("/")[2])  # the server's own id
        assert held is not None and held.body == peeked.body
        own.close()
    assert cluster.kick(ids[0]) is False  # ready: nothing to kick
    assert cluster.delete(ids[0]) is True and cluster.peek(ids[0]) is None
    assert cluster.peek("10.9.9.9:1/1") is None and cluster.delete("no-server") is False


def test_a_server_down_puts_go_on_and_land_on_the_others(private_cluster: Cluster, queue: str) -> None:
    broker = BeanstalkCluster(private_cluster.url)
    private_cluster.servers[1].stop(kill=True)
    ids = [put(broker, queue) for _ in range(20)]  # no error: the down server is skipped
    assert private_cluster.name(1) not in {server_of(broker_id) for broker_id in ids}
    held = [private_cluster.tube_counts(i, queue)["current-jobs-ready"] for i in (0, 2)]
    assert sum(held) == 20 and min(held) > 0
    broker.ping()  # ready: the cluster takes puts
    assert broker.stats()[queue]["ready"] == 20  # the servers that answer
    broker.close()


def test_every_server_down_is_unavailable(private_cluster: Cluster, queue: str) -> None:
    broker = BeanstalkCluster(private_cluster.url)
    consumer = broker.consumer([queue])
    private_cluster.stop()
    with pytest.raises(BrokerUnavailable, match="every beanstalkd server"):
        put(broker, queue)
    with pytest.raises(BrokerUnavailable):
        consumer.reserve(1)
    with pytest.raises(BrokerUnavailable):
        broker.ping()
    with pytest.raises(BrokerUnavailable):
        broker.stats()
    consumer.close()


# -- consumers -----------------------------------------------------------------

def test_a_consumer_takes_jobs_from_every_server(cluster: BeanstalkCluster, beanstalkd_cluster: Cluster,
                                                queue: str) -> None:
    for index in range(SIZE):
        own = plain(beanstalkd_cluster, index)
        put(own, queue, b"%d" % index)
        own.close()
    consumer = cluster.consumer([queue])
    taken = [consumer.reserve(1) for _ in range(SIZE)]
    assert all(d is not None and consumer.delete(d) for d in taken)
    assert {server_of(d.broker_id) for d in taken if d is not None} == {
        beanstalkd_cluster.name(i) for i in range(SIZE)}
    assert sorted(d.body for d in taken if d is not None) == [b"%d" % i for i in range(SIZE)]

    waiting: list[Delivery | None] = []
    thread = threading.Thread(target=lambda: waiting.append(consumer.reserve(20)))
    thread.start()
    eventually(lambda: cluster.stats().get(queue, {}).get("waiting") == SIZE,
               what="the consumer waiting on every server")
    own = plain(beanstalkd_cluster, SIZE - 1)
    put(own, queue, b"late")  # arrives while the consumer blocks
    own.close()
    thread.join(20)
    assert waiting and waiting[0] is not None and waiting[0].body == b"late"
    assert server_of(waiting[0].broker_id) == beanstalkd_cluster.name(SIZE - 1)
    consumer.close()


def test_an_idle_reserve_blocks_instead_of_polling(private_cluster: Cluster, queue: str) -> None:
    """Waiting 3 s for a job costs each server a look and one blocking reserve, not a poll loop."""
    broker = BeanstalkCluster(private_cluster.url)
    consumer = broker.consumer([queue])
    before = [private_cluster.server_stats(i)["cmd-reserve-with-timeout"] for i in range(SIZE)]
    assert consumer.reserve(3) is None
    after = [private_cluster.server_stats(i)["cmd-reserve-with-timeout"] for i in range(SIZE)]
    assert [b - a for a, b in zip(before, after, strict=True)] == [2] * SIZE  # look, then wait
    consumer.close()
    broker.close()


def test_a_job_reserved_for_a_busy_consumer_is_given_back_at_once(private_cluster: Cluster,
                                                                   queue: str) -> None:
    """A server's wait that outlasts the consumer's releases what it gets: same priority, no delay."""
    broker = BeanstalkCluster(private_cluster.url)
    busy, other = broker.consumer([queue]), broker.consumer([queue])
    first: list[Delivery | None] = []
    thread = threading.Thread(target=lambda: first.append(busy.reserve(30)))
    thread.start()
    eventually(lambda: broker.stats().get(queue, {}).get("waiting") == SIZE, what="busy waiting")
    servers = [plain(private_cluster, i) for i in range(SIZE)]
    put(servers[0], queue, b"first")
    thread.join(10)
    assert first and first[0] is not None and first[0].body == b"first"
    late = put(servers[1], queue, b"late", priority=77)  # the busy consumer still waits there
    eventually(lambda: (servers[1].peek(late) or _NONE).stats.get("releases") == 1,
               what="the late job given back by the busy consumer")
    taken = other.reserve(5)
    assert taken is not None and taken.body == b"late"
    peeked = broker.peek(taken.broker_id)
    assert peeked is not None and peeked.stats["pri"] == 77 and peeked.stats["reserves"] == 2
    for consumer in (busy, other):
        consumer.close()
    for server in servers:
        server.close()
    broker.close()


class _Nothing:
    stats: dict[str, Any] = {}


_NONE = _Nothing()


def test_a_restarted_server_gives_its_jobs_back(private_cluster: Cluster, queue: str) -> None:
    """Killed with a job on it and restarted on its binlog: the same consumer gets the job."""
    broker = BeanstalkCluster(private_cluster.url)
    consumer = broker.consumer([queue])
    assert consumer.reserve(0) is None  # connected to every server
    server = plain(private_cluster, 1)
    put(server, queue, b"kept")
    server.close()
    private_cluster.servers[1].stop(kill=True)
    assert consumer.reserve(1) is None  # the others still answer
    private_cluster.servers[1].start()  # same port, same binlog
    delivery = eventually(lambda: consumer.reserve(1), timeout_s=15, what="the job back from the binlog")
    assert delivery is not None and delivery.body == b"kept"
    assert server_of(delivery.broker_id) == private_cluster.name(1)
    assert consumer.delete(delivery)
    consumer.close()
    broker.close()


# -- a worker on the cluster -----------------------------------------------------

@pytest.mark.fault
@pytest.mark.timeout(120)
def test_kill9_one_server_and_restart_every_accepted_job_completes(
        private_cluster: Cluster, queue: str, workers: StartWorker, sqlite_url: str,
        tmp_path: Path) -> None:
    """One server killed mid-run: puts go on to the others; restarted on its binlog, its jobs run."""
    app: App = make_app(private_cluster.url, sqlite_url)
    path, victim = tmp_path / "runs", private_cluster.name(1)
    workers(app, queue, concurrency=3)
    workers(app, queue, concurrency=2, pool="process")
    sent = [app.send("tagged", (str(path), str(i), 0.2), queue=queue) for i in range(45)]
    eventually(lambda: len(lines(path)) >= 5, what="5 jobs started")
    assert private_cluster.tube_counts(1, queue)["current-jobs-ready"] > 0  # it holds waiting jobs
    private_cluster.servers[1].stop(kill=True)
    during = [app.send("tagged", (str(path), str(i), 0.05), queue=queue) for i in range(45, 75)]
    assert all(server_of((app.backend.get(job.id) or {})["broker_id"]) != victim for job in during)
    private_cluster.servers[1].start()  # the same port and binlog
    sent += during + [app.send("tagged", (str(path), str(i), 0.05), queue=queue) for i in range(75, 90)]
    eventually(lambda: app.backend.counts().get("succeeded") == 90, timeout_s=60,
               what="every accepted job succeeded")
    assert record_count(app) == 90
    assert {job.get(timeout=1) for job in sent} == {str(i) for i in range(90)}
    assert all(job.status().state is JobState.SUCCEEDED for job in sent)
    eventually(lambda: settled(app, queue), timeout_s=20, what="nothing left in any server")
    app.close()
