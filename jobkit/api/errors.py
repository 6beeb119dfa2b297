"""jobkit errors mapped to HTTP errors at the edge; every error body is JSON.

Resources let domain errors (:mod:`jobkit.errors`) propagate; the handlers
installed here turn each into a Falcon :class:`~falcon.HTTPError`, whose body
is ``{"title": …, "description": …}``. Anything unexpected becomes a JSON 500
without a stack trace (the traceback goes to the log).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NoReturn

import falcon

from jobkit import errors
from jobkit.message import compact_encoder

log = logging.getLogger("jobkit.api")

#: Seconds a client is asked to wait (``Retry-After``) when the broker or backend is down.
RETRY_AFTER_S = 5

Handler = Callable[[falcon.Request, falcon.Response, Any, dict[str, Any]], None]

_encode = compact_encoder()


def dumps(value: Any) -> str:
    """Compact JSON text, as the seed answered (``{"_id":…,"hash":…}``)."""
    return _encode(value)


def serialize_error(req: falcon.Request, resp: falcon.Response, exc: falcon.HTTPError) -> None:
    """Write every HTTP error as JSON, whatever the client's ``Accept`` header says."""
    resp.data = dumps(exc.to_dict()).encode("utf-8")
    resp.content_type = falcon.MEDIA_JSON


def install(web: falcon.App[falcon.Request, falcon.Response]) -> None:
    """Register the error serializer and one handler per jobkit error class.

    Falcon picks the handler of the most specific class, so ``PayloadTooLarge``
    wins over ``PayloadError`` and ``BrokerUnavailable`` over ``BrokerError``.
    """
    web.set_error_serializer(serialize_error)
    web.add_error_handler(Exception, _unexpected)
    web.add_error_handler(errors.JobkitError, _unexpected)
    web.add_error_handler(errors.PayloadError, _client(falcon.HTTPBadRequest))
    web.add_error_handler(errors.PayloadTooLarge, _client(falcon.HTTPContentTooLarge))
    web.add_error_handler(errors.TaskNotFound, _client(falcon.HTTPNotFound))
    web.add_error_handler(errors.JobNotFound, _job_not_found)
    web.add_error_handler(errors.InvalidState, _client(falcon.HTTPConflict))
    web.add_error_handler(errors.ConfigError, _client(falcon.HTTPUnprocessableEntity))
    web.add_error_handler(errors.BrokerError, _unavailable("broker"))
    web.add_error_handler(errors.Unsupported, _client(falcon.HTTPUnprocessableEntity))
    web.add_error_handler(errors.BackendError, _unavailable("result backend"))


def _client(kind: Callable[..., falcon.HTTPError]) -> Handler:
    """A handler for errors caused by the request: the message explains what to fix."""
    def handle(req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict[str, Any]) -> NoReturn:
        raise kind(description=str(ex))
    return handle


def _job_not_found(req: falcon.Request, resp: falcon.Response, ex: Exception,
                   params: dict[str, Any]) -> NoReturn:
    raise falcon.HTTPNotFound(description="no such job (never enqueued, or expired)")


def _unavailable(what: str) -> Handler:
    """A handler for an unreachable broker or backend: 503 with ``Retry-After``.

    The detail (addresses, driver messages) goes to the log, not to the client.
    """
    def handle(req: falcon.Request, resp: falcon.Response, ex: Exception, params: dict[str, Any]) -> NoReturn:
        log.warning("%s %s: %s unavailable: %s", req.method, req.path, what, ex)
        raise falcon.HTTPServiceUnavailable(
            description=f"the {what} is unavailable; retry later", retry_after=RETRY_AFTER_S)
    return handle


def _unexpected(req: falcon.Request, resp: falcon.Response, ex: Exception,
                params: dict[str, Any]) -> NoReturn:
    if isinstance(ex, falcon.HTTPError):  # never reached (Falcon's own handler is more specific)
        raise ex
    log.exception("%s %s: unexpected error", req.method, req.path)
    raise falcon.HTTPInternalServerError(description="unexpected error; it was logged")
