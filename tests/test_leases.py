"""Job leases on every backend (memory, sqlite, MongoDB); the reconciler re-enqueues jobs of gone workers.

The network tests (tests/test_network.py) show the same rules across hosts
that are cut off or killed; these pin each rule on its own.
"""
from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from jobkit import App
from jobkit.backends import Backend
from jobkit.brokers.base import Delivery
from jobkit.leases import LOCK, Reconciler
from jobkit.runner import Outcome, Runner
from tests.conftest import unique
from tests.test_backend_contract import accepted


def held(backend: Backend, job_id: str, worker: str = "w1", lease_s: float = 30.0,
         broker_id: str = "7") -> dict[str, object]:
    now = time.time()
    return backend.claim(accepted(job_id, worker=worker, started_at=now, lease_until=now + lease_s,
                                  broker_id=broker_id))


def test_a_claim_names_the_holder_and_its_lease(backend: Backend) -> None:
    job_id = unique()
    backend.add(accepted(job_id))
    record = held(backend, job_id, lease_s=30)
    assert record["worker"] == "w1" and record["attempts"] == 1
    assert isinstance(record["lease_until"], float) and record["lease_until"] > time.time() + 20


def test_only_the_holder_at_its_attempt_writes(backend: Backend) -> None:
    job_id = unique()
    backend.add(accepted(job_id))
    held(backend, job_id, worker="w1")
    assert backend.update_held(job_id, {"lease_until": 1.0}, worker="w2", attempts=1) is False
    assert backend.update_held(job_id, {"lease_until": 1.0}, worker="w1", attempts=2) is False
    assert backend.update_held(job_id, {"lease_until": 2.0}, worker="w1", attempts=1) is True
    assert backend.get(job_id)["lease_until"] == 2.0  # type: ignore[index]


def test_a_late_outcome_of_a_former_holder_is_not_stored(backend: Backend) -> None:
    """w1 lost the job (w2 claimed it at attempt 2): w1's outcome writes nothing, w2's is kept."""
    job_id = unique()
    backend.add(accepted(job_id))
    held(backend, job_id, worker="w1")
    held(backend, job_id, worker="w2")
    assert backend.finish(job_id, "succeeded", result="w2", held_by=("w2", 2)) is True
    assert backend.finish(job_id, "failed", error={"type": "E", "message": "late", "traceback": ""},
                          held_by=("w1", 1)) is False
    record = backend.get(job_id)
    assert record is not None
    assert (record["state"], record["result"], record["lease_until"]) == ("succeeded", "w2", None)
    assert backend.counts().get("succeeded") == 1 and "failed" not in backend.counts()


def test_expired_leases_are_found_oldest_first(backend: Backend) -> None:
    old, older, fresh = unique(), unique(), unique()
    for job_id in (old, older, fresh):
        backend.add(accepted(job_id))
    held(backend, old, lease_s=-10)
    held(backend, older, lease_s=-20)
    held(backend, fresh, lease_s=60)
    found = [r["id"] for r in backend.expired_leases(time.time()) if r["id"] in (old, older, fresh)]
    assert found == [older, old]


def test_a_claim_of_a_superseded_copy_leaves_the_record_alone(backend: Backend) -> None:
    job_id = unique()
    backend.add(accepted(job_id))
    held(backend, job_id, worker="w1", broker_id="7")
    assert backend.update_held(job_id, {"state": "queued", "worker": None, "superseded": "7",
                                        "broker_id": "8"}, worker="w1", attempts=1)
    stale = held(backend, job_id, worker="w2", broker_id="7")
    assert (stale["state"], stale["worker"], stale["attempts"]) == ("queued", None, 1)
    assert stale["superseded"] == "7"
    fresh = held(backend, job_id, worker="w2", broker_id="8")
    assert (fresh["state"], fresh["worker"], fresh["attempts"]) == ("running", "w2", 2)


# -- the reconciler, over the memory broker ---------------------------------------


@pytest.fixture
def app(backend: Backend) -> Iterator[App]:
    jobkit_app = App("leases", broker="memory://", backend=backend)

    @jobkit_app.task(queue="leases")
    def echo(value: str) -> str:
        return value

    yield jobkit_app
    jobkit_app.close()


def lost_job(app: App, worker: str = "gone:1") -> tuple[str, Delivery, Runner]:
    """A job claimed by ``worker`` whose lease ran out and which never sent a heartbeat."""
    job = app.send("echo", ["x"])
    consumer = app.broker.consumer(["leases"])
    delivery = consumer.reserve(1)
    assert delivery is not None
    runner = Runner(app, worker, lease_s=-1)  # a lease already over
    attempt = runner.prepare(consumer, delivery)
    assert attempt is not None
    return job.id, delivery, runner


def test_the_job_of_a_gone_worker_is_re_enqueued_and_runs_once_more(app: App) -> None:
    job_id, stale, gone = lost_job(app)
    assert Reconciler(app, "live:2", lease_s=5).run() == 1
    record = app.backend.get(job_id)
    assert record is not None
    assert (record["state"], record["worker"], record["superseded"]) == ("queued", None, stale.broker_id)
    consumer = app.broker.consumer(["leases"])
    fresh = consumer.reserve(1)
    assert fresh is not None and fresh.broker_id == record["broker_id"] != stale.broker_id
    live = Runner(app, "live:2")
    attempt = live.prepare(consumer, fresh)
    assert attempt is not None and attempt.attempts == 2
    live.settle(consumer, attempt, live.execute(attempt))
    late = Outcome(True, result="late")  # the gone worker comes back with its outcome
    assert gone._store(attempt.envelope, "succeeded", late, 1) is False
    final = app.backend.get(job_id)
    assert final is not None and (final["state"], final["result"], final["attempts"]) == ("succeeded", "x", 2)
    assert app.backend.counts() == {"succeeded": 1}


def test_a_stale_copy_that_comes_back_is_deleted_unrun(app: App) -> None:
    job_id, stale, _ = lost_job(app)
    Reconciler(app, "live:2", lease_s=5).run()
    consumer = app.broker.consumer(["leases"])
    assert Runner(app, "other:3").prepare(consumer, stale) is None  # settled, not run
    record = app.backend.get(job_id)
    assert record is not None and (record["state"], record["attempts"]) == ("queued", 1)


def test_a_live_holder_keeps_its_job(app: App) -> None:
    job_id, _, _ = lost_job(app, worker="alive:1")
    app.backend.beat_worker({"name": "alive:1", "last_seen": time.time()})
    assert Reconciler(app, "live:2", lease_s=5).run() == 0
    assert app.backend.get(job_id)["state"] == "running"  # type: ignore[index]
    assert app.broker.stats().get("leases", {}).get("ready", 0) == 0  # no second copy


def test_only_one_reconciler_at_a_time(app: App) -> None:
    lost_job(app)
    now = time.time()
    assert app.backend.acquire(LOCK, "first:1", slots=1, now=now, until=now + 60) == 0.0
    assert Reconciler(app, "second:2", lease_s=5).run(now) == 0
    assert Reconciler(app, "first:1", lease_s=5).run(now) == 1
