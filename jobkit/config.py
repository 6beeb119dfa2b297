"""Settings: read once from the environment after loading ``.env``.

The real environment wins over ``.env``; ``.env`` is read with python-dotenv
without changing ``os.environ``. ``JOBKIT_*`` names come first; the seed demo's
names (``BEANSTALK_HOST``, ``BEANSTALK_PORT``, ``MONGO_URL``,
``MANAGER_LISTEN_PORT``) are honoured as fallbacks so its ``.env`` files keep
working. Every duration is in seconds.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from dotenv import dotenv_values

from jobkit.errors import ConfigError

DEFAULT_APP = "jobkit.demo:app"  # the seed's demo, shipped in the package: works outside a clone
DEFAULT_BROKER_URL = "beanstalk://127.0.0.1:11300"
DEFAULT_BACKEND_URL = "sqlite:///jobkit.db"
N = TypeVar("N", int, float)


@dataclass(frozen=True)
class Settings:
    """Everything jobkit reads from its environment.

    Attributes:
        app: ``module:attribute`` of the :class:`jobkit.App` to load.
        broker_url: where jobs go (``beanstalk://host:port`` or ``memory://``).
        backend_url: where outcomes go (``sqlite:///path``, ``mongodb://…``, ``memory://``).
        api_host: address the HTTP API binds.
        api_port: port the HTTP API binds.
        api_token: bearer token required by the API; ``None`` disables auth.
        default_task: task that ``POST /`` enqueues (the seed's route).
        max_body: largest request body the API reads, in bytes.
        result_ttl: seconds a finished job's record is kept.
        unknown_task_releases: how often a worker releases a message for a
            task it does not know (for a worker that knows it) before it
            buries it; 0 buries at once.
        unknown_task_delay: seconds such a released message waits.
        lease: seconds a worker holds a running job without renewing it
            (its heartbeat renews every third of it); a job whose lease ran
            out while its worker sent no heartbeat for as long is re-enqueued
            (see :mod:`jobkit.leases`).
    """

    app: str = DEFAULT_APP
    broker_url: str = DEFAULT_BROKER_URL
    backend_url: str = DEFAULT_BACKEND_URL
    api_host: str = "0.0.0.0"
    api_port: int = 8080
    api_token: str | None = None
    default_task: str = "hash_payload"
    max_body: int = 65536
    result_ttl: float = 7 * 24 * 3600.0
    unknown_task_releases: int = 12
    unknown_task_delay: float = 5.0
    lease: float = 30.0

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env"
    ) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``) over ``env_file``.

        Raises:
            ConfigError: a number-valued variable does not hold a number.
        """
        real = dict(os.environ if environ is None else environ)
        layers = (real, _dotenv(env_file))  # the real environment wins, seed names included
        pick = _picker(layers)
        port = _number(pick("JOBKIT_API_PORT", "MANAGER_LISTEN_PORT"), int, cls.api_port)
        if port > 65535:
            raise ConfigError(f"API port {port} is not a TCP port (0-65535)")
        return cls(
            app=pick("JOBKIT_APP")[1] or cls.app,
            broker_url=_broker_url(layers),
            backend_url=pick("JOBKIT_BACKEND_URL", "MONGO_URL")[1] or cls.backend_url,
            api_host=pick("JOBKIT_API_HOST")[1] or cls.api_host,
            api_port=port,
            api_token=pick("JOBKIT_API_TOKEN")[1] or None,
            default_task=pick("JOBKIT_DEFAULT_TASK")[1] or cls.default_task,
            max_body=_number(pick("JOBKIT_MAX_BODY"), int, cls.max_body),
            result_ttl=_number(pick("JOBKIT_RESULT_TTL"), float, cls.result_ttl),
            unknown_task_releases=_number(pick("JOBKIT_UNKNOWN_TASK_RELEASES"), int,
                                          cls.unknown_task_releases),
            unknown_task_delay=_number(pick("JOBKIT_UNKNOWN_TASK_DELAY"), float, cls.unknown_task_delay),
            lease=_number(pick("JOBKIT_LEASE"), float, cls.lease),
        )

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied; ``None`` values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def read_env(
    environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env"
) -> dict[str, str]:
    """Return ``env_file``'s variables overlaid by ``environ`` (default ``os.environ``)."""
    return _dotenv(env_file) | dict(os.environ if environ is None else environ)


def _dotenv(env_file: str | Path | None) -> dict[str, str]:
    if env_file is None or not Path(env_file).is_file():
        return {}
    return {k: v for k, v in dotenv_values(env_file).items() if v is not None}


Found = tuple[str, str]  # (variable name, its value); ("", "") when none is set


def _picker(layers: tuple[Mapping[str, str], ...]) -> Callable[..., Found]:
    """``pick(*names)``: the first name set in the first layer that sets any of them."""
    def pick(*names: str) -> Found:
        for layer in layers:
            for name in names:
                if layer.get(name):
                    return name, layer[name]
        return "", ""
    return pick


def _broker_url(layers: tuple[Mapping[str, str], ...]) -> str:
    for layer in layers:
        if layer.get("JOBKIT_BROKER_URL"):
            return layer["JOBKIT_BROKER_URL"]
        if layer.get("BEANSTALK_HOST") or layer.get("BEANSTALK_PORT"):
            host = next((lay["BEANSTALK_HOST"] for lay in layers if lay.get("BEANSTALK_HOST")), "127.0.0.1")
            port = next((lay["BEANSTALK_PORT"] for lay in layers if lay.get("BEANSTALK_PORT")), "11300")
            return f"beanstalk://{host}:{port}"
    return DEFAULT_BROKER_URL


def _number(found: Found, kind: Callable[[str], N], default: N) -> N:
    name, raw = found
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value < 0:
        raise ConfigError(f"{name}={raw!r} must not be negative")
    return value
