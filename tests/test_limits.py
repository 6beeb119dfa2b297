"""Limits in one process: options, a job waiting on a limit as the API and the dashboard show it;
the schedules' routes."""
from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import falcon.testing
import pytest

from jobkit import App
from jobkit.api import create_app
from jobkit.config import Settings
from jobkit.errors import ConfigError
from jobkit.limits import Rate, parse_rate
from jobkit.runner import Runner
from tests.processes import jobkit


@pytest.fixture
def app(backend_url: str) -> Iterator[App]:
    app = App("limits", broker="memory://", backend=backend_url)

    @app.task(rate_limit="2/m")
    def rated(i: int) -> int:
        return i

    @app.task(concurrency_limit=1, concurrency_key="account", ttr=30)
    def keyed(account: str, i: int) -> int:
        return i

    @app.periodic(cron="0 3 * * *", tz="Europe/Paris", kwargs={"days": 7})
    def cleanup(days: int) -> None: ...

    yield app
    app.close()


def client(app: App) -> falcon.testing.TestClient:
    settings = Settings(broker_url="memory://", backend_url="memory://")
    return falcon.testing.TestClient(create_app(settings, app))


def reserve_and_prepare(app: App, runner: Runner, queue: str = "default") -> Any:
    consumer = app.broker.consumer([queue])
    delivery = consumer.reserve(1)
    assert delivery is not None
    return consumer, runner.prepare(consumer, delivery)


@pytest.mark.parametrize("text, rate", [
    ("100/m", Rate(100, 60)), ("1/s", Rate(1, 1)), (" 5 / h ", Rate(5, 3600))])
def test_rates_parse(text: str, rate: Rate) -> None:
    assert parse_rate(text) == rate


@pytest.mark.parametrize("options", [
    {"rate_limit": "100"}, {"rate_limit": "0/s"}, {"rate_limit": "10/d"}, {"rate_limit": 10},
    {"rate_limit": "20000/h"}, {"concurrency_limit": 0}, {"concurrency_limit": "2"},
    {"concurrency_key": "account"}, {"concurrency_limit": 2, "concurrency_key": "nope"},
])
def test_bad_limits_fail_at_registration(options: dict[str, Any]) -> None:
    app = App("bad", broker="memory://", backend="memory://")
    with pytest.raises(ConfigError):
        app.task(**options)(lambda account: None)


def test_a_job_over_its_rate_limit_waits_in_the_broker_as_queued(app: App) -> None:
    runner = Runner(app, "w1")
    jobs = [app.send("rated", (i,)) for i in range(3)]
    for _ in range(2):
        consumer, attempt = reserve_and_prepare(app, runner)
        assert attempt is not None
        runner.settle(consumer, attempt, runner.execute(attempt))
    consumer, attempt = reserve_and_prepare(app, runner)
    assert attempt is None  # the third start in a minute: sent back
    record = jobs[2].status().record
    assert record["state"] == "queued" and record["attempts"] == 0 and record["started_at"] is None
    assert record["waiting"]["limit"] == "rate_limit" and record["waiting"]["times"] == 1
    assert record["waiting"]["until"] > time.time() + 50  # the first start's lease lasts a minute
    assert app.broker.stats()["default"]["delayed"] == 1  # waits in the broker, holding no slot
    shown = client(app).simulate_get(f"/v1/jobs/{jobs[2].id}").json
    assert shown["state"] == "queued" and shown["waiting"]["limit"] == "rate_limit"
    assert jobs[0].status().record["waiting"] is None
    consumer.close()


def test_a_concurrency_limit_holds_per_argument_until_the_outcome_is_stored(app: App) -> None:
    runner = Runner(app, "w1")
    first = app.send("keyed", ("acme", 1))
    second = app.send("keyed", kwargs={"account": "acme", "i": 2})  # the same key, given by name
    other = app.send("keyed", ("globex", 3))
    consumer1, running = reserve_and_prepare(app, runner)
    assert running is not None and running.envelope.id == first.id
    consumer2, refused = reserve_and_prepare(app, runner)
    assert refused is None and second.status().record["waiting"]["limit"] == "concurrency_limit"
    consumer3, allowed = reserve_and_prepare(app, runner)
    assert allowed is not None and allowed.envelope.id == other.id  # another account's slot
    runner.settle(consumer1, running, runner.execute(running))
    assert [lease["holder"] for lease in app.backend.leases('concurrency:keyed:"acme"')] == [None]
    for consumer in (consumer1, consumer2, consumer3):
        consumer.close()


def test_tasks_show_their_limits_and_schedule(app: App) -> None:
    tasks = {t["name"]: t for t in client(app).simulate_get("/v1/tasks").json["tasks"]}
    assert (tasks["rated"]["rate_limit"], tasks["rated"]["concurrency_limit"]) == ("2/m", None)
    assert (tasks["keyed"]["concurrency_limit"], tasks["keyed"]["concurrency_key"]) == (1, "account")
    assert tasks["rated"]["schedule"] is None
    assert tasks["cleanup"]["schedule"]["cron"] == "0 3 * * *"


def test_get_schedules_lists_each_with_its_next_run(app: App) -> None:
    result = client(app).simulate_get("/v1/schedules")
    assert result.status_code == 200
    [listed] = result.json["schedules"]
    assert (listed["name"], listed["task"], listed["tz"], listed["kwargs"]) == (
        "cleanup", "cleanup", "Europe/Paris", {"days": 7})
    assert listed["last_run"] is None
    assert listed["next_run"][11:19] in ("01:00:00", "02:00:00")  # 03:00 in Paris, in UTC


def test_the_dashboard_shows_a_job_waiting_on_a_limit(app: App) -> None:
    runner = Runner(app, "w1")
    jobs = [app.send("rated", (i,)) for i in range(3)]
    for _ in range(3):
        consumer, attempt = reserve_and_prepare(app, runner)
        if attempt is not None:
            runner.settle(consumer, attempt, runner.execute(attempt))
        consumer.close()
    page = client(app).simulate_get(f"/dashboard/jobs/{jobs[2].id}")
    assert page.status_code == 200 and "waiting on" in page.text and "rate_limit" in page.text


def test_cli_schedules_prints_them(tmp_path: Any) -> None:
    result = jobkit("schedules", "-A", "tests.limitapp:app", "--broker", "memory://",
                    "--backend", f"sqlite:///{tmp_path / 'jobs.db'}", "--env-file", "/dev/null")
    assert result.returncode == 0, result.stderr
    assert '"every": 1' in result.stdout and '"last_run": null' in result.stdout
