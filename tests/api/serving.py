"""Running ``jobkit`` commands as subprocesses, and speaking raw HTTP to them."""
from __future__ import annotations

import http.client
import json
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jobkit.embedded import wait_for_port

ROOT = Path(__file__).resolve().parents[2]


class Command:
    """A ``python -m jobkit …`` subprocess run from the repository root, logging to a file."""

    def __init__(self, args: list[str], env: Mapping[str, str], log: Path) -> None:
        self.log = log
        self._out = open(log, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "jobkit", *args], cwd=ROOT, env=dict(env),
                                     stdout=self._out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait_for_port(self, port: int, timeout_s: float = 20) -> None:
        try:
            wait_for_port(port, timeout_s=timeout_s, proc=self.proc)
        except TimeoutError:
            raise AssertionError(f"not listening on {port}:\n{self.output()}") from None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 10) -> int:
        """Signal the process, wait for it (SIGKILL after ``timeout_s``); return its exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._out.close()
        return self.proc.returncode


def request(port: int, method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None,
            timeout_s: float = 10) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request over a new connection: (status, lower-cased headers, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        data = None if body is None else json.dumps(body).encode()
        all_headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers=all_headers | dict(headers or {}))
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


class _SharedReader:
    """One buffered reader for every response on a connection (each HTTPResponse would make its
    own and lose what the previous one had read ahead); closing a response leaves it open."""

    def __init__(self, sock: socket.socket) -> None:
        self.fp = sock.makefile("rb")

    def makefile(self, mode: str) -> _SharedReader:
        return self

    def __getattr__(self, name: str) -> Any:
        return getattr(self.fp, name)

    def close(self) -> None:
        pass


def raw_exchange(port: int, data: bytes, timeout_s: float = 10) -> list[http.client.HTTPResponse]:
    """Send raw bytes on one connection; read the responses until the server closes it."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    reader = _SharedReader(sock)
    responses: list[http.client.HTTPResponse] = []
    try:
        sock.sendall(data)
        while True:
            resp = http.client.HTTPResponse(reader)  # type: ignore[arg-type]
            try:
                resp.begin()
            except (http.client.RemoteDisconnected, ConnectionError):
                break
            resp.body = resp.read()  # type: ignore[attr-defined]
            responses.append(resp)
            if resp.will_close:
                break
    finally:
        reader.fp.close()
        sock.close()
    return responses


def children(pid: int) -> list[int]:
    """Live child processes of ``pid`` (Linux)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found
