"""HTTP edges: HEAD like GET, request smuggling refused, waitress's own errors shaped like jobkit's."""
from __future__ import annotations

import email.utils
import json
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import falcon.testing
import pytest

from jobkit import App
from tests.api.app import post, work
from tests.api.serving import raw_exchange, request
from tests.api.test_server import MAX_BODY, Server, head

#: Headers that may differ between two answers to the same question.
VOLATILE = {"date"}
STATUS_LINE = re.compile(rb"HTTP/1\.[01] \d{3} [A-Z]")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path)
    yield running
    running.command.stop()


def exchange_until_close(port: int, data: bytes, timeout_s: float = 5) -> tuple[bytes, bool]:
    """Send ``data`` on one connection; return what came back and whether the server closed it."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(data)
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            return received, False
    return received, True


def comparable(headers: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in headers.items() if name.lower() not in VOLATILE}


# -- HEAD answers like GET, without a body --------------------------------------

def head_paths(client: falcon.testing.TestClient, app: App) -> list[str]:
    queued = post(client, "/", {"example": "data"}).json["id"]
    done = post(client, "/", {"example": "data"}).json["id"]
    work(app)
    return ["/healthz", f"/v1/jobs/{queued}", f"/{queued}/", f"/{done}/", f"/{done}",
            f"/v1/jobs/{done}/result", "/v1/jobs", "/openapi.json", "/v1/jobs/nosuchjob", "/nosuchjob/"]


def test_head_answers_like_get_without_a_body(client: falcon.testing.TestClient, jobkit_app: App) -> None:
    for path in head_paths(client, jobkit_app):
        get, head_ = client.simulate_get(path), client.simulate_head(path)
        assert head_.status_code == get.status_code, path
        assert comparable(head_.headers) == comparable(get.headers), path
        assert head_.content == b"", path
        assert head_.headers["content-length"] == str(len(get.content)), path


def test_head_is_not_allowed_where_get_is_not(client: falcon.testing.TestClient) -> None:
    result = client.simulate_head("/v1/jobs/someid/retry")
    assert result.status_code == 405
    assert "HEAD" not in result.headers["allow"]
    assert "HEAD" in client.simulate_options("/v1/jobs").headers["allow"]


def test_head_on_the_wire_sends_no_body_and_keeps_the_connection(server: Server) -> None:
    job_id = json.loads(request(server.port, "POST", "/", {"example": "data"})[2])["id"]
    data = (f"HEAD /{job_id}/ HTTP/1.1\r\nHost: x\r\n\r\n"
            f"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").encode()
    received, closed = exchange_until_close(server.port, data)
    first, _, rest = received.partition(b"\r\n\r\n")
    assert closed and first.startswith(b"HTTP/1.1 200 ")
    assert b"content-length: 0" not in first.lower()  # the GET's length, as RFC 9110 allows
    assert rest.startswith(b"HTTP/1.1 200 ")  # no body bytes between the two answers
    assert rest.endswith(b'{"status":"ok"}')


# -- Content-Length with Transfer-Encoding: refused and the connection closed ---

SMUGGLED = b"0\r\n\r\nPOST /v1/tasks/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" \
           b"Content-Length: 1\r\n\r\n1"


@pytest.mark.parametrize("version", ["HTTP/1.1", "HTTP/1.0"])
def test_content_length_with_transfer_encoding_is_400_and_closes(server: Server, version: str) -> None:
    data = (f"POST / {version}\r\nHost: x\r\nContent-Type: application/json\r\nConnection: keep-alive\r\n"
            f"Content-Length: {len(SMUGGLED)}\r\nTransfer-Encoding: chunked\r\n\r\n").encode() + SMUGGLED
    received, closed = exchange_until_close(server.port, data)
    assert closed, received
    assert len(STATUS_LINE.findall(received)) == 1, received  # one answer: nothing read as a second request
    head_, _, body = received.partition(b"\r\n\r\n")
    assert head_.startswith(f"{version} 400 ".encode())
    assert b"content-type: application/json" in head_.lower() and b"keep-alive" not in head_.lower()
    assert json.loads(body)["title"] == "400 Bad Request"
    assert server.nothing_enqueued() and server.still_serving()


def test_transfer_encoding_on_http_1_0_is_400(server: Server) -> None:
    data = (b"POST / HTTP/1.0\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
    received, closed = exchange_until_close(server.port, data)
    assert closed and len(STATUS_LINE.findall(received)) == 1 and b" 400 " in received.split(b"\r\n")[0]
    assert server.nothing_enqueued()


# -- waitress's own errors look like jobkit's -----------------------------------

def test_waitress_413_is_jobkits_413(server: Server) -> None:
    too_big_for_waitress = head(Content_Type="application/json", Content_Length=str(10**9))
    body = b'"' + b"x" * (MAX_BODY + 10) + b'"'
    too_big_for_jobkit = head(Content_Type="application/json", Content_Length=str(len(body))) + body
    [waitress_said] = raw_exchange(server.port, too_big_for_waitress)
    [jobkit_said] = raw_exchange(server.port, too_big_for_jobkit)
    assert waitress_said.status == jobkit_said.status == 413
    assert json.loads(waitress_said.body) == json.loads(jobkit_said.body)  # type: ignore[attr-defined]
    for name in ("Content-Type", "X-Content-Type-Options", "Cache-Control"):
        assert waitress_said.getheader(name) == jobkit_said.getheader(name), name


@pytest.mark.parametrize("data, title", [
    (b"GARBAGE\r\n\r\n", "400 Bad Request"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", "400 Bad Request"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", "400 Bad Request"),
    (f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * 40_000}\r\n\r\n".encode(),
     "431 Request Header Fields Too Large")])
def test_waitress_errors_have_falcons_titles(server: Server, data: bytes, title: str) -> None:
    [response] = raw_exchange(server.port, data)
    error = json.loads(response.body)  # type: ignore[attr-defined]
    assert set(error) == {"title", "description"} and error["title"] == title
    assert response.getheader("X-Content-Type-Options") == "nosniff"


def test_every_answer_has_one_current_date_header(server: Server) -> None:
    """jobkit sets Date once a second itself (perf); it must be one header, in HTTP's format, current."""
    sent = (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" b"POST / HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 18\r\n\r\n{\"example\":\"data\"}"
            b"GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    before = time.time()
    responses = raw_exchange(server.port, sent)
    after = time.time()
    assert [r.status for r in responses] == [200, 202, 404]  # type: ignore[attr-defined]
    for response in responses:
        [date] = response.msg.get_all("Date")  # type: ignore[attr-defined]
        assert re.fullmatch(r"\w{3}, \d\d \w{3} \d{4} \d\d:\d\d:\d\d GMT", date)
        assert int(before) <= email.utils.parsedate_to_datetime(date).timestamp() <= after


@pytest.mark.parametrize("proto, secure", [("https", True), (None, False)])
def test_the_dashboard_cookie_is_secure_behind_a_tls_proxy(server: Server, proto: str | None,
                                                            secure: bool) -> None:
    """X-Forwarded-Proto reaches jobkit through waitress (which would clear it by default)."""
    forwarded = f"X-Forwarded-Proto: {proto}\r\n" if proto else ""
    [response] = raw_exchange(server.port, f"GET /dashboard HTTP/1.1\r\nHost: x\r\n{forwarded}"
                                           "Connection: close\r\n\r\n".encode())
    cookies = response.msg.get_all("Set-Cookie")  # type: ignore[attr-defined]
    assert response.status == 200 and cookies  # type: ignore[attr-defined]
    assert all(("; Secure" in cookie) is secure for cookie in cookies)
