"""Workflows in this process: chain, group, chord, nesting, failures, handles, records, ETA.

Each test runs a worker in this process over a real beanstalkd, with records
in each backend (memory, SQLite, MongoDB).
"""
from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobkit import App, GroupJob, Job, JobState, chain, chord, group
from jobkit.canvas import Signature, from_dict
from jobkit.errors import ConfigError, JobFailed, TaskNotFound
from jobkit.worker import Worker
from tests import canvasapp
from tests.faultkit import lines
from tests.helpers import eventually


def tasks_on(app: App, queue: str) -> None:
    """Register the canvas test tasks on ``app``, routed to ``queue``."""
    for name, task in canvasapp.app.tasks.items():
        app.task(name=name, **{**task.options.__dict__, "queue": queue})(task.fn)


@pytest.fixture
def app(beanstalkd: Any, backend_url: str, queue: str) -> Iterator[App]:
    app = App("canvas-tests", broker=beanstalkd.url, backend=backend_url)
    tasks_on(app, queue)
    yield app
    app.close()


@pytest.fixture
def worker(app: App) -> Iterator[Worker]:
    worker = Worker(app, concurrency=3, grace_s=5)
    worker.start()
    yield worker
    worker.shutdown(graceful=False)


def t(app: App, name: str) -> Any:
    return app.tasks[name]


def test_chain_prepends_each_result_to_the_next_steps_args(app: App, worker: Worker) -> None:
    job = chain(t(app, "add").s(1, 2), t(app, "mul").s(10)).delay()
    assert isinstance(job, Job)
    assert job.get(timeout=10) == 30
    assert (t(app, "add").s(1, 2) | t(app, "mul").s(10) | t(app, "add").s(5)).delay().get(timeout=10) == 35


def test_chord_of_100_runs_its_callback_once_with_every_result_in_order(
        app: App, worker: Worker, tmp_path: Path) -> None:
    runs = tmp_path / "callback"
    job = chord((t(app, "add").s(i, i) for i in range(100)), t(app, "counted_sum").s(str(runs))).delay()
    assert job.get(timeout=60) == 9900
    assert len(lines(runs)) == 1
    record = job.status().record
    assert len(record["workflow"]["deps"]) == 100 and record["workflow"]["pending"] == 0
    assert record["args"][0] == [2 * i for i in range(100)]


def test_group_gives_results_in_order_and_counts_states(app: App, worker: Worker) -> None:
    handle = group(t(app, "add").s(i, i) for i in range(10)).delay()
    assert isinstance(handle, GroupJob) and len(handle.jobs) == 10
    assert handle.get(timeout=10) == [2 * i for i in range(10)]
    assert handle.status()["succeeded"] == 10 and handle.ready()


def test_workflows_nest(app: App, worker: Worker) -> None:
    add, mul, tsum = t(app, "add"), t(app, "mul"), t(app, "tsum")
    chain_of_groups = chain(add.s(1, 1), group(mul.s(2), mul.s(3)), tsum.s())  # 2 -> [4, 6] -> 10
    assert chain_of_groups.delay().get(timeout=10) == 10
    chord_in_chain = chain(add.s(1, 2), chord([mul.s(2), mul.s(3)], tsum.s()), mul.s(10))  # [6, 9] -> 150
    assert chord_in_chain.delay().get(timeout=10) == 150
    group_of_chains = group(chain(add.s(1, 1), mul.s(5)), chord([add.s(1, 2)], tsum.s()))
    assert group_of_chains.delay().get(timeout=10) == [10, 3]
    chain_ending_in_group = chain(add.s(2, 3), group(mul.s(2), mul.s(4)))
    assert chain_ending_in_group.delay().get(timeout=10) == [10, 20]


def test_an_immutable_step_ignores_the_result_before_it(app: App, worker: Worker) -> None:
    job = chain(t(app, "add").s(1, 2), t(app, "echo").si("own", key=1)).delay()
    assert job.get(timeout=10) == [["own"], {"key": 1}]


def test_a_failing_link_fails_the_rest_of_the_chain_with_its_error(
        app: App, worker: Worker, tmp_path: Path) -> None:
    runs = tmp_path / "after"
    first = t(app, "add").s(1, 2)
    job = chain(first, t(app, "fail").s(), t(app, "counted").s(str(runs)), t(app, "mul").s(2)).delay()
    with pytest.raises(JobFailed) as caught:
        job.get(timeout=10)
    error = caught.value.error
    failed_link = error["job"]
    assert error["type"] == "ValueError" and "bad link (3,)" in error["message"]
    assert failed_link in error["message"] and "(fail)" in error["message"]
    assert app.status(failed_link).state is JobState.FAILED
    assert app.status(failed_link).error["message"] == "bad link (3,)"
    middle = app.status(job.status().record["parent"])
    assert middle.state is JobState.FAILED and middle.error["job"] == failed_link
    assert lines(runs) == []  # the steps after the failed link never ran


