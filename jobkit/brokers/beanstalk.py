"""beanstalkd broker, over greenstalk.

URL: ``beanstalk://host:port`` (port 11300 by default). Options (query
string): ``connect_timeout=<seconds>`` (default 2).

Capabilities: all of them (peek, delete, kick, touch, delay, priority,
stats). Broker ids are beanstalkd's job ids as decimal text (``"42"``); an id
that is not one finds nothing (peek None, delete and kick False). The count
of lost deliveries is read on demand with ``stats-job`` on the consumer's own
connection (:meth:`BeanstalkConsumer.lost_deliveries`).

Features: one tube per queue; priority, delay and TTR are beanstalkd's own
(seconds; priority 0 is most urgent); a consumer is one connection, and
delete/release/bury/touch go over the connection that reserved the job, as
beanstalkd requires; the worker's delete after a stored outcome is
pipelined (sent in one write with its next reserve, the answers read together).
Producers share a small pool of connections; a pooled
connection is checked before use (one ``poll``: the server closed it, or it
holds an answer nobody asked for) and replaced when it fails the check, so a
restarted beanstalkd costs no failed request. A connection whose protocol
state is unknown (an answer not read in full, an error answer that leaves
the rest of the command unread, an exception mid-command) is closed, never
reused: a connection one answer behind would give every later command the
previous command's answer.

Names (tubes) follow beanstalkd's rule, :func:`queue_name_problem`; numbers
sent (priority, delay, TTR) are at most :data:`MAX_U32`. ``DRAINING`` and
connection errors raise :class:`~jobkit.errors.BrokerUnavailable`; a put
whose answer never came raises :class:`~jobkit.errors.BrokerUnconfirmed`;
``JOB_TOO_BIG`` raises :class:`~jobkit.errors.PayloadTooLarge`.
"""
from __future__ import annotations

import os
import re
import select
import socket
import struct
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import greenstalk

from jobkit.grouping import GroupWriter
from jobkit.brokers.base import ALL_CAPABILITIES, STATS_JOB_KEYS, Broker, Consumer, Delivery, Outgoing, Peeked
from jobkit.errors import (
    BrokerConnectionLost,
    BrokerError,
    BrokerUnavailable,
    BrokerUnconfirmed,
    ConfigError,
    JobkitError,
    PayloadTooLarge,
)

T = TypeVar("T")
# ValueError: I/O on a socket another thread closed, or a garbled reply
_LOST = (ConnectionError, OSError, EOFError, ValueError, AssertionError,
         greenstalk.UnknownResponseError)
#: What leaves a connection's protocol state unknown when a command raises it
#: (error answers too: after BAD_FORMAT, beanstalkd reads a put's body as a command).
_UNKNOWN_STATE = (*_LOST, greenstalk.Error)
#: Whole answers after which the connection is in step: beanstalkd has read the
#: whole command (a refused put's body included) and answered once.
_CLEAN_REFUSALS = (greenstalk.NotFoundError, greenstalk.DrainingError, greenstalk.JobTooBigError)
_POOL_SIZE = 16
#: Puts sent in one write by :meth:`BeanstalkBroker.put_many`; their answers (about 15
#: bytes each) fit in the socket buffers while the write goes out.
PIPELINE_PUTS = 500
OP_TIMEOUT_S = 5.0  # a single command; a reserve waits its own timeout on top
#: The largest priority, delay or TTR beanstalkd takes (32-bit unsigned; larger is BAD_FORMAT).
MAX_U32 = 2**32 - 1
#: beanstalkd's names: 1 to 200 ASCII letters, digits and ``-+/;.$_()``, not starting with ``-``.
_NAME_RE = re.compile(r"[A-Za-z0-9+/;.$_()][A-Za-z0-9+/;.$_()-]{0,199}\Z")


def queue_name_problem(name: object) -> str | None:
    """Why beanstalkd would refuse ``name`` as a tube name, or None when it takes it.

    The rule is the protocol's "name convention"; jobkit checks it before
    anything is recorded, so a bad name is the client's error, not a broker outage.
    """
    if not isinstance(name, str):
        return f"a queue name is a string, not {type(name).__name__}"
    if _NAME_RE.match(name):
        return None
    return ("a queue name is 1 to 200 characters: ASCII letters, digits and - + / ; . $ _ ( ),"
            " not starting with -")


