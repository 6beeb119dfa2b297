"""The wire envelope and the JSON rules every edge shares."""
from __future__ import annotations

import os
import time
import uuid

import pytest

from jobkit.errors import PayloadError, PoisonMessage
from jobkit.message import MAX_DEPTH, Envelope, dumps, loads, new_job_id


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):  # depth containers around a scalar
        value = [value]
    return value


def test_envelope_round_trips_as_compact_utf8_json() -> None:
    env = Envelope(id=new_job_id(), task="add", args=[1, "é"], kwargs={"k": None}, queue="q",
                   priority=5, ttr=30, max_retries=2, enqueued_at=12.5)
    body = env.encode()
    assert body.startswith(b'{"v":1,"id":"') and "é".encode() in body
    assert Envelope.decode(body) == env


@pytest.mark.parametrize("body, reason", [
    (b"\x80abc", "not valid UTF-8"),
    (b"{nope", "malformed JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"v": 1, "task": "add"}', "no valid job id"),
    (b'{"v": 1, "id": "../x", "task": "add"}', "no valid job id"),
    (b'{"v": 2, "id": "abc", "task": "add"}', "unsupported envelope version"),
    (b'{"v": 1, "id": "abc", "task": "add", "args": {}}', "wrong type"),
    (b'{"v": 1, "id": "abc", "task": "add", "priority": -1}', "wrong type"),
])
def test_poison_bodies_are_named(body: bytes, reason: str) -> None:
    with pytest.raises(PoisonMessage, match=reason):
        Envelope.decode(body)


def test_poison_keeps_the_job_id_when_it_can() -> None:
    with pytest.raises(PoisonMessage) as caught:
        Envelope.decode(b'{"v": 1, "id": "abc", "task": 5}')
    assert caught.value.job_id == "abc"


def test_job_ids_are_unique_and_url_safe() -> None:
    ids = {new_job_id() for _ in range(1000)}
    assert len(ids) == 1000 and all(i.isalnum() and len(i) == 32 for i in ids)


def test_a_forked_child_makes_other_ids_than_its_parent() -> None:
    """The random part is reseeded in a forked child (API and worker processes are forked)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids, then out without running the parent's cleanup
        os.write(write, " ".join(new_job_id() for _ in range(100)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split()
    os.waitpid(pid, 0)
    parent = [new_job_id() for _ in range(100)]
    assert len(child) == 100 and not {i[12:] for i in child} & {i[12:] for i in parent}


def test_job_ids_are_uuid7_ordered_by_creation(monkeypatch: pytest.MonkeyPatch) -> None:
    """A later millisecond sorts later: an id index grows at its end (see new_job_id)."""
    monkeypatch.setattr(time, "time_ns", lambda: 1_764_300_000_000_000_000)
    earlier = new_job_id()
    monkeypatch.setattr(time, "time_ns", lambda: 1_764_300_000_001_000_000)
    later = new_job_id()
    assert earlier < later and uuid.UUID(earlier).version == uuid.UUID(later).version == 7
    assert earlier[:12] == f"{1_764_300_000_000:012x}"


@pytest.mark.parametrize("text, reason", [
    (b"", "malformed"),
    (b"\xff", "UTF-8"),
    (b"[" * 100_000, "nests deeper|malformed"),
    (b'{"a": NaN}', "NaN is not valid"),
    (b'{"a": Infinity}', "Infinity is not valid"),
    (b'"a\x00b"', "malformed"),
    (b'"a\\u0000b"', "NUL"),
    (b'{"a\\u0000": 1}', "NUL"),
    (b'"\\ud800"', "surrogate"),
    (b"1" * 5000, "malformed"),  # over Python's integer digit limit
])
def test_loads_rejects_hostile_json(text: bytes, reason: str) -> None:
    with pytest.raises(PayloadError, match=reason):
        loads(text)


def test_depth_limit_is_exact() -> None:
    assert loads(dumps(nested(MAX_DEPTH))) == nested(MAX_DEPTH)
    with pytest.raises(PayloadError, match="deeper"):
        dumps(nested(MAX_DEPTH + 1))


def test_dumps_refuses_what_json_cannot_hold() -> None:
    for value in ({1, 2}, float("nan"), object(), b"bytes"):
        with pytest.raises(PayloadError):
            dumps(value)


def test_big_integers_and_operator_keys_are_plain_data() -> None:
    value = {"$where": "x", "a.b": 10**30}
    assert loads(dumps(value)) == value


def test_loads_reads_utf8_bytes() -> None:
    assert loads('{"k":"é"}'.encode()) == {"k": "é"}


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-32"])
def test_loads_refuses_bytes_in_other_unicode_encodings(encoding: str) -> None:
    with pytest.raises(PayloadError):
        loads('{"k":"v"}'.encode(encoding))


def test_loads_refuses_invalid_utf8() -> None:
    with pytest.raises(PayloadError, match="UTF-8"):
        loads(b'{"k":"\xff"}')


def test_an_argument_may_nest_max_depth_levels_inside_its_envelope() -> None:
    deep = nested(MAX_DEPTH)
    env = Envelope(id="deep1", task="t", args=[deep], kwargs={"k": deep})
    assert Envelope.decode(env.encode()).args == [deep]
    with pytest.raises(PayloadError, match=f"an argument nests deeper than {MAX_DEPTH} levels"):
        Envelope(id="deep2", task="t", args=[nested(MAX_DEPTH + 1)]).encode()
