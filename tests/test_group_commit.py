"""Group commit: concurrent adds of one process share a write, and each still means "recorded".

The :class:`GroupWriter` itself is driven deterministically (a write held
open while others queue behind it); the backends are driven by many threads
at once, on SQLite and on a real MongoDB server.
"""
from __future__ import annotations

import functools
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

from jobkit.backends import Backend, backend_from_url
from jobkit.grouping import GroupWriter
from jobkit.errors import BackendError, BackendUnavailable, PayloadTooLarge
from tests.conftest import unique


def record(job_id: str, **extra: object) -> dict[str, object]:
    return {"id": job_id, "task": "add", "args": [1, 2], "kwargs": {}, "queue": "default",
            "priority": 1024, "created_at": time.time(), "broker_id": 7} | extra


def run_threads(count: int, target: Callable[[int], None]) -> None:
    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)


class HeldWrite:
    """A write function whose first call waits until released, so that others queue behind it."""

    def __init__(self, fail_group: int | None = None) -> None:
        self.groups: list[list[int]] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self.fail_group = fail_group

    def __call__(self, items: list[int]) -> Sequence[int | BaseException]:
        self.groups.append(list(items))
        if len(self.groups) == 1:
            self.entered.set()
            assert self.release.wait(30)
        if len(self.groups) - 1 == self.fail_group:
            raise BackendUnavailable("sqlite jobs.db: database is locked")
        return [item * 10 for item in items]


def start_behind_the_first(calls: list[Callable[[], None]], entered: threading.Event,
                           waiting: Callable[[], int]) -> list[threading.Thread]:
    """Start the first call; once its write is held (``entered``), the others; return once all wait."""
    threads = [threading.Thread(target=call) for call in calls]
    threads[0].start()
    assert entered.wait(30)
    for thread in threads[1:]:
        thread.start()
    deadline = time.monotonic() + 30
    while waiting() < len(calls) - 1:  # every other call queued behind the held write
        assert time.monotonic() < deadline
        time.sleep(0.001)
    return threads


def queue_behind_first(writer: GroupWriter[int, int], write: HeldWrite,
                       results: dict[int, Any], items: range) -> list[threading.Thread]:
    """Start a thread per item; the first leads and is held; return once the others all wait."""
    def submit(item: int) -> None:
        try:
            results[item] = writer.submit(item)
        except BackendError as exc:
            results[item] = exc

    return start_behind_the_first([functools.partial(submit, item) for item in items], write.entered,
                                  lambda: writer.waiting)


def test_calls_that_arrive_during_a_write_share_the_next_one() -> None:
    write = HeldWrite()
    writer: GroupWriter[int, int] = GroupWriter(write)
    results: dict[int, Any] = {}
    threads = queue_behind_first(writer, write, results, range(1, 9))
    write.release.set()
    for thread in threads:
        thread.join(30)
    assert write.groups[0] == [1]
    assert sorted(write.groups[1]) == list(range(2, 9))  # one write for all seven waiting
    assert len(write.groups) == 2
    assert results == {item: item * 10 for item in range(1, 9)}  # each its own outcome


def test_a_failed_write_fails_its_group_only_with_a_clear_error() -> None:
    write = HeldWrite(fail_group=1)
    writer: GroupWriter[int, int] = GroupWriter(write)
    results: dict[int, Any] = {}
    threads = queue_behind_first(writer, write, results, range(1, 6))
    write.release.set()
    for thread in threads:
        thread.join(30)
    assert results[1] == 10  # the group before
    for item in range(2, 6):
        assert isinstance(results[item], BackendUnavailable)
        assert "database is locked" in str(results[item])
    assert len({id(results[item]) for item in range(2, 6)}) == 4  # one exception per caller
    assert writer.submit(6) == 60  # the group after


def test_one_item_that_fails_fails_alone() -> None:
    def write(items: list[int]) -> list[int | BaseException]:
        return [BackendError(f"item {i} refused") if i == 3 else i for i in items]

    writer: GroupWriter[int, int] = GroupWriter(write)
    assert writer.submit(2) == 2
    with pytest.raises(BackendError, match="item 3 refused"):
        writer.submit(3)


