"""The consumer side of a beanstalkd cluster: one connection and waiting thread per server.

See :mod:`jobkit.brokers.cluster` for the cluster as a whole.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from jobkit.brokers.base import DEFAULT_PRIORITY, Consumer, Delivery
from jobkit.brokers.beanstalk import BeanstalkBroker
from jobkit.errors import BrokerError, BrokerUnavailable

RECONNECT_BACKOFF_S = (0.1, 5.0)  # a consumer's server reconnects after this long (first, longest)
JOIN_S = 10.0  # how long close() waits for a server thread to end


class Backoff:
    """Pauses that double from ``first_s`` to ``longest_s``; :meth:`reset` after a success."""

    def __init__(self, limits: tuple[float, float]) -> None:
        self.first_s, self.longest_s = limits
        self.next_s = self.first_s

    def take(self) -> float:
        pause, self.next_s = self.next_s, min(self.next_s * 2, self.longest_s)
        return pause

    def reset(self) -> None:
        self.next_s = self.first_s


@dataclass
class _Want:
    """A caller waiting in :meth:`ClusterConsumer.reserve`, until ``deadline`` (monotonic)."""

    deadline: float
    delivery: Delivery | None = None


class _Server:
    """One server as one consumer sees it: its connection, and the thread that waits on it."""

    def __init__(self, name: str, producer: BeanstalkBroker, queues: Sequence[str]) -> None:
        self.name = name
        self.producer = producer  # to read a job's priority before giving it back
        self.inner = producer.consumer(queues)
        self.lock = threading.Lock()  # one command at a time on the connection
        self.healthy = True  # False from a failed command until a reserve succeeds again
        self.retry_at = 0.0  # monotonic time of the next reconnect attempt when not healthy
        self.backoff = Backoff(RECONNECT_BACKOFF_S)
        self.pipelined = False  # a delete waits to go out with this connection's next command
        self.thread: threading.Thread | None = None

    def reserve(self, timeout_s: int) -> Delivery | None:
        """Reserve on this server (lock held); a failure marks it down instead of raising."""
        try:
            delivery = self.inner.reserve(timeout_s)
        except BrokerUnavailable:
            self.healthy = False
            self.retry_at = time.monotonic() + self.backoff.take()
            return None
        self.healthy, self.pipelined = True, False
        self.backoff.reset()
        if delivery is None:
            return None
        return Delivery(f"{self.name}/{delivery.broker_id}", delivery.body, delivery.session,
                        delivery.lost)

    def give_back(self, delivery: Delivery) -> None:
        """Release a job nobody waits for any more: ready again at once, at its own priority."""
        inner = _unwrapped(delivery)
        try:
            peeked = self.producer.peek(inner.broker_id)
        except BrokerError:
            peeked = None
        priority = int(peeked.stats.get("pri") or DEFAULT_PRIORITY) if peeked else DEFAULT_PRIORITY
        self.inner.release(inner, priority=priority, delay_s=0)


def _unwrapped(delivery: Delivery) -> Delivery:
    """The server's own delivery inside a cluster delivery."""
    return Delivery(delivery.broker_id.rpartition("/")[2], delivery.body, delivery.session, delivery.lost)