def job_number(broker_id: str) -> int | None:
    """beanstalkd's job id for a broker id, or None when ``broker_id`` is not one of its ids."""
    if isinstance(broker_id, int) and not isinstance(broker_id, bool):  # a cluster's inner id
        return broker_id if 0 < broker_id < 2**64 else None
    if isinstance(broker_id, str) and 0 < len(broker_id) <= 20 and broker_id.isascii() \
            and broker_id.isdigit():
        number = int(broker_id)
        return number if 0 < number < 2**64 else None
    return None


def parse_url(url: str) -> tuple[tuple[str, int], float]:
    """Return ``((host, port), connect_timeout_s)`` for a ``beanstalk://`` URL.

    Raises:
        ConfigError: the URL has no usable host or port.
    """
    parts = urlsplit(url)
    try:
        port = parts.port or 11300
    except ValueError:
        raise ConfigError(f"bad beanstalk URL {url!r}: invalid port") from None
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    try:
        timeout = float(query.get("connect_timeout", 2.0))
    except ValueError:
        raise ConfigError(f"bad beanstalk URL {url!r}: connect_timeout is not a number") from None
    return (parts.hostname or "127.0.0.1", port), timeout


class _OutOfStep(Exception):
    """A pipeline's answers fell out of step with its commands; ``outcomes`` holds what is known."""

    def __init__(self, outcomes: list[str | JobkitError]) -> None:
        super().__init__("out of step")
        self.outcomes = outcomes


class _Client(greenstalk.Client[bytes]):
    """greenstalk's client plus pipelined deletes.

    :meth:`delete_nowait` queues ``delete``; it is sent in one write with the
    next command (the worker's next reserve), and its answer is read before
    that command's: one system call and one round trip less per job.
    (Overrides greenstalk's private ``_send_cmd``; greenstalk is pinned below 3.)
    """

    unread = 0  # answers to pipelined deletes still to read
    pending = b""  # pipelined deletes not sent yet
    answer_due = False  # the last command went out whole; its answer is not read yet

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock, encoding=None)
        self._send_lock = threading.Lock()  # interrupt() may flush from another thread

    def delete_nowait(self, job_id: int) -> None:
        self.pending += b"delete %d\r\n" % job_id
        self.unread += 1

    def flush(self) -> None:
        """Send the queued deletes now."""
        self._send(b"")

    def drain(self) -> None:
        """Send the queued deletes, then read their answers."""
        self.flush()
        self._read_answers()

    def _read_answers(self) -> None:
        """Read the answers to pipelined deletes: DELETED, or NOT_FOUND (no longer ours)."""
        while self.unread:
            self.unread -= 1
            answer = self._reader.readline()
            if not answer.startswith((b"DELETED", b"NOT_FOUND")):
                raise ConnectionError(f"unexpected answer to a delete: {answer[:40]!r}")

    def _send(self, data: bytes) -> None:
        with self._send_lock:
            data, self.pending = self.pending + data, b""
            if data:
                self._sock.sendall(data)

    def pipeline(self, data: bytes, expected: Sequence[bytes]) -> list[list[bytes] | greenstalk.Error]:
        """Send several commands in one write, then read one answer for each.

        Returns:
            Per command, the answer's values, or the error it answered.
        """
        self.answer_due = False
        self._send(data)
        self.answer_due = True
        self._read_answers()
        answers: list[list[bytes] | greenstalk.Error] = []
        for want in expected:
            try:
                answers.append(greenstalk._parse_response(self._reader.readline(), want))
            except greenstalk.Error as exc:
                answers.append(exc)
        self.answer_due = False
        return answers

    def _send_cmd(self, cmd: bytes, expected: bytes) -> list[bytes]:
        self.answer_due = False
        self._send(cmd + b"\r\n")  # the queued deletes go with it
        self.answer_due = True
        self._read_answers()
        answer = greenstalk._parse_response(self._reader.readline(), expected)
        self.answer_due = False
        return answer


