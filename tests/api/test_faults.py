"""F7 and F9 of docs/fault-tests.md at the HTTP edge: broker or backend down, 503 and nothing half-done;
beanstalkd stalled: a keyed repeat always leads to exactly one job."""
from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import falcon.testing
import pytest

from jobkit import App, JobState
from jobkit.api import create_app
from jobkit.api.errors import RETRY_AFTER_S
from jobkit.app import key_job_id
from jobkit.brokers import beanstalk as beanstalk_module
from jobkit.config import Settings
from jobkit.embedded import Beanstalkd, free_port
from tests import faultkit
from tests.api.app import make_app, post
from tests.faultkit import StartWorker
from tests.helpers import eventually
from tests.servers import MongoServer, missing

pytestmark = pytest.mark.fault
JOB_ID = "0123456789abcdef0123456789abcdef"


def down_mongo_url(port: int | None = None) -> str:
    return f"mongodb://127.0.0.1:{port or free_port()}/jobs?serverSelectionTimeoutMS=300&connectTimeoutMS=300"


def assert_unavailable(result: falcon.testing.Result) -> None:
    assert result.status_code == 503, result.text
    assert result.headers["retry-after"] == str(RETRY_AFTER_S)
    assert result.json["title"].startswith("503")
    assert "Traceback" not in result.text and "127.0.0.1" not in result.text  # no internals


@pytest.fixture
def broker_down() -> Iterator[tuple[falcon.testing.TestClient, App]]:
    app = make_app(broker=f"beanstalk://127.0.0.1:{free_port()}", backend="memory://")
    yield falcon.testing.TestClient(create_app(Settings(), app)), app
    app.close()


@pytest.fixture
def backend_down() -> Iterator[tuple[falcon.testing.TestClient, App]]:
    app = make_app(broker="memory://", backend=down_mongo_url())
    yield falcon.testing.TestClient(create_app(Settings(), app)), app
    app.close()


# -- F7: the broker cannot take the job ----------------------------------------

@pytest.mark.parametrize("path,body,headers", [
    ("/", {"example": "data"}, {}),
    ("/v1/jobs", {"task": "echo", "args": [1]}, {}),
    ("/v1/tasks/echo", 1, {}),
    ("/v1/jobs", {"task": "echo"}, {"Idempotency-Key": "once"}),
], ids=["seed", "v1", "by-name", "idempotent"])
def test_broker_down_during_post_is_503_fast_and_records_nothing(
        broker_down: tuple[falcon.testing.TestClient, App], path: str, body: object,
        headers: dict[str, str]) -> None:
    client, app = broker_down
    started = time.monotonic()
    result = post(client, path, body, **headers)
    assert time.monotonic() - started < 2
    assert_unavailable(result)
    assert app.backend.counts() == {}


def test_broker_down_during_a_status_read_answers_from_the_record(
        broker_down: tuple[falcon.testing.TestClient, App]) -> None:
    """The record is the job's status: a broker that does not answer only hides its stats-job."""
    client, app = broker_down
    app.backend.add({"id": JOB_ID, "task": "echo", "args": [1], "kwargs": {}, "queue": "default",
                     "state": "queued", "broker_id": "7", "priority": 1024, "created_at": time.time()})
    seed = client.simulate_get(f"/{JOB_ID}/")
    assert seed.status_code == 200 and seed.json["_id"] == JOB_ID, seed.text
    v1 = client.simulate_get(f"/v1/jobs/{JOB_ID}")
    assert v1.status_code == 200 and v1.json["state"] == "queued" and v1.json["broker"] is None


def test_broker_down_readyz_and_metrics(broker_down: tuple[falcon.testing.TestClient, App]) -> None:
    client, _ = broker_down
    ready = client.simulate_get("/readyz")
    assert ready.status_code == 503 and ready.headers["retry-after"] == str(RETRY_AFTER_S)
    assert (ready.json["broker"], ready.json["backend"]) == ("unavailable", "ok")
    assert "jobkit_broker_up 0.0" in client.simulate_get("/metrics").text
    assert_unavailable(client.simulate_get("/v1/queues"))
    assert client.simulate_get("/dashboard").status_code == 200
    assert client.simulate_get("/healthz").status_code == 200


def test_draining_broker_is_503_and_records_nothing(tmp_path: Path) -> None:
    if shutil.which("beanstalkd") is None:
        missing("beanstalkd is not installed")
    with Beanstalkd() as server:
        app = make_app(broker=server.url, backend="memory://")
        client = falcon.testing.TestClient(create_app(Settings(), app))
        assert post(client, "/", {"before": "drain"}).status_code == 202
        assert server.proc is not None
        os.kill(server.proc.pid, signal.SIGUSR1)  # beanstalkd: drain mode, put answers DRAINING
        result = eventually(lambda: (r := post(client, "/", {"a": 1})).status_code == 503 and r,
                            what="DRAINING")
        assert_unavailable(result)
        assert sum(app.backend.counts().values()) == 1  # only the job from before
        app.close()


