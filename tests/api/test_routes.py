"""Every route of the HTTP API against an App on the in-process broker and backend."""
from __future__ import annotations

import threading
import time

import falcon.testing
import pytest

from jobkit import App
from jobkit.api import create_app
from jobkit.api.validate import MAX_WAIT_S, wait_param
from jobkit.config import Settings
from jobkit.embedded import free_port
from jobkit.errors import ConfigError
from tests.api.app import assert_error, post, work

SEED_DOC = '{"_id":"%s","hash":"09ee943c4fa33cd5a355eb7a4e38f7ef","payload":"{\\"example\\":\\"data\\"}"}'
SEED_STATS_KEYS = ["id", "tube", "state", "pri", "age", "delay", "ttr", "timeLeft", "file", "reserves",
                   "timeouts", "releases", "buries", "kicks"]


# -- seed parity -------------------------------------------------------------

def test_post_root_enqueues_the_default_task_with_the_body(client: falcon.testing.TestClient,
                                                          jobkit_app: App) -> None:
    result = post(client, "/", {"example": "data"})
    assert result.status_code == 202
    job_id = result.json["id"]
    assert result.json == {"id": job_id}
    assert result.headers["location"] == f"/v1/jobs/{job_id}"
    record = jobkit_app.status(job_id).record
    assert record["task"] == "hash_payload" and record["state"] == "queued"
    assert record["args"] == [{"example": "data"}]


@pytest.mark.parametrize("value", [1, "text", [1, 2], None, True, {"nested": {"list": [1.5]}}])
def test_post_root_takes_any_json_value(client: falcon.testing.TestClient, jobkit_app: App,
                                        value: object) -> None:
    result = post(client, "/", value)
    assert result.status_code == 202
    assert jobkit_app.status(result.json["id"]).record["args"] == [value]


def test_get_id_shows_beanstalkd_stats_while_waiting(client: falcon.testing.TestClient) -> None:
    job_id = post(client, "/", {"example": "data"}).json["id"]
    for path in (f"/{job_id}/", f"/{job_id}"):
        result = client.simulate_get(path)
        assert result.status_code == 200
        assert list(result.json) == SEED_STATS_KEYS
        assert (result.json["tube"], result.json["state"], result.json["ttr"]) == ("default", "ready", 60)


def test_get_id_when_done_is_the_seed_document_byte_for_byte(client: falcon.testing.TestClient,
                                                            jobkit_app: App) -> None:
    job_id = post(client, "/", {"example": "data"}).json["id"]
    work(jobkit_app)
    result = client.simulate_get(f"/{job_id}/")
    assert result.status_code == 200
    assert result.text == SEED_DOC % job_id