class _Connection:
    """A greenstalk client, its socket and the tube it is using.

    Its :data:`OP_TIMEOUT_S` is left to the kernel (see :func:`_kernel_timeouts`);
    a consumer's reserve lengthens the receive timeout by its own wait.
    """

    def __init__(self, address: tuple[str, int], connect_timeout_s: float) -> None:
        try:
            self.sock = socket.create_connection(address, timeout=connect_timeout_s)
        except OSError as exc:
            raise BrokerUnavailable(f"beanstalkd at {address[0]}:{address[1]}: {exc}") from None
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout_s = OP_TIMEOUT_S
        self.kernel_timeouts = _kernel_timeouts(self.sock, OP_TIMEOUT_S)
        if not self.kernel_timeouts:
            self.sock.settimeout(OP_TIMEOUT_S)
        self.client = _Client(self.sock)
        self.tube = "default"

    def set_timeout(self, timeout_s: float) -> None:
        """Bound the next receives by ``timeout_s`` (perf: only when it changes: a system call)."""
        if timeout_s != self.timeout_s:
            if self.kernel_timeouts:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, _timeval(timeout_s))
            else:
                self.sock.settimeout(timeout_s)
            self.timeout_s = timeout_s

    def close(self) -> None:
        try:
            self.client.close()
        except OSError:
            pass

    def in_step(self) -> bool:
        """True when nothing waits to be read on this idle connection.

        Anything readable means it is unusable: the server closed it (EOF,
        reset) or sent an answer nobody waits for. One ``poll`` system call.
        """
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        return not poller.poll(0)

    def use(self, tube: str) -> None:
        if tube != self.tube:
            self.client.use(tube)
            self.tube = tube


def _kernel_timeouts(sock: socket.socket, timeout_s: float) -> bool:
    """Make ``sock`` blocking, each send and receive bounded by the kernel at ``timeout_s``.

    perf: with a Python socket timeout every send and receive is a ``poll()``
    then the call: two system calls and two hand-overs of the GIL where one
    does. A receive that times out reads nothing (greenstalk: ConnectionError),
    a send raises an OSError: both lost-connection errors, as a Python timeout is.

    Returns:
        False, leaving the socket as it was, where the options are unavailable.
    """
    timeval = _timeval(timeout_s)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, timeval)
    except (OSError, AttributeError):
        return False
    sock.settimeout(None)
    return True


def _timeval(seconds: float) -> bytes:
    """A ``struct timeval`` for SO_RCVTIMEO/SO_SNDTIMEO."""
    whole = int(seconds)
    return struct.pack("ll", whole, int((seconds - whole) * 1_000_000))


