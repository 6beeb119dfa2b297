"""Starvation: idle connections and long polls must never make the API unreachable."""
from __future__ import annotations

import json
import queue
import socket
import threading
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from jobkit.api.resources import LongPolls
from tests.api.serving import request
from tests.api.test_server import Server

THREADS = 4  # Server's --threads
#: Generous: a server that answers at all answers in milliseconds; one that is starved never does.
PROMPT_S = 5.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path)
    yield running
    running.command.stop()


def answers(server: Server) -> None:
    """``/healthz`` and a POST both answer, each within :data:`PROMPT_S`."""
    assert request(server.port, "GET", "/healthz", timeout_s=PROMPT_S)[0] == 200
    assert request(server.port, "POST", "/", {"example": "data"}, timeout_s=PROMPT_S)[0] == 202


def test_hundreds_of_idle_and_slow_connections_leave_the_api_reachable(server: Server) -> None:
    with ExitStack() as stack:
        for n in range(200):
            sock = stack.enter_context(socket.create_connection(("127.0.0.1", server.port), timeout=10))
            if n % 2:  # a slow client: a request head that never ends
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        answers(server)


def test_long_polls_never_take_every_thread(server: Server) -> None:
    job_id = json.loads(request(server.port, "POST", "/", {"example": "data"})[2])["id"]  # no worker runs
    answered: queue.Queue[tuple[int, dict[str, str]]] = queue.Queue()

    def long_poll() -> None:
        try:
            status, headers, _ = request(server.port, "GET", f"/v1/jobs/{job_id}/result?wait=30",
                                         timeout_s=40)
            answered.put((status, headers))
        except OSError:
            pass  # cut off when the server stops at the end of the test

    pollers = [threading.Thread(target=long_poll, daemon=True) for _ in range(THREADS)]
    for poller in pollers:
        poller.start()
    # The polls beyond the cap answer at once, as "not finished yet": by then the others hold their threads.
    for _ in range(THREADS - THREADS // 2):
        status, headers = answered.get(timeout=PROMPT_S)
        assert status == 202 and headers["retry-after"] == "1"
    assert answered.empty()  # the capped ones are still waiting
    answers(server)
    server.command.stop()
    for poller in pollers:
        poller.join(10)


def test_long_poll_slots_are_shared_and_given_back() -> None:
    polls = LongPolls(2)
    with polls.slot() as first, polls.slot() as second, polls.slot() as third:
        assert (first, second, third) == (True, True, False)
    with polls.slot() as again:
        assert again
    with LongPolls(0).slot() as none:
        assert not none
