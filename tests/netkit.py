"""A test network on one machine: one Linux network namespace per host, joined by a bridge.

Each host is a namespace with a veth pair: one end (``eth0``, an address in a
private /24 of 10.77.0.0/16) inside, the other on a bridge in the root
namespace, which has the subnet's ``.254`` so that the test process reaches
every host. Servers listen on their host's loopback behind a proxy from
tests/faultkit.py on the host's address (the kernel here has no ``netem``):
the proxy adds the link's delay, stalls or resets, for every connection into
that server. Processes run inside a host with ``ip netns exec``.

Faults:

- :meth:`Network.partition` / :meth:`Network.heal`: the host's link down / up
  (every connection to it goes silent; nothing is closed);
- :meth:`Network.cut` / :meth:`Network.mend`: only the traffic between two hosts
  is dropped (a blackhole route each way), the rest of their links stay up;
- :meth:`Network.kill`: link down, then every process of the host gets SIGKILL
  (its TCP connections are never closed: their FIN goes nowhere), like a
  host that lost power.

:meth:`Network.close` kills every process of every host, deletes the
namespaces, veths and bridge, and :func:`leftovers` says what is left (the
fixture fails the test when anything is). Needs root (``CAP_NET_ADMIN``).
"""
from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from jobkit.embedded import beanstalkd_answers
from tests.faultkit import LinkFaults
from tests.processes import ROOT, clean_env
from tests.servers import missing

PREFIX = "jkn"  # every namespace, veth and bridge made here starts with it
BEANSTALK_PORT, MONGO_PORT, API_PORT = 11300, 27017, 8080
INNER_OFFSET = 1  # a server listens on loopback at its public port + this; the proxy on the public one


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run an iproute2 command; raise with its error output when it fails (and ``check``)."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc


def unavailable() -> str | None:
    """Why this machine cannot build a test network (None when it can)."""
    if shutil.which("ip") is None:
        return "iproute2 is not installed (apt-get install iproute2)"
    if os.geteuid() != 0:
        return "the test network needs root (network namespaces, veths, a bridge)"
    name = f"{PREFIX}probe{os.getpid() % 100000}"
    proc = run("ip", "netns", "add", name, check=False)
    if proc.returncode != 0:
        return f"cannot create a network namespace: {proc.stderr.strip()}"
    run("ip", "netns", "delete", name, check=False)
    return None


def leftovers(tag: str = "") -> list[str]:
    """Namespaces, links and processes of test networks (``tag``: of one network) still present."""
    mark = PREFIX + tag
    names = run("ip", "netns", "list", check=False).stdout.split()
    found = [f"namespace {n}" for n in names if n.startswith(mark)]
    links = run("ip", "-o", "link", "show", check=False).stdout.splitlines()
    found += [f"link {line.split(':')[1].strip().split('@')[0]}" for line in links
              if line.split(":")[1].strip().startswith(mark)]
    return found


