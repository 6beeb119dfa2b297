"""Real Redis and RabbitMQ servers for the tests: Debian's ``redis-server`` and a private RabbitMQ node.

The RabbitMQ node is private: its own node name, ports, data ("mnesia") and
log directories, config file, no plugins, and ``HOME`` (for the Erlang cookie)
in a temporary directory, so it never meets a system RabbitMQ. Its boot takes
about 20 s, hence one per session. The Erlang port mapper daemon (``epmd``)
it starts is shared by every node on the machine and is left running.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobkit.embedded import free_port, wait_for_port
from tests.servers import missing

REDIS_SERVER = "/usr/bin/redis-server"
RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
RABBITMQ_BOOT_S = 90


class RedisServer:
    """A ``redis-server`` with an append-only file fsynced on every write, in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server") or REDIS_SERVER
        if not Path(binary).exists():
            missing("redis-server is not installed (apt-get install redis-server)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
                "--save", "", "--appendonly", "yes", "--appendfsync", "always", "--daemonize", "no"]
        log = open(self.workdir / "redis.out", "ab")
        self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for_port(self.port, proc=self.proc, timeout_s=20)
        return self

    def stop(self, kill: bool = False) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill() if kill else self.proc.terminate()
            self.proc.wait(20)


class RabbitServer:
    """A private RabbitMQ node (``rabbitmq-server`` with its own environment) in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.dist_port = free_port()
        self.node = f"jobkit-test-{uuid.uuid4().hex[:8]}@localhost"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def env(self) -> dict[str, str]:
        """The node's environment: everything it writes stays under ``workdir``."""
        config = self.workdir / "rabbitmq.conf"
        config.write_text(f"loopback_users = none\nlisteners.tcp.default = 127.0.0.1:{self.port}\n"
                          "consumer_timeout = 86400000\n"  # a held message is held (see the broker docs)
                          "log.console = true\nlog.file = false\n")
        plugins = self.workdir / "enabled_plugins"
        plugins.write_text("[].\n")
        (self.workdir / "rabbitmq-env.conf").write_text("")  # not /etc/rabbitmq's
        for sub in ("mnesia", "log", "home"):
            (self.workdir / sub).mkdir(exist_ok=True)
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
                "HOME": str(self.workdir / "home"), "RABBITMQ_NODENAME": self.node,
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1", "RABBITMQ_NODE_PORT": str(self.port),
                "RABBITMQ_DIST_PORT": str(self.dist_port),
                "RABBITMQ_MNESIA_BASE": str(self.workdir / "mnesia"),
                "RABBITMQ_LOG_BASE": str(self.workdir / "log"),
                "RABBITMQ_CONFIG_FILE": str(config.with_suffix("")),
                "RABBITMQ_ENABLED_PLUGINS_FILE": str(plugins),
                "RABBITMQ_CONF_ENV_FILE": str(self.workdir / "rabbitmq-env.conf"),
                "RABBITMQ_PID_FILE": str(self.workdir / "rabbitmq.pid")}

    def start(self) -> RabbitServer:
        if not Path(RABBITMQ_SERVER).exists():
            missing("rabbitmq-server is not installed (apt-get install rabbitmq-server)")
        log = open(self.workdir / "rabbitmq.out", "ab")
        self.proc = subprocess.Popen([RABBITMQ_SERVER], env=self.env(), stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        wait_for_port(self.port, proc=self.proc, timeout_s=RABBITMQ_BOOT_S)
        self._wait_amqp()
        return self

    def _wait_amqp(self) -> None:
        """The port opens late in the boot; still, wait until a real AMQP handshake works."""
        import amqp
        deadline = time.monotonic() + RABBITMQ_BOOT_S
        while True:
            try:
                connection = amqp.Connection(f"127.0.0.1:{self.port}", connect_timeout=2)
                connection.connect()
                connection.close()
                return
            except Exception:
                if time.monotonic() > deadline or (self.proc and self.proc.poll() is not None):
                    raise
                time.sleep(0.2)

    def stop(self, kill: bool = False) -> None:
        """Stop the node and every process of its group (its Erlang VM); epmd is not in the group."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # stragglers (erl_child_setup, inet_gethost)
        except (ProcessLookupError, PermissionError):
            pass


class PrivateBroker:
    """A broker of one kind on servers of its own, which a fault test may crash and restart.

    ``kind`` is a ``broker_url`` parameter name (beanstalk, beanstalk-cluster,
    redis, rabbitmq); every server keeps its data (binlog, append-only file,
    quorum queue log) in ``workdir`` and restarts on the same port.
    """

    KINDS = ("beanstalk", "beanstalk-cluster", "redis", "rabbitmq")

    def __init__(self, kind: str, workdir: Path) -> None:
        from jobkit.embedded import Beanstalkd
        from tests.clusterkit import Cluster

        self.kind = kind
        workdir.mkdir(parents=True, exist_ok=True)
        self.servers: list[Beanstalkd | RedisServer | RabbitServer]
        if kind == "beanstalk-cluster":
            cluster = Cluster(workdir)
            self.servers, self.url = list(cluster.servers), cluster.url
            return
        if kind == "beanstalk":
            self.servers = [Beanstalkd(binlog_dir=workdir / "binlog")]
        elif kind == "redis":
            self.servers = [RedisServer(workdir)]
        else:
            self.servers = [RabbitServer(workdir)]
        self.url = self.servers[0].url

    @property
    def reservers_per_slot(self) -> int:
        """How many ``waiting`` counts one idle worker slot adds (a cluster slot waits on every server)."""
        return len(self.servers)

    def start(self) -> PrivateBroker:
        for server in self.servers:
            server.start()
        return self

    def crash(self) -> None:
        """Stop every server as a crash would: ``kill -9``, except RabbitMQ (see below).

        A RabbitMQ 3.x node killed within minutes of declaring a quorum queue
        may not restart that queue (its Ra name registry is saved lazily), so
        it is stopped with SIGTERM; its workers' connections die all the same.
        """
        for server in self.servers:
            server.stop(kill=self.kind != "rabbitmq")

    def stop(self) -> None:
        for server in self.servers:
            server.stop(kill=True)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session; tests keep apart by using their own queues."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def rabbitmq_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitServer]:
    """One private RabbitMQ node for the session (it boots in about 20 s)."""
    server = RabbitServer(tmp_path_factory.mktemp("rabbitmq")).start()
    yield server
    server.stop()
