"""The API on a real waitress server: what only a wire can send, and how the server is run."""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobkit.api.server import FRAMING_ALLOWANCE, OncePer, bind, hold, server_options
from jobkit.config import Settings
from jobkit.errors import ConfigError
from jobkit.embedded import free_port
from tests.api.serving import ROOT, Command, children, raw_exchange, request
from tests.helpers import eventually
from tests.processes import clean_env

MAX_BODY = 1000
WAITRESS_CAP = MAX_BODY + FRAMING_ALLOWANCE


class Server:
    """``jobkit api`` serving tests.api.app:app on memory://, with a 1000-byte body limit."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.command = Command(
            ["api", "-A", "tests.api.app:app", "--broker", "memory://", "--backend", "memory://",
             "--host", "127.0.0.1", "--port", str(self.port), "--max-body", str(MAX_BODY), "--threads", "4"],
            clean_env(), tmp_path / "api.log")
        self.command.wait_for_port(self.port)

    def nothing_enqueued(self) -> bool:
        queues = json.loads(request(self.port, "GET", "/v1/queues")[2])["queues"]
        jobs = json.loads(request(self.port, "GET", "/v1/jobs")[2])["jobs"]
        return sum(q["total"] for q in queues.values()) == 0 and jobs == []

    def still_serving(self) -> bool:
        return request(self.port, "GET", "/healthz")[0] == 200


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path)
    yield running
    running.command.stop()


def head(path: str = "/", close: bool = True, **headers: str) -> bytes:
    """A POST request's head; the server closes the connection after answering unless ``close`` is False."""
    lines = [f"POST {path} HTTP/1.1", "Host: test"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    lines += ["Connection: close"] if close else []
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def assert_json_error(response: object, status: int) -> None:
    assert response.status == status  # type: ignore[attr-defined]
    assert response.getheader("Content-Type", "").startswith("application/json")  # type: ignore[attr-defined]
    assert json.loads(response.body)["title"].startswith(str(status))  # type: ignore[attr-defined]


def test_seed_walkthrough_over_http(server: Server) -> None:
    status, headers, body = request(server.port, "POST", "/", {"example": "data"})
    assert status == 202 and headers["location"].startswith("/v1/jobs/")
    job_id = json.loads(body)["id"]
    status, _, body = request(server.port, "GET", f"/{job_id}/")
    assert status == 200 and json.loads(body)["state"] == "ready"


def test_honest_length_over_waitress_cap_is_refused_before_the_body(server: Server) -> None:
    data = head(Content_Type="application/json", Content_Length=str(10**9))  # no body follows
    [response] = raw_exchange(server.port, data)
    assert_json_error(response, 413)
    assert server.nothing_enqueued() and server.still_serving()


def test_honest_length_over_the_limit(server: Server) -> None:
    body = b'{"k": "' + b"x" * 1500 + b'"}'
    data = head(Content_Type="application/json", Content_Length=str(len(body))) + body
    [response] = raw_exchange(server.port, data)
    assert_json_error(response, 413)
    assert server.nothing_enqueued() and server.still_serving()


def test_lying_length_reads_only_the_stated_bytes(server: Server) -> None:
    body = b'{"example": "' + b"x" * 3000 + b'"}\r\n\r\n'
    data = head(close=False, Content_Type="application/json", Content_Length="7") + body
    first, rest = raw_exchange(server.port, data)
    assert_json_error(first, 400)  # '{"examp' is not JSON
    assert_json_error(rest, 400)  # and what follows is not a request
    assert server.nothing_enqueued() and server.still_serving()


def test_chunked_within_the_limit_is_accepted(server: Server) -> None:
    body = b'{"example":"data"}'
    data = head(Content_Type="application/json", Transfer_Encoding="chunked")
    data += b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    [response] = raw_exchange(server.port, data)
    assert response.status == 202


def test_chunked_over_the_limit_is_refused(server: Server) -> None:
    payload = b'"' + b"x" * (MAX_BODY + 500) + b'"'
    data = head(Content_Type="application/json", Transfer_Encoding="chunked")
    data += b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload)
    [response] = raw_exchange(server.port, data)
    assert_json_error(response, 413)
    assert server.nothing_enqueued() and server.still_serving()


