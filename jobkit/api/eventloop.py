"""waitress's event loop, asking only the connections that changed what they wait for.

perf: waitress's own loop (``wasyncore.poll2``) builds a new poll set every
turn, asking every open connection ``readable()`` and ``writable()``: with
32 keep-alive clients that is 66 Python calls and 33 registrations for each
turn, two turns or more a request, and under ``wrk`` it was the largest
part of an API process's time. :class:`Loop` keeps one epoll registration
per connection and asks again only the connections whose answer can have
changed since:

- those it has just handed events to (their state changes in this thread);
- those whose request a worker thread has just finished: a worker thread
  changes a connection's state only inside ``service()``, and then always
  pulls the trigger to wake the loop; :class:`Server` notes which connection
  pulled it (:func:`serving`);
- all of them when the listening socket accepted (a new connection), when
  the trigger was pulled by anything else, and at least every
  ``asyncore_loop_timeout`` seconds (1 by default: the server's
  housekeeping marks idle connections to close, which then ask to write).

Everything else is waitress's: the dispatchers, their handlers, the
trigger, the timeouts. Registrations are level-triggered, as ``poll`` is,
and a connection that waits for nothing is not registered, so that a hang-up
reaches it only once it asks to read again, as with ``poll2``.
"""
from __future__ import annotations

import select
import threading
import time
from collections import deque
from typing import Any

from waitress import wasyncore  # type: ignore[import-untyped]
from waitress.server import TcpWSGIServer  # type: ignore[import-untyped]

READ = select.EPOLLIN | select.EPOLLPRI
WRITE = select.EPOLLOUT
_local = threading.local()
EVERYONE = None  # a trigger pulled outside a connection's service(): ask every connection again


def serving(channel: Any) -> None:
    """Note that this thread now serves ``channel`` (None when done): its trigger pulls name it."""
    _local.channel = channel


class Server(TcpWSGIServer):  # type: ignore[misc]
    """waitress's TCP server, run by :class:`Loop` (where epoll exists, else by waitress's loop)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.changed: deque[Any] = deque()  # connections to ask again; EVERYONE for all
        super().__init__(*args, **kwargs)

    def pull_trigger(self) -> None:
        self.changed.append(getattr(_local, "channel", EVERYONE))
        super().pull_trigger()

    def run(self) -> None:
        if not hasattr(select, "epoll"):
            super().run()
            return
        try:
            Loop(self).run()
        except (SystemExit, KeyboardInterrupt):
            self.task_dispatcher.shutdown()


class Loop:
    """The event loop of one :class:`Server` and its connections (see the module docstring)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.map: dict[int, Any] = server._map
        self.timeout_s = float(server.adj.asyncore_loop_timeout)
        self.registered: dict[int, tuple[Any, int]] = {}  # fd -> (dispatcher, events)

    def run(self) -> None:
        epoll = select.epoll()
        try:
            self._run(epoll)
        finally:
            epoll.close()

    def _run(self, epoll: Any) -> None:
        server, changed = self.server, self.server.changed
        ask: list[Any] | None = None  # None: everyone
        asked_all = 0.0
        while self.map:
            now = time.monotonic()
            if ask is None or now - asked_all >= self.timeout_s:
                asked_all = now
                for fd, obj in list(self.map.items()):
                    self._ask(epoll, fd, obj)
            else:
                self._ask(epoll, server._fileno, server)  # its readable() runs the housekeeping when due
                for obj in ask:
                    self._ask(epoll, obj._fileno, obj)
            events = epoll.poll(self.timeout_s)
            ask = []
            for fd, flags in events:
                obj = self.map.get(fd)
                if obj is None:
                    self._forget(epoll, fd)
                    continue
                wasyncore.readwrite(obj, flags)
                if obj is server:
                    ask = None
                elif ask is not None:
                    ask.append(obj)
            while changed:
                channel = changed.popleft()
                if channel is EVERYONE:
                    ask = None
                elif ask is not None:
                    ask.append(channel)

    def _ask(self, epoll: Any, fd: int | None, obj: Any) -> None:
        """Register ``obj`` for what it waits for now; forget it when it is closed or waits for nothing."""
        if fd is None:  # closed since (waitress forgets the fd of a closed dispatcher)
            return
        held = self.registered.get(fd)
        if obj is not self.map.get(fd, self):  # closed since (not the object at its fd now)
            if held is not None and held[0] is obj:
                self._forget(epoll, fd)
            return
        events = 0
        if obj.readable():
            events |= READ
        if obj.writable() and not obj.accepting:
            events |= WRITE
        if held is not None and held[0] is not obj:  # the fd of a closed connection, reused
            self._forget(epoll, fd)
            held = None
        if not events:
            if held is not None:
                self._forget(epoll, fd)
        elif held is None:
            epoll.register(fd, events)
            self.registered[fd] = (obj, events)
        elif held[1] != events:
            epoll.modify(fd, events)
            self.registered[fd] = (obj, events)

    def _forget(self, epoll: Any, fd: int) -> None:
        self.registered.pop(fd, None)
        try:
            epoll.unregister(fd)
        except (OSError, ValueError):  # closed: the kernel dropped it already
            pass
