"""End to end: real worker processes, a real beanstalkd, SQLite and MongoDB results, the CLI."""
from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jobkit import App, JobState
from jobkit.embedded import Beanstalkd
from jobkit.errors import JobFailed
from tests import taskapp
from tests.helpers import eventually
from tests.processes import JobkitProcess, clean_env, jobkit

pytestmark = pytest.mark.e2e
StartWorker = Callable[..., JobkitProcess]


@pytest.fixture
def start_worker(tmp_path: Path) -> Iterator[StartWorker]:
    """Start ``jobkit worker`` processes; wait until their connections block in reserve."""
    started: list[JobkitProcess] = []

    def start(app: App, queue: str, *extra: str, concurrency: int = 4,
              app_spec: str = "tests.taskapp:app") -> JobkitProcess:
        log = tmp_path / f"worker-{len(started)}.log"
        proc = JobkitProcess("worker", "-A", app_spec, "--broker", app.broker.url, "--backend",
                             app.backend.url, "-q", queue, "-c", str(concurrency), *extra, log=log)
        started.append(proc)
        eventually(lambda: proc.proc.poll() is None and
                   app.broker.stats().get(queue, {}).get("waiting", 0) >= concurrency,
                   timeout_s=20, what=f"worker waiting on {queue} ({log})")
        return proc

    yield start
    for proc in started:
        proc.stop()


@pytest.fixture(params=["sqlite", "mongo"])
def app(request: pytest.FixtureRequest, beanstalkd: Beanstalkd, tmp_path: Path) -> Iterator[App]:
    """The test tasks over the session's beanstalkd, results in SQLite or MongoDB."""
    backend = (f"sqlite:///{tmp_path / 'jobs.db'}" if request.param == "sqlite"
               else str(request.getfixturevalue("mongo_url")))
    app = App("e2e", broker=beanstalkd.url, backend=backend)
    app.tasks = taskapp.app.tasks  # the same task objects the worker process imports
    yield app
    app.close()


def test_300_add_jobs_through_one_worker_process(app: App, queue: str, start_worker: StartWorker) -> None:
    start_worker(app, queue, concurrency=4)
    add = app.tasks["add"]
    jobs = [app.send("add", (i, i), queue=queue) for i in range(300)]
    assert [job.get(timeout=60) for job in jobs] == [2 * i for i in range(300)]
    assert app.backend.counts().get("succeeded") == 300
    assert app.broker.stats()[queue]["ready"] == 0
    assert add(2, 3) == 5  # and calling a task still runs it in-process


def test_a_raising_task_fails_and_names_the_exception(app: App, queue: str,
                                                      start_worker: StartWorker) -> None:
    start_worker(app, queue, concurrency=1)
    job = app.send("boom", ("exploded",), queue=queue)
    with pytest.raises(JobFailed) as caught:
        job.get(timeout=20)
    status = job.status()
    assert status.state is JobState.FAILED
    assert status.error is not None and status.error["type"] == "ValueError"
    assert caught.value.error["message"] == "exploded"


def test_process_pool_runs_jobs(app: App, queue: str, start_worker: StartWorker) -> None:
    start_worker(app, queue, "--pool", "process", concurrency=2)
    jobs = [app.send("add", (i, 1), queue=queue) for i in range(40)]
    assert [job.get(timeout=30) for job in jobs] == [i + 1 for i in range(40)]
    workers = {job.status().record["worker"] for job in jobs}
    assert len(workers) >= 1 and all(":" in w for w in workers)


