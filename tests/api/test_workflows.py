"""``POST /v1/jobs/batch`` and ``POST /v1/workflows``: what they enqueue, and hostile bodies."""
from __future__ import annotations

import json
from typing import Any

import falcon.testing
import pytest

from jobkit import App
from jobkit.api import create_app
from jobkit.config import Settings
from tests.api.app import assert_refused, post, work


def run_all(app: App) -> None:
    """Run jobs the way a worker does until the broker holds no ready job."""
    while any(counts["ready"] for counts in app.broker.stats().values()):
        work(app, tuple(app.broker.stats()))


def test_batch_enqueues_every_job_in_order(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    jobs = [{"task": "add", "args": [i, i]} for i in range(100)] + [{"task": "echo", "args": ["x"],
                                                                     "priority": 5, "delay": 0}]
    result = post(client, "/v1/jobs/batch", {"jobs": jobs})
    assert result.status_code == 202, result.text
    ids = result.json["ids"]
    assert len(ids) == 101 and len(set(ids)) == 101
    assert jobkit_app.broker.stats()["math"]["ready"] == 100
    run_all(jobkit_app)
    assert [jobkit_app.job(i).get(timeout=1) for i in ids[:3]] == [0, 2, 4]
    assert client.simulate_get(f"/v1/jobs/{ids[-1]}").json["priority"] == 5


@pytest.mark.parametrize(("body", "status", "says"), [
    ({"jobs": [{"task": "add", "args": [1, 2]}, {"task": "add", "args": 5}]}, 422, "jobs[1]: "),
    ({"jobs": [{"task": "add"}, {"task": "add"}, {"task": "nope"}]}, 404, "jobs[2]: no task named 'nope'"),
    ({"jobs": [{"task": "add"}, {"task": "add", "priority": -1}]}, 422, "jobs[1]: priority"),
    ({"jobs": [{"task": "add"}, {"task": "add", "queue": "bad queue"}]}, 422, "jobs[1]: invalid queue"),
    ({"jobs": [{"task": "add"}, [1]]}, 400, "jobs[1]: "),
    ({"jobs": [{"task": "add"}, {"task": "add", "surprise": 1}]}, 422, "jobs[1]: unknown field"),
    ({"jobs": []}, 422, "1 to 1000"),
    ({"jobs": [{"task": "echo", "args": [1]}] * 1001}, 422, "1 to 1000"),
    ({"jobs": {"task": "add"}}, 400, '{"jobs"'),
    ({"jobs": [], "extra": 1}, 400, '{"jobs"'),
    ([{"task": "add"}], 400, '{"jobs"'),
])
def test_one_bad_job_rejects_the_batch_and_nothing_is_enqueued(
        jobkit_app: App, body: Any, status: int, says: str) -> None:
    client = falcon.testing.TestClient(create_app(Settings(max_body=1 << 20), jobkit_app))
    result = post(client, "/v1/jobs/batch", body)
    assert_refused(client, jobkit_app, result, status)
    assert says in result.json["description"]


def test_a_chain_over_http(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    body = {"chain": [{"task": "add", "args": [1, 2]}, {"task": "add", "args": [10]},
                      {"task": "echo", "args": ["own"], "immutable": True}]}
    result = post(client, "/v1/workflows", body)
    assert result.status_code == 202, result.text
    last = result.json["id"]
    assert result.headers["location"] == f"/v1/jobs/{last}"
    run_all(jobkit_app)
    record = client.simulate_get(f"/v1/jobs/{last}").json
    assert record["state"] == "succeeded" and record["result"] == "own"
    middle = client.simulate_get(f"/v1/jobs/{record['parent']}").json
    assert middle["result"] == 13 and middle["children"] == [last] and middle["root"] == record["root"]


def test_a_chord_and_a_group_over_http(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    chord = {"chord": {"header": [{"task": "add", "args": [i, i]} for i in range(5)],
                       "body": {"task": "echo"}}}
    callback = post(client, "/v1/workflows", chord).json["id"]
    group = post(client, "/v1/workflows", {"group": [{"task": "add", "args": [1, 1]},
                                                     {"chain": [{"task": "add", "args": [1, 2]},
                                                                {"task": "add", "args": [3]}]}]})
    assert group.status_code == 202 and len(group.json["ids"]) == 2
    run_all(jobkit_app)
    assert jobkit_app.job(callback).get(timeout=1) == [0, 2, 4, 6, 8]
    assert [jobkit_app.job(i).get(timeout=1) for i in group.json["ids"]] == [2, 6]


def nested(levels: int) -> dict[str, Any]:
    body: dict[str, Any] = {"task": "add", "args": [1, 1]}
    for _ in range(levels):
        body = {"chain": [body]}
    return body


@pytest.mark.parametrize(("body", "status", "says"), [
    (nested(17), 422, "nest at most 16"),
    (nested(31), 422, "nest at most 16"),
    (nested(40), 400, "nests deeper than 64"),
    ({"group": [{"task": "echo", "args": [1]}] * 1001}, 422, "at most 1000 jobs"),
    ({"chain": [{"task": "add"}, {"group": [{"task": "add"}, {"task": "nope"}]}]}, 404,
     "workflow.chain[1].group[1]: no task named 'nope'"),
    ({"chain": [{"task": "add", "args": 5}]}, 422, "workflow.chain[0]: "),
    ({"chain": [{"task": "add", "priority": "high"}]}, 422, 'option "priority"'),
    ({"chain": [{"task": "add", "priority": -1}]}, 422, "priority must be"),
    ({"chain": [{"task": "add", "surprise": 1}]}, 422, "unknown field"),
    ({"chain": []}, 422, "non-empty array"),
    ({"chain": [{"task": "add"}], "group": []}, 422, 'expected {"task": ...}, {"chain"'),
    ({"task": "add"}, 422, "one job goes to POST /v1/jobs"),
    ({"chord": {"header": [{"task": "add"}]}}, 422, '"header": [...], "body"'),
    ({"chord": {"header": [], "body": {"task": "add"}}}, 422, "non-empty array"),
    ({"group": [1, 2]}, 422, "workflow.group[0]: expected an object"),
    ({"group": [{"$where": "1"}]}, 422, "workflow.group[0]"),
    ([{"task": "add"}], 400, 'the body is {"chain": [...]}'),
    ("x", 400, 'the body is {"chain": [...]}'),
    (None, 400, 'the body is {"chain": [...]}'),
])
def test_hostile_workflows_get_a_4xx_and_enqueue_nothing(
        jobkit_app: App, body: Any, status: int, says: str) -> None:
    client = falcon.testing.TestClient(create_app(Settings(max_body=1 << 20), jobkit_app))
    result = post(client, "/v1/workflows", body)
    assert_refused(client, jobkit_app, result, status)
    assert says in result.json["description"]


@pytest.mark.parametrize("path", ["/v1/jobs/batch", "/v1/workflows"])
def test_an_idempotency_key_is_refused_not_ignored(
        client: falcon.testing.TestClient, jobkit_app: App, path: str) -> None:
    """A key here would promise a repeat enqueues nothing, which batches and workflows cannot keep."""
    body = {"jobs": [{"task": "add"}]} if path.endswith("batch") else {"chain": [{"task": "add"}]}
    result = client.simulate_post(path, json=body, headers={"Idempotency-Key": "k1"})
    assert_refused(client, jobkit_app, result, 400)
    assert "Idempotency-Key" in result.json["title"]


def test_json_nested_past_64_levels_is_a_400(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    body = '{"chain": [' * 70 + "]}" * 70
    result = client.simulate_post("/v1/workflows", body=body, headers={"Content-Type": "application/json"})
    assert_refused(client, jobkit_app, result, 400)


def test_a_huge_body_is_refused_by_its_size(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    body = json.dumps({"group": [{"task": "echo", "args": ["x" * 100]}] * 5000})
    result = client.simulate_post("/v1/workflows", body=body, headers={"Content-Type": "application/json"})
    assert_refused(client, jobkit_app, result, 413)
