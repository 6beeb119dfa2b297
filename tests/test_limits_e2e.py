"""Rate and concurrency limits over real worker processes, a real beanstalkd, SQLite and MongoDB."""
from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jobkit import App
from jobkit.embedded import Beanstalkd
from tests import limitapp
from tests.faultkit import lines
from tests.helpers import eventually
from tests.processes import JobkitProcess

pytestmark = pytest.mark.e2e
StartWorker = Callable[..., JobkitProcess]


@pytest.fixture(params=["sqlite", "mongo"])
def app(request: pytest.FixtureRequest, beanstalk: Beanstalkd, tmp_path: Path) -> Iterator[App]:
    """The limited tasks over a private beanstalkd, records in SQLite or MongoDB."""
    backend = (f"sqlite:///{tmp_path / 'jobs.db'}" if request.param == "sqlite"
               else str(request.getfixturevalue("mongo_url")))
    app = App("limits-e2e", broker=beanstalk.url, backend=backend)
    app.tasks = limitapp.app.tasks
    yield app
    app.close()


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[StartWorker]:
    """Start ``jobkit worker -A tests.limitapp:app`` processes; wait until they reserve."""
    started: list[JobkitProcess] = []

    def start(app: App, queue: str, concurrency: int = 1) -> JobkitProcess:
        waiting = app.broker.stats().get(queue, {}).get("waiting", 0)
        log = tmp_path / f"worker-{len(started)}.log"
        proc = JobkitProcess("worker", "-A", "tests.limitapp:app", "--broker", app.broker.url,
                             "--backend", app.backend.url, "-q", queue, "-c", str(concurrency),
                             "--grace", "5", log=log)
        started.append(proc)
        eventually(lambda: proc.proc.poll() is None and app.broker.stats().get(queue, {})
                   .get("waiting", 0) >= waiting + concurrency, timeout_s=20, what=f"worker on {queue}")
        return proc

    yield start
    for proc in started:
        proc.stop(timeout_s=5)


def records(app: App, task: str) -> list[dict[str, Any]]:
    return app.backend.find(task=task, limit=1000)


def most_running_at_once(intervals: list[tuple[float, float]]) -> int:
    """The largest number of [start, end] intervals that overlap (an end before a start at the same time)."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    return most


def test_a_rate_limit_holds_for_all_workers_together(app: App, start_worker: StartWorker) -> None:
    for _ in range(3):
        start_worker(app, "rated", concurrency=2)
    jobs = [app.send("rated", (i,)) for i in range(60)]
    assert [job.get(timeout=120) for job in jobs] == list(range(60))
    done = records(app, "rated")
    starts = sorted(record["started_at"] for record in done)
    busiest = max(sum(1 for other in starts if start <= other < start + 1.0) for start in starts)
    assert busiest <= 10, f"{busiest} starts within one second"
    assert {record["attempts"] for record in done} == {1}  # waiting on the limit is no attempt
    assert all(record["waiting"] is None for record in done)


def test_a_concurrency_limit_holds_per_key(app: App, start_worker: StartWorker) -> None:
    for _ in range(4):
        start_worker(app, "keyed")
    jobs = [app.send("keyed", ("a", 0.3))]  # the key given by position counts the same
    jobs += [app.send("keyed", kwargs={"account": account, "seconds": 0.3})  # one key after another
             for account in ("a", "b", "c") for _ in range(6)]
    for job in jobs:
        job.get(timeout=120)
    done = records(app, "keyed")
    by_key = {account: [(r["started_at"], r["finished_at"]) for r in done if r["result"] == account]
              for account in ("a", "b", "c")}
    assert sum(len(intervals) for intervals in by_key.values()) == 19
    most = {account: most_running_at_once(intervals) for account, intervals in by_key.items()}
    assert max(most.values()) <= 2, most
    assert {record["attempts"] for record in done} == {1}


def test_a_killed_workers_slot_comes_back_after_its_ttr(app: App, start_worker: StartWorker,
                                                        tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    first = start_worker(app, "single")
    holder = app.send("single", (str(runs), 60))
    eventually(lambda: lines(runs), timeout_s=20, what="the first job running")
    held_from = app.status(holder.id).record["started_at"]
    first.signal(signal.SIGKILL)  # dies holding the task's one slot
    first.wait(10)
    start_worker(app, "single")
    other = app.send("single", (str(tmp_path / "other"), 0))
    waiting = eventually(lambda: app.status(other.id).record["waiting"], timeout_s=20,
                         what="the second job waiting on the limit")
    assert waiting["limit"] == "concurrency_limit"
    assert app.status(other.id).record["state"] == "queued"
    assert other.get(timeout=60) == 1
    assert holder.get(timeout=60) == 2  # redelivered after its TTR, ran again
    ttr = limitapp.single.options.ttr
    assert app.status(other.id).record["started_at"] >= held_from + ttr  # not before the lease ended
