"""Dashboard sign-in and form protection.

Sign-in (only with ``JOBKIT_API_TOKEN`` set): the login form posts the
token; it is compared in constant time and, when right, a session cookie is
set: ``<expiry>.<HMAC of the expiry>``, keyed by a hash of the token, so the
token itself never sits in the browser and every ``--processes`` child (and
every restart) accepts the sessions of the others; changing the token ends
them all. The cookie is HttpOnly, SameSite=Strict and scoped to
``/dashboard``: the JSON API never reads it.

Forms (actions, login, logout) carry a CSRF token that must equal the
``jobkit_csrf`` cookie (double submit; the cookie is SameSite=Strict, so
another site's page cannot send it), and a browser's ``Sec-Fetch-Site``
must not say the form came from another site.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from urllib.parse import parse_qs

import falcon

PREFIX = "/dashboard"
SESSION_COOKIE = "jobkit_session"
CSRF_COOKIE = "jobkit_csrf"
CSRF_FIELD = "csrf"
#: Seconds a sign-in lasts.
SESSION_S = 12 * 3600
#: The largest form body read, in bytes (a form holds a token, a job id and a path).
MAX_FORM = 4096


class Refused(Exception):
    """Raised when the dashboard refuses a request; it answers a page saying why, with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Sessions:
    """Issue and check sign-in cookies for one token.

    Args:
        token: ``JOBKIT_API_TOKEN``; None when the dashboard needs no sign-in.
    """

    def __init__(self, token: str | None) -> None:
        self.token = token
        self._key = hashlib.sha256(b"jobkit dashboard session\0" + token.encode()).digest() if token else b""

    @property
    def required(self) -> bool:
        """Whether pages need a sign-in."""
        return self.token is not None

    def token_matches(self, given: str) -> bool:
        """Compare a submitted token with the configured one in constant time."""
        return self.token is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def issue(self, now: float | None = None) -> str:
        """A cookie value valid for :data:`SESSION_S` seconds."""
        expiry = str(int((time.time() if now is None else now) + SESSION_S))
        return f"{expiry}.{self._sign(expiry)}"

    def valid(self, req: falcon.Request) -> bool:
        """Whether ``req`` carries a session cookie issued here that has not expired."""
        if not self.required:
            return True
        values = req.get_cookie_values(SESSION_COOKIE) or []
        return any(self._check(value) for value in values)

    def _check(self, value: str) -> bool:
        expiry, _, signature = value.partition(".")
        if not expiry.isdigit() or not hmac.compare_digest(signature.encode(), self._sign(expiry).encode()):
            return False
        return int(expiry) > time.time()

    def _sign(self, expiry: str) -> str:
        return hmac.new(self._key, expiry.encode(), hashlib.sha256).hexdigest()


def set_cookie(req: falcon.Request, resp: falcon.Response, name: str, value: str, max_age: int) -> None:
    """An HttpOnly, SameSite=Strict cookie for ``/dashboard`` (Secure over HTTPS)."""
    resp.set_cookie(name, value, max_age=max_age, path=PREFIX, http_only=True, same_site="Strict",
                    secure=req.scheme == "https" or req.get_header("X-Forwarded-Proto") == "https")


def csrf_token(req: falcon.Request, resp: falcon.Response) -> str:
    """The token forms carry: the browser's ``jobkit_csrf`` cookie, set now when it has none."""
    token = req.cookies.get(CSRF_COOKIE)
    if not isinstance(token, str) or len(token) < 32:
        token = secrets.token_urlsafe(32)
        set_cookie(req, resp, CSRF_COOKIE, token, max_age=SESSION_S)
    return token


def read_form(req: falcon.Request) -> dict[str, str]:
    """Read a url-encoded form whose CSRF token checks out.

    Raises:
        Refused: not a small url-encoded UTF-8 form (400, 411, 413, 415),
            or the token is missing or wrong, or the form came from another site (403).
    """
    form = _parse(req)
    if req.get_header("Sec-Fetch-Site") in ("cross-site", "same-site"):
        raise Refused(403, "this form was sent from another site")
    cookie, field = req.cookies.get(CSRF_COOKIE), form.get(CSRF_FIELD, "")
    if not isinstance(cookie, str) or not cookie or not hmac.compare_digest(cookie.encode(), field.encode()):
        raise Refused(403, "the form's security token is missing or out of date: reload the page and retry")
    return form


def _parse(req: falcon.Request) -> dict[str, str]:
    length = req.content_length
    if length is None and "chunked" in (req.get_header("Transfer-Encoding") or "").lower():
        raise Refused(411, "send the form with a Content-Length")
    length = length or 0
    if length > MAX_FORM:
        raise Refused(413, f"a dashboard form is at most {MAX_FORM} bytes")
    mime = (req.content_type or "").split(";")[0].strip().lower()
    if mime != "application/x-www-form-urlencoded":
        raise Refused(415, "send the form as application/x-www-form-urlencoded")
    try:
        text = req.bounded_stream.read(length).decode("utf-8")
        fields = parse_qs(text, keep_blank_values=True, strict_parsing=False, max_num_fields=20,
                          errors="strict")
    except (UnicodeDecodeError, ValueError):
        raise Refused(400, "the form is not valid UTF-8 url-encoded text") from None
    return {name: values[-1] for name, values in fields.items()}