def test_chunked_past_waitress_cap_is_cut_off_while_streaming(server: Server) -> None:
    data = head(Content_Type="application/json", Transfer_Encoding="chunked")
    data += b"%x\r\n%s\r\n" % (WAITRESS_CAP + 100, b"x" * (WAITRESS_CAP + 100))  # no last chunk
    [response] = raw_exchange(server.port, data)
    assert_json_error(response, 413)
    assert server.nothing_enqueued() and server.still_serving()


def test_endless_chunked_body_is_not_read_to_the_end(server: Server) -> None:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sent, limit = 0, 64 * 1024 * 1024
    chunk = b"%x\r\n%s\r\n" % (65536, b"x" * 65536)
    try:
        sock.sendall(head(Content_Type="application/json", Transfer_Encoding="chunked"))
        while sent < limit:
            sock.sendall(chunk)
            sent += len(chunk)
    except OSError:
        pass  # the server closed the connection: what this test wants
    finally:
        sock.close()
    assert sent < limit
    assert server.nothing_enqueued() and server.still_serving()


@pytest.mark.parametrize("path", ["/..%2F..%2Fetc%2Fpasswd", "/v1/jobs/..%2F..%2Fjobs", "/v1/jobs/%2e%2e",
                                  "/" + "a" * 65, "/v1/jobs/" + "a" * 65 + "/result", "/%00"])
def test_path_tricks_on_the_wire(server: Server, path: str) -> None:
    data = f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode()
    [response] = raw_exchange(server.port, data)
    assert_json_error(response, 404)
    assert server.still_serving()


