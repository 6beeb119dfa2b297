"""`jobkit up`: the whole system on one machine, in one command."""
from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from jobkit.embedded import free_port, wait_for_port
from tests.api.serving import request
from tests.helpers import eventually
from tests.processes import ROOT, JobkitProcess, clean_env

pytestmark = pytest.mark.e2e
SEED_HASH = {"hash": "09ee943c4fa33cd5a355eb7a4e38f7ef", "payload": '{"example":"data"}'}


def run_up(tmp_path: Path, env: dict[str, str]) -> tuple[JobkitProcess, int]:
    port = free_port()
    up = JobkitProcess("up", "--port", str(port), "--workers", "2", log=tmp_path / "up.log",
                       env=env, cwd=tmp_path)
    try:
        wait_for_port(port, timeout_s=30, proc=up.proc)
    except TimeoutError:
        raise AssertionError(up.output()) from None
    return up, port


def seed_walkthrough(port: int) -> None:
    status, headers, body = request(port, "POST", "/", {"example": "data"})
    assert status == 202, body
    job_id = json.loads(body)["id"]
    assert headers["location"] == f"/v1/jobs/{job_id}"
    done = eventually(lambda: json.loads(request(port, "GET", f"/{job_id}/")[2]).get("hash"),
                      what="the seed job done")
    assert done == SEED_HASH["hash"]
    assert json.loads(request(port, "GET", f"/{job_id}/")[2]) == {"_id": job_id, **SEED_HASH}
    assert request(port, "GET", "/0123456789abcdef0123456789abcdef/")[0] == 404


def test_up_starts_beanstalkd_workers_and_the_api(tmp_path: Path) -> None:
    env = clean_env(PYTHONPATH=str(ROOT))  # the default app, examples.hashing, lives in the repo
    up, port = run_up(tmp_path, env)
    try:
        seed_walkthrough(port)
        banner = up.output()
        assert "beanstalkd started here" in banner and "curl -X POST" in banner
        assert (tmp_path / ".jobkit" / "beanstalkd").is_dir()  # the binlog
        assert (tmp_path / "jobkit.db").exists()
        broker_port = int(banner.split("beanstalk://127.0.0.1:")[1].split()[0])
    finally:
        up.signal(signal.SIGINT)
        assert up.wait(60) == 0, up.output()
    with pytest.raises(TimeoutError):  # its beanstalkd went with it
        wait_for_port(broker_port, timeout_s=0.5)


def test_up_without_beanstalkd_uses_the_memory_broker(tmp_path: Path) -> None:
    bare_path = tmp_path / "bin"
    bare_path.mkdir()
    env = clean_env(PYTHONPATH=str(ROOT), PATH=str(bare_path))
    assert not any(Path(p, "beanstalkd").exists() for p in env["PATH"].split(os.pathsep))
    up, port = run_up(tmp_path, env)
    try:
        seed_walkthrough(port)
        assert "in-process memory broker" in up.output()
    finally:
        up.signal(signal.SIGTERM)
        assert up.wait(60) == 0, up.output()
