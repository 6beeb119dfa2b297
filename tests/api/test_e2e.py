"""End to end: the seed's walkthrough with a real beanstalkd, MongoDB, manager and worker processes.

The processes are configured only with the seed's variable names
(``BEANSTALK_HOST``, ``BEANSTALK_PORT``, ``MONGO_URL``, ``MANAGER_LISTEN_PORT``)
and serve ``examples.hashing:app``, jobkit's default app.
"""
from __future__ import annotations

import json
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from jobkit.embedded import Beanstalkd, free_port
from tests.api.serving import Command, children, request
from tests.helpers import eventually
from tests.processes import clean_env

pytestmark = pytest.mark.e2e

SEED_DOC = '{"_id":"%s","hash":"09ee943c4fa33cd5a355eb7a4e38f7ef","payload":"{\\"example\\":\\"data\\"}"}'
SEED_STATS_KEYS = ["id", "tube", "state", "pri", "age", "delay", "ttr", "timeLeft", "file", "reserves",
                   "timeouts", "releases", "buries", "kicks"]


@pytest.fixture
def seed_env(beanstalkd: Beanstalkd, mongo_url: str) -> dict[str, str]:
    """The environment of the seed's .env: nothing but its four variables."""
    env = clean_env(BEANSTALK_HOST="127.0.0.1", BEANSTALK_PORT=str(beanstalkd.port), MONGO_URL=mongo_url,
                    MANAGER_LISTEN_PORT=str(free_port()))
    env.pop("HASH_PAYLOAD_SLEEP", None)
    return env


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Command]]:
    """Start ``jobkit`` commands; every one is stopped (then killed) at teardown."""
    started: list[Command] = []

    def run(name: str, args: list[str], env: dict[str, str]) -> Command:
        started.append(Command(args, env, tmp_path / f"{name}-{len(started)}.log"))
        return started[-1]

    yield run
    for command in reversed(started):
        command.stop()


def get(port: int, path: str) -> tuple[int, bytes]:
    status, _, body = request(port, "GET", path)
    return status, body


def test_seed_walkthrough(seed_env: dict[str, str], start: Callable[..., Command]) -> None:
    port = int(seed_env["MANAGER_LISTEN_PORT"])
    start("manager", ["manager"], seed_env).wait_for_port(port)

    status, _, body = request(port, "POST", "/", {"example": "data"})  # curl -X POST localhost:8080 …
    assert status == 202
    job_id = json.loads(body)["id"]

    status, body = get(port, f"/{job_id}/")  # curl localhost:8080/<id>/ while it waits
    waiting = json.loads(body)
    assert status == 200 and list(waiting) == SEED_STATS_KEYS
    assert (waiting["tube"], waiting["state"]) == ("default", "ready")

    start("worker", ["worker", "-c", "2", "--grace", "1"], seed_env)
    done = eventually(lambda: (r := get(port, f"/{job_id}/"))[0] == 200 and b'"_id"' in r[1] and r,
                      timeout_s=30, what="the stored document")
    assert done[1].decode() == SEED_DOC % job_id

    status, body = get(port, "/0123456789abcdef0123456789abcdef/")
    assert status == 404 and json.loads(body)["title"].startswith("404")


def test_api_with_two_processes(seed_env: dict[str, str], start: Callable[..., Command]) -> None:
    port = int(seed_env["MANAGER_LISTEN_PORT"])
    api = start("api", ["api", "--processes", "2", "--threads", "4"], seed_env)
    api.wait_for_port(port)
    eventually(lambda: len(children(api.proc.pid)) == 2, what="two API processes")
    start("worker", ["worker", "-c", "4", "--grace", "1"], seed_env)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda n: request(port, "POST", "/v1/tasks/hash_payload", {"n": n}),
                                range(40)))
    assert [status for status, _, _ in answers] == [202] * 40
    ids = [json.loads(body)["id"] for _, _, body in answers]

    def all_done() -> bool:
        states = [json.loads(get(port, f"/v1/jobs/{job_id}")[1])["state"] for job_id in ids]
        return states == ["succeeded"] * len(ids)

    eventually(all_done, timeout_s=30, what="every job succeeded")
    status, body = get(port, f"/v1/jobs/{ids[0]}/result")
    assert status == 200 and json.loads(body)["result"]["payload"] == '{"n":0}'

    workers = children(api.proc.pid)
    assert api.stop(signal.SIGTERM) == 0
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
