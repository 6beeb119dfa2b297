"""The HTTP API: a Falcon app built by :func:`create_app`, served by :mod:`jobkit.api.server`.

The routes are those of docs/architecture.md, "HTTP API": the seed's ``POST /`` and
``GET /{id}/``, the ``/v1`` routes, and ``/healthz``, ``/readyz``,
``/openapi.json``, ``/metrics``, ``/dashboard``. ``HEAD`` answers on every
route that has ``GET``, with the same status and headers and no body.
"""
from __future__ import annotations

import logging
from typing import Any

import falcon
import falcon.media
import falcon.routing

from jobkit import __version__
from jobkit.api import dashboard, errors, middleware, openapi, resources, workflows
from jobkit.api.metrics import Metrics
from jobkit.app import App
from jobkit.config import Settings

__all__ = ["DEFAULT_LONG_POLLS", "HeadLikeGet", "create_app"]
log = logging.getLogger("jobkit.api")

#: Requests that may block a thread waiting for an outcome at once: half of waitress's default 8 threads.
DEFAULT_LONG_POLLS = 4


class HeadLikeGet(falcon.routing.CompiledRouter):
    """Falcon's router, answering ``HEAD`` with the route's ``GET`` responder (RFC 9110 9.3.2).

    Falcon drops the body of a HEAD answer and keeps the GET's Content-Length.
    """

    def map_http_methods(self, resource: object, **kwargs: Any) -> dict[str, Any]:
        methods: dict[str, Any] = super().map_http_methods(resource, **kwargs)
        if "GET" in methods and "HEAD" not in methods:
            methods["HEAD"] = methods["GET"]
        return methods


def create_app(settings: Settings, app: App, *,
               long_polls: int = DEFAULT_LONG_POLLS) -> falcon.App[falcon.Request, falcon.Response]:
    """Build the WSGI app serving ``app`` under ``settings``; nothing connects here.

    Args:
        settings: ``api_token``, ``max_body`` and ``default_task`` are read.
        app: the App whose tasks, broker and backend are served.
        long_polls: how many ``/result?wait=`` requests may wait at once; the
            server passes a share of its threads, so that waits never take them all.

    Raises:
        ConfigError: the App's broker or backend URL is unusable (checked now,
            without connecting, rather than on the first request).
    """
    _ = app.broker, app.backend  # resolve the URLs now: a bad one fails here, not on a request
    if settings.default_task not in app.tasks:
        log.warning("POST / enqueues %r, which %s does not register (JOBKIT_DEFAULT_TASK)",
                    settings.default_task, app.name)
    api = resources.Api(settings, app, Metrics(app), resources.LongPolls(long_polls))
    stack: list[Any] = [middleware.RequestMetrics(api.metrics), middleware.SecurityHeaders()]
    sessions = dashboard.Sessions(settings.api_token)
    if settings.api_token:
        stack.append(middleware.BearerAuth(settings.api_token, signed_in=sessions.valid))
    stack.append(middleware.JsonBody(settings.max_body))
    web = falcon.App(middleware=stack, router=HeadLikeGet())
    web.req_options.strip_url_path_trailing_slash = True  # the seed's GET /<id>/
    web.resp_options.media_handlers[falcon.MEDIA_JSON] = falcon.media.JSONHandler(dumps=errors.dumps)
    errors.install(web)
    add_routes(web, api)
    dashboard.install(web, app, sessions)
    return web


def add_routes(web: falcon.App[falcon.Request, falcon.Response], api: resources.Api) -> None:
    """Mount every resource (``tests/test_api_openapi.py`` checks them against the document)."""
    seed, jobs, tasks, health = (resources.Seed(api), resources.Jobs(api), resources.Tasks(api),
                                 resources.Health(api))
    web.add_route("/", seed)
    web.add_route("/{job_id}", seed, suffix="status")
    web.add_route("/v1/jobs", jobs)
    web.add_route("/v1/jobs/batch", workflows.Batch(api))
    web.add_route("/v1/workflows", workflows.Workflows(api))
    web.add_route("/v1/jobs/{job_id}", jobs, suffix="item")
    web.add_route("/v1/jobs/{job_id}/result", jobs, suffix="result")
    web.add_route("/v1/jobs/{job_id}/retry", jobs, suffix="retry")
    web.add_route("/v1/tasks", tasks)
    web.add_route("/v1/tasks/{name}", tasks, suffix="item")
    web.add_route("/v1/schedules", resources.Schedules(api))
    web.add_route("/v1/queues", resources.Queues(api))
    web.add_route("/v1/workers", resources.Workers(api))
    web.add_route("/healthz", health)
    web.add_route("/readyz", health, suffix="ready")
    document = openapi.document(__version__, auth=bool(api.settings.api_token))
    web.add_route("/openapi.json", resources.Document(document))
    web.add_route("/metrics", resources.MetricsPage(api))
