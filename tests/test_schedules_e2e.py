"""Schedulers as real processes: three ``jobkit beat`` at once, ``worker --beat``, ``jobkit schedules``."""
from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobkit import App
from jobkit.embedded import Beanstalkd, free_port
from tests import limitapp
from tests.faultkit import lines
from tests.helpers import eventually
from tests.processes import ROOT, JobkitProcess, clean_env, jobkit

pytestmark = pytest.mark.e2e
BEAT_FOR_S = 60


@pytest.fixture(params=["sqlite", "mongo"])
def app(request: pytest.FixtureRequest, beanstalk: Beanstalkd, tmp_path: Path) -> Iterator[App]:
    backend = (f"sqlite:///{tmp_path / 'jobs.db'}" if request.param == "sqlite"
               else str(request.getfixturevalue("mongo_url")))
    app = App("beat-e2e", broker=beanstalk.url, backend=backend)
    app.tasks, app.schedules = limitapp.app.tasks, limitapp.app.schedules
    yield app
    app.close()


@pytest.fixture
def processes() -> Iterator[list[JobkitProcess]]:
    started: list[JobkitProcess] = []
    yield started
    for proc in started:
        proc.stop(timeout_s=5)


def run(app: App, *command: str, log: Path, tick_log: Path) -> JobkitProcess:
    return JobkitProcess(*command, "-A", "tests.limitapp:app", "--broker", app.broker.url,
                         "--backend", app.backend.url, log=log,
                         env=clean_env(LIMITS_TICK_LOG=str(tick_log)))


def tick_keys(app: App) -> list[str]:
    return sorted(r["idempotency_key"] for r in app.backend.find(task="tick", limit=1000))


def test_three_schedulers_at_once_give_one_job_per_tick(app: App, tmp_path: Path,
                                                        processes: list[JobkitProcess]) -> None:
    runs = tmp_path / "ticks"
    processes.append(run(app, "worker", "-q", limitapp.TICK_QUEUE, "-c", "2",
                         log=tmp_path / "worker.log", tick_log=runs))
    processes += [run(app, "beat", log=tmp_path / f"beat-{i}.log", tick_log=runs) for i in range(3)]
    time.sleep(BEAT_FOR_S)  # the behaviour under test is a minute of ticks
    for beat in processes[1:]:
        beat.stop()
    keys = tick_keys(app)
    eventually(lambda: len(lines(runs)) == len(keys), timeout_s=30, what="every tick's job run")
    ticks = [dt.datetime.fromisoformat(key.removeprefix("periodic:tick:")) for key in keys]
    assert len(ticks) >= BEAT_FOR_S - 10, "the schedulers sent a tick each second"
    gaps = [(b - a).total_seconds() for a, b in zip(ticks, ticks[1:], strict=False)]
    assert gaps == [1.0] * (len(ticks) - 1)  # no tick left out
    assert app.broker.stats()[limitapp.TICK_QUEUE]["total"] == len(keys)  # one message per tick
    assert len(lines(runs)) == len(keys)  # each ran once
    assert {r["attempts"] for r in app.backend.find(task="tick", limit=1000)} == {1}
    assert json.loads(jobkit("schedules", "-A", "tests.limitapp:app", "--broker", app.broker.url,
                             "--backend", app.backend.url).stdout)["schedules"][0]["last_run"] \
        == keys[-1].removeprefix("periodic:tick:")


def test_a_worker_with_beat_sends_and_runs_the_ticks(app: App, tmp_path: Path,
                                                     processes: list[JobkitProcess]) -> None:
    runs = tmp_path / "ticks"
    processes.append(run(app, "worker", "--beat", "-q", limitapp.TICK_QUEUE, "--pool", "process",
                         "-c", "1", log=tmp_path / "worker.log", tick_log=runs))
    eventually(lambda: len(lines(runs)) >= 2, timeout_s=30, what="two ticks run")
    processes[0].stop()
    assert processes[0].proc.returncode == 0
    assert len(tick_keys(app)) >= 2


@pytest.mark.parametrize("broker", ["memory", "beanstalk"])
def test_up_runs_the_schedules(broker: str, beanstalk: Beanstalkd, tmp_path: Path,
                               processes: list[JobkitProcess]) -> None:
    """``jobkit up``: in-process workers and beat (memory broker), or worker processes with --beat."""
    runs = tmp_path / "ticks"
    url = "memory://" if broker == "memory" else beanstalk.url
    env = clean_env(PYTHONPATH=str(ROOT), LIMITS_TICK_LOG=str(runs), JOBKIT_APP="tests.limitapp:app",
                    JOBKIT_BROKER_URL=url, JOBKIT_BACKEND_URL=f"sqlite:///{tmp_path / 'jobs.db'}")
    processes.append(JobkitProcess("up", "--port", str(free_port()), "--workers", "1",
                                   log=tmp_path / "up.log", env=env, cwd=tmp_path))
    eventually(lambda: len(lines(runs)) >= 2, timeout_s=30, what=f"two ticks run ({tmp_path / 'up.log'})")
    assert "and the beat" in processes[0].output()
