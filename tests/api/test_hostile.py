"""The hostile-input list of docs/fault-tests.md, one test each: a JSON 4xx, nothing enqueued, still serving.

The cases that need a real HTTP server (a lying Content-Length, a chunked
body on the wire) are repeated against waitress in ``test_api_server.py``.
"""
from __future__ import annotations

import hmac
import json
import uuid
from collections.abc import Iterator
from typing import Any

import falcon.testing
import pytest

from jobkit import App
from jobkit.api import create_app
from jobkit.backends.memory import MemoryBackend
from jobkit.config import Settings
from tests.api.app import assert_refused, enqueued, make_app, post

SMALL = Settings(max_body=1000)


class EndlessBody:
    """A request body that never ends; counts what was read and refuses to be read whole."""

    def __init__(self) -> None:
        self.read_bytes = 0

    def read(self, size: int = -1) -> bytes:
        assert size is not None and size >= 0, "the whole body was asked for"
        self.read_bytes += size
        return b" " * size


class SpyBackend(MemoryBackend):
    """A memory backend that counts reads."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get(self, job_id: str) -> dict[str, Any] | None:
        self.reads += 1
        return super().get(job_id)


def call(web: falcon.App, path: str, stream: Any, content_length: str | None,
         **headers: str) -> tuple[int, dict[str, str], Any]:
    """Call the WSGI app with a body stream of our own (no Content-Length unless given)."""
    env = falcon.testing.create_environ(path=path, method="POST", headers=headers)
    env.pop("CONTENT_LENGTH", None)
    if content_length is not None:
        env["CONTENT_LENGTH"] = content_length
    env["wsgi.input"], env["wsgi.input_terminated"] = stream, True
    start = falcon.testing.StartResponseMock()
    body = b"".join(web(env, start))
    return int(start.status[:3]), start.headers_dict, json.loads(body)


@pytest.fixture
def small(jobkit_app: App) -> falcon.testing.TestClient:
    """A client of an API whose body limit is 1000 bytes."""
    return falcon.testing.TestClient(create_app(SMALL, jobkit_app))


# -- bodies that are not acceptable JSON: 400 -------------------------------

def test_malformed_json(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    assert_refused(client, jobkit_app, post(client, "/", raw=b'{"example": '), 400)


@pytest.mark.parametrize("path", ["/", "/v1/jobs", "/v1/tasks/echo"])
def test_empty_body(client: falcon.testing.TestClient, jobkit_app: App, path: str) -> None:
    assert_refused(client, jobkit_app, post(client, path, raw=b""), 400)


def test_invalid_utf8(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    assert_refused(client, jobkit_app, post(client, "/", raw=b'{"k": "\xc3\x28"}'), 400)


def test_utf16_body(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    assert_refused(client, jobkit_app, post(client, "/", raw='{"k": "v"}'.encode("utf-16")), 400)


def test_lone_surrogate_escaped(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    assert_refused(client, jobkit_app, post(client, "/", raw=b'{"k": "\\ud800"}'), 400)


def test_lone_surrogate_encoded(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    assert_refused(client, jobkit_app, post(client, "/", raw=b'{"k": "\xed\xa0\x80"}'), 400)


def test_raw_nul_byte(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    assert_refused(client, jobkit_app, post(client, "/", raw=b'{"k": "a\x00b"}'), 400)


def test_escaped_nul_character(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    assert_refused(client, jobkit_app, post(client, "/", raw=b'{"k": "a\\u0000b"}'), 400)


def test_nul_character_in_a_key(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    assert_refused(client, jobkit_app, post(client, "/v1/jobs", raw=b'{"task": "echo", "\\u0000": 1}'), 400)


def test_hundred_thousand_open_brackets_is_over_the_default_limit(client: falcon.testing.TestClient,
                                                                 jobkit_app: App) -> None:
    assert_refused(client, jobkit_app, post(client, "/", raw=b"[" * 100_000), 413)


def test_hundred_thousand_open_brackets_within_the_limit(jobkit_app: App) -> None:
    roomy = falcon.testing.TestClient(create_app(Settings(max_body=200_000), jobkit_app))
    assert_refused(roomy, jobkit_app, post(roomy, "/", raw=b"[" * 100_000), 400)


def test_hundred_nested_objects(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    nested = '{"a":' * 100 + "1" + "}" * 100
    assert_refused(client, jobkit_app, post(client, "/", raw=nested.encode()), 400)


@pytest.mark.parametrize("depth, status", [(64, 202), (65, 400)])
def test_nesting_limit_is_64_levels_of_the_body(client: falcon.testing.TestClient, jobkit_app: App,
                                                 depth: int, status: int) -> None:
    body = ("[" * depth + "]" * depth).encode()
    before = enqueued(jobkit_app)
    assert post(client, "/", raw=body).status_code == status
    assert enqueued(jobkit_app) == before + (2 if status == 202 else 0)  # one job: taken + recorded


# -- size: 413, decided before reading or while streaming ------------------

def test_over_the_limit_with_an_honest_length_is_refused_unread(small: falcon.testing.TestClient,
                                                                jobkit_app: App) -> None:
    stream = EndlessBody()
    status, _, body = call(small.app, "/", stream, "1001", **{"Content-Type": "application/json"})
    assert (status, stream.read_bytes) == (413, 0)
    assert body["title"].startswith("413")
    assert_refused(small, jobkit_app, post(small, "/", raw=b"1" * 1001), 413)


def test_over_the_limit_with_a_lying_length_reads_only_that_length(small: falcon.testing.TestClient,
                                                                   jobkit_app: App) -> None:
    stream = EndlessBody()  # says 10 bytes, sends for ever: only 10 are read, and they are not JSON
    status, _, body = call(small.app, "/", stream, "10", **{"Content-Type": "application/json"})
    assert (status, stream.read_bytes) == (400, 10)
    lying = small.simulate_post("/", body=b'{"a": "' + b"x" * 5000 + b'"}',
                                headers={"Content-Type": "application/json", "Content-Length": "7"})
    assert_refused(small, jobkit_app, lying, 400)


def test_over_the_limit_chunked_without_length_stops_reading(small: falcon.testing.TestClient,
                                                             jobkit_app: App) -> None:
    stream = EndlessBody()
    status, _, body = call(small.app, "/", stream, None,
                           **{"Content-Type": "application/json", "Transfer-Encoding": "chunked"})
    assert status == 413 and body["title"].startswith("413")
    assert stream.read_bytes == SMALL.max_body + 1
    assert enqueued(jobkit_app) == 0


@pytest.mark.parametrize("length", ["-5", "abc", "1e3"])
def test_invalid_content_length(client: falcon.testing.TestClient, jobkit_app: App, length: str) -> None:
    status, _, body = call(client.app, "/", EndlessBody(), length, **{"Content-Type": "application/json"})
    assert status == 400 and body["title"]
    assert enqueued(jobkit_app) == 0


# -- content types: 415 -----------------------------------------------------

@pytest.mark.parametrize("content_type", [
    "text/plain", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded",
    "application/json; charset=latin-1", "application/jsonx"])
def test_non_json_content_type(client: falcon.testing.TestClient, jobkit_app: App, content_type: str) -> None:
    assert_refused(client, jobkit_app, post(client, "/", {"a": 1}, content_type=content_type), 415)


def test_multipart_form_data(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    body = b'--b\r\nContent-Disposition: form-data; name="f"\r\n\r\n{"a":1}\r\n--b--\r\n'
    result = post(client, "/v1/tasks/echo", raw=body, content_type="multipart/form-data; boundary=b")
    assert_refused(client, jobkit_app, result, 415)


def test_no_content_type(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    assert_refused(client, jobkit_app, post(client, "/", {"a": 1}, content_type=None), 415)


@pytest.mark.parametrize("content_type", ["application/json; charset=UTF-8", "application/problem+json"])
def test_json_content_types_with_parameters_are_accepted(client: falcon.testing.TestClient,
                                                        content_type: str) -> None:
    assert post(client, "/", {"a": 1}, content_type=content_type).status_code == 202


# -- v1 bodies: not an object 400, wrong fields 422, unknown task 404 --------

@pytest.mark.parametrize("body", [[], "x", 1, None], ids=["array", "string", "number", "null"])
def test_v1_body_that_is_not_an_object(client: falcon.testing.TestClient, jobkit_app: App, body: Any) -> None:
    assert_refused(client, jobkit_app, post(client, "/v1/jobs", body), 400)


@pytest.mark.parametrize("fields", [
    {"args": 5}, {"priority": -1}, {"delay": "soon"}, {"kwargs": [1]}, {"ttr": 0}, {"ttr": 1.5},
    {"priority": 1.0}, {"priority": True}, {"delay": -1}, {"queue": 7}, {"queue": "-bad"}, {"queue": ""},
    {"priority": 2**32}], ids=str)
def test_v1_wrong_field_types_and_values(client: falcon.testing.TestClient, jobkit_app: App,
                                         fields: dict[str, Any]) -> None:
    assert_refused(client, jobkit_app, post(client, "/v1/jobs", {"task": "echo"} | fields), 422)


@pytest.mark.parametrize("body", [{}, {"task": 5}, {"task": ""}, {"task": ["echo"]}, {"args": []}], ids=str)
def test_v1_missing_or_mistyped_task(client: falcon.testing.TestClient, jobkit_app: App, body: Any) -> None:
    assert_refused(client, jobkit_app, post(client, "/v1/jobs", body), 422)


def test_v1_unknown_field(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    assert_refused(client, jobkit_app, post(client, "/v1/jobs", {"task": "echo", "arg": [1]}), 422)


def test_unknown_task(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    assert_refused(client, jobkit_app, post(client, "/v1/jobs", {"task": "nope", "args": [1]}), 404)


def test_unknown_task_by_name(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    assert_refused(client, jobkit_app, post(client, "/v1/tasks/nope", {"a": 1}), 404)


# -- huge numbers -------------------------------------------------------------

@pytest.mark.parametrize("raw", [b"18446744073709551616", b"-9223372036854775809", b"[1e999]",
                                 b'{"n": -1e400}', b"1" * 5000], ids=["2**64", "-2**63-1", "1e999", "-1e400",
                                                                    "5000 digits"])
def test_huge_numbers_in_a_body(client: falcon.testing.TestClient, jobkit_app: App, raw: bytes) -> None:
    assert_refused(client, jobkit_app, post(client, "/", raw=raw), 400)


def test_huge_integer_in_args(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    assert_refused(client, jobkit_app, post(client, "/v1/jobs", {"task": "echo", "args": [2**70]}), 400)


@pytest.mark.parametrize("fields", [{"priority": 2**40}, {"ttr": 2**40}, {"delay": 1e300}], ids=str)
def test_huge_option_values(client: falcon.testing.TestClient, jobkit_app: App,
                            fields: dict[str, Any]) -> None:
    assert_refused(client, jobkit_app, post(client, "/v1/jobs", {"task": "echo"} | fields), 422)


def test_largest_64_bit_integers_are_data(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    values = [2**63 - 1, -(2**63)]
    job_id = post(client, "/v1/tasks/echo", values).json["id"]
    assert jobkit_app.status(job_id).record["args"] == [values]


# -- MongoDB operators and dotted keys ----------------------------------------

@pytest.mark.parametrize("key", ["$set", "$where", "task.name", "args.0"])
def test_operator_or_dotted_keys_as_v1_fields(client: falcon.testing.TestClient, jobkit_app: App,
                                              key: str) -> None:
    body = {"task": "echo", key: {"state": "succeeded"}}
    assert_refused(client, jobkit_app, post(client, "/v1/jobs", body), 422)


def test_operator_and_dotted_keys_in_data_are_stored_verbatim(client: falcon.testing.TestClient,
                                                              jobkit_app: App) -> None:
    data = {"$where": "sleep(1000)", "a.b": {"$gt": ""}, "$set": {"state": "succeeded"}}
    job_id = post(client, "/", data).json["id"]
    record = client.simulate_get(f"/v1/jobs/{job_id}").json
    assert (record["args"], record["state"]) == ([data], "queued")


def test_operator_keys_are_never_interpreted_by_mongodb(mongo_url: str) -> None:
    app = make_app(broker="memory://", backend=mongo_url)
    client = falcon.testing.TestClient(create_app(Settings(), app))
    data = {"$set": {"state": "succeeded"}, "a.b": 1, "$where": "true", "state": {"$ne": None}}
    body = {"task": "echo", "args": [data], "kwargs": {"$inc": {"attempts": 9}}}
    job_id = post(client, "/v1/jobs", body).json["id"]
    record = client.simulate_get(f"/v1/jobs/{job_id}").json
    assert (record["args"], record["kwargs"]) == ([data], {"$inc": {"attempts": 9}})
    assert (record["state"], record["attempts"]) == ("queued", 0)
    assert client.simulate_get("/v1/jobs", params={"task": "$where"}).json == {"jobs": []}
    app.close()


# -- job ids --------------------------------------------------------------------

ID_ROUTES = ["/{}", "/{}/", "/v1/jobs/{}", "/v1/jobs/{}/result"]


@pytest.fixture
def spy_client(settings: Settings) -> Iterator[tuple[falcon.testing.TestClient, App, SpyBackend]]:
    spy = SpyBackend()
    app = make_app()
    app.configure(backend=spy)
    yield falcon.testing.TestClient(create_app(settings, app)), app, spy


@pytest.mark.parametrize("route", ID_ROUTES)
def test_unknown_job_id(spy_client: tuple[falcon.testing.TestClient, App, SpyBackend], route: str) -> None:
    client, app, _ = spy_client
    assert_refused(client, app, client.simulate_get(route.format("0123456789abcdef" * 2)), 404)


@pytest.mark.parametrize("job_id", ["..%2F..%2Fetc%2Fpasswd", "..%2F", "..", "%2e%2e", "a%00b", "a b",
                                    "%24where",
                                    "é", "x" * 65, "x" * 10_000])
@pytest.mark.parametrize("route", ID_ROUTES + ["/v1/jobs/{}/retry"])
def test_impossible_job_ids_are_404_without_a_backend_read(
        spy_client: tuple[falcon.testing.TestClient, App, SpyBackend], route: str, job_id: str) -> None:
    client, app, spy = spy_client
    method = client.simulate_post if route.endswith("retry") else client.simulate_get
    assert_refused(client, app, method(route.format(job_id)), 404)
    assert spy.reads == 0


def test_impossible_job_id_on_delete(spy_client: tuple[falcon.testing.TestClient, App, SpyBackend]) -> None:
    client, app, spy = spy_client
    assert_refused(client, app, client.simulate_delete("/v1/jobs/..%2F..%2Fx"), 404)
    assert_refused(client, app, client.simulate_delete("/v1/jobs/" + "x" * 65), 404)
    assert spy.reads == 0


# -- methods ----------------------------------------------------------------------

@pytest.mark.parametrize("method,path", [
    ("PUT", "/"), ("DELETE", "/"), ("PATCH", "/v1/jobs"), ("DELETE", "/v1/tasks"), ("PUT", "/v1/tasks/echo"),
    ("POST", "/healthz"), ("POST", "/metrics"), ("POST", "/0123456789abcdef"), ("PUT", "/v1/jobs/abc"),
    ("GET", "/v1/jobs/abc/retry"), ("POST", "/v1/jobs/abc/result")])
def test_wrong_method(client: falcon.testing.TestClient, jobkit_app: App, method: str, path: str) -> None:
    result = client.simulate_request(method, path, body=b'{"a":1}',
                                     headers={"Content-Type": "application/json"})
    assert_refused(client, jobkit_app, result, 405)
    assert result.headers["allow"]


# -- bearer token -------------------------------------------------------------------

TOKEN = "s3cret-token"


@pytest.fixture
def guarded(jobkit_app: App) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(Settings(api_token=TOKEN), jobkit_app))


GOOD = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize("path", ["/", "/v1/jobs", "/v1/tasks/echo"])
def test_missing_token(guarded: falcon.testing.TestClient, jobkit_app: App, path: str) -> None:
    result = post(guarded, path, {"task": "echo"})
    assert_refused(guarded, jobkit_app, result, 401, headers=GOOD)
    assert result.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("header", [f"Bearer {TOKEN}x", "Bearer ", f"Basic {TOKEN}", TOKEN,
                                    f"Bearer {TOKEN[:-1]}", "Bearer \u00e9\u00e9"], ids=repr)
def test_wrong_token(guarded: falcon.testing.TestClient, jobkit_app: App, header: str) -> None:
    result = post(guarded, "/", {"a": 1}, Authorization=header)
    assert_refused(guarded, jobkit_app, result, 401, headers=GOOD)
    assert 'error="invalid_token"' in result.headers["www-authenticate"]


@pytest.mark.parametrize("path", ["/v1/jobs", "/v1/queues", "/readyz", "/metrics", "/dashboard",
                                  "/openapi.json", "/nowhere", "/0123456789abcdef"])
def test_every_route_but_healthz_needs_the_token(guarded: falcon.testing.TestClient, path: str) -> None:
    assert guarded.simulate_get(path).status_code == 401
    assert guarded.simulate_get(path, headers=GOOD).status_code != 401
    assert guarded.simulate_get("/healthz").status_code == 200


def test_an_unauthorized_body_is_not_even_checked(guarded: falcon.testing.TestClient,
                                                  jobkit_app: App) -> None:
    result = post(guarded, "/", raw=b"x" * 100_000, content_type="text/plain")
    assert_refused(guarded, jobkit_app, result, 401, headers=GOOD)


def test_the_right_token_is_accepted(guarded: falcon.testing.TestClient) -> None:
    assert post(guarded, "/", {"a": 1}, **GOOD).status_code == 202
    assert post(guarded, "/", {"a": 1}, Authorization=f"bearer  {TOKEN} ").status_code == 202


def test_the_token_is_compared_in_constant_time(guarded: falcon.testing.TestClient,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr("jobkit.api.middleware.hmac.compare_digest", spy)
    post(guarded, "/", {"a": 1}, Authorization="Bearer guess")
    assert compared == [(b"guess", TOKEN.encode())]


def test_a_compressed_body_is_refused(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    import gzip

    result = client.simulate_post("/", body=gzip.compress(b'{"example":"data"}'),
                                  headers={"Content-Type": "application/json", "Content-Encoding": "gzip"})
    assert result.status_code == 415 and "Content-Encoding" in result.json["description"]
    assert enqueued(jobkit_app) == 0


# -- values beanstalkd would refuse: the client's error, never a 503 -----------

BAD_QUEUE_NAMES = ["a:b", "a b", "-a", "x" * 201, "", "café", "tab\there"]


@pytest.mark.parametrize("queue", BAD_QUEUE_NAMES, ids=["colon", "space", "leading-hyphen", "201-chars",
                                                        "empty", "non-ascii", "tab"])
def test_queue_names_the_broker_refuses(client: falcon.testing.TestClient, jobkit_app: App,
                                        queue: str) -> None:
    result = post(client, "/v1/jobs", {"task": "echo", "queue": queue}, **{"Idempotency-Key": "k"})
    assert_refused(client, jobkit_app, result, 422)
    assert "queue name" in result.json["description"]


@pytest.mark.parametrize("fields", [{"delay": 4294967295.5}, {"delay": 4294967296}, {"delay": 1e300},
                                    {"delay": -0.5}], ids=str)
def test_a_delay_out_of_range_once_rounded_up(client: falcon.testing.TestClient, jobkit_app: App,
                                              fields: dict[str, Any]) -> None:
    assert_refused(client, jobkit_app, post(client, "/v1/jobs", {"task": "echo"} | fields), 422)


@pytest.fixture
def beanstalk_client(beanstalkd: Any) -> Iterator[tuple[falcon.testing.TestClient, App]]:
    """A client of an API over the session's real beanstalkd."""
    app = make_app(broker=beanstalkd.url)
    yield falcon.testing.TestClient(create_app(Settings(), app)), app
    app.close()


def test_refused_values_leave_the_broker_connection_in_step(
        beanstalk_client: tuple[falcon.testing.TestClient, App]) -> None:
    """A value beanstalkd would refuse (BAD_FORMAT) is a 4xx, and the next jobs carry their own broker ids."""
    client, app = beanstalk_client
    queue = f"hostile-{uuid.uuid4().hex[:8]}"
    for fields in ({"delay": 4294967295.5}, {"queue": f"{queue}:x"}, {"queue": f"{queue} x"}):
        refused = post(client, "/v1/jobs", {"task": "echo", "args": ["no"], "queue": queue} | fields)
        assert refused.status_code == 422 and refused.json["title"].startswith("422"), refused.text
    for n in range(3):
        accepted = post(client, "/v1/jobs", {"task": "echo", "args": [n], "queue": queue})
        assert accepted.status_code == 202, accepted.text
        record = client.simulate_get(f"/v1/jobs/{accepted.json['id']}").json
        peeked = app.broker.peek(record["broker_id"])
        assert peeked is not None and json.loads(peeked.body)["id"] == accepted.json["id"]
        assert record["broker"]["tube"] == queue
    assert app.broker.stats()[queue]["total"] == 3
