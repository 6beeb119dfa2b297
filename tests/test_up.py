"""`jobkit up`: the whole system on one machine, in one command."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobkit.embedded import Beanstalkd, beanstalkd_answers, free_port, port_is_free, wait_for_port
from tests.api.serving import request
from tests.helpers import eventually
from tests.processes import ROOT, JobkitProcess, clean_env, jobkit
from tests.servers import missing

pytestmark = pytest.mark.e2e


def worktree_env(**extra: str) -> dict[str, str]:
    """A clean environment that imports this tree's jobkit from any directory."""
    return clean_env(PYTHONPATH=str(ROOT), **extra)


SEED_HASH = {"hash": "09ee943c4fa33cd5a355eb7a4e38f7ef", "payload": '{"example":"data"}'}


def run_up(tmp_path: Path, env: dict[str, str], *flags: str) -> tuple[JobkitProcess, int]:
    port = free_port()
    up = JobkitProcess("up", "--port", str(port), "--workers", "2", *flags, log=tmp_path / "up.log",
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


def test_up_starts_beanstalkd_at_the_broker_address_and_the_cli_reaches_it(tmp_path: Path) -> None:
    broker_port = free_port()
    env = worktree_env(JOBKIT_BROKER_URL=f"beanstalk://127.0.0.1:{broker_port}")
    up, port = run_up(tmp_path, env)
    try:
        seed_walkthrough(port)
        banner = up.output()
        assert f"beanstalk://127.0.0.1:{broker_port}" in banner and "beanstalkd started here" in banner
        assert "curl -X POST" in banner
        assert (tmp_path / ".jobkit" / "beanstalkd").is_dir()  # the binlog
        assert (tmp_path / "jobkit.db").exists()
        cli_walkthrough(tmp_path, env)
    finally:
        up.signal(signal.SIGINT)
        assert up.wait(60) == 0, up.output()
    assert up.output().rstrip().endswith("jobkit up: stopped (everything it started has exited)"), up.output()
    with pytest.raises(TimeoutError):  # its beanstalkd went with it
        wait_for_port(broker_port, timeout_s=0.5)


def test_probing_beanstalkd_leaves_nothing_on_its_stderr(tmp_path: Path) -> None:
    """The probe reads the whole answer before closing: ``jobkit up``'s first line used to be
    beanstalkd's "read(): Connection reset by peer", from a probe that closed with bytes unread."""
    if shutil.which("beanstalkd") is None:
        missing("beanstalkd is not installed (apt-get install beanstalkd)")
    port = free_port()
    with open(tmp_path / "stderr", "wb") as stderr:
        server = subprocess.Popen(["beanstalkd", "-l", "127.0.0.1", "-p", str(port)], stderr=stderr)
    try:
        wait_for_port(port, proc=server)
        assert all(beanstalkd_answers("127.0.0.1", port) for _ in range(5))
        time.sleep(0.2)  # beanstalkd reads a reset at its next poll
    finally:
        server.terminate()
        server.wait(10)
    assert (tmp_path / "stderr").read_text() == ""


def test_a_server_that_answers_otherwise_is_not_beanstalkd() -> None:
    with socket.create_server(("127.0.0.1", 0)) as other:
        def answer() -> None:
            conn, _ = other.accept()
            with conn:
                conn.recv(64)
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        assert not beanstalkd_answers("127.0.0.1", other.getsockname()[1])
        thread.join(5)


def cli_walkthrough(cwd: Path, env: dict[str, str]) -> None:
    """The README's CLI lines against a running `up`: enqueue, status, stats."""
    sent = jobkit("enqueue", "hash_payload", '{"example":"data"}', env=env, cwd=cwd)
    assert sent.returncode == 0, sent.stderr
    job_id = sent.stdout.strip()
    record = eventually(lambda: json.loads(jobkit("status", job_id, env=env, cwd=cwd).stdout or "{}")
                        .get("result"), what="the CLI's job done")
    assert record == SEED_HASH
    stats = jobkit("stats", env=env, cwd=cwd)
    assert stats.returncode == 0 and json.loads(stats.stdout)["jobs"]["succeeded"] >= 1, stats.stderr


@pytest.fixture
def beanstalkd_on_11300() -> Iterator[None]:
    """A beanstalkd at the default address, as the README's "terminal 1" starts it."""
    if shutil.which("beanstalkd") is None:
        missing("beanstalkd is not installed (apt-get install beanstalkd)")
    if beanstalkd_answers("127.0.0.1", 11300):
        yield  # one runs already: the case itself
        return
    if not port_is_free(11300):
        missing("port 11300 is taken by something that is not beanstalkd")
    with Beanstalkd(port=11300):
        yield


@pytest.mark.usefixtures("beanstalkd_on_11300")
def test_up_uses_the_beanstalkd_already_listening_at_the_default_address(tmp_path: Path) -> None:
    env = worktree_env()
    up, _ = run_up(tmp_path, env)
    try:
        banner = up.output()
        assert "beanstalk://127.0.0.1:11300" in banner, banner
        assert "already listening on 127.0.0.1:11300" in banner and "started here" not in banner
        assert not (tmp_path / ".jobkit" / "beanstalkd").exists()
        cli_walkthrough(tmp_path, env)  # the CLI's default address is up's broker: jobs run
    finally:
        up.signal(signal.SIGINT)
        assert up.wait(60) == 0, up.output()
    assert beanstalkd_answers("127.0.0.1", 11300)  # not up's to stop
    assert "jobkit up: stopped" in up.output()


def test_up_without_beanstalkd_uses_the_memory_broker(tmp_path: Path) -> None:
    bare_path = tmp_path / "bin"
    bare_path.mkdir()
    env = worktree_env(PATH=str(bare_path))
    assert not any(Path(p, "beanstalkd").exists() for p in env["PATH"].split(os.pathsep))
    up, port = run_up(tmp_path, env)
    try:
        seed_walkthrough(port)
        assert "in-process memory broker" in up.output()
        the_cli_says_to_use_the_http_api(tmp_path, env, port)
        a_second_up_here_is_refused_in_one_line(tmp_path, env, up.pid)
    finally:
        up.signal(signal.SIGTERM)
        assert up.wait(60) == 0, up.output()
    assert up.output().rstrip().endswith("jobkit up: stopped (everything it started has exited)"), up.output()


def the_cli_says_to_use_the_http_api(cwd: Path, env: dict[str, str], port: int) -> None:
    for argv in (["enqueue", "hash_payload", "{}"], ["stats"]):
        done = jobkit(*argv, env=env, cwd=cwd)
        assert done.returncode == 1 and "Traceback" not in done.stderr
        (line,) = done.stderr.splitlines()
        assert "in-process broker" in line and f"curl -X POST 127.0.0.1:{port}/v1/jobs" in line, line


def a_second_up_here_is_refused_in_one_line(cwd: Path, env: dict[str, str], first_pid: int) -> None:
    second = jobkit("up", "--port", str(free_port()), env=env, cwd=cwd, timeout_s=30)
    assert second.returncode == 1 and "Traceback" not in second.stderr
    assert second.stderr.splitlines() == [
        f"jobkit: ConfigError: another jobkit up is running in this directory (pid {first_pid}): "
        "stop it, or run this one from another directory"]
    assert second.stdout == ""  # it started nothing, so it says nothing of stopping


def test_up_binds_loopback_unless_told_and_says_what_it_binds(tmp_path: Path) -> None:
    up, port = run_up(tmp_path, worktree_env(JOBKIT_BROKER_URL="memory://"))
    try:
        assert f"listening on 127.0.0.1:{port} " in up.output()
        with pytest.raises(OSError):  # 127.0.0.2 is this machine too, but not the bound address
            socket.create_connection(("127.0.0.2", port), timeout=5).close()
    finally:
        up.signal(signal.SIGTERM)
        assert up.wait(60) == 0, up.output()
    up, port = run_up(tmp_path, worktree_env(JOBKIT_BROKER_URL="memory://"), "--host", "0.0.0.0")
    try:
        assert f"listening on 0.0.0.0:{port} (every interface, no token" in up.output()
        socket.create_connection(("127.0.0.2", port), timeout=5).close()
    finally:
        up.signal(signal.SIGTERM)
        assert up.wait(60) == 0, up.output()


def test_a_beanstalkd_that_cannot_start_is_one_line(tmp_path: Path) -> None:
    if shutil.which("beanstalkd") is None:
        missing("beanstalkd is not installed (apt-get install beanstalkd)")
    # someone else's beanstalkd holds up's binlog folder: a second one cannot lock it
    with Beanstalkd(binlog_dir=tmp_path / ".jobkit" / "beanstalkd"):
        env = worktree_env(JOBKIT_BROKER_URL=f"beanstalk://127.0.0.1:{free_port()}")
        done = jobkit("up", "--port", str(free_port()), env=env, cwd=tmp_path, timeout_s=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines()[-1].startswith("jobkit: ConfigError: beanstalkd did not start on")


LISTENS_THEN_EXITS = """#!{python}
import socket, sys, time
args = sys.argv[1:]
server = socket.socket()
server.bind((args[args.index("-l") + 1], int(args[args.index("-p") + 1])))
server.listen()
time.sleep(1)  # as a beanstalkd that opened its port, then failed to lock its binlog folder
sys.exit(10)
"""


def test_a_beanstalkd_that_listens_then_exits_did_not_start(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """beanstalkd opens its port before it locks its binlog: an open port is not a started server."""
    fake = tmp_path / "bin" / "beanstalkd"
    fake.parent.mkdir()
    fake.write_text(LISTENS_THEN_EXITS.replace("{python}", sys.executable))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    server = Beanstalkd(binlog_dir=tmp_path / "binlog")
    try:
        with pytest.raises(TimeoutError, match="exited with 10 before it served"):
            server.start()
    finally:
        server.stop()


def test_up_starts_its_worker_pool_again_after_a_kill_9(tmp_path: Path) -> None:
    env = worktree_env(JOBKIT_BROKER_URL=f"beanstalk://127.0.0.1:{free_port()}")
    up, port = run_up(tmp_path, env)
    try:
        seed_walkthrough(port)
        pools = [int(pid) for pid in subprocess.run(["pgrep", "-P", str(up.proc.pid), "-f", "jobkit worker"],
                                                    capture_output=True, text=True).stdout.split()]
        assert len(pools) == 1, pools
        os.kill(pools[0], signal.SIGKILL)  # its workers die with it
        eventually(lambda: "the worker pool" in up.output() and "starting it again" in up.output(),
                   what="up starting its pool again")
        seed_walkthrough(port)  # a job sent now runs
    finally:
        up.signal(signal.SIGINT)
        assert up.wait(60) == 0, up.output()


def test_a_port_another_process_opened_is_not_a_start() -> None:
    """A child that died while another process took its free port has not started (seen in CI:
    ``up``'s beanstalkd could not lock its binlog, and a test's beanstalkd answered on its port)."""
    other = socket.create_server(("127.0.0.1", 0))
    port = other.getsockname()[1]
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    try:
        with pytest.raises(TimeoutError, match="exited with 0"):
            wait_for_port(port, proc=child, timeout_s=5)
        wait_for_port(port, timeout_s=5)  # without a process to check, an open port is enough
    finally:
        other.close()