def test_a_bug_in_a_write_reaches_every_caller_as_a_backend_error() -> None:
    def write(items: list[int]) -> list[int]:
        raise KeyError("oops")

    with pytest.raises(BackendError, match="group write failed: KeyError"):
        GroupWriter(write).submit(1)


@pytest.fixture(params=["sqlite", "mongo"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.db'}"
    return str(request.getfixturevalue("mongo_url"))


def test_every_concurrent_add_is_recorded_once_when_it_returns(store_url: str) -> None:
    backend = backend_from_url(store_url)
    reader = backend_from_url(store_url)  # another connection, as a client polling would be
    ids = [[unique() for _ in range(25)] for _ in range(16)]
    missing: list[str] = []
    created: list[bool] = []

    def add_all(i: int) -> None:
        for job_id in ids[i]:
            created.append(backend.add(record(job_id)))
            if reader.get(job_id) is None:
                missing.append(job_id)

    run_threads(16, add_all)
    assert missing == []
    assert created == [True] * 400
    found = backend.find(limit=1000)
    assert sorted(r["id"] for r in found) == sorted(i for each in ids for i in each)  # none lost or twice
    assert backend.counts() == {"queued": 400}
    backend.close()
    reader.close()


def test_concurrent_adds_of_one_id_make_one_record_and_one_creation(store_url: str) -> None:
    backend = backend_from_url(store_url)
    job_id = unique()
    created: list[bool] = []
    run_threads(12, lambda i: created.append(backend.add(record(job_id, broker_id=i))))
    assert created.count(True) == 1
    assert [r["id"] for r in backend.find(limit=10)] == [job_id]
    assert backend.counts() == {"queued": 1}
    backend.close()


def test_sqlite_adds_that_cannot_be_written_fail_and_later_ones_succeed(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    backend: Backend = backend_from_url(f"sqlite:///{path}?timeout=0.2")
    backend.ping()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock past the timeout
    errors: list[BaseException] = []
    failed_ids = [unique() for _ in range(6)]

    def add(i: int) -> None:
        try:
            backend.add(record(failed_ids[i]))
        except BackendError as exc:
            errors.append(exc)

    run_threads(6, add)
    blocker.execute("ROLLBACK")
    blocker.close()
    assert len(errors) == 6
    assert all(isinstance(e, BackendUnavailable) and "database is locked" in str(e) for e in errors)
    later = unique()
    assert backend.add(record(later)) is True
    assert [r["id"] for r in backend.find(limit=10)] == [later]  # nothing of the failed ones
    backend.close()


def test_sqlite_add_inside_a_batch_is_part_of_that_transaction(tmp_path: Path) -> None:
    backend = backend_from_url(f"sqlite:///{tmp_path / 'jobs.db'}")
    job_id = unique()
    with pytest.raises(RuntimeError), backend.batch():
        backend.add(record(job_id))
        raise RuntimeError("the batch fails: its writes go")
    assert backend.get(job_id) is None
    backend.close()


def test_concurrent_puts_share_writes_and_each_gets_its_own_message(beanstalkd: Any) -> None:
    from jobkit.brokers import broker_from_url

    broker = broker_from_url(beanstalkd.url)
    queue = unique("q")
    got: dict[bytes, str] = {}

    def put_all(i: int) -> None:
        for n in range(20):
            body = b"%d-%d" % (i, n)
            got[body] = broker.put(body, queue=queue, priority=1024, delay_s=0, ttr_s=60)

    run_threads(16, put_all)
    assert len(got) == 320 and len(set(got.values())) == 320
    for body, broker_id in got.items():
        peeked = broker.peek(broker_id)
        assert peeked is not None and peeked.body == body  # its own id, never another's
    assert broker.stats()[queue]["ready"] == 320
    broker.close()




def test_a_forked_child_adds_even_when_forked_mid_write(tmp_path: Path) -> None:
    """The child must not wait for a group its parent was writing when it forked."""
    import multiprocessing

    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    backend = backend_from_url(url)
    backend.add(record(unique()))
    backend._adds._groups.writing = True  # type: ignore[attr-defined]  # as if forked mid-write
    job_id = unique()
    try:
        child = multiprocessing.get_context("fork").Process(target=_add_forked, args=(backend, job_id))
        child.start()
        child.join(30)
        assert child.exitcode == 0
    finally:
        backend._adds._groups.writing = False  # type: ignore[attr-defined]
    assert backend.get(job_id) is not None
    backend.close()


def _add_forked(backend: Backend, job_id: str) -> None:
    backend.add(record(job_id))


# -- the App gathers concurrent sends: one leader puts them all, then records them all -----------


class HeldPuts:
    """Wraps a broker's ``put_each``: counts the messages of each call; the first call waits."""

    def __init__(self, put_each: Callable[..., Any]) -> None:
        self.put_each = put_each
        self.calls: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, messages: Sequence[Any]) -> Any:
        self.calls.append(len(messages))
        if len(self.calls) == 1:
            self.entered.set()
            assert self.release.wait(30)
        return self.put_each(messages)


def gathered_app(beanstalkd: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, HeldPuts]:
    from jobkit import App

    app = App("gathered", broker=beanstalkd.url, backend=f"sqlite:///{tmp_path / 'jobs.db'}")

    @app.task(queue=unique("q"))
    def echo(value: str) -> str:
        return value

    held = HeldPuts(app.broker.put_each)
    monkeypatch.setattr(app.broker, "put_each", held)
    return app, held


def send_behind_a_held_one(app: Any, held: HeldPuts, values: list[str]) -> dict[str, Any]:
    """Send ``values[0]`` (its put is held), then the others, which gather; release; the outcomes."""
    outcomes: dict[str, Any] = {}

    def send(value: str) -> None:
        try:
            outcomes[value] = app.send("echo", [value])
        except Exception as exc:  # noqa: BLE001 - looked at by the tests
            outcomes[value] = exc

    threads = start_behind_the_first([functools.partial(send, value) for value in values], held.entered,
                                     lambda: app._sends.waiting)
    held.release.set()
    for thread in threads:
        thread.join(30)
    return outcomes


def test_concurrent_sends_are_put_together_and_each_is_recorded_with_its_message(
        beanstalkd: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app, held = gathered_app(beanstalkd, tmp_path, monkeypatch)
    values = [f"v{i}" for i in range(12)]
    outcomes = send_behind_a_held_one(app, held, values)
    assert held.calls == [1, 11]  # the first alone, then everyone who arrived meanwhile
    for value in values:
        record = app.backend.get(outcomes[value].id)
        assert record is not None and record["args"] == [value] and record["state"] == "queued"
        peeked = app.broker.peek(record["broker_id"])
        assert peeked is not None and json.loads(peeked.body)["args"] == [value]  # its own message
    app.close()


def test_a_message_the_broker_refuses_fails_its_send_alone(
        beanstalkd: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app, held = gathered_app(beanstalkd, tmp_path, monkeypatch)
    too_big = "x" * 1_100_000  # over the max-job-size of jobkit's beanstalkd (1 MiB)
    outcomes = send_behind_a_held_one(app, held, ["first", "before", too_big, "after"])
    assert held.calls == [1, 3]
    assert isinstance(outcomes[too_big], PayloadTooLarge)
    for value in ("first", "before", "after"):
        record = app.backend.get(outcomes[value].id)
        assert record is not None and record["broker_id"]
    assert app.broker.stats()[app.get_task("echo").options.queue]["ready"] == 3
    assert app.backend.counts().get("queued") == 3  # no record for the refused one
    app.close()


def test_records_that_cannot_be_written_take_the_messages_back(
        beanstalkd: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app, held = gathered_app(beanstalkd, tmp_path, monkeypatch)

    def add_many(records: Sequence[dict[str, Any]]) -> None:
        raise BackendUnavailable("sqlite jobs.db: database is locked")

    monkeypatch.setattr(app.backend, "add_many", add_many)
    outcomes = send_behind_a_held_one(app, held, ["a", "b", "c"])
    assert all(isinstance(outcome, BackendUnavailable) for outcome in outcomes.values()), outcomes
    assert app.broker.stats().get(app.get_task("echo").options.queue, {}).get("ready", 0) == 0
    app.close()