@pytest.mark.parametrize("data", [
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"])
def test_malformed_requests_get_json_errors(server: Server, data: bytes) -> None:
    [response] = raw_exchange(server.port, data)
    assert 400 <= response.status < 500
    assert response.getheader("Content-Type", "").startswith("application/json")
    assert server.nothing_enqueued() and server.still_serving()


def test_oversized_headers_get_a_json_error(server: Server) -> None:
    data = f"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * 40_000}\r\n\r\n".encode()
    [response] = raw_exchange(server.port, data)
    assert response.status in (400, 431)
    assert response.getheader("Content-Type", "").startswith("application/json")
    assert server.still_serving()


def test_server_options_are_deliberate() -> None:
    options = server_options(Settings(max_body=5000), threads=8)
    assert options["max_request_body_size"] == 5000 + FRAMING_ALLOWANCE
    assert options["asyncore_use_poll"] is True and options["expose_tracebacks"] is False
    assert options["connection_limit"] >= 1000 and options["channel_timeout"] <= 60
    assert options["cleanup_interval"] <= options["channel_timeout"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT spreads connections on Linux")
def test_a_held_port_takes_the_processes_listeners_and_no_other_server() -> None:
    """--processes N: each child listens on its own socket; the parent's holds the port only."""
    port = free_port()
    with hold("127.0.0.1", port), bind("127.0.0.1", port, reuse_port=True) as a, \
            bind("127.0.0.1", port, reuse_port=True) as b:
        with pytest.raises(ConfigError, match="cannot listen"):
            bind("127.0.0.1", port)
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(20)]
        accepted = 0
        for listener in (a, b):
            listener.setblocking(False)
            while True:
                try:
                    listener.accept()[0].close()
                except BlockingIOError:
                    break
                accepted += 1
        for client in clients:
            client.close()
    assert accepted == 20  # none went to the holding socket


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SO_REUSEPORT spreads connections on Linux")
def test_hold_refuses_a_port_another_server_listens_on() -> None:
    with socket.create_server(("127.0.0.1", 0)) as plain, pytest.raises(ConfigError, match="cannot listen"):
        hold("127.0.0.1", plain.getsockname()[1])
    with hold("127.0.0.1", 0) as held:
        port = held.getsockname()[1]
        with bind("127.0.0.1", port, reuse_port=True), pytest.raises(ConfigError, match="cannot listen"):
            hold("127.0.0.1", port)  # another jobkit api's listeners


def _answer_on_a_new_connection(port: int) -> bytes | None:
    """The status line of GET /healthz on a new connection; None if the connection was refused."""
    try:
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    except ConnectionRefusedError:
        return None
    with sock:
        try:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return sock.recv(4096).split(b"\r\n", 1)[0]
        except OSError as exc:
            return f"{type(exc).__name__}".encode()


@pytest.mark.parametrize("start", range(3))
def test_the_processes_port_answers_every_connection_from_the_first(tmp_path: Path, start: int) -> None:
    """--processes 2: once a connection to the port is accepted, that one and every later one gets an
    answer. The parent used to listen for a moment before its children did, then close: a connection
    queued on it was reset, and the next ones were refused until a child listened (seen in CI as a
    refused POST right after the port had answered)."""
    port = free_port()
    command = Command(["api", "--broker", "beanstalk://127.0.0.1:1", "--backend",
                       f"sqlite:///{tmp_path / 'jobs.sqlite3'}", "--host", "127.0.0.1", "--port", str(port),
                       "--processes", "2", "--threads", "2"], clean_env(), tmp_path / "api.log")
    try:
        answers: list[bytes | None] = []
        while len([a for a in answers if a is not None]) < 20:
            assert command.proc.poll() is None, command.output()
            answers.append(_answer_on_a_new_connection(port))
        from_first = answers[next(i for i, a in enumerate(answers) if a is not None):]
        assert all(a is not None and a.startswith(b"HTTP/1.1 ") for a in from_first), from_first
    finally:
        command.stop()


def test_several_processes_need_a_shared_broker(tmp_path: Path) -> None:
    command = Command(["api", "--broker", "memory://", "--backend", "memory://", "--processes", "2",
                       "--port", str(free_port())], clean_env(), tmp_path / "api.log")
    assert command.proc.wait(20) == 1
    assert "memory:// lives in one process" in command.output()


SUPERVISED = textwrap.dedent("""
    import signal, sys
    import jobkit.api.server as server
    server.MIN_CHILD_LIFE_S = 0.0
    server.Supervisor(signal.pause, int(sys.argv[1])).run()
    print("supervisor exited", flush=True)
""")


def test_supervisor_replaces_a_dead_child_and_forwards_sigterm(tmp_path: Path) -> None:
    log = open(tmp_path / "out", "wb")
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISED, "2"], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT, env=clean_env())
    try:
        first = eventually(lambda: len(children(proc.pid)) == 2 and children(proc.pid), what="2 children")
        victim = first[0]
        os.kill(victim, signal.SIGKILL)
        eventually(lambda: len(children(proc.pid)) == 2 and victim not in children(proc.pid),
                   what="a replacement child")
        survivors = children(proc.pid)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert not [pid for pid in survivors if Path(f"/proc/{pid}").exists()]  # reaped before it left
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    assert "supervisor exited" in (tmp_path / "out").read_text()


def test_sigterm_stops_a_single_process_server_cleanly(server: Server) -> None:
    assert request(server.port, "GET", "/healthz")[0] == 200
    assert server.command.stop(signal.SIGTERM) == 0
    assert "Traceback" not in server.command.output()


CRASHING = textwrap.dedent("""
    import jobkit.api.server as server
    def crash():
        raise RuntimeError("cannot start")
    print("healthy" if server.Supervisor(crash, 2).run() else "gave up", flush=True)
""")


def test_supervisor_gives_up_on_children_that_die_at_start(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-c", CRASHING], cwd=ROOT, env=clean_env(), timeout=30,
                          capture_output=True, text=True)
    assert done.stdout.strip() == "gave up"
    assert "cannot start" in done.stderr


def test_once_per_lets_one_record_through_per_interval() -> None:
    once = OncePer(60.0)
    record = logging.LogRecord("waitress.queue", logging.WARNING, __file__, 1, "Task queue depth is 1",
                               (), None)
    assert [once.filter(record) for _ in range(3)] == [True, False, False]
