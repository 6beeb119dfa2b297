"""Serving the API on waitress, in one process or several sharing one port.

Limits are deliberate (see :func:`server_options`): a bounded number of
connections, idle connections closed, request bodies capped at about
``max_body`` while they stream in, headers capped, ``poll()`` instead of
``select()``. Idle and slow connections cost no thread (waitress reads them
in its event loop); what takes a thread is a complete request, and at most
half of the threads may wait for an outcome (``/result?wait=``), so
``/healthz`` and the other routes always find one. Errors waitress answers by
itself (a malformed request line, a body past its cap, headers too large, a
request framed by both Content-Length and Transfer-Encoding) are JSON like
every other error, and close the connection.

With ``processes=N > 1`` the parent checks that the port is free and forks
N children, each serving it with its own waitress; the parent forwards
SIGTERM/SIGINT to them, replaces a child that dies unexpectedly, and exits
when they have all exited. On Linux each child listens on a socket of its
own (``SO_REUSEPORT``), so that the kernel spreads connections evenly, while
the parent holds the port (bound, not listening) so that no other server can
take it; elsewhere the children share the parent's listening socket.
"""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import sys
import time
from typing import Any

import falcon
from waitress.adjustments import Adjustments  # type: ignore[import-untyped]
from waitress.channel import HTTPChannel  # type: ignore[import-untyped]
from waitress.parser import HTTPRequestParser, ParsingError  # type: ignore[import-untyped]
from waitress.task import ErrorTask, ThreadedTaskDispatcher  # type: ignore[import-untyped]

from jobkit.api import create_app
from jobkit.api.errors import dumps
from jobkit.api.eventloop import Server, serving
from jobkit.api.middleware import SECURITY_HEADERS, too_large
from jobkit.app import App
from jobkit.config import Settings
from jobkit.errors import ConfigError, JobkitError
from jobkit.metrics import multiprocess_dir

log = logging.getLogger("jobkit.api")

#: Bytes of chunked framing allowed on top of ``max_body`` before waitress cuts a body off.
FRAMING_ALLOWANCE = 4096
#: Open connections per process (each one a file descriptor; idle ones are closed after 30 s).
CONNECTION_LIMIT = 1000
#: A child that dies sooner than this after it started is not replaced (a crash loop).
MIN_CHILD_LIFE_S = 5.0
_SIGNALS = {signal.SIGTERM, signal.SIGINT}
#: Whether the kernel balances connections among SO_REUSEPORT listeners (Linux does; macOS does not).
SPREAD_BY_KERNEL = sys.platform.startswith("linux")


class JSONErrorTask(ErrorTask):  # type: ignore[misc]
    """waitress's own error responses (400, 413, 431, …) exactly as the app's own errors.

    Same status line, body and headers as Falcon's error of that code; a 413
    says the same as the app's (``JOBKIT_MAX_BODY``). waitress answers an
    unknown ``Transfer-Encoding`` with 501, as RFC 9112 suggests; the API
    promises no 5xx for anything a client sends, so that one is a 400 here.
    The connection is closed after the answer.
    """

    def execute(self) -> None:
        error = self.request.error
        code = 400 if error.code == 501 else error.code
        http_error: falcon.HTTPError
        if code == 413:
            http_error = too_large(self.channel.adj.max_request_body_size - FRAMING_ALLOWANCE)
        else:
            http_error = falcon.HTTPError(falcon.code_to_http_status(code), description=str(error.body))
        self.status = http_error.status
        body = dumps(http_error.to_dict()).encode("utf-8")
        self.response_headers.append(("Content-Type", falcon.MEDIA_JSON))
        self.response_headers.extend(SECURITY_HEADERS.items())
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)

    def build_response_header(self) -> bytes:
        # or waitress answers an HTTP/1.0 keep-alive request "Connection: Keep-Alive" besides "close"
        self.request.headers.pop("CONNECTION", None)
        header: bytes = super().build_response_header()
        return header


class StrictRequestParser(HTTPRequestParser):  # type: ignore[misc]
    """waitress's request parser, refusing requests whose body framing is ambiguous.

    A request with both ``Transfer-Encoding`` and ``Content-Length`` (or any
    ``Transfer-Encoding`` on HTTP/1.0, which has none) is how requests are
    smuggled past a proxy that reads the other header: RFC 9112 6.1 and 6.3
    let a server refuse it, and it must not read on from that connection.
    The error answers 400 and closes the connection.
    """

    def parse_header(self, header_plus: bytes) -> None:
        super().parse_header(header_plus)
        if self.chunked and "CONTENT_LENGTH" in self.headers:
            raise ParsingError("Content-Length and Transfer-Encoding together: send one of them")
        if "TRANSFER_ENCODING" in self.headers:  # waitress removes it on HTTP/1.1 only
            raise ParsingError(f"Transfer-Encoding is not defined for HTTP/{self.version}")


