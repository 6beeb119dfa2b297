"""Result backends: where job records live. See :mod:`jobkit.backends.base`."""
from __future__ import annotations

from typing import Any

from jobkit.backends.base import Backend
from jobkit.urls import load_class

#: URL scheme -> implementation, imported only when its scheme is used.
BACKENDS = {
    "memory": "jobkit.backends.memory:MemoryBackend",
    "sqlite": "jobkit.backends.sqlite:SQLiteBackend",
    "mongodb": "jobkit.backends.mongo:MongoBackend",
    "mongodb+srv": "jobkit.backends.mongo:MongoBackend",
}


def backend_from_url(url: str, **options: Any) -> Backend:
    """Create the backend for ``url`` (nothing connects until it is first used).

    Raises:
        ConfigError: unknown scheme or malformed URL.
    """
    backend: Backend = load_class(url, BACKENDS, "backend")(url, **options)
    return backend


__all__ = ["BACKENDS", "Backend", "backend_from_url"]
