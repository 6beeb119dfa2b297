"""Tools for the fault tests: a TCP proxy whose connections can be cut, and small probes."""
from __future__ import annotations

import socket
import threading
from pathlib import Path

from jobkit import App
from jobkit.embedded import free_port


class TcpProxy:
    """Forwards TCP connections from a local port to ``target``; :meth:`cut` severs them.

    Each accepted connection gets two pump threads (one per direction). Cutting
    closes both ends of every current connection, which is what a network fault
    looks like to both peers: the client reads EOF, beanstalkd sees its
    connection close. The proxy keeps accepting, so clients can reconnect.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.pairs: list[tuple[socket.socket, socket.socket]] = []
        self.accepted = 0
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    @property
    def url(self) -> str:
        return f"beanstalk://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                continue
            upstream.settimeout(None)
            with self.lock:
                self.pairs.append((client, upstream))
                self.accepted += 1
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(src, dst), daemon=True).start()

    def cut(self) -> int:
        """Sever every current connection; returns how many were cut."""
        with self.lock:
            pairs, self.pairs = self.pairs, []
        for pair in pairs:
            for sock in pair:
                _shut(sock)
        return len(pairs)

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.listener.close()


def _pump(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    _shut(src)
    _shut(dst)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def lines(path: Path) -> list[str]:
    """The lines a task appended to ``path`` (none when it never ran)."""
    return path.read_text().splitlines() if path.exists() else []


def settled(app: App, queue: str) -> bool:
    """True when the broker holds nothing for ``queue``: no ready, reserved, delayed or buried job."""
    counts = app.broker.stats().get(queue, {})
    return not any(counts.get(k, 0) for k in ("ready", "reserved", "delayed", "buried"))


def record_count(app: App) -> int:
    """How many job records the backend holds, whatever their state."""
    return sum(app.backend.counts().values())
