"""Supervised processes stop quietly however SIGTERM arrives: once from the parent, or also from the group."""
from __future__ import annotations

import os
import signal
import urllib.request
from pathlib import Path

import pytest

from jobkit.embedded import Beanstalkd, free_port
from tests.helpers import eventually
from tests.processes import JobkitProcess

pytestmark = pytest.mark.e2e
RUNS = 4


def healthy(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as answer:
        return bool(answer.status == 200)


def stop_group(proc: JobkitProcess) -> int:
    """SIGTERM to the whole process group, as service managers send it; the exit code."""
    os.killpg(proc.pid, signal.SIGTERM)
    return proc.wait(30)


def assert_quiet(code: int, output: str) -> None:
    assert code == 0, output
    assert "Traceback" not in output and "failed" not in output, output


@pytest.mark.parametrize("run", range(RUNS))
def test_api_processes_stop_quietly_on_a_group_sigterm(beanstalkd: Beanstalkd, sqlite_url: str,
                                                       tmp_path: Path, run: int) -> None:
    port = free_port()
    proc = JobkitProcess("api", "--processes", "2", "--host", "127.0.0.1", "--port", str(port),
                         "--broker", beanstalkd.url, "--backend", sqlite_url, "-l", "INFO",
                         log=tmp_path / "api.log")
    try:
        eventually(lambda: healthy(port), timeout_s=20, what="the API answers")
        eventually(lambda: len(children(proc.pid)) == 2, what="two API processes")
        for _ in range(10):  # both children serve (and so have their signal handlers set)
            healthy(port)
        assert_quiet(stop_group(proc), proc.output())
    finally:
        proc.stop()


@pytest.mark.parametrize("run", range(RUNS))
def test_process_pool_stops_quietly_on_a_group_sigterm(beanstalkd: Beanstalkd, sqlite_url: str,
                                                       queue: str, tmp_path: Path, run: int) -> None:
    from jobkit import App

    app = App("signals", broker=beanstalkd.url)
    proc = JobkitProcess("worker", "-A", "tests.taskapp:app", "--pool", "process", "-c", "2",
                         "--broker", beanstalkd.url, "--backend", sqlite_url, "-q", queue,
                         "-l", "INFO", log=tmp_path / "worker.log")
    try:
        eventually(lambda: app.broker.stats().get(queue, {}).get("waiting", 0) >= 2, timeout_s=20,
                   what="both worker processes waiting")
        assert_quiet(stop_group(proc), proc.output())
    finally:
        proc.stop()
        app.close()


def children(pid: int) -> list[int]:
    """The pids of ``pid``'s children (Linux)."""
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []
