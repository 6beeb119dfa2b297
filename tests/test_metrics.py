"""Prometheus metrics scraped from real processes: a process-pool worker and a multi-process API.

Each pool child and each API process counts in files of its own; one scrape
must add them all up, whichever process answers it.
"""
from __future__ import annotations

import os
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobkit import App
from jobkit.embedded import Beanstalkd, free_port, wait_for_port
from jobkit.job import Job
from tests.conftest import unique
from tests.faultkit import StartWorker, make_app
from tests.helpers import eventually
from tests.processes import JobkitProcess

pytestmark = pytest.mark.e2e


def scrape(port: int, path: str = "/metrics") -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape: (name, labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
        text = answer.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    """The sum of the samples called ``name`` whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(value for (found, have), value in samples.items() if found == name and wanted <= have)


@pytest.fixture
def app(beanstalkd: Beanstalkd, sqlite_url: str) -> Iterator[App]:
    jobkit_app = make_app(beanstalkd.url, sqlite_url)
    yield jobkit_app
    jobkit_app.close()


def finish(jobs: list[Job]) -> None:
    for job in jobs:
        eventually(lambda job=job: job.status().state.finished, timeout_s=30, what=f"job {job.id}")  # type: ignore[misc]


def test_a_process_pool_serves_one_sum_for_all_its_children(app: App, workers: StartWorker) -> None:
    queue, port = unique("q"), free_port()
    workers(app, queue, "--metrics-port", str(port), concurrency=2, pool="process")
    # two children wait; while one sleeps, the other takes the next job: both count
    slow = [app.send("sleepy", [0.3], queue=queue) for _ in range(4)]
    ok = [app.send("add", [i, i], queue=queue) for i in range(6)]
    bad = [app.send("boom", ["no"], queue=queue) for _ in range(3)]
    finish(slow + ok + bad)
    assert len({job.status().record["worker"] for job in slow}) == 2
    samples = scrape(port)
    assert total(samples, "jobkit_jobs_total", outcome="succeeded") == 10
    assert total(samples, "jobkit_jobs_total", task="add", outcome="succeeded") == 6
    assert total(samples, "jobkit_jobs_total", task="boom", outcome="failed") == 3
    assert total(samples, "jobkit_job_duration_seconds_count") == 13
    assert total(samples, "jobkit_job_duration_seconds_bucket", task="sleepy", le="0.25") == 0
    assert total(samples, "jobkit_job_queue_seconds_count", task="add") == 6
    assert total(samples, "jobkit_jobs_running") == 0


def test_a_dead_childs_running_job_leaves_the_gauge_and_its_counts_stay(
        app: App, workers: StartWorker) -> None:
    queue, port = unique("q"), free_port()
    workers(app, queue, "--metrics-port", str(port), concurrency=2, pool="process")
    finish([app.send("add", [1, 2], queue=queue)])
    stuck = app.send("sleepy", [60], queue=queue)
    eventually(lambda: total(scrape(port), "jobkit_jobs_running") == 1, what="the running gauge at 1")
    child = int(stuck.status().record["worker"].rsplit(":", 1)[1])
    app.cancel(stuck.id)  # redelivered when its child dies, it is then settled without running
    os.kill(child, signal.SIGKILL)
    eventually(lambda: not Path(f"/proc/{child}").exists(), what="the child gone")
    eventually(lambda: total(scrape(port), "jobkit_jobs_running") == 0,
               what="the dead child's gauge dropped")
    assert total(scrape(port), "jobkit_jobs_total", task="add", outcome="succeeded") == 1


def test_a_thread_pool_worker_serves_its_metrics(app: App, workers: StartWorker) -> None:
    queue, port = unique("q"), free_port()
    workers(app, queue, "--metrics-port", str(port), concurrency=2)
    finish([app.send("add", [1, 2], queue=queue), app.send("boom", queue=queue)])
    samples = scrape(port)
    assert total(samples, "jobkit_jobs_total", task="add", outcome="succeeded") == 1
    assert total(samples, "jobkit_jobs_total", task="boom", outcome="failed") == 1


def test_the_api_metrics_add_up_over_its_processes(app: App, tmp_path: Path) -> None:
    port = free_port()
    api = JobkitProcess("api", "-A", "tests.taskapp:app", "--broker", app.broker.url, "--backend",
                        app.backend.url, "--host", "127.0.0.1", "--port", str(port), "--processes", "2",
                        log=tmp_path / "api.log")
    try:
        wait_for_port(port, timeout_s=20, proc=api.proc)  # type: ignore[arg-type]
        for _ in range(40):  # a connection each: the kernel spreads them over both processes
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as answer:
                assert answer.status == 200
        for _ in range(6):  # whichever process answers the scrape, it counts every request
            samples = scrape(port)
            assert total(samples, "jobkit_api_requests_total", route="/healthz") == 40, api.output()
    finally:
        api.stop()


def test_the_grafana_dashboard_asks_only_for_metrics_jobkit_serves() -> None:
    """docs/grafana-jobkit.json names series the worker and API registries really have."""
    import json
    import re

    from prometheus_client import CollectorRegistry

    from jobkit.api.metrics import Metrics
    from jobkit.metrics import PrometheusJobs

    registry = CollectorRegistry()
    PrometheusJobs(registry)
    api = Metrics(App("t", broker="memory://", backend="memory://"))
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    served = {family.name + suffix for reg in (registry, api.scraped) for family in reg.collect()
              for suffix in suffixes.get(family.type, ())}
    dashboard = json.loads((Path(__file__).parent.parent / "docs" / "grafana-jobkit.json").read_text())
    asked = {name for panel in dashboard["panels"] for target in panel["targets"]
             for name in re.findall(r"\bjobkit_[a-z_]+", target["expr"])}
    assert asked and asked <= served, asked - served


@pytest.mark.parametrize("pool", ["thread", "process"])
def test_a_metrics_port_in_use_is_a_one_line_error(pool: str) -> None:
    import socket

    from tests.processes import clean_env, jobkit

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = jobkit("worker", "--broker", "memory://", "--backend", "memory://", "--pool", pool,
                      "--metrics-port", str(port), env=clean_env(), timeout_s=30)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("jobkit: ConfigError: cannot serve metrics on 127.0.0.1:") and len(lines) == 1