def test_get_id_of_a_non_dict_result(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    job_id = post(client, "/v1/tasks/echo", [1, 2]).json["id"]
    work(jobkit_app)
    assert client.simulate_get(f"/{job_id}").json == {"_id": job_id, "result": [1, 2]}


def test_get_id_of_a_failed_job(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    job_id = post(client, "/v1/jobs", {"task": "boom"}).json["id"]
    work(jobkit_app)
    body = client.simulate_get(f"/{job_id}/").json
    assert (body["_id"], body["state"], body["error"]["type"]) == (job_id, "failed", "ValueError")


def test_get_id_of_a_cancelled_job(client: falcon.testing.TestClient) -> None:
    job_id = post(client, "/", {"a": 1}).json["id"]
    client.simulate_delete(f"/v1/jobs/{job_id}")
    assert client.simulate_get(f"/{job_id}/").json == {"_id": job_id, "state": "cancelled"}


def test_get_id_of_a_queued_job_the_broker_lost(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    job_id = post(client, "/", {"a": 1}).json["id"]
    assert jobkit_app.broker.delete(jobkit_app.status(job_id).record["broker_id"])
    assert client.simulate_get(f"/{job_id}/").json == {"_id": job_id, "state": "queued"}


def test_get_id_never_enqueued_is_404(client: falcon.testing.TestClient) -> None:
    assert_error(client.simulate_get("/0123456789abcdef0123456789abcdef/"), 404)


# -- v1: enqueue -------------------------------------------------------------

def test_post_v1_jobs_with_every_option(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    body = {"task": "add", "args": [2], "kwargs": {"b": 3}, "queue": "urgent", "priority": 5,
            "delay": 30, "ttr": 90}
    result = post(client, "/v1/jobs", body)
    assert result.status_code == 202
    job = client.simulate_get(result.headers["location"]).json
    assert (job["task"], job["args"], job["kwargs"], job["queue"], job["priority"]) == (
        "add", [2], {"b": 3}, "urgent", 5)
    assert (job["broker"]["state"], job["broker"]["ttr"], job["broker"]["delay"]) == ("delayed", 90, 30)
    assert jobkit_app.broker.stats()["urgent"]["delayed"] == 1


def test_post_v1_jobs_defaults_come_from_the_task(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    job_id = post(client, "/v1/jobs", {"task": "add", "args": [1, 2]}).json["id"]
    record = jobkit_app.status(job_id).record
    assert (record["queue"], record["priority"], record["kwargs"]) == ("math", 10, {})
    work(jobkit_app, ("math",))
    assert jobkit_app.status(job_id).result == 3


def test_idempotency_key_returns_the_first_job_with_200(client: falcon.testing.TestClient,
                                                        jobkit_app: App) -> None:
    first = post(client, "/v1/jobs", {"task": "echo", "args": [1]}, **{"Idempotency-Key": "order-7"})
    again = post(client, "/v1/jobs", {"task": "echo", "args": [2]}, **{"Idempotency-Key": "order-7"})
    assert (first.status_code, again.status_code) == (202, 200)
    assert again.json == first.json and again.headers["location"] == first.headers["location"]
    assert jobkit_app.broker.stats()["default"]["total"] == 1


def test_idempotency_key_on_the_seed_route(client: falcon.testing.TestClient) -> None:
    first = post(client, "/", {"a": 1}, **{"Idempotency-Key": "k"})
    assert post(client, "/", {"a": 1}, **{"Idempotency-Key": "k"}).json == first.json


def test_overlong_idempotency_key_is_400(client: falcon.testing.TestClient) -> None:
    assert_error(post(client, "/v1/jobs", {"task": "echo"}, **{"Idempotency-Key": "k" * 256}), 400)


def test_post_v1_tasks_name_takes_the_body_as_the_one_argument(client: falcon.testing.TestClient,
                                                               jobkit_app: App) -> None:
    result = post(client, "/v1/tasks/echo", {"x": [1]})
    assert result.status_code == 202
    assert jobkit_app.status(result.json["id"]).record["args"] == [{"x": [1]}]


def test_post_v1_tasks_unknown_is_404(client: falcon.testing.TestClient) -> None:
    assert_error(post(client, "/v1/tasks/nope", 1), 404)


# -- v1: reading, waiting, cancelling, retrying ------------------------------

def test_get_v1_job_is_the_record_plus_live_broker_stats(client: falcon.testing.TestClient,
                                                         jobkit_app: App) -> None:
    job_id = post(client, "/v1/tasks/echo", 5).json["id"]
    queued = client.simulate_get(f"/v1/jobs/{job_id}").json
    assert (queued["id"], queued["state"], queued["broker"]["state"]) == (job_id, "queued", "ready")
    assert "time-left" in queued["broker"]
    work(jobkit_app)
    done = client.simulate_get(f"/v1/jobs/{job_id}").json
    assert (done["state"], done["result"], done["broker"]) == ("succeeded", 5, None)


def test_result_is_202_until_done_then_200(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    job_id = post(client, "/v1/tasks/echo", "v").json["id"]
    pending = client.simulate_get(f"/v1/jobs/{job_id}/result")
    assert pending.status_code == 202 and pending.json == {"id": job_id, "state": "queued"}
    assert pending.headers["retry-after"] == "1"
    work(jobkit_app)
    done = client.simulate_get(f"/v1/jobs/{job_id}/result")
    assert done.status_code == 200 and done.json == {"id": job_id, "state": "succeeded", "result": "v"}


def test_result_waits_for_the_outcome(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    job_id = post(client, "/v1/tasks/echo", "later").json["id"]
    worker = threading.Timer(0.2, work, args=(jobkit_app,))
    worker.start()
    started = time.monotonic()
    result = client.simulate_get(f"/v1/jobs/{job_id}/result", params={"wait": "5"})
    worker.join()
    assert result.status_code == 200 and result.json["result"] == "later"
    assert time.monotonic() - started < 4


def test_result_of_a_failed_job_is_200_with_the_error(client: falcon.testing.TestClient,
                                                      jobkit_app: App) -> None:
    job_id = post(client, "/v1/jobs", {"task": "boom"}).json["id"]
    work(jobkit_app)
    result = client.simulate_get(f"/v1/jobs/{job_id}/result", params={"wait": "1"})
    assert result.status_code == 200
    assert (result.json["state"], result.json["error"]["message"]) == ("failed", "boom")


@pytest.mark.parametrize("wait", ["soon", "-1", "nan", "inf", "1e999"])
def test_result_with_an_invalid_wait_is_400(client: falcon.testing.TestClient, wait: str) -> None:
    job_id = post(client, "/v1/tasks/echo", 1).json["id"]
    assert_error(client.simulate_get(f"/v1/jobs/{job_id}/result", params={"wait": wait}), 400)


def test_wait_is_capped() -> None:
    assert wait_param(falcon.testing.create_req(query_string="wait=100000")) == MAX_WAIT_S
    assert wait_param(falcon.testing.create_req(query_string="wait=2.5")) == 2.5


def test_result_of_an_unknown_job_is_404(client: falcon.testing.TestClient) -> None:
    assert_error(client.simulate_get("/v1/jobs/abc/result", params={"wait": "0.1"}), 404)


def test_delete_cancels_then_409(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    job_id = post(client, "/v1/tasks/echo", 1).json["id"]
    result = client.simulate_delete(f"/v1/jobs/{job_id}")
    assert result.status_code == 200 and result.json["state"] == "cancelled"
    assert jobkit_app.broker.stats()["default"]["ready"] == 0
    assert_error(client.simulate_delete(f"/v1/jobs/{job_id}"), 409)
    assert_error(client.simulate_delete("/v1/jobs/unknown"), 404)


def test_delete_a_succeeded_job_is_409(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    job_id = post(client, "/v1/tasks/echo", 1).json["id"]
    work(jobkit_app)
    assert_error(client.simulate_delete(f"/v1/jobs/{job_id}"), 409)


def test_retry_kicks_a_failed_job_back(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    job_id = post(client, "/v1/jobs", {"task": "boom"}).json["id"]
    work(jobkit_app)
    assert jobkit_app.broker.stats()["default"]["buried"] == 1
    result = client.simulate_post(f"/v1/jobs/{job_id}/retry")
    assert result.status_code == 202 and result.json["state"] == "queued"
    assert result.headers["location"] == f"/v1/jobs/{job_id}"
    assert jobkit_app.broker.stats()["default"]["ready"] == 1
    assert_error(client.simulate_post(f"/v1/jobs/{job_id}/retry"), 409)
    assert_error(client.simulate_post("/v1/jobs/unknown/retry"), 404)


def test_list_jobs_filters_by_state_and_task(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    first = post(client, "/v1/tasks/echo", 1).json["id"]
    post(client, "/v1/tasks/echo", 2)
    post(client, "/v1/jobs", {"task": "add", "args": [1, 1]})
    work(jobkit_app)  # runs the first echo
    succeeded = client.simulate_get("/v1/jobs", params={"state": "succeeded"}).json["jobs"]
    assert [job["id"] for job in succeeded] == [first]
    assert len(client.simulate_get("/v1/jobs", params={"task": "echo"}).json["jobs"]) == 2
    assert len(client.simulate_get("/v1/jobs", params={"limit": "1"}).json["jobs"]) == 1
    assert len(client.simulate_get("/v1/jobs").json["jobs"]) == 3


@pytest.mark.parametrize("query", ["state=done", "limit=0", "limit=1001", "limit=x", "task=-bad"])
def test_list_jobs_bad_parameters_are_400(client: falcon.testing.TestClient, query: str) -> None:
    assert_error(client.simulate_get("/v1/jobs", query_string=query), 400)


# -- v1: tasks, queues, workers ---------------------------------------------

def test_tasks_lists_names_and_options(client: falcon.testing.TestClient) -> None:
    tasks = {t["name"]: t for t in client.simulate_get("/v1/tasks").json["tasks"]}
    assert set(tasks) == {"hash_payload", "echo", "add", "boom"}
    assert (tasks["add"]["queue"], tasks["add"]["priority"], tasks["add"]["ttr"]) == ("math", 10, 60)
    assert tasks["echo"]["doc"] == "Return the value unchanged."


def test_queues_are_the_broker_counts(client: falcon.testing.TestClient) -> None:
    post(client, "/v1/tasks/echo", 1)
    post(client, "/v1/jobs", {"task": "echo", "delay": 60})
    counts = client.simulate_get("/v1/queues").json["queues"]["default"]
    assert (counts["ready"], counts["delayed"], counts["total"]) == (1, 1, 2)


def test_workers_lists_live_workers_and_waiting_connections(client: falcon.testing.TestClient,
                                                            jobkit_app: App) -> None:
    now = time.time()
    live = {"name": "host:42", "host": "host", "pid": 42, "pool": None, "queues": ["math"],
            "concurrency": 2, "busy": 1, "jobs": ["j1"], "started_at": now - 60, "last_seen": now,
            "jobs_done": 7, "jobs_failed": 2}
    jobkit_app.backend.beat_worker(live)
    jobkit_app.backend.beat_worker(live | {"name": "host:43", "last_seen": now - 60})  # gone quiet
    consumer = jobkit_app.broker.consumer(["math"])
    waiter = threading.Thread(target=consumer.reserve, args=(2,))
    waiter.start()
    try:
        deadline = time.monotonic() + 2
        while client.simulate_get("/v1/workers").json["waiting"].get("math") != 1:
            assert time.monotonic() < deadline, "the waiting connection never showed"
            time.sleep(0.01)
        body = client.simulate_get("/v1/workers").json
        assert body["workers"] == [live | {"running": 1}]
    finally:
        consumer.interrupt()
        waiter.join()


# -- operations --------------------------------------------------------------

def test_healthz_and_readyz(client: falcon.testing.TestClient) -> None:
    assert client.simulate_get("/healthz").json == {"status": "ok"}
    assert client.simulate_get("/readyz").json == {"status": "ok", "broker": "ok", "backend": "ok"}


def test_metrics_count_requests_accepted_jobs_and_queue_depth(client: falcon.testing.TestClient) -> None:
    post(client, "/", {"a": 1})
    post(client, "/v1/tasks/nope", 1)
    result = client.simulate_get("/metrics")
    assert result.headers["content-type"].startswith("text/plain")
    text = result.text
    assert 'jobkit_api_jobs_accepted_total{task="hash_payload"} 1.0' in text
    assert 'jobkit_api_requests_total{method="POST",route="/",status="202"} 1.0' in text
    assert 'jobkit_api_requests_total{method="POST",route="/v1/tasks/{name}",status="404"} 1.0' in text
    assert 'jobkit_queue_jobs{queue="default",state="ready"} 1.0' in text
    assert "jobkit_broker_up 1.0" in text


def test_each_app_has_its_own_metrics(settings: Settings, jobkit_app: App) -> None:
    one = falcon.testing.TestClient(create_app(settings, jobkit_app))
    two = falcon.testing.TestClient(create_app(settings, jobkit_app))
    post(one, "/", {"a": 1})
    assert "jobkit_api_jobs_accepted_total" not in two.simulate_get("/metrics").text.split("# TYPE")[-1]
    assert 'jobkit_api_jobs_accepted_total{task="hash_payload"}' not in two.simulate_get("/metrics").text


def test_dashboard_escapes_every_value(settings: Settings) -> None:
    app = App("<b>demo</b>", broker="memory://", backend="memory://")
    app.task(name="echo")(lambda value: value)
    client = falcon.testing.TestClient(create_app(settings, app))
    job_id = post(client, "/v1/tasks/echo", 1).json["id"]
    app.backend.claim({"id": job_id, "worker": "<script>alert(1)</script>", "started_at": time.time()})
    result = client.simulate_get("/dashboard")
    assert result.status_code == 200 and result.headers["content-type"].startswith("text/html")
    assert "<script>" not in result.text and "&lt;script&gt;alert(1)&lt;/script&gt;" in result.text
    assert "&lt;b&gt;demo&lt;/b&gt;" in result.text and job_id in result.text
    assert "default-src 'none'" in result.headers["content-security-policy"]
    assert "http" not in result.text.lower().replace("http-equiv", "")  # no external assets


def test_errors_are_json_whatever_the_client_accepts(client: falcon.testing.TestClient) -> None:
    result = client.simulate_get("/nowhere/at/all", headers={"Accept": "text/html"})
    assert_error(result, 404)
    wrong = client.simulate_put("/v1/jobs", headers={"Accept": "application/xml"})
    assert_error(wrong, 405)
    assert "POST" in wrong.headers["allow"]


def test_json_answers_are_compact_utf8(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    job_id = post(client, "/v1/tasks/echo", {"k": "é"}).json["id"]
    work(jobkit_app)
    assert client.simulate_get(f"/{job_id}").text == f'{{"_id":"{job_id}","k":"é"}}'


def test_create_app_connects_to_nothing(settings: Settings) -> None:
    port = free_port()
    app = App("offline", broker=f"beanstalk://127.0.0.1:{port}",
              backend=f"mongodb://127.0.0.1:{port}/x?serverSelectionTimeoutMS=200")
    started = time.monotonic()
    client = falcon.testing.TestClient(create_app(settings, app))
    assert client.simulate_get("/healthz").status_code == 200
    assert time.monotonic() - started < 0.5


def test_create_app_refuses_an_unknown_broker_scheme(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="known schemes"):
        create_app(settings, App("bad", broker="rabbit://x", backend="memory://"))


def test_an_unexpected_error_is_a_json_500_without_details(client: falcon.testing.TestClient,
                                                           jobkit_app: App,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(jobkit_app.broker, "stats", broken)
    result = client.simulate_get("/v1/queues")
    assert_error(result, 500)
    assert "secret" not in result.text and "Traceback" not in result.text
    assert client.simulate_get("/healthz").status_code == 200


def test_healthz_answers_whatever_comes_with_it(client: falcon.testing.TestClient) -> None:
    result = client.simulate_get("/healthz/", body=b"x" * 100_000, headers={"Content-Type": "text/plain"})
    assert result.status_code == 200
