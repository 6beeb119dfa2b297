"""Falcon resources of the dashboard: read through :mod:`.data`, render :mod:`.pages`, answer HTML.

Actions are POST forms (CSRF-checked by :func:`.auth.read_form`) that answer
303 back to the page they came from, with a notice. A part of a page whose
source is down shows as unavailable; a page about one thing that cannot be
read answers an HTML error page with the status of the JSON API's answer.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

import falcon

from jobkit.api.dashboard import chart, data, pages
from jobkit.api.dashboard.auth import (
    PREFIX,
    SESSION_COOKIE,
    SESSION_S,
    Refused,
    Sessions,
    csrf_token,
    read_form,
    set_cookie,
)
from jobkit.api.dashboard.layout import Frame, with_query
from jobkit.api.dashboard.markup import Safe
from jobkit.app import App
from jobkit.errors import BackendError, BrokerError, InvalidState, JobkitError, JobNotFound, TaskNotFound
from jobkit.job import JobState
from jobkit.message import JOB_ID_RE

T = TypeVar("T")
#: Records per page of the jobs list and of the dead letters.
PAGE_SIZE = 50
#: Newest jobs on the overview.
RECENT = 10
#: Headers of every dashboard answer: nothing loads from elsewhere, no framing, no referrer leaves.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                               "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}
_MAX_FILTER = 200


class Dashboard:
    """What the page resources share: the App, the sign-in sessions, and how a page is answered."""

    def __init__(self, app: App, sessions: Sessions) -> None:
        self.app = app
        self.sessions = sessions

    def frame(self, req: falcon.Request, resp: falcon.Response, *, refresh: bool = False) -> Frame:
        """The frame of the page answering ``req`` (sets the CSRF cookie when the browser has none)."""
        url = req.path + (f"?{req.query_string}" if req.query_string else "")
        notice = req.get_param("notice")
        count = req.get_param_as_int("n", default=0) if notice else 0
        return Frame(app_name=self.app.name, url=url, csrf=csrf_token(req, resp),
                     signed_in=self.sessions.required and self.sessions.valid(req),
                     refresh=refresh and req.get_param("refresh") != "off",
                     notice=(notice, count or 0) if notice else None)

    def answer(self, resp: falcon.Response, markup: Safe, status: int = 200) -> None:
        """Send a page with the dashboard's headers."""
        resp.status = falcon.code_to_http_status(status)
        resp.content_type = falcon.MEDIA_HTML
        resp.text = markup
        for name, value in PAGE_HEADERS.items():
            resp.set_header(name, value)

    def refused(self, req: falcon.Request, resp: falcon.Response, ex: Exception,
                params: dict[str, Any]) -> None:
        """Error handler: a refused request answers a page saying why."""
        status = ex.status if isinstance(ex, Refused) else 400
        title = {403: "Refused", 404: "Not found", 409: "Not possible now", 503: "Unavailable"}.get(
            status, "Bad request")
        self.answer(resp, pages.message(self.frame(req, resp), title, str(ex)), status)

    def sign_in_required(self, req: falcon.Request, resp: falcon.Response, ex: Exception,
                         params: dict[str, Any]) -> None:
        """Error handler: a page asked for without a session answers the sign-in form (401)."""
        self.answer(resp, pages.login(self.frame(req, resp), wrong=False), 401)


def attempt(read: Callable[[], T]) -> T | None:
    """The value read, or None when the broker or backend did not answer (shown as unavailable)."""
    try:
        return read()
    except JobkitError:
        return None


def act(action: Callable[[], T]) -> T:
    """Run an action; a jobkit error becomes a page saying why (404, 409, 503)."""
    try:
        return action()
    except (JobNotFound, TaskNotFound) as exc:
        raise Refused(404, str(exc) if isinstance(exc, TaskNotFound) else "no such job") from None
    except InvalidState as exc:
        raise Refused(409, str(exc)) from None
    except (BrokerError, BackendError):
        raise Refused(503, "the broker or the result backend is unavailable; retry later") from None


def back(resp: falcon.Response, form: dict[str, str], notice: str, n: int = 0) -> None:
    """Answer 303 to the form's page (``next``, if it is a dashboard page), with a notice."""
    target = form.get("next", "")
    if not _dashboard_url(target):
        target = PREFIX
    resp.status = falcon.HTTP_303
    resp.location = with_query(target, notice=notice, n=str(n) if n else None)


def _dashboard_url(url: str) -> bool:
    rest = url[len(PREFIX):]
    return (url.startswith(PREFIX) and (rest == "" or rest[0] in "/?") and not rest.startswith("//")
            and "\\" not in url and url.isprintable())


def job_id_param(job_id: str) -> str:
    """A job id from a path; a malformed one is a 404 page, without reading anything."""
    if not JOB_ID_RE.match(job_id):
        raise Refused(404, "no such job")
    return job_id


class Overview:
    """``GET /dashboard``: queues, jobs by state, the last hour's throughput, the newest jobs."""

    def __init__(self, board: Dashboard) -> None:
        self.board = board

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        app, now = self.board.app, time.time()
        page = pages.overview(
            self.board.frame(req, resp, refresh=True), attempt(lambda: data.queues(app)),
            attempt(lambda: data.counts(app)),
            attempt(lambda: data.finished_per_minute(app, chart.window(now)[1])),
            attempt(lambda: data.jobs(app, data.Filters(), before=None, limit=RECENT)), now)
        self.board.answer(resp, page)