class BeanstalkBroker(Broker):
    """beanstalkd as jobkit's broker."""

    capabilities = ALL_CAPABILITIES
    pipelines_puts = True

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.address, self.connect_timeout_s = parse_url(url)
        self._pool: list[_Connection] = []  # idle producer connections; append/pop are atomic
        self._pid = os.getpid()
        self._puts: GroupWriter[Outgoing, str] = GroupWriter(self._put_group)

    def _give(self, conn: _Connection) -> None:
        """Pool a connection whose last command was answered in full (and only then)."""
        if len(self._pool) < _POOL_SIZE:
            self._pool.append(conn)
        else:
            conn.close()

    def _take(self) -> _Connection:
        """A pooled connection that is still in step, else a new one.

        Raises:
            BrokerUnavailable: a new connection could not be opened.
        """
        if self._pid != os.getpid():  # forked: leave the parent's sockets alone
            self._pool, self._pid = [], os.getpid()
        while True:
            try:
                conn = self._pool.pop()
            except IndexError:
                return _Connection(self.address, self.connect_timeout_s)
            if conn.in_step():
                return conn
            conn.close()  # closed by the server (a restart), or holding a stray answer

    def _call(self, action: Callable[[_Connection], T]) -> T:
        """Run ``action`` on a pooled connection, then pool it again only if it is in step.

        Only a clean refusal (:data:`_CLEAN_REFUSALS`) leaves the connection in
        a known state; after any other error, garbled or missing answer, or an
        exception thrown mid-command, the connection is closed.
        """
        conn = self._take()
        try:
            result = action(conn)
        except _CLEAN_REFUSALS as exc:
            self._give(conn)
            raise self._error(exc) from None
        except BaseException as exc:
            conn.close()
            if isinstance(exc, _UNKNOWN_STATE):
                raise self._error(exc) from None
            raise
        self._give(conn)
        return result

    def _error(self, exc: BaseException) -> JobkitError:
        """The jobkit error for a greenstalk error or a lost connection."""
        if isinstance(exc, greenstalk.DrainingError):
            return BrokerUnavailable(f"beanstalkd at {self._where} is draining")
        if isinstance(exc, greenstalk.JobTooBigError):
            return PayloadTooLarge("job is larger than beanstalkd's max-job-size")
        if isinstance(exc, greenstalk.BeanstalkdError):
            return BrokerError(f"beanstalkd: {type(exc).__name__}")
        return BrokerUnavailable(f"beanstalkd at {self._where}: {exc!r}")

    @property
    def _where(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"

    def check_queue(self, name: str) -> str:
        """Return ``name`` when it is a tube name beanstalkd takes (:func:`queue_name_problem`).

        Raises:
            ConfigError: it is not.
        """
        problem = queue_name_problem(name)
        if problem is not None:
            raise ConfigError(f"invalid queue name {name!r}: {problem}")
        return name

    def put(self, body: bytes, *, queue: str, priority: int, delay_s: int, ttr_s: int) -> str:
        """Store a message (see :meth:`Broker.put`).

        perf: the puts of concurrent callers go out together, pipelined on one
        connection (a :class:`~jobkit.grouping.GroupWriter` group, see
        :meth:`_put_group`): one write and one read for all of them, where each
        alone costs a round trip and two system calls (measured through the
        API: about a quarter more requests a second). Each call returns once
        its own put is answered.

        Raises:
            BrokerUnconfirmed: the put went out but its answer did not come
                back (timeout, connection lost): beanstalkd may hold the job.
        """
        return self._puts.submit(Outgoing(body, queue, priority, delay_s, ttr_s))

    def put_each(self, messages: Sequence[Outgoing]) -> list[str | JobkitError]:
        """Pipeline the puts on one connection (see :meth:`_put_group`): one write, one read.

        Raises:
            BrokerUnavailable: no connection could be made; nothing was sent.
            BrokerUnconfirmed: the puts went out and no answer came back.
        """
        return self._put_group(list(messages))

    def _put_group(self, messages: list[Outgoing]) -> list[str | JobkitError]:
        """Put the messages of concurrent :meth:`put` calls in one write on one connection.

        A put refused cleanly (:data:`_CLEAN_REFUSALS`) fails alone. After any
        other refusal (``BAD_FORMAT``: beanstalkd then reads the body as a
        command) the answers that follow are not those of the puts that follow:
        those fail as unconfirmed, and the connection is closed.
        """
        try:
            return self._call(lambda conn: self._pipeline_puts(conn, messages))
        except _OutOfStep as stop:
            return stop.outcomes

    def _pipeline_puts(self, conn: _Connection, messages: list[Outgoing]) -> list[str | JobkitError]:
        data, expected, owner = [], [], []  # owner: the message a command belongs to
        for i, m in enumerate(messages):
            if m.queue != conn.tube:
                data.append(b"use %b\r\n" % m.queue.encode())
                expected.append(b"USING")
                owner.append(i)
                conn.tube = m.queue
            data.append(b"put %d %d %d %d\r\n%b\r\n" % (m.priority, m.delay_s, m.ttr_s, len(m.body), m.body))
            expected.append(b"INSERTED")
            owner.append(i)
        try:
            answers = conn.client.pipeline(b"".join(data), expected)
        except _LOST as exc:
            if conn.client.answer_due:
                raise BrokerUnconfirmed(f"beanstalkd at {self._where}: no answer to puts: {exc!r}") from None
            raise
        outcomes: list[str | JobkitError] = [""] * len(messages)
        for i, want, answer in zip(owner, expected, answers, strict=True):
            if isinstance(answer, _CLEAN_REFUSALS):
                outcomes[i] = self._error(answer)
            elif isinstance(answer, greenstalk.Error):
                outcomes[i] = self._error(answer)
                conn.tube = ""  # unknown
                raise _OutOfStep(outcomes[:i + 1] + [BrokerUnconfirmed(
                    f"beanstalkd at {self._where}: a put before this one was refused; the answers"
                    " that followed cannot be trusted") for _ in messages[i + 1:]])
            elif want == b"INSERTED" and not isinstance(outcomes[i], BaseException):
                outcomes[i] = answer[0].decode()
        return outcomes

    def put_many(self, messages: Sequence[Outgoing]) -> list[str]:
        """Store several messages (see :meth:`Broker.put_many`), pipelined on one connection.

        perf: up to :data:`PIPELINE_PUTS` puts go out in one write and their
        answers are read after it, one round trip where a loop of :meth:`put`
        takes one per message.

        Raises:
            BrokerUnconfirmed: the puts went out but their answers did not all come back.
        """
        def put_all(conn: _Connection) -> list[str]:
            ids: list[str] = []
            for start in range(0, len(messages), PIPELINE_PUTS):
                ids += self._put_chunk(conn, messages[start:start + PIPELINE_PUTS], ids)
            return ids
        return self._call(put_all)

    def _put_chunk(self, conn: _Connection, chunk: Sequence[Outgoing], earlier: list[str]) -> list[str]:
        """Pipeline ``chunk``; when one put is refused, delete every message put so far and raise."""
        data, expected = [], []
        for m in chunk:
            if m.queue != conn.tube:
                data.append(b"use %b\r\n" % m.queue.encode())
                expected.append(b"USING")
                conn.tube = m.queue
            data.append(b"put %d %d %d %d\r\n%b\r\n" % (m.priority, m.delay_s, m.ttr_s, len(m.body), m.body))
            expected.append(b"INSERTED")
        try:
            answers = conn.client.pipeline(b"".join(data), expected)
        except _LOST as exc:
            if conn.client.answer_due:
                raise BrokerUnconfirmed(f"beanstalkd at {self._where}: no answer to puts: {exc!r}") from None
            raise
        ids = [a[0].decode() for want, a in zip(expected, answers, strict=True)
               if want == b"INSERTED" and not isinstance(a, greenstalk.Error)]
        refused = next((a for a in answers if isinstance(a, greenstalk.Error)), None)
        if refused is not None:
            for broker_id in earlier + ids:
                try:
                    conn.client.delete(int(broker_id))
                except greenstalk.NotFoundError:
                    pass
            raise refused
        return ids

    def consumer(self, queues: Sequence[str]) -> Consumer:
        return BeanstalkConsumer(self.address, self.connect_timeout_s, queues)

    def peek(self, broker_id: str) -> Peeked | None:
        number = job_number(broker_id)
        if number is None:
            return None

        def peek(conn: _Connection) -> Peeked | None:
            try:
                job = conn.client.peek(number)
                stats = conn.client.stats_job(number)
            except greenstalk.NotFoundError:
                return None
            return Peeked(broker_id, job.body, _job_stats(stats))
        return self._call(peek)

    def peek_buried(self, queue: str) -> Peeked | None:
        def peek(conn: _Connection) -> Peeked | None:
            conn.use(queue)
            try:
                job = conn.client.peek_buried()
                stats = conn.client.stats_job(job.id)
            except greenstalk.NotFoundError:
                return None
            return Peeked(str(job.id), job.body, _job_stats(stats))
        return self._call(peek)

    def delete(self, broker_id: str) -> bool:
        number = job_number(broker_id)
        if number is None:
            return False

        def delete(conn: _Connection) -> bool:
            try:
                conn.client.delete(number)
            except greenstalk.NotFoundError:
                return False
            return True
        return self._call(delete)

    def kick(self, broker_id: str) -> bool:
        number = job_number(broker_id)
        if number is None:
            return False

        def kick(conn: _Connection) -> bool:
            try:
                conn.client.kick_job(number)
            except greenstalk.NotFoundError:
                return False
            return True
        return self._call(kick)

    def stats(self) -> dict[str, dict[str, int]]:
        def stats(conn: _Connection) -> dict[str, dict[str, int]]:
            counts = {}
            for tube in conn.client.tubes():
                try:
                    counts[tube] = _tube_stats(conn.client.stats_tube(tube))
                except greenstalk.NotFoundError:
                    continue  # emptied and unwatched since it was listed: beanstalkd dropped it
            return counts
        return self._call(stats)

    def close(self) -> None:
        pool, self._pool = self._pool, []
        for conn in pool:
            conn.close()


class BeanstalkConsumer(Consumer):
    """One beanstalkd connection watching the given tubes."""

    def __init__(self, address: tuple[str, int], connect_timeout_s: float,
                 queues: Sequence[str]) -> None:
        self.address = address
        self.connect_timeout_s = connect_timeout_s
        self.queues = list(queues)
        self._conn: _Connection | None = None
        self._session = 0
        self._closed = False

    def _connected(self) -> _Connection:
        if self._closed:
            raise BrokerUnavailable("consumer was interrupted")
        if self._conn is None:
            conn = _Connection(self.address, self.connect_timeout_s)
            try:
                for tube in self.queues:
                    conn.client.watch(tube)
                if "default" not in self.queues:
                    conn.client.ignore("default")
            except BaseException as exc:
                conn.close()
                if isinstance(exc, _UNKNOWN_STATE):
                    raise BrokerUnavailable(f"beanstalkd: {exc!r}") from None
                raise
            self._conn, self._session = conn, self._session + 1
        return self._conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def reserve(self, timeout_s: float) -> Delivery | None:
        conn = self._connected()
        wait = max(0, int(timeout_s))
        try:
            conn.set_timeout(wait + OP_TIMEOUT_S)
            job = conn.client.reserve(timeout=wait)
        except (greenstalk.TimedOutError, greenstalk.DeadlineSoonError):
            return None  # a whole answer: in step
        except BaseException as exc:
            self._drop()  # out of step or gone: never reuse it
            if isinstance(exc, _UNKNOWN_STATE):
                raise BrokerConnectionLost(f"beanstalkd connection lost: {exc!r}") from None
            raise
        finally:
            if conn.timeout_s != OP_TIMEOUT_S and self._conn is conn:
                conn.set_timeout(OP_TIMEOUT_S)
        return Delivery(str(job.id), job.body, self._session)

    def _settle(self, delivery: Delivery, command: Callable[[_Client, int], Any]) -> bool:
        """Run a command on a held job (delete, release, …); False when it is no longer held here.

        Any answer but the expected one or ``NOT_FOUND`` drops the connection
        (its jobs go back to ready): its protocol state is unknown.
        """
        number = job_number(delivery.broker_id)
        if delivery.session != self._session or self._conn is None or number is None:
            return False
        try:
            command(self._conn.client, number)
        except greenstalk.NotFoundError:
            return False
        except BaseException as exc:
            self._drop()
            if isinstance(exc, _UNKNOWN_STATE):
                return False
            raise
        return True

    def delete(self, delivery: Delivery) -> bool:
        return self._settle(delivery, lambda c, number: c.delete(number))

    def delete_nowait(self, delivery: Delivery) -> None:
        """Queue ``delete``: it goes out with the next command (one write and round trip less)."""
        conn, number = self._conn, job_number(delivery.broker_id)
        if delivery.session != self._session or conn is None or number is None:
            return
        try:
            conn.client.delete_nowait(number)
        except _LOST:
            self._drop()

    def release(self, delivery: Delivery, *, priority: int, delay_s: int) -> bool:
        delay_s = min(max(0, delay_s), MAX_U32)  # a longer wait than beanstalkd's is its longest
        return self._settle(delivery, lambda c, number: c.release(
            greenstalk.Job(number, b""), priority=priority, delay=delay_s))

    def bury(self, delivery: Delivery, *, priority: int) -> bool:
        return self._settle(delivery, lambda c, number: c.bury(greenstalk.Job(number, b""),
                                                                priority=priority))

    def touch(self, delivery: Delivery) -> bool:
        return self._settle(delivery, lambda c, number: c.touch(greenstalk.Job(number, b"")))

    def lost_deliveries(self, delivery: Delivery) -> int:
        """Earlier reserves of the job that ended neither released nor buried, from ``stats-job``.

        Asked on this consumer's connection, which holds the job (a producer's
        connection could see it anywhere); 0 when the job is no longer held here.
        """
        stats = self._held_stats(delivery)
        if stats is None:
            return 0
        return max(0, int(stats["reserves"]) - 1 - int(stats["releases"]) - int(stats["buries"]))

    def releases(self, delivery: Delivery) -> int | None:
        """beanstalkd's ``releases`` count of the job (``stats-job`` on this connection)."""
        stats = self._held_stats(delivery)
        return None if stats is None else int(stats["releases"])

    def _held_stats(self, delivery: Delivery) -> Any:
        """``stats-job`` of a job this consumer holds, read on its connection; None when not held."""
        found: list[Any] = []
        held = self._settle(delivery, lambda c, number: found.append(c.stats_job(number)))
        return found[0] if held else None

    def interrupt(self) -> None:
        self._closed = True
        conn = self._conn
        if conn is not None:
            try:
                conn.client.flush()  # a queued delete still reaches beanstalkd
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self._closed = True
        try:
            if self._conn is not None:
                self._conn.client.drain()  # send the queued deletes and wait until they are done
        except _LOST:
            pass
        finally:
            self._drop()


def _job_stats(raw: Any) -> dict[str, Any]:
    return {key: raw.get(key) for key in STATS_JOB_KEYS}


def _tube_stats(raw: Any) -> dict[str, int]:
    return {
        "ready": raw["current-jobs-ready"], "reserved": raw["current-jobs-reserved"],
        "delayed": raw["current-jobs-delayed"], "buried": raw["current-jobs-buried"],
        "urgent": raw["current-jobs-urgent"], "total": raw["total-jobs"],
        "waiting": raw["current-waiting"],
    }
