"""Scaling across hosts: e2e throughput with 1, 2 and 4 worker hosts on a simulated network.

Each host is a Linux network namespace (tests/netkit.py): three beanstalkd
hosts (the ``beanstalk://h1,h2,h3`` cluster, binlogs on), a MongoDB host
(nx-27017 here), and up to four worker hosts, each running ``jobkit worker
--pool process -c 2``. Every link goes through a proxy adding 1 ms each way
(2 ms round trip). For each host count, N ``add`` jobs are enqueued first
(one batch), then the workers start; the rate is N over the span from the
first job's start to the last one's finish, read from the records, so the
enqueue does not count. The line: ``jobkit`` is the 4-host rate,
``baseline`` the 1-host rate, ``ratio`` their quotient (4.0 would be
linear); ``per_added_host`` gives 2 hosts over 1 and 4 over 2; and the CPU
the three beanstalkd servers together and the MongoDB server spent per job
in the 4-host round (what one core of each carries). Needs root.
"""
from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from benchmarks import common
from tests.faultkit import LinkFaults, make_app
from tests.helpers import eventually
from tests.netkit import Deployment, Network, unavailable

HOSTS = (1, 2, 4)
PROCESSES = 2  # worker processes per host


def server_cpu(deployment: Deployment) -> dict[str, float]:
    """CPU seconds used so far by the beanstalkd servers (together) and the MongoDB server (proxies apart)."""
    hosts = deployment.net.hosts
    brokers = [hosts[name].procs[0].pid for name in deployment.BROKERS]
    mongo = [hosts["db"].procs[0].pid]
    return {"beanstalkd": common.cpu_seconds(brokers), "mongo": common.cpu_seconds(mongo)}


def rate(deployment: Deployment, hosts: int, n: int, cpu: dict[str, float]) -> float:
    """Jobs per second with ``hosts`` worker hosts, from the records' start and finish times.

    ``cpu`` gets the servers' CPU seconds per job over the round (enqueue included).
    """
    before = server_cpu(deployment)
    queue = deployment.database = f"scale{hosts}"  # a fresh queue and database
    app = make_app(deployment.broker_url, deployment.backend_url)
    app.send_many([app.tasks["add"].s(i, i).set(queue=queue) for i in range(n)])
    names = [f"worker-{i + 1}" for i in range(hosts)]
    for name in names:
        deployment.start_workers(name, queue, processes=PROCESSES)
    eventually(lambda: app.backend.counts().get("succeeded", 0) >= n, timeout_s=600,
               what=f"{n} jobs done on {hosts} host(s)")
    records = app.backend.find(state="succeeded", limit=n)
    span = max(r["finished_at"] for r in records) - min(r["started_at"] for r in records)
    after = server_cpu(deployment)
    cpu.update({name: (after[name] - before[name]) / n for name in after})
    for name in names:
        deployment.net.hosts[name].kill_all()
    app.close()
    return n / span


def main(argv: Sequence[str] | None = None) -> str:
    parser = common.parser("scaling", __doc__)
    parser.add_argument("-n", "--jobs", type=int, default=3000, help="jobs per host count (default 3000)")
    args = parser.parse_args(argv)
    reason = unavailable()
    if reason is not None:
        line = f"scaling: skipped: {reason}"
        print(line, flush=True)
        return line
    with tempfile.TemporaryDirectory(prefix="jobkit-scaling-") as tmp:
        net = Network(Path(tmp), LinkFaults(delay_s=0.001))
        try:
            deployment = Deployment(net, [f"worker-{i + 1}" for i in range(max(HOSTS))])
            rates, cpu = {}, {}
            for hosts in HOSTS:
                rates[hosts] = rate(deployment, hosts, args.jobs, cpu)
                common.note(f"{hosts} worker host(s): {rates[hosts]:.0f} jobs/s; server CPU per job: "
                            + ", ".join(f"{k} {v * 1e6:.0f} µs" for k, v in cpu.items()))
        finally:
            left = net.close()
        if left:
            raise SystemExit(f"the test network left {left}")
    steps = f"{rates[2] / rates[1]:.2f},{rates[4] / rates[2]:.2f}"
    extra = " ".join(f"hosts_{h}={rates[h]:.0f}" for h in HOSTS)
    cost = " ".join(f"{name}_cpu_us_per_job={seconds * 1e6:.0f}" for name, seconds in cpu.items())
    return common.report("scaling", rates[4], rates[1], f"{extra} per_added_host={steps} rtt_ms=2 "
                         f"jobs={args.jobs} {cost}")


if __name__ == "__main__":
    main()
