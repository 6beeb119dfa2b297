"""Workflows under faults: worker processes killed mid-chord, beanstalkd killed mid-chain.

Real ``jobkit worker`` processes (``-A tests.canvasapp:app``) over a private
beanstalkd with a binlog, records in SQLite. A chord's callback counts its
runs in a file: it must run exactly once whatever is killed.
"""
from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jobkit import App, JobState, chain, chord
from jobkit.embedded import Beanstalkd
from tests import canvasapp
from tests.faultkit import lines, waiting
from tests.helpers import eventually
from tests.processes import JobkitProcess, clean_env

pytestmark = pytest.mark.fault
StartWorker = Callable[..., JobkitProcess]


@pytest.fixture
def app(beanstalk: Beanstalkd, sqlite_url: str) -> Iterator[App]:
    app = App("canvas-faults", broker=beanstalk.url, backend=sqlite_url)
    app.tasks = canvasapp.app.tasks
    yield app
    app.close()


@pytest.fixture
def start_worker(app: App, beanstalk: Beanstalkd, tmp_path: Path) -> Iterator[StartWorker]:
    """Start a worker process on the canvas tasks; ``die_before_put`` arms its broker (see canvasapp)."""
    started: list[JobkitProcess] = []

    def start(concurrency: int = 2, die_before_put: Path | None = None) -> JobkitProcess:
        before = waiting(app, "default")
        env = clean_env(CANVAS_BROKER_URL=beanstalk.url, CANVAS_DIE_BEFORE_PUT=str(die_before_put or ""))
        proc = JobkitProcess("worker", "-A", "tests.canvasapp:app", "--backend", app.backend.url,
                             "-c", str(concurrency), "--grace", "5", env=env,
                             log=tmp_path / f"worker-{len(started)}.log")
        started.append(proc)
        eventually(lambda: waiting(app, "default") >= before + concurrency, timeout_s=20,
                   what=f"worker {len(started)} reserving")
        return proc

    yield start
    for proc in started:
        proc.stop(timeout_s=5)


def t(app: App, name: str) -> Any:
    return app.tasks[name]


@pytest.mark.timeout(90)
def test_kill9_of_the_worker_running_a_chord_member(app: App, start_worker: StartWorker,
                                                    tmp_path: Path) -> None:
    marker, runs = tmp_path / "die", tmp_path / "callback"
    marker.touch()
    start_worker()
    start_worker()
    members = [t(app, "add").s(i, i) for i in range(100)]
    members[37] = t(app, "die_once").s(37, 37, str(marker))
    job = chord(members, t(app, "counted_sum").s(str(runs))).delay(app=app)
    assert job.get(timeout=60) == 9900
    assert not marker.exists()  # a worker did die running member 37
    assert len(lines(runs)) == 1
    assert app.backend.counts() == {"succeeded": 101}


@pytest.mark.timeout(90)
def test_kill9_after_the_last_member_stored_its_outcome_before_the_callback_was_put(
        app: App, start_worker: StartWorker, tmp_path: Path) -> None:
    marker, runs = tmp_path / "die-before-put", tmp_path / "callback"
    marker.write_text("counted_sum")
    first = start_worker(die_before_put=marker)
    second = start_worker(die_before_put=marker)
    members = (t(app, "add").s(i, i) for i in range(100))
    job = chord(members, t(app, "counted_sum").s(str(runs))).delay(app=app)
    assert job.get(timeout=60) == 9900
    assert not marker.exists()
    died = [proc for proc in (first, second) if proc.proc.poll() is not None]
    assert len(died) == 1 and died[0].proc.returncode == -signal.SIGKILL
    assert len(lines(runs)) == 1
    callback = job.status().record
    last_member = app.status(callback["parent"])
    assert last_member.state is JobState.SUCCEEDED and callback["workflow"]["due_by"] == last_member.id
    assert app.backend.counts() == {"succeeded": 101}


@pytest.mark.timeout(120)
def test_a_chain_survives_a_beanstalkd_kill9_and_restart_with_binlog(
        app: App, beanstalk: Beanstalkd, start_worker: StartWorker, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    start_worker()
    steps = [t(app, "slow_inc").s(0, 1.0, str(runs))] + [t(app, "slow_inc").s(1.0, str(runs))] * 3
    job = chain(steps).delay(app=app)
    eventually(lambda: len(lines(runs)) == 2, timeout_s=20, what="the second step running")
    beanstalk.stop(kill=True)
    eventually(lambda: len(app.backend.find(state="succeeded")) == 2, timeout_s=10,
               what="the second step's outcome stored while beanstalkd is down")
    beanstalk.start()  # the same port and binlog
    assert job.get(timeout=60) == 4
    assert len(lines(runs)) == 4  # every step ran once
    assert app.backend.counts() == {"succeeded": 4}
