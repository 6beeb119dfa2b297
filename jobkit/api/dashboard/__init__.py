"""The dashboard under ``/dashboard``: server-rendered HTML pages, no external assets.

Pages: the overview (queues, jobs by state, the last hour's throughput,
newest jobs), the jobs list (filters, search by id, keyset paging), one job,
the dead letters and the workers; actions (retry, cancel, kick) are
CSRF-protected POST forms. With ``JOBKIT_API_TOKEN`` set, pages need a
sign-in (:mod:`.auth`). Every value shown is escaped (:mod:`.markup`); every
read goes through the App (:mod:`.data`).
"""
from __future__ import annotations

from typing import Any

import falcon

from jobkit.api.dashboard import resources
from jobkit.api.dashboard.auth import PREFIX, Refused, Sessions
from jobkit.api.middleware import SignInRequired
from jobkit.app import App

__all__ = ["PREFIX", "ROUTES", "Sessions", "install"]

#: (path, resource, suffix, {method: summary}) of every dashboard route; the OpenAPI document lists them.
ROUTES: tuple[tuple[str, str, str | None, dict[str, str]], ...] = (
    (PREFIX, "overview", None, {"get": "Dashboard: queues, jobs by state, throughput (HTML)"}),
    (f"{PREFIX}/jobs", "jobs", None, {"get": "Dashboard: jobs, filtered and paged (HTML)"}),
    (f"{PREFIX}/jobs/{{job_id}}", "job", None, {"get": "Dashboard: one job (HTML)"}),
    (f"{PREFIX}/jobs/{{job_id}}/retry", "job", "retry", {"post": "Dashboard form: retry a job"}),
    (f"{PREFIX}/jobs/{{job_id}}/cancel", "job", "cancel", {"post": "Dashboard form: cancel a job"}),
    (f"{PREFIX}/dead", "dead", None, {"get": "Dashboard: dead letters (HTML)"}),
    (f"{PREFIX}/kick", "dead", "kick_all", {"post": "Dashboard form: kick every buried job"}),
    (f"{PREFIX}/queues/{{queue}}/kick", "dead", "kick", {"post": "Dashboard form: kick a queue's buried"}),
    (f"{PREFIX}/workers", "workers", None, {"get": "Dashboard: workers (HTML)"}),
    (f"{PREFIX}/login", "login", None, {"get": "Dashboard: sign-in form (HTML)",
                                        "post": "Dashboard form: sign in with the API token"}),
    (f"{PREFIX}/logout", "login", "logout", {"post": "Dashboard form: sign out"}),
)


def install(web: falcon.App[falcon.Request, falcon.Response], app: App, sessions: Sessions) -> None:
    """Mount the dashboard's routes and the handlers that answer its refusals as pages."""
    board = resources.Dashboard(app, sessions)
    handlers: dict[str, Any] = {
        "overview": resources.Overview(board), "jobs": resources.Jobs(board), "job": resources.Job(board),
        "dead": resources.DeadLetters(board), "workers": resources.Workers(board),
        "login": resources.Login(board)}
    for path, name, suffix, _ in ROUTES:
        if suffix is None:
            web.add_route(path, handlers[name])
        else:
            web.add_route(path, handlers[name], suffix=suffix)
    web.add_error_handler(Refused, board.refused)
    web.add_error_handler(SignInRequired, board.sign_in_required)