class JSONErrorChannel(HTTPChannel):  # type: ignore[misc]
    """A waitress channel that parses strictly and answers its errors in JSON."""

    error_task_class = JSONErrorTask
    parser_class = StrictRequestParser

    def service(self) -> None:
        """Serve this connection's next request in a worker thread; the trigger it pulls names it."""
        serving(self)
        try:
            super().service()
        finally:
            serving(None)


class OncePer(logging.Filter):
    """Let one record through per ``interval_s`` seconds.

    waitress warns "Task queue depth is N" for every request that waits for a
    thread: under load, thousands of lines a second saying one thing.
    """

    def __init__(self, interval_s: float) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._next = 0.0

    def filter(self, record: logging.LogRecord) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.interval_s
        return True


def server_options(settings: Settings, threads: int) -> dict[str, Any]:
    """waitress adjustments for ``settings`` and ``threads`` worker threads per process.

    Open connections cost a file descriptor and a little memory, no thread:
    the limit is there to stay within the process's descriptors, not to ration
    threads (:func:`long_polls` does that).
    """
    return {
        "threads": threads,
        "connection_limit": CONNECTION_LIMIT,  # then new connections wait in the backlog
        "backlog": 1024,
        "channel_timeout": 30,  # seconds an idle (or trickling) connection is kept
        "cleanup_interval": 10,  # seconds between checks for such connections
        "max_request_body_size": settings.max_body + FRAMING_ALLOWANCE,  # counted as it arrives
        "max_request_header_size": 32 * 1024,
        "asyncore_use_poll": True,  # select() stops at 1024 file descriptors
        "expose_tracebacks": False,
        # Proxy headers reach the app: jobkit trusts none of them for a decision. It reads
        # X-Forwarded-Proto only to mark the dashboard's cookies Secure behind a TLS proxy
        # (waitress's clearing made that impossible), which a client can only make stricter.
        # perf: and no middleware around every request (6 % of a process's time under wrk).
        "clear_untrusted_proxy_headers": False,
        "ident": "jobkit",
    }


def cores() -> int:
    """The CPU cores this process may run on (its affinity, which a container's limit narrows)."""
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity is not None else os.cpu_count() or 1


def processes_for(app: App, asked: int | None = None) -> int:
    """How many API processes to serve with: ``asked``, else one per core.

    One process's GIL serves one core at most; more processes share the port
    (see :func:`serve`). Without ``asked``, an App whose broker or backend is
    ``memory://`` (which lives in one process) gets one process.
    """
    if asked is not None:
        return asked
    return 1 if "memory://" in (app.broker.url, app.backend.url) else cores()


def long_polls(threads: int) -> int:
    """How many of ``threads`` may wait for an outcome at once: half, so that the rest always answer."""
    return threads // 2


