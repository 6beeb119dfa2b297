"""Fixtures: real servers started per session, and every broker and backend implementation."""
from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobkit.backends import Backend, backend_from_url
from jobkit.brokers import Broker, broker_from_url
from jobkit.embedded import Beanstalkd
from tests.brokerservers import rabbitmq_server, redis_server  # noqa: F401 - broker servers
from tests.clusterkit import beanstalkd_cluster, private_cluster  # noqa: F401 - cluster fixtures
from tests.faultkit import beanstalk, fault_app, mongo, workers  # noqa: F401 - fault-test fixtures
from tests.servers import MongoServer, missing

ROOT = Path(__file__).resolve().parent.parent


def unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def beanstalkd() -> Iterator[Beanstalkd]:
    """One beanstalkd for the session; tests keep apart by using their own queues."""
    if shutil.which("beanstalkd") is None:
        missing("beanstalkd is not installed (apt-get install beanstalkd)")
    server = Beanstalkd().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MongoServer]:
    server = MongoServer(tmp_path_factory.mktemp("mongo")).start()
    yield server
    server.stop()


@pytest.fixture
def mongo_url(mongo_server: MongoServer) -> str:
    """A fresh database on the session's MongoDB server."""
    return mongo_server.url(unique("jobs_"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture(params=["memory", "sqlite", "mongo"])
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of each backend implementation in turn."""
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    return str(request.getfixturevalue("mongo_url"))


@pytest.fixture
def backend(backend_url: str) -> Iterator[Backend]:
    """Each backend implementation in turn."""
    instance = backend_from_url(backend_url, result_ttl=3600)
    yield instance
    instance.close()


@pytest.fixture(params=["memory", "beanstalk", "beanstalk-cluster", "redis", "rabbitmq"])
def broker_url(request: pytest.FixtureRequest) -> str:
    """The URL of each broker implementation in turn."""
    if request.param == "memory":
        return "memory://"
    if request.param in ("redis", "rabbitmq"):
        return str(request.getfixturevalue(f"{request.param}_server").url)
    if request.param == "beanstalk-cluster":
        return str(request.getfixturevalue("beanstalkd_cluster").url)
    return str(request.getfixturevalue("beanstalkd").url)


@pytest.fixture
def broker(broker_url: str) -> Iterator[Broker]:
    """Each broker implementation in turn."""
    instance = broker_from_url(broker_url)
    yield instance
    instance.close()


@pytest.fixture
def queue() -> str:
    """A queue name no other test uses."""
    return unique("q")
