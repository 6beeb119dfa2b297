"""End to end on the other brokers: the REST API, the CLI and a worker, each its own process,
configured only by ``JOBKIT_BROKER_URL`` (Redis, RabbitMQ, a 3-server beanstalkd cluster).

The same steps as on one beanstalkd: a job POSTed to the API, a batch of three
and one sent by ``jobkit enqueue`` all run on a ``jobkit worker``; ``jobkit status``, ``jobkit
stats``, ``GET /v1/jobs/{id}`` and the seed's ``GET /<id>/`` answer. Where the
broker cannot look a message up (RabbitMQ), ``GET /<id>/`` of a waiting job
answers from its record instead of beanstalkd's ``stats-job``.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jobkit.brokers import broker_from_url
from jobkit.brokers.base import PEEK
from jobkit.embedded import free_port
from tests.api.serving import Command, request
from tests.helpers import eventually
from tests.processes import clean_env, jobkit

pytestmark = pytest.mark.e2e

SEED_DOC = '{"_id":"%s","hash":"09ee943c4fa33cd5a355eb7a4e38f7ef","payload":"{\\"example\\":\\"data\\"}"}'
SEED_STATS_KEYS = ["id", "tube", "state", "pri", "age", "delay", "ttr", "timeLeft", "file", "reserves",
                   "timeouts", "releases", "buries", "kicks"]
SERVERS = {"redis": "redis_server", "rabbitmq": "rabbitmq_server", "beanstalk-cluster": "beanstalkd_cluster"}


@pytest.fixture(params=list(SERVERS))
def env(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, str]:
    """The processes' environment: the broker URL, an SQLite file and a port, nothing else."""
    url = str(request.getfixturevalue(SERVERS[request.param]).url)
    return clean_env(JOBKIT_BROKER_URL=url, JOBKIT_BACKEND_URL=f"sqlite:///{tmp_path / 'jobs.db'}",
                     JOBKIT_API_PORT=str(free_port()))


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Command]]:
    """Start ``jobkit`` commands; every one is stopped (then killed) at teardown."""
    started: list[Command] = []

    def run(args: list[str], env: dict[str, str]) -> Command:
        started.append(Command(args, env, tmp_path / f"{args[0]}-{len(started)}.log"))
        return started[-1]

    yield run
    for command in reversed(started):
        command.stop()


def get(port: int, path: str) -> Any:
    status, _, body = request(port, "GET", path)
    assert status == 200, body
    return json.loads(body)


def cli(*args: str, env: dict[str, str]) -> str:
    done = jobkit(*args, env=env)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    return done.stdout


def test_api_cli_and_worker_run_unchanged(env: dict[str, str], start: Callable[..., Command],
                                          queue: str) -> None:
    port = int(env["JOBKIT_API_PORT"])
    start(["api", "--threads", "4"], env).wait_for_port(port)
    status, _, body = request(port, "POST", "/v1/jobs",
                              {"task": "hash_payload", "args": [{"example": "data"}], "queue": queue})
    assert status == 202, body
    posted = json.loads(body)["id"]
    status, _, body = request(port, "POST", "/v1/jobs/batch", {"jobs": [
        {"task": "hash_payload", "args": [{"example": i}], "queue": queue} for i in range(3)]})
    assert status == 202, body  # on RabbitMQ: three publishes, one wait for their confirms
    batch = json.loads(body)["ids"]
    sent = cli("enqueue", "hash_payload", '{"example":"data"}', "--queue", queue, env=env).strip()
    assert json.loads(cli("status", sent, env=env))["state"] == "queued"

    waiting = get(port, f"/{posted}/")  # the seed's view of a job that waits
    broker = broker_from_url(env["JOBKIT_BROKER_URL"])
    if broker.can(PEEK):  # beanstalkd's stats-job, from the broker
        assert list(waiting) == SEED_STATS_KEYS and (waiting["tube"], waiting["state"]) == (queue, "ready")
    else:  # from the record
        assert waiting == {"_id": posted, "state": "queued"}
    broker.close()

    start(["worker", "-q", queue, "-c", "2", "--grace", "1"], env)
    for job_id in (posted, sent, *batch):
        eventually(lambda job_id=job_id: get(port, f"/v1/jobs/{job_id}")["state"] == "succeeded",
                   timeout_s=30, what=f"job {job_id} succeeded")
    assert request(port, "GET", f"/{posted}/")[2].decode() == SEED_DOC % posted
    record = json.loads(cli("status", sent, env=env))
    assert record["state"] == "succeeded" and record["result"]["hash"] == "09ee943c4fa33cd5a355eb7a4e38f7ef"
    stats = json.loads(cli("stats", env=env))
    assert stats["jobs"] == {"succeeded": 5}
    counts = stats["queues"].get(queue, {"ready": 0, "reserved": 0})
    assert (counts["ready"], counts["reserved"]) == (0, 0)