def bind(host: str, port: int, backlog: int = 1024, *, reuse_port: bool = False) -> socket.socket:
    """A listening TCP socket on ``host:port`` (port 0 picks a free one).

    Args:
        reuse_port: join the other ``SO_REUSEPORT`` sockets on the port (see :func:`hold`).

    Raises:
        ConfigError: the address cannot be bound.
    """
    try:
        return socket.create_server((host, port), family=_family(host), backlog=backlog,
                                    reuse_port=reuse_port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from None


def hold(host: str, port: int) -> socket.socket:
    """Keep ``host:port`` for this server's ``SO_REUSEPORT`` listeners without taking connections.

    The socket is bound but never listens: the kernel hands connections to
    the listeners only, and any other server, which would bind without
    ``SO_REUSEPORT`` or as another user, is refused the port. Nothing listens
    on the port until the first listener does, so a client that reached the
    port reached a process that serves it (a listening socket closed before
    the listeners opened would reset what it had queued, then refuse).

    Raises:
        ConfigError: another socket listens on the port (a plain probe, bound
            without ``SO_REUSEPORT``, finds it, even one that does use it).
    """
    family = _family(host)
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a closed server's TIME_WAIT is no owner
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from None
        port = probe.getsockname()[1]  # port 0: the one picked
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        try:
            sock.bind((host, port))  # beside the probe: neither listens, both reuse the address
        except OSError as exc:
            sock.close()
            raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from None
    return sock


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def make_server(settings: Settings, wsgi: Any, sock: socket.socket, threads: int = 8) -> Any:
    """A waitress server for the WSGI app ``wsgi`` on the bound socket ``sock`` (not yet running)."""
    adj = Adjustments(sockets=[sock], **server_options(settings, threads))
    dispatcher = ThreadedTaskDispatcher()
    dispatcher.set_thread_count(adj.threads)
    server = Server(wsgi, {}, True, sock, dispatcher=dispatcher, adj=adj, bind_socket=False,
                    sockinfo=(sock.family, sock.type, sock.proto, sock.getsockname()))
    server.channel_class = JSONErrorChannel  # the server makes one channel per connection
    return server


def serve(settings: Settings, app: App, *, processes: int = 1, threads: int = 8) -> None:
    """Serve the API on ``settings.api_host:settings.api_port`` until SIGTERM or SIGINT.

    Args:
        settings: where to listen, and the API's settings.
        app: the App to serve.
        processes: processes sharing the port (forked after binding it).
        threads: waitress threads per process.

    Raises:
        ConfigError: the port cannot be bound, the broker or backend URL is
            unusable, or several processes were asked of an in-process broker/backend.
    """
    with multiprocess_dir() if processes > 1 else contextlib.nullcontext():  # metrics: one sum
        _serve(settings, app, processes, threads)


def _serve(settings: Settings, app: App, processes: int, threads: int) -> None:
    wsgi = create_app(settings, app, long_polls=long_polls(threads))  # a bad configuration fails here, once
    if processes > 1 and "memory://" in (app.broker.url, app.backend.url):
        raise ConfigError("memory:// lives in one process: use --processes 1 or a real broker and backend")
    spread = processes > 1 and SPREAD_BY_KERNEL  # each child listens on a socket of its own
    host, port = settings.api_host, settings.api_port
    sock = hold(host, port) if spread else bind(host, port)
    queue_log = logging.getLogger("waitress.queue")
    if not any(isinstance(f, OncePer) for f in queue_log.filters):
        queue_log.addFilter(OncePer(10.0))
    host, port = sock.getsockname()[:2]
    if processes == 1:
        stop_on_signals()  # before saying it listens: a signal from then on stops it cleanly
    log.info("jobkit api: http://%s:%s/ (%d process(es) x %d threads)", host, port, processes, threads)
    if processes == 1:
        _run(make_server(settings, wsgi, sock, threads))
    else:
        _serve_forked(settings, wsgi, sock, processes, threads, spread)


def _serve_forked(settings: Settings, wsgi: Any, sock: socket.socket, processes: int, threads: int,
                  spread: bool) -> None:
    """Serve ``wsgi`` from ``processes`` children.

    Args:
        sock: the parent's socket: held (see :func:`hold`) when ``spread``, else listening and shared.
        spread: each child listens on its own ``SO_REUSEPORT`` socket. perf: with one shared
            listening socket, whichever process polls first accepts a burst of connections
            (27 of 32 was seen), and that process's GIL is the limit.
    """
    host, port = sock.getsockname()[:2]

    def child() -> None:
        listener = bind(host, port, reuse_port=True) if spread else sock
        _run(make_server(settings, wsgi, listener, threads))

    try:
        if not Supervisor(child, processes).run():
            raise JobkitError("API processes kept dying at start-up; see the log above")
    finally:
        sock.close()


def _run(server: Any) -> None:
    """Serve in this process until SIGTERM/SIGINT; running requests get a few seconds to finish."""
    stop_on_signals()
    server.run()  # returns after SystemExit/KeyboardInterrupt, having stopped its threads


def stop_on_signals() -> None:
    """From now on, the first SIGTERM/SIGINT raises SystemExit(0) in the main thread."""
    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGINT, _exit)


def _exit(signum: int, frame: Any) -> None:
    """Stop serving at the first SIGTERM/SIGINT; ignore the ones that follow.

    A process often gets the signal twice (from its process group, as
    service managers send it, and forwarded by its supervisor): a second
    SystemExit would interrupt waitress's own shutdown.
    """
    for each in _SIGNALS:
        signal.signal(each, signal.SIG_IGN)
    raise SystemExit(0)


class Supervisor:
    """Fork ``processes`` children that each call ``target``; forward signals; reap them.

    Args:
        target: what a child runs; the child exits when it returns.
        processes: how many children to keep.
    """

    def __init__(self, target: Any, processes: int) -> None:
        self.target = target
        self.processes = processes
        self.children: dict[int, float] = {}  # pid -> start time (monotonic)
        self.stopping = False

    def run(self) -> bool:
        """Start the children and wait until all of them have exited.

        Returns:
            False when the supervisor gave up on a child dying at start-up, else True.
        """
        healthy = True
        for signum in _SIGNALS:
            signal.signal(signum, self._forward)
        for _ in range(self.processes):
            self._spawn()
        while self.children:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                break
            started = self.children.pop(pid, None)
            if started is None or self.stopping:
                continue
            log.error("api process %d exited (%s)", pid, _describe(status))
            if time.monotonic() - started < MIN_CHILD_LIFE_S:
                log.error("it died within %.0f s of starting: stopping the others", MIN_CHILD_LIFE_S)
                healthy = False
                self._forward(signal.SIGTERM, None)
            else:
                self._spawn()
        return healthy

    def _spawn(self) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)  # none may run the parent's handler in a child
        try:
            pid = os.fork()
            if pid == 0:
                self._child()
            self.children[pid] = time.monotonic()
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)

    def _child(self) -> None:
        """Serve, then leave without ever returning into the parent's code."""
        code = 1
        try:
            self.children.clear()
            for signum in _SIGNALS:
                signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
            self.target()
            code = 0
        except SystemExit as exc:  # _exit's, should it escape the server: a stop, not a failure
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            log.exception("api process %d failed", os.getpid())
        finally:
            os._exit(code)

    def _forward(self, signum: int, frame: Any) -> None:
        self.stopping = True
        for pid in list(self.children):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"