def test_cli_enqueue_and_status_show_the_seed_hash(beanstalkd: Beanstalkd, tmp_path: Path,
                                                     queue: str, start_worker: StartWorker) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    env = clean_env(JOBKIT_BROKER_URL=beanstalkd.url, JOBKIT_BACKEND_URL=db)
    enqueued = jobkit("enqueue", "hash_payload", '{"example":"data"}', "--queue", queue, env=env)
    assert enqueued.returncode == 0, enqueued.stderr
    job_id = enqueued.stdout.strip()
    assert len(job_id) == 32

    queued = jobkit("status", job_id, env=env)
    assert queued.returncode == 0 and json.loads(queued.stdout)["state"] == "queued"

    app = App("cli", broker=beanstalkd.url, backend=db)
    start_worker(app, queue, concurrency=1, app_spec="examples.hashing:app")
    record = eventually(lambda: json.loads(jobkit("status", job_id, env=env).stdout)
                        if app.status(job_id).state is JobState.SUCCEEDED else None, what="job done")
    assert record["result"] == {"hash": "09ee943c4fa33cd5a355eb7a4e38f7ef",
                                "payload": '{"example":"data"}'}


def test_cli_status_of_an_unknown_job_exits_non_zero(tmp_path: Path) -> None:
    env = clean_env(JOBKIT_BACKEND_URL=f"sqlite:///{tmp_path / 'x.db'}")
    result = jobkit("status", "0123456789abcdef0123456789abcdef", env=env)
    assert result.returncode == 1
    assert "no job" in result.stderr and result.stdout == ""


def test_cli_bad_input_gives_a_clear_error(tmp_path: Path) -> None:
    env = clean_env(JOBKIT_BROKER_URL="memory://", JOBKIT_BACKEND_URL=f"sqlite:///{tmp_path / 'x.db'}")
    not_json = jobkit("enqueue", "hash_payload", "{oops", env=env)
    assert not_json.returncode == 1 and "argument 1 is not JSON" in not_json.stderr
    unknown = jobkit("enqueue", "no_such_task", env=env)
    assert unknown.returncode == 1 and "no task named 'no_such_task'" in unknown.stderr
    bad_app = jobkit("stats", "-A", "nowhere.module:app", env=env)
    assert bad_app.returncode == 1 and "cannot import app module" in bad_app.stderr
    bad_url = jobkit("stats", "--broker", "kafka://x", env=env)
    assert bad_url.returncode == 1 and "known schemes are amqp://, beanstalk://, memory://" in bad_url.stderr
    for out in (not_json, unknown, bad_app, bad_url):
        assert "Traceback" not in out.stderr


def test_cli_reads_an_env_file_and_refuses_a_missing_one(tmp_path: Path) -> None:
    env_file = tmp_path / "jobkit.env"
    env_file.write_text(f"JOBKIT_BROKER_URL=memory://\nJOBKIT_BACKEND_URL=sqlite:///{tmp_path / 'e.db'}\n")
    ok = jobkit("stats", "--env-file", str(env_file))
    assert ok.returncode == 0 and json.loads(ok.stdout)["jobs"] == {}
    missing = jobkit("stats", "--env-file", str(tmp_path / "nope.env"))
    assert missing.returncode == 1 and "no such file" in missing.stderr


@pytest.mark.parametrize("argv, message", [
    (["api", "--port", "99999"], "not a TCP port"),
    (["api", "--port", "-1"], "must not be negative"),
    (["stats", "-l", "BOGUS"], "invalid choice"),
    (["worker", "--grace", "-1"], "seconds >= 0"),
    (["worker", "--prune-every", "0"], "more than 0 seconds"),
    (["worker", "-q", "bad q", "--broker", "memory://"], "invalid queue name 'bad q'"),
    (["kick", "--queue", "bad q", "--broker", "memory://"], "invalid queue name 'bad q'"),
    (["status", "x", "--broker", "foo://bar"], "known schemes are amqp://, beanstalk://, memory://"),
    (["api", "--max-body", "-5"], "must not be negative"),
])
def test_cli_refuses_bad_flags_without_a_traceback(argv: list[str], message: str, tmp_path: Path) -> None:
    env = clean_env(JOBKIT_BACKEND_URL=f"sqlite:///{tmp_path / 'x.db'}")
    result = jobkit(*argv, env=env, timeout_s=30)
    assert result.returncode != 0
    assert message in result.stderr and "Traceback" not in result.stderr