class ClusterConsumer(Consumer):
    """Reserves from every server of a cluster; settles each job over the connection that reserved it.

    :meth:`reserve` first asks each idle, healthy server for a ready job
    without waiting (servers holding a pipelined delete first, so that it goes
    out); with nothing ready it posts a *want* and every server's thread
    blocks in ``reserve-with-timeout`` for the time left. The first job to
    arrive fills the want; a later one is given back (see the module).

    A caller that reserves with a timeout while it holds a job may see that
    job's settling wait for its server's blocked reserve (at most the
    timeout): the worker reserves with a timeout only when it holds nothing.
    """

    def __init__(self, servers: Sequence[tuple[str, BeanstalkBroker]], queues: Sequence[str]) -> None:
        self._servers = [_Server(name, producer, queues) for name, producer in servers]
        self._by_name = {server.name: server for server in self._servers}
        self._cond = threading.Condition()  # guards _want and _closed; wakes the server threads
        self._want: _Want | None = None
        self._closed = False
        self._turn = 0

    # -- reserving ------------------------------------------------------------

    def reserve(self, timeout_s: float) -> Delivery | None:
        self._check_open()
        self._start_threads()
        delivery = self._sweep()
        if delivery is None and not any(server.healthy for server in self._servers):
            raise BrokerUnavailable("no beanstalkd server of the cluster answers: "
                                    + ", ".join(server.name for server in self._servers))
        if delivery is not None or timeout_s <= 0:
            return delivery
        return self._wait(timeout_s)

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerUnavailable("consumer was interrupted")

    def _sweep(self) -> Delivery | None:
        """A job ready now on a healthy server whose connection is idle, or None."""
        self._turn = (self._turn + 1) % len(self._servers)
        rotated = self._servers[self._turn:] + self._servers[:self._turn]
        for server in sorted(rotated, key=lambda s: not s.pipelined):
            if not server.healthy or not server.lock.acquire(blocking=False):
                continue  # down (its thread reconnects), or its thread is waiting in a reserve
            try:
                delivery = server.reserve(0)
            finally:
                server.lock.release()
            if delivery is not None:
                return delivery
            if not server.healthy:
                self._wake()  # its thread starts reconnecting
        return None

    def _wait(self, timeout_s: float) -> Delivery | None:
        """Post a want, let the server threads wait on it, take the first job that fills it."""
        want = _Want(time.monotonic() + timeout_s)
        with self._cond:
            self._want = want
            self._cond.notify_all()
            self._cond.wait_for(lambda: want.delivery is not None or self._closed, timeout_s)
            self._want = None
        if want.delivery is None:
            self._check_open()
        return want.delivery

    def _start_threads(self) -> None:
        for server in self._servers:
            if server.thread is None:
                server.thread = threading.Thread(target=self._serve, args=(server,), daemon=True,
                                                 name=f"jobkit-cluster-{server.name}")
                server.thread.start()

    def _serve(self, server: _Server) -> None:
        """A server's thread: wait on its connection while a want is open; reconnect when down."""
        while (timeout_s := self._next_turn(server)) is not None:
            with server.lock:
                if self._closed:
                    return
                delivery = server.reserve(timeout_s)
                if delivery is not None and not self._fill(delivery):
                    server.give_back(delivery)

    def _next_turn(self, server: _Server) -> int | None:
        """Block until the server should reserve; return how long to wait (s), None when closed.

        A healthy server waits while a want is open; a server that is down
        tries to reconnect (a reserve without waiting) when its pause is over.
        """
        with self._cond:
            while not self._closed:
                now, want = time.monotonic(), self._want
                wanted = want is not None and want.delivery is None and want.deadline > now
                if not server.healthy and now < server.retry_at:
                    self._cond.wait(server.retry_at - now)
                elif wanted and want is not None:
                    return max(1, math.ceil(want.deadline - now))
                elif not server.healthy:
                    return 0
                else:
                    self._cond.wait()
        return None

    def _fill(self, delivery: Delivery) -> bool:
        """Hand ``delivery`` to the waiting caller; False when nobody waits for one now."""
        with self._cond:
            want = self._want
            if want is None or want.delivery is not None or self._closed:
                return False
            want.delivery = delivery
            self._cond.notify_all()
            return True

    # -- settling -------------------------------------------------------------

    def _server_of(self, delivery: Delivery) -> _Server | None:
        return self._by_name.get(delivery.broker_id.rpartition("/")[0])

    def _on_server(self, delivery: Delivery, command: Callable[[Consumer, Delivery], bool]) -> bool:
        """Run ``command`` over the connection that reserved ``delivery``; False when none did."""
        server = self._server_of(delivery)
        if server is None:
            return False
        with server.lock:
            return command(server.inner, _unwrapped(delivery))

    def delete(self, delivery: Delivery) -> bool:
        return self._on_server(delivery, lambda c, d: c.delete(d))

    def delete_nowait(self, delivery: Delivery) -> None:
        """Queue the delete on its server's connection; the next reserve there sends it."""
        server = self._server_of(delivery)
        if server is not None:
            with server.lock:
                server.inner.delete_nowait(_unwrapped(delivery))
                server.pipelined = True

    def release(self, delivery: Delivery, *, priority: int, delay_s: int) -> bool:
        return self._on_server(delivery, lambda c, d: c.release(d, priority=priority, delay_s=delay_s))

    def bury(self, delivery: Delivery, *, priority: int) -> bool:
        return self._on_server(delivery, lambda c, d: c.bury(d, priority=priority))

    def touch(self, delivery: Delivery) -> bool:
        return self._on_server(delivery, lambda c, d: c.touch(d))

    def lost_deliveries(self, delivery: Delivery) -> int:
        server = self._server_of(delivery)
        if server is None:
            return delivery.lost or 0
        with server.lock:
            return server.inner.lost_deliveries(_unwrapped(delivery))

    def releases(self, delivery: Delivery) -> int | None:
        server = self._server_of(delivery)
        if server is None:
            return None
        with server.lock:
            return server.inner.releases(_unwrapped(delivery))

    # -- ending ---------------------------------------------------------------

    def _wake(self, closing: bool = False) -> None:
        with self._cond:
            self._closed = self._closed or closing
            self._cond.notify_all()

    def interrupt(self) -> None:
        self._wake(closing=True)
        for server in self._servers:
            server.inner.interrupt()

    def close(self) -> None:
        """Close every connection; an idle one first sends its pipelined deletes and reads the answers."""
        self._wake(closing=True)
        for server in self._servers:
            if server.lock.acquire(blocking=False):
                try:
                    server.inner.close()
                finally:
                    server.lock.release()
            else:
                server.inner.interrupt()  # wakes its thread's reserve
        for server in self._servers:
            if server.thread is not None and server.thread is not threading.current_thread():
                server.thread.join(JOIN_S)
            server.inner.close()
