"""The benchmarks still run: each at a tiny size, checking only that it completes and
prints its result line in the README's "Performance" format. No timing is asserted here."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest

from tests import netkit
from tests.conftest import ROOT
from tests.processes import clean_env
from tests.servers import missing

pytestmark = pytest.mark.e2e
LINE = re.compile(r"^(?P<name>[a-z0-9_]+): jobkit=[\d.]+/s baseline=[\d.]+/s ratio=(?:[\d.]+|n/a)(?: .*)?$")
TINY = {
    "enqueue": ["-n", "50", "--chunk", "25"],
    "e2e": ["-n", "50", "--rounds", "1"],
    "latency": ["--rate", "50", "--seconds", "0.5"],
    "idle": ["--seconds", "0.5"],
    "http": ["--seconds", "2", "--slices", "2"],
    "load": ["--clients", "4", "--seconds", "1"],
    "dashboard": ["--records", "1000", "--rounds", "3"],
    "counts": ["--records", "2000", "--seconds", "0.5"],
    "limits": ["-n", "50", "--rounds", "1"],
    "redis": ["-n", "20", "--rounds", "1"],
    "rabbitmq": ["-n", "20", "--rounds", "1"],
    "rabbitmq_batch": ["-n", "20", "--rounds", "1", "--batch", "10"],
    "batch": ["-n", "200", "--turn", "100", "--per-request", "50"],
    "map": ["-n", "50", "--chunk", "25"],
    "asyncpool": ["-n", "50", "--sleepers", "20", "--sleep", "0.2", "--rounds", "1"],
    "scaling": ["-n", "40"],
}


@pytest.mark.parametrize("name", sorted(TINY))
def test_benchmark_runs_and_prints_its_line(name: str) -> None:
    if shutil.which("beanstalkd") is None:
        missing("beanstalkd is not installed (apt-get install beanstalkd)")
    if name == "scaling" and (reason := netkit.unavailable()) is not None:
        missing(reason)  # it builds a test network of namespaces: root only
    proc = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *TINY[name]], cwd=ROOT,
                          env=clean_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]
    if name == "http" and last.startswith("http: skipped: "):
        return  # no jobkit.api in this tree yet: the benchmark says so and measures nothing
    match = LINE.match(last)
    assert match is not None, last
    assert match["name"] == name
    if name == "rabbitmq":
        assert re.search(r" bare=\d+/s vs_bare=[\d.]+ ", last), last  # the bare loop ran beside