@dataclass
class Host:
    """One host: a namespace, its address, the host end of its veth, the processes started in it."""

    name: str
    namespace: str
    address: str
    veth: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    dead: bool = False

    def spawn(self, argv: Sequence[str], log: Path,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start ``argv`` inside this host, output to ``log``."""
        out = open(log, "ab")
        proc = subprocess.Popen(["ip", "netns", "exec", self.namespace, *argv], cwd=ROOT,
                                env=env or clean_env(), stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        self.procs.append(proc)
        return proc

    def pids(self) -> list[int]:
        """Every process in the namespace (those started here and their children)."""
        proc = run("ip", "netns", "pids", self.namespace, check=False)
        return [int(p) for p in proc.stdout.split()]

    def kill_all(self) -> None:
        """SIGKILL every process in the namespace, and reap those started here."""
        for _ in range(50):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.procs.clear()


class Network:
    """Hosts on one bridge (see the module docstring); ``workdir`` holds logs and server data."""

    def __init__(self, workdir: Path, faults: LinkFaults | None = None) -> None:
        self.workdir = workdir
        self.faults = faults or LinkFaults()
        self.tag = uuid.uuid4().hex[:4]
        self.subnet = f"10.77.{random.randrange(1, 250)}"
        self.bridge = f"{PREFIX}{self.tag}br"
        self.hosts: dict[str, Host] = {}
        run("ip", "link", "add", self.bridge, "type", "bridge")
        run("ip", "addr", "add", f"{self.subnet}.254/24", "dev", self.bridge)
        run("ip", "link", "set", self.bridge, "up")

    def add_host(self, name: str) -> Host:
        """Create host ``name``: a namespace with loopback and ``eth0`` on the bridge."""
        index = len(self.hosts) + 1
        host = Host(name, f"{PREFIX}{self.tag}-{name}", f"{self.subnet}.{index}",
                    f"{PREFIX}{self.tag}v{index}")
        self.hosts[name] = host
        inner = f"{PREFIX}{self.tag}i{index}"
        run("ip", "netns", "add", host.namespace)
        run("ip", "link", "add", host.veth, "type", "veth", "peer", "name", inner)
        run("ip", "link", "set", inner, "netns", host.namespace)
        run("ip", "link", "set", host.veth, "master", self.bridge)
        run("ip", "link", "set", host.veth, "up")
        inside = ("ip", "netns", "exec", host.namespace, "ip")
        run(*inside, "link", "set", "lo", "up")
        run(*inside, "link", "set", inner, "name", "eth0")
        run(*inside, "addr", "add", f"{host.address}/24", "dev", "eth0")
        run(*inside, "link", "set", "eth0", "up")
        return host

    # -- servers -----------------------------------------------------------

    def log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def proxy(self, host: Host, port: int) -> None:
        """Start the link's proxy in ``host``: its address:port to loopback:port+1, with the faults."""
        f = self.faults
        host.spawn([sys.executable, "-m", "tests.faultkit", "--listen", f"{host.address}:{port}",
                    "--target", f"127.0.0.1:{port + INNER_OFFSET}", "--delay", str(f.delay_s),
                    "--stall", str(f.stall), "--reset", str(f.reset), "--stall-seconds", str(f.stall_s)],
                   self.log(f"{host.name}-proxy"))

    def start_beanstalkd(self, host: Host) -> None:
        """beanstalkd with a binlog in the work folder (restarting it replays the binlog)."""
        binlog = self.workdir / f"{host.name}-binlog"
        binlog.mkdir(exist_ok=True)
        host.spawn([shutil.which("beanstalkd") or "beanstalkd", "-l", "127.0.0.1",
                    "-p", str(BEANSTALK_PORT + INNER_OFFSET), "-b", str(binlog)], self.log(host.name))
        self.proxy(host, BEANSTALK_PORT)
        self.wait_for(host, BEANSTALK_PORT, beanstalk=True)

    def start_mongo(self, host: Host) -> None:
        """nx-27017 (or mongod) with its data in the work folder."""
        data = self.workdir / f"{host.name}-data"
        data.mkdir(exist_ok=True)
        port = MONGO_PORT + INNER_OFFSET
        mongod = shutil.which("mongod")
        nx = shutil.which("nx-27017") or str(Path(sys.executable).with_name("nx-27017"))
        if mongod:
            argv = [mongod, "--dbpath", str(data), "--port", str(port), "--bind_ip", "127.0.0.1"]
        else:
            argv = [nx, "--data-dir", str(data), "--host", "127.0.0.1", "-p", str(port),
                    "--pid-file", str(self.workdir / f"{host.name}.pid")]
        host.spawn(argv, self.log(host.name))
        self.proxy(host, MONGO_PORT)
        self.wait_for(host, MONGO_PORT)

    def wait_for(self, host: Host, port: int, beanstalk: bool = False, timeout_s: float = 30) -> None:
        """Wait until ``host:port`` answers from the test process (through the proxy)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if beanstalk and beanstalkd_answers(host.address, port):
                return
            if not beanstalk and _connects(host.address, port):
                return
            time.sleep(0.05)
        raise TimeoutError(f"{host.name}:{port} did not answer in {timeout_s} s (see {self.workdir})")

    def link_report(self) -> dict[str, int]:
        """Connections through the proxies so far, and how many were stalled or reset (from their logs)."""
        counts = {"connection": 0, "stall": 0, "reset": 0}
        for path in self.workdir.glob("*-proxy.log"):
            for line in path.read_text(errors="replace").splitlines():
                kind = line.removeprefix("proxy: ")
                if kind in counts:
                    counts[kind] += 1
        return counts

    # -- faults ------------------------------------------------------------

    def partition(self, name: str) -> None:
        """Take the host's link down: its connections go silent, nothing is closed."""
        run("ip", "link", "set", self.hosts[name].veth, "down")

    def heal(self, name: str) -> None:
        run("ip", "link", "set", self.hosts[name].veth, "up")

    def cut(self, a: str, b: str) -> None:
        """Drop the traffic between hosts ``a`` and ``b`` only (a blackhole route in each)."""
        for here, there in ((a, b), (b, a)):
            run("ip", "netns", "exec", self.hosts[here].namespace, "ip", "route", "add", "blackhole",
                f"{self.hosts[there].address}/32")

    def mend(self, a: str, b: str) -> None:
        for here, there in ((a, b), (b, a)):
            run("ip", "netns", "exec", self.hosts[here].namespace, "ip", "route", "del", "blackhole",
                f"{self.hosts[there].address}/32")

    def kill(self, name: str) -> None:
        """Power loss: the link goes down first, so that no FIN or RST ever leaves; then SIGKILL all."""
        host = self.hosts[name]
        self.partition(name)
        host.kill_all()
        host.dead = True

    def revive(self, name: str) -> Host:
        """Bring a killed host's link back up (its servers are started again by the caller)."""
        host = self.hosts[name]
        host.dead = False
        self.heal(name)
        return host

    # -- teardown ----------------------------------------------------------

    def close(self) -> list[str]:
        """Kill every process, delete namespaces, veths and bridge; return what could not be removed."""
        for host in self.hosts.values():
            host.kill_all()
        for host in self.hosts.values():
            run("ip", "netns", "delete", host.namespace, check=False)
            run("ip", "link", "delete", host.veth, check=False)
        run("ip", "link", "delete", self.bridge, check=False)
        left = leftovers(self.tag)
        left += [f"process {pid} in {h.name}" for h in self.hosts.values()
                 for pid in _pids_still_in(h.namespace)]
        return left


def _pids_still_in(namespace: str) -> list[int]:
    if not Path(f"/run/netns/{namespace}").exists():
        return []
    return [int(p) for p in run("ip", "netns", "pids", namespace, check=False).stdout.split()]


def _connects(host: str, port: int) -> bool:
    import socket
    try:
        socket.create_connection((host, port), timeout=1).close()
    except OSError:
        return False
    return True


def network_or_skip(workdir: Path, faults: LinkFaults | None = None) -> Iterator[Network]:
    """Build a :class:`Network` (skip, or fail under CI=true, when this machine cannot); tear it down."""
    reason = unavailable()
    if reason is not None:
        missing(reason)
    net = Network(workdir, faults)
    try:
        yield net
    finally:
        left = net.close()
    if left:
        pytest.fail(f"the test network left {', '.join(left)}")


class Deployment:
    """The issue's hosts on a :class:`Network`: ``broker-1..3`` (a beanstalkd cluster with
    binlogs), ``db`` (MongoDB), ``api``, and worker hosts (process pools) started on demand.

    Args:
        net: the network to build on.
        worker_hosts: names of the worker hosts to create (none runs a worker yet).
        lease_s: ``JOBKIT_LEASE`` of the workers and the API.
    """

    BROKERS = ("broker-1", "broker-2", "broker-3")

    def __init__(self, net: Network, worker_hosts: Sequence[str] = ("worker-a", "worker-b"),
                 lease_s: float = 3.0) -> None:
        self.net, self.lease_s = net, lease_s
        self.database = "jobs"  # of the backend URL; a benchmark may take a fresh one per round
        for name in (*self.BROKERS, "db", "api", *worker_hosts):
            net.add_host(name)
        for name in self.BROKERS:
            net.start_beanstalkd(net.hosts[name])
        net.start_mongo(net.hosts["db"])
        self.workers: dict[str, list[subprocess.Popen[bytes]]] = {}

    @property
    def broker_url(self) -> str:
        hosts = (self.net.hosts[b].address for b in self.BROKERS)
        return "beanstalk://" + ",".join(f"{address}:{BEANSTALK_PORT}" for address in hosts)

    @property
    def backend_url(self) -> str:
        return f"mongodb://{self.net.hosts['db'].address}:{MONGO_PORT}/{self.database}"

    @property
    def api_url(self) -> str:
        return f"http://{self.net.hosts['api'].address}:{API_PORT}"

    def env(self) -> dict[str, str]:
        return clean_env(JOBKIT_LEASE=str(self.lease_s))

    def start_workers(self, host: str, queue: str, processes: int = 2) -> subprocess.Popen[bytes]:
        """``jobkit worker --pool process -c N`` in ``host``: a supervisor and N one-slot children."""
        argv = [sys.executable, "-m", "jobkit", "worker", "-A", "tests.taskapp:app",
                "--broker", self.broker_url, "--backend", self.backend_url, "-q", queue,
                "-c", str(processes), "--pool", "process", "--grace", "5"]
        proc = self.net.hosts[host].spawn(argv, self.net.log(host), env=self.env())
        self.workers.setdefault(host, []).append(proc)
        return proc

    def start_api(self) -> None:
        host = self.net.hosts["api"]
        host.spawn([sys.executable, "-m", "jobkit", "api", "-A", "tests.taskapp:app",
                    "--broker", self.broker_url, "--backend", self.backend_url,
                    "--host", host.address, "--port", str(API_PORT), "--threads", "8"],
                   self.net.log("api"), env=self.env())
        self.net.wait_for(host, API_PORT)

    def restart_broker(self, name: str) -> None:
        """Bring a killed broker host back: link up, beanstalkd on its binlog, its proxy."""
        self.net.start_beanstalkd(self.net.revive(name))

    def host_of(self, pid: int) -> str | None:
        """The host a process runs in (by its pid, as worker names carry it)."""
        for host in self.net.hosts.values():
            if pid in host.pids():
                return host.name
        return None