# -- F9: the backend is down ------------------------------------------------------

@pytest.mark.parametrize("method,path", [
    ("GET", f"/{JOB_ID}"), ("GET", f"/{JOB_ID}/"), ("GET", f"/v1/jobs/{JOB_ID}"),
    ("GET", f"/v1/jobs/{JOB_ID}/result"), ("GET", "/v1/jobs"), ("GET", "/v1/workers"),
    ("DELETE", f"/v1/jobs/{JOB_ID}"), ("POST", f"/v1/jobs/{JOB_ID}/retry")])
def test_backend_down_during_reads_is_503(backend_down: tuple[falcon.testing.TestClient, App], method: str,
                                         path: str) -> None:
    client, _ = backend_down
    started = time.monotonic()
    assert_unavailable(client.simulate_request(method, path))
    assert time.monotonic() - started < 2


def test_backend_down_during_post_takes_the_job_back(
        backend_down: tuple[falcon.testing.TestClient, App]) -> None:
    client, app = backend_down
    assert_unavailable(post(client, "/", {"a": 1}))
    assert sum(counts["ready"] for counts in app.broker.stats().values()) == 0


def test_backend_down_readyz_and_dashboard(backend_down: tuple[falcon.testing.TestClient, App]) -> None:
    client, _ = backend_down
    ready = client.simulate_get("/readyz")
    assert ready.status_code == 503 and (ready.json["broker"], ready.json["backend"]) == ("ok", "unavailable")
    page = client.simulate_get("/dashboard")
    assert page.status_code == 200 and "unavailable" in page.text


def test_backend_recovers_without_restart(tmp_path: Path) -> None:
    mongo = MongoServer(tmp_path)
    app = make_app(broker="memory://", backend=down_mongo_url(mongo.port))
    client = falcon.testing.TestClient(create_app(Settings(), app))
    try:
        assert_unavailable(client.simulate_get(f"/v1/jobs/{JOB_ID}"))
        assert_unavailable(post(client, "/", {"a": 1}))
        mongo.start()
        accepted = eventually(lambda: (r := post(client, "/", {"a": 1})).status_code == 202 and r,
                              timeout_s=20, what="MongoDB back")
        assert client.simulate_get(f"/v1/jobs/{accepted.json['id']}").json["state"] == "queued"
        assert client.simulate_get(f"/v1/jobs/{JOB_ID}").status_code == 404
        assert client.simulate_get("/readyz").status_code == 200
    finally:
        app.close()
        mongo.stop()


# -- beanstalkd stalls: a 503 that may not be the end of the job ------------------------

@pytest.mark.timeout(90)
def test_a_keyed_post_while_beanstalkd_stalls_leads_to_exactly_one_job(
        beanstalk: Beanstalkd, sqlite_url: str, workers: StartWorker, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The stalled put times out (503) but lands once beanstalkd resumes; a repeat with the
    key finds the job at every step (never a 404), makes sure it exists, and it runs once."""
    monkeypatch.setattr(beanstalk_module, "OP_TIMEOUT_S", 1.0)  # a stalled command gives up sooner
    app = faultkit.make_app(beanstalk.url, sqlite_url)
    client = falcon.testing.TestClient(create_app(Settings(), app))
    queue, path, key = "stalled", tmp_path / "runs", {"Idempotency-Key": "order-stall"}
    body = {"task": "tagged", "args": [str(path), "ran"], "queue": queue}
    job_id = key_job_id("order-stall")
    assert post(client, "/v1/jobs", {"task": "add", "args": [1, 1], "queue": queue}).status_code == 202
    assert beanstalk.proc is not None
    os.kill(beanstalk.proc.pid, signal.SIGSTOP)  # the pooled connection now waits on a stalled server
    try:
        assert_unavailable(post(client, "/v1/jobs", body, **key))  # the put went out: no answer
        assert_unavailable(post(client, "/v1/jobs", body, **key))  # the repeat's put cannot go out
        assert client.simulate_get(f"/v1/jobs/{job_id}").json["state"] == "queued"
    finally:
        os.kill(beanstalk.proc.pid, signal.SIGCONT)
    repeat = eventually(lambda: (r := post(client, "/v1/jobs", body, **key)).status_code == 200 and r,
                        what="the repeat answered with the first job")
    assert repeat.json["id"] == job_id and client.simulate_get(f"/v1/jobs/{job_id}").status_code == 200
    workers(app, queue)
    eventually(lambda: app.status(job_id).state is JobState.SUCCEEDED, timeout_s=20, what="the job ran")
    eventually(lambda: faultkit.settled(app, queue), what="every copy of its message settled")
    assert faultkit.lines(path) == ["ran"]  # it ran once
    assert [r["id"] for r in app.backend.find(task="tagged")] == [job_id]  # one record
    app.close()
