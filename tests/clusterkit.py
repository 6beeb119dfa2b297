"""Fixtures for the beanstalkd cluster: three real beanstalkd servers, for the session or one test."""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import greenstalk
import pytest

from jobkit.embedded import Beanstalkd
from tests.servers import missing

SIZE = 3  # servers in a test cluster


class Cluster:
    """Independent beanstalkd servers and the ``beanstalk://h1:p1,h2:p2,…`` URL that lists them."""

    def __init__(self, workdir: Path | None = None) -> None:
        if shutil.which("beanstalkd") is None:
            missing("beanstalkd is not installed (apt-get install beanstalkd)")
        self.servers = [Beanstalkd(binlog_dir=None if workdir is None else workdir / f"binlog-{i}")
                        for i in range(SIZE)]

    @property
    def url(self) -> str:
        return "beanstalk://" + ",".join(f"{s.host}:{s.port}" for s in self.servers)

    def name(self, index: int) -> str:
        """The ``host:port`` that the broker ids of jobs on server ``index`` start with."""
        server = self.servers[index]
        return f"{server.host}:{server.port}"

    def start(self) -> Cluster:
        for server in self.servers:
            server.start()
        return self

    def stop(self) -> None:
        for server in self.servers:
            server.stop(kill=True)

    def server_stats(self, index: int) -> dict[str, int]:
        """beanstalkd's own ``stats`` of server ``index`` (its command counters)."""
        server = self.servers[index]
        client = greenstalk.Client((server.host, server.port))
        try:
            return dict(client.stats())  # type: ignore[arg-type]
        finally:
            client.close()

    def tube_counts(self, index: int, queue: str) -> dict[str, int]:
        """``stats-tube`` of ``queue`` on server ``index`` (empty when it has no such tube)."""
        server = self.servers[index]
        client = greenstalk.Client((server.host, server.port))
        try:
            return dict(client.stats_tube(queue))  # type: ignore[arg-type]
        except greenstalk.NotFoundError:
            return {}
        finally:
            client.close()


@pytest.fixture(scope="session")
def beanstalkd_cluster() -> Iterator[Cluster]:
    """Three beanstalkd servers for the session; tests keep apart by using their own queues."""
    cluster = Cluster().start()
    yield cluster
    cluster.stop()


@pytest.fixture
def private_cluster(tmp_path: Path) -> Iterator[Cluster]:
    """Three beanstalkd servers with binlogs for one test, which may kill and restart them."""
    cluster = Cluster(tmp_path).start()
    yield cluster
    cluster.stop()