def test_a_failed_member_fails_the_chord_callback_and_the_others_still_run(
        app: App, worker: Worker, tmp_path: Path) -> None:
    runs = tmp_path / "callback"
    members = [t(app, "add").s(1, 1), t(app, "fail").s("x"), t(app, "add").s(2, 2)]
    job = chord(members, t(app, "counted_sum").s(str(runs))).delay()
    with pytest.raises(JobFailed) as caught:
        job.get(timeout=10)
    assert caught.value.error["type"] == "ValueError"
    root_id = job.status().record["root"]  # a member: it may finish after the callback failed
    root = eventually(lambda: (s := app.status(root_id)).state is JobState.SUCCEEDED and s,
                      what="the first member succeeded")
    assert root.result == 2
    siblings = [app.status(child) for child in root.record["children"]]
    assert len(siblings) == 1 and siblings[0].id == job.id
    eventually(lambda: app.backend.counts().get("succeeded") == 2, what="the other members succeeded")
    assert lines(runs) == []


def test_a_member_retried_then_succeeding_counts_as_usual(app: App, worker: Worker, tmp_path: Path) -> None:
    calls = tmp_path / "calls"
    members = [t(app, "flaky_add").s(1, 1, str(calls), 2), t(app, "add").s(3, 3)]
    job = chord(members, t(app, "tsum").s()).delay()
    assert job.get(timeout=20) == 8
    assert len(lines(calls)) == 3


def test_every_record_knows_its_workflow(app: App, worker: Worker) -> None:
    add, tsum = t(app, "add"), t(app, "tsum")
    job = chain(add.s(1, 1), chord([add.s(1), add.s(2)], tsum.s())).delay()
    assert job.get(timeout=10) == 7
    callback = job.status().record
    first = app.status(callback["root"]).record
    assert first["root"] == first["id"] and first["parent"] is None
    members = [app.status(child).record for child in first["children"]]
    assert len(members) == 2
    for member in members:
        assert member["parent"] == first["id"] and member["root"] == first["id"]
        assert member["children"] == [callback["id"]]
    assert callback["parent"] in {m["id"] for m in members}  # the member that finished last
    assert callback["root"] == first["id"] and callback["children"] == []


def test_cancelling_a_step_fails_the_steps_after_it(app: App, worker: Worker) -> None:
    later = t(app, "add").s(1, 1).set(delay=60)
    job = chain(later, t(app, "mul").s(2)).delay()
    first = job.status().record["root"]
    app.cancel(first)
    with pytest.raises(JobFailed) as caught:
        job.get(timeout=5)
    assert caught.value.error["type"] == "JobCancelled" and first in caught.value.error["message"]


def test_eta_holds_the_job_in_the_broker(app: App, queue: str) -> None:
    add = t(app, "add")
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=30)
    job = add.apply_async(args=(1, 2), eta=soon)
    stats = app.locate(job.id, job.status().record["broker_id"])
    assert stats is not None and stats["state"] == "delayed" and 28 <= stats["delay"] <= 30
    naive = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(seconds=100)  # naive means UTC
    stats = app.locate((job := add.apply_async(args=(1, 2), eta=naive)).id, job.status().record["broker_id"])
    assert stats is not None and 98 <= stats["delay"] <= 100
    past = add.apply_async(args=(1, 2), eta=dt.datetime(2000, 1, 1, tzinfo=dt.UTC))
    assert app.locate(past.id, past.status().record["broker_id"])["state"] == "ready"
    with pytest.raises(ConfigError, match="eta or delay"):
        add.apply_async(args=(1, 2), eta=soon, delay=5)


def test_signatures_and_workflows_have_a_json_form(app: App, worker: Worker) -> None:
    add, tsum = t(app, "add"), t(app, "tsum")
    flow = chain(add.s(1, 2).set(priority=10), chord([add.s(1), add.si(5, 5)], tsum.s()))
    data = flow.to_dict()
    assert data == {"chain": [
        {"task": "add", "args": [1, 2], "kwargs": {}, "options": {"priority": 10}},
        {"chord": {"header": [{"task": "add", "args": [1], "kwargs": {}, "options": {}},
                              {"task": "add", "args": [5, 5], "kwargs": {}, "options": {"immutable": True}}],
                   "body": {"task": "tsum", "args": [], "kwargs": {}, "options": {}}}}]}
    rebuilt = from_dict(data, app)
    assert rebuilt.to_dict() == data
    assert rebuilt.delay().get(timeout=10) == 14
    assert isinstance(from_dict({"task": "add", "args": [1, 2], "queue": "q"}), Signature)


def test_a_workflow_with_an_unknown_task_or_bad_args_writes_nothing(app: App) -> None:
    add = t(app, "add")
    with pytest.raises(TaskNotFound):
        chain(add.s(1, 2), Signature("nope", app=app)).delay()
    with pytest.raises(Exception, match="JSON"):
        chain(add.s(1, 2), add.s({1, 2})).delay()
    with pytest.raises(ConfigError):
        group([])
    assert app.backend.counts() == {}


@pytest.mark.timeout(180)
@pytest.mark.parametrize("backend_url", ["sqlite", "mongo"], indirect=True)
def test_a_1000_member_chord(app: App, worker: Worker, tmp_path: Path) -> None:
    runs = tmp_path / "callback"
    job = chord((t(app, "add").s(i, 1) for i in range(1000)), t(app, "counted_sum").s(str(runs))).delay()
    assert job.get(timeout=150) == sum(range(1000)) + 1000
    assert len(lines(runs)) == 1
    assert app.backend.counts() == {"succeeded": 1001}
