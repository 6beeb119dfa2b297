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
    """

    app: str = "examples.hashing:app"
    broker_url: str = DEFAULT_BROKER_URL
    backend_url: str = DEFAULT_BACKEND_URL
    api_host: str = "0.0.0.0"
    api_port: int = 8080
    api_token: str | None = None
    default_task: str = "hash_payload"
    max_body: int = 65536
    result_ttl: float = 7 * 24 * 3600.0

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env"
    ) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``) over ``env_file``.

        Raises:
            ConfigError: a number-valued variable does not hold a number.
        """
        env = read_env(environ, env_file)
        return cls(
            app=env.get("JOBKIT_APP") or cls.app,
            broker_url=env.get("JOBKIT_BROKER_URL") or _seed_broker_url(env),
            backend_url=env.get("JOBKIT_BACKEND_URL") or env.get("MONGO_URL") or cls.backend_url,
            api_host=env.get("JOBKIT_API_HOST") or cls.api_host,
            api_port=_number(env, int, cls.api_port, "JOBKIT_API_PORT", "MANAGER_LISTEN_PORT"),
            api_token=env.get("JOBKIT_API_TOKEN") or None,
            default_task=env.get("JOBKIT_DEFAULT_TASK") or cls.default_task,
            max_body=_number(env, int, cls.max_body, "JOBKIT_MAX_BODY"),
            result_ttl=_number(env, float, cls.result_ttl, "JOBKIT_RESULT_TTL"),
        )

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with ``changes`` applied; ``None`` values are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def read_env(
    environ: Mapping[str, str] | None = None, env_file: str | Path | None = ".env"
) -> dict[str, str]:
    """Return ``env_file``'s variables overlaid by ``environ`` (default ``os.environ``)."""
    env: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        env.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    env.update(os.environ if environ is None else environ)
    return env


def _seed_broker_url(env: Mapping[str, str]) -> str:
    host, port = env.get("BEANSTALK_HOST"), env.get("BEANSTALK_PORT")
    if not host and not port:
        return DEFAULT_BROKER_URL
    return f"beanstalk://{host or '127.0.0.1'}:{port or 11300}"


def _number(env: Mapping[str, str], kind: Callable[[str], N], default: N, *names: str) -> N:
    for name in names:
        raw = env.get(name)
        if raw:
            try:
                value = kind(raw)
            except ValueError:
                raise ConfigError(f"{name}={raw!r} is not a number") from None
            if value < 0:
                raise ConfigError(f"{name}={raw!r} must not be negative")
            return value
    return default
