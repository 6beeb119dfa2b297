"""Falcon middleware: request metrics, response headers, bearer token, JSON bodies.

Order matters and is set by :func:`jobkit.api.create_app`: metrics first (so
every response is counted), then the bearer token (nothing is read for a
client that is not allowed in), then the body rules.
"""
from __future__ import annotations

import functools
import hmac
import time
from collections.abc import Callable
from typing import Any

import falcon
from waitress.utilities import build_http_date  # type: ignore[import-untyped]

from jobkit.api.metrics import Metrics

#: Routes that answer without a token (probes of the process itself).
OPEN_PATHS = frozenset({"/healthz"})
#: The dashboard's pages: HTML forms, signed in by a cookie (or the bearer token), never JSON bodies.
DASHBOARD = "/dashboard"
#: Dashboard pages that answer without a sign-in (the sign-in form itself).
DASHBOARD_OPEN_PATHS = frozenset({"/dashboard/login"})
#: Headers on every answer, errors the server itself gives included: no MIME sniffing, no caching of job data.
SECURITY_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
_SECURITY_HEADER_LIST = list(SECURITY_HEADERS.items())
_READ_CHUNK = 64 * 1024


class RequestMetrics:
    """Count every request by route template, method and status, and time it."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.started = time.perf_counter()

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         req_succeeded: bool) -> None:
        started = getattr(req.context, "started", time.perf_counter())
        self.metrics.observe(req.uri_template or "(unmatched)", req.method, resp.status_code,
                             time.perf_counter() - started)


class SecurityHeaders:
    """:data:`SECURITY_HEADERS` and ``Date`` on every response, unless a resource set its own.

    perf: set before the resource runs (one call), so that a resource's own
    value simply replaces it, instead of looking each one up after it ran.
    Error answers keep them: Falcon adds an error's headers to the response's.
    ``Date`` is formatted once a second, not for every response as waitress
    does when the application sends none (in waitress's own format).
    """

    def __init__(self) -> None:
        self._date: tuple[int, list[tuple[str, str]]] = (-1, [])

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        second, headers = self._date
        if second != (now := int(time.time())):
            headers = [*_SECURITY_HEADER_LIST, ("Date", build_http_date(now))]
            self._date = (now, headers)  # one assignment: threads see the old pair or the new one
        resp.set_headers(headers)


def is_dashboard(path: str) -> bool:
    """Whether ``path`` is one of the dashboard's pages."""
    return path == DASHBOARD or path.startswith(DASHBOARD + "/")


class SignInRequired(falcon.HTTPUnauthorized):
    """Raised for a dashboard page asked for without a session; the dashboard answers its sign-in form."""

    def __init__(self) -> None:
        super().__init__(description="sign in to the dashboard")


class BearerAuth:
    """Require ``Authorization: Bearer <token>`` on every route but :data:`OPEN_PATHS`.

    The token is compared in constant time (:func:`hmac.compare_digest`).
    Dashboard pages also accept a session cookie (``signed_in``); no other
    route reads cookies, so that another site's page can never act on the
    JSON API with a browser's cookie.

    Args:
        token: the expected token (``JOBKIT_API_TOKEN``).
        signed_in: whether a dashboard request carries a valid session.
    """

    def __init__(self, token: str, signed_in: Callable[[falcon.Request], bool] | None = None) -> None:
        self._token = token.encode("utf-8")
        self._signed_in = signed_in

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.path in OPEN_PATHS:
            return
        if is_dashboard(req.path):
            if (req.path in DASHBOARD_OPEN_PATHS or (self._signed_in is not None and self._signed_in(req))
                    or self._bearer(req) is True):
                return
            raise SignInRequired()
        found = self._bearer(req)
        if found is None:
            raise falcon.HTTPUnauthorized(description="send Authorization: Bearer <token>",
                                          challenges=['Bearer realm="jobkit"'])
        if not found:
            raise falcon.HTTPUnauthorized(
                description="the bearer token is missing or wrong",
                challenges=['Bearer realm="jobkit", error="invalid_token"'])

    def _bearer(self, req: falcon.Request) -> bool | None:
        """None without an Authorization header, else whether it holds the right bearer token."""
        header = req.get_header("Authorization")
        if header is None:
            return None
        scheme, _, given = header.strip().partition(" ")
        # WSGI hands header values over as latin-1 text: this recovers the bytes sent
        candidate = given.strip().encode("latin-1", "replace")
        return scheme.lower() == "bearer" and hmac.compare_digest(candidate, self._token)


class JsonBody:
    """Enforce the body rules before a resource runs, and read the body for it.

    A body over ``max_body`` bytes is refused (413) from its Content-Length
    before anything is read; without a length (chunked), at most
    ``max_body + 1`` bytes are read, never the whole stream. A body must be
    declared JSON (``application/json`` or ``application/*+json``, UTF-8):
    otherwise 415. The bytes read are left in ``req.context.body``.

    Args:
        max_body: the largest body accepted, in bytes (``JOBKIT_MAX_BODY``).
    """

    def __init__(self, max_body: int) -> None:
        self.max_body = max_body

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.body = b""
        path, env = req.path, req.env  # perf: headers read from the WSGI environ, each once
        if path in OPEN_PATHS or is_dashboard(path):
            return  # a liveness probe answers whatever comes with it; the dashboard reads its forms
        length = req.content_length  # an invalid Content-Length is a 400 here
        if not length and (length is not None  # no body, unless chunked without a length
                           or "chunked" not in env.get("HTTP_TRANSFER_ENCODING", "").lower()):
            return
        if length is not None and length > self.max_body:
            raise too_large(self.max_body)
        check_json_type(env.get("CONTENT_TYPE"))
        encoding = (env.get("HTTP_CONTENT_ENCODING") or "identity").strip().lower()
        if encoding != "identity":  # RFC 9110 15.5.16: an unsupported content coding is a 415
            raise falcon.HTTPUnsupportedMediaType(
                description=f"Content-Encoding {encoding!r} is not accepted: send the JSON as is")
        req.context.body = self._read(req, length)

    def _read(self, req: falcon.Request, length: int | None) -> bytes:
        if length is not None:  # never read past Content-Length (perf: no BoundedStream wrapper)
            stream: Any = req.stream
            budget = length
        elif req.env.get("wsgi.input_terminated"):
            stream, budget = req.stream, self.max_body + 1
        else:
            raise falcon.HTTPLengthRequired(description="send a Content-Length")
        chunks: list[bytes] = []
        total = 0
        while total < budget:
            chunk = stream.read(min(_READ_CHUNK, budget - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > self.max_body:
            raise too_large(self.max_body)
        return b"".join(chunks)


def too_large(max_body: int) -> falcon.HTTPContentTooLarge:
    """The 413 for a body over ``max_body`` bytes (the server's own 413 says the same)."""
    return falcon.HTTPContentTooLarge(
        description=f"the body is larger than {max_body} bytes (JOBKIT_MAX_BODY)")


def check_json_type(content_type: str | None) -> None:
    """Accept ``application/json`` and ``application/*+json``, UTF-8 only; else 415."""
    if not content_type:
        raise falcon.HTTPUnsupportedMediaType(description="a body needs Content-Type: application/json")
    if not _json_type(content_type):
        raise falcon.HTTPUnsupportedMediaType(
            description=f"bodies must be JSON (application/json, UTF-8), not {content_type[:100]!r}")


@functools.lru_cache(maxsize=64)  # clients send one or two spellings, again and again
def _json_type(content_type: str) -> bool:
    mime, *params = (part.strip().lower() for part in content_type.split(";"))
    json_like = mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))
    charsets = [p.partition("=")[2].strip('"') for p in params if p.startswith("charset=")]
    return json_like and all(c in ("utf-8", "utf8") for c in charsets)
