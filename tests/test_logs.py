"""``--log-format json``: one JSON object per line, with the job's fields where they apply."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from jobkit import App
from jobkit.embedded import Beanstalkd
from jobkit.logs import JsonFormatter, job_context, job_fields
from tests.conftest import unique
from tests.faultkit import StartWorker, make_app
from tests.helpers import eventually


@pytest.mark.e2e
def test_a_json_worker_writes_only_json_lines_with_the_failing_jobs_fields(
        beanstalkd: Beanstalkd, sqlite_url: str, workers: StartWorker, tmp_path: Path) -> None:
    app: App = make_app(beanstalkd.url, sqlite_url)
    queue, calls = unique("q"), tmp_path / "calls"
    proc = workers(app, queue, "--log-format", "json")
    job = app.send("always_fails", [str(calls)], queue=queue)  # 2 retries, then failed for good
    eventually(lambda: job.status().state.value == "failed", timeout_s=30, what="the job failed")
    proc.stop()
    lines = [json.loads(line) for line in proc.output().splitlines() if line.strip()]
    assert lines and all({"ts", "level", "logger", "message"} <= set(line) for line in lines)
    about_job = [line for line in lines if line.get("job_id") == job.id]
    assert [line["attempt"] for line in about_job] == [1, 2, 3]  # two retries, then failed for good
    assert all(line["task"] == "always_fails" and line["worker"] for line in about_job)
    assert about_job[-1]["level"] == "WARNING" and "failed for good" in about_job[-1]["message"]
    app.close()


def test_a_tasks_own_log_lines_carry_the_job_it_runs() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord("user", logging.INFO, __file__, 1, "working on %s", ("x",), None)
    with job_context(job_fields("j1", "crunch", 2, "host:1")):
        inside = json.loads(formatter.format(record))
    outside = json.loads(formatter.format(record))
    assert inside["message"] == "working on x"
    fields = (inside["job_id"], inside["task"], inside["attempt"], inside["worker"])
    assert fields == ("j1", "crunch", 2, "host:1")
    assert "job_id" not in outside


def test_an_exception_stays_on_one_line() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "oops", (), __import__("sys").exc_info())
    text = JsonFormatter().format(record)
    assert "\n" not in text and "ValueError: bad" in json.loads(text)["exception"]