class Jobs:
    """``GET /dashboard/jobs``: filtered, paged by keyset (``before``); ``?id=`` finds one job."""

    def __init__(self, board: Dashboard) -> None:
        self.board = board

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        app = self.board.app
        wanted = (req.get_param("id") or "").strip()
        if wanted and JOB_ID_RE.match(wanted) and attempt(lambda: data.job(app, wanted)) is not None:
            resp.status, resp.location = falcon.HTTP_303, f"{PREFIX}/jobs/{wanted}"
            return
        filters, before = _filters(req), req.get_param("before") or None
        if before is not None and not JOB_ID_RE.match(before):
            raise Refused(400, "before must be a job id from the previous page")
        records = attempt(lambda: data.jobs(app, filters, before=before, limit=PAGE_SIZE))
        self.board.answer(resp, pages.jobs_list(
            self.board.frame(req, resp), filters, data.task_names(app), records, before=before,
            limit=PAGE_SIZE, problem=f"No job has the id {wanted!r}." if wanted else None))


def _filters(req: falcon.Request) -> data.Filters:
    state = req.get_param("state") or None
    if state is not None and state not in {s.value for s in JobState}:
        raise Refused(400, f"state must be one of {', '.join(s.value for s in JobState)}")
    task, queue = (req.get_param(name) or None for name in ("task", "queue"))
    if any(value is not None and len(value) > _MAX_FILTER for value in (task, queue)):
        raise Refused(400, f"task and queue names are at most {_MAX_FILTER} characters")
    return data.Filters(state=state, task=task, queue=queue)


class Job:
    """``GET /dashboard/jobs/{job_id}`` and its actions ``…/retry`` and ``…/cancel`` (POST)."""

    def __init__(self, board: Dashboard) -> None:
        self.board = board

    def on_get(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        app = self.board.app
        record = act(lambda: data.job(app, job_id_param(job_id)))
        if record is None:
            raise Refused(404, "no such job (never enqueued, or expired)")
        finished = record.get("state") not in pages.CANCELLABLE
        broker = None if finished else attempt(lambda: data.in_broker(app, record))
        frame = self.board.frame(req, resp, refresh=not finished)
        self.board.answer(resp, pages.job_page(frame, record, broker))

    def on_post_retry(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        form = read_form(req)
        act(lambda: data.retry(self.board.app, job_id_param(job_id)))
        back(resp, form, "retried")

    def on_post_cancel(self, req: falcon.Request, resp: falcon.Response, job_id: str) -> None:
        form = read_form(req)
        act(lambda: data.cancel(self.board.app, job_id_param(job_id)))
        back(resp, form, "cancelled")


class DeadLetters:
    """``GET /dashboard/dead``: buried messages per queue and failed jobs; kicks (POST)."""

    def __init__(self, board: Dashboard) -> None:
        self.board = board

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        app, before = self.board.app, req.get_param("before") or None
        if before is not None and not JOB_ID_RE.match(before):
            raise Refused(400, "before must be a job id from the previous page")
        failed = attempt(lambda: data.jobs(app, data.Filters(state=JobState.FAILED.value), before=before,
                                           limit=PAGE_SIZE))
        self.board.answer(resp, pages.dead_letters(
            self.board.frame(req, resp, refresh=before is None), attempt(lambda: data.queues(app)), failed,
            before=before, limit=PAGE_SIZE))

    def on_post_kick_all(self, req: falcon.Request, resp: falcon.Response) -> None:
        form = read_form(req)
        back(resp, form, "kicked", act(lambda: data.kick(self.board.app, None)))

    def on_post_kick(self, req: falcon.Request, resp: falcon.Response, queue: str) -> None:
        form = read_form(req)
        back(resp, form, "kicked", act(lambda: data.kick(self.board.app, queue)))


class Workers:
    """``GET /dashboard/workers``: what ``GET /v1/workers`` lists."""

    def __init__(self, board: Dashboard) -> None:
        self.board = board

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        found = attempt(lambda: data.workers(self.board.app))
        self.board.answer(resp, pages.workers_page(self.board.frame(req, resp, refresh=True), found))


class Login:
    """``GET``/``POST /dashboard/login`` and ``POST /dashboard/logout``."""

    def __init__(self, board: Dashboard) -> None:
        self.board = board

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        if not self.board.sessions.required or self.board.sessions.valid(req):
            resp.status, resp.location = falcon.HTTP_303, PREFIX
            return
        self.board.answer(resp, pages.login(self.board.frame(req, resp), wrong=False))

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        form = read_form(req)
        if not self.board.sessions.token_matches(form.get("token", "")):
            self.board.answer(resp, pages.login(self.board.frame(req, resp), wrong=True), 401)
            return
        set_cookie(req, resp, SESSION_COOKIE, self.board.sessions.issue(), max_age=SESSION_S)
        resp.status, resp.location = falcon.HTTP_303, PREFIX

    def on_post_logout(self, req: falcon.Request, resp: falcon.Response) -> None:
        form = read_form(req)
        resp.unset_cookie(SESSION_COOKIE, same_site="Strict", path=PREFIX)
        back(resp, form | {"next": f"{PREFIX}/login"}, "signed-out")
