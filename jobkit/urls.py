"""URL-scheme registries: how a broker or backend URL becomes an object."""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from jobkit.errors import ConfigError


def scheme_of(url: str) -> str:
    """Return the scheme of ``url`` (``"beanstalk"`` for ``beanstalk://h:p``).

    Raises:
        ConfigError: ``url`` does not parse (``beanstalk://[::1``).
    """
    try:
        return urlsplit(url).scheme.lower() if "://" in url else ""
    except ValueError as exc:
        raise ConfigError(f"{url!r} is not a URL: {exc}") from None


def load_class(url: str, registry: Mapping[str, str], kind: str) -> Any:
    """Import the class registered for ``url``'s scheme.

    Args:
        url: the configured URL.
        registry: scheme -> ``"module:Class"``, imported only when chosen.
        kind: ``"broker"`` or ``"backend"``, for the error message.

    Raises:
        ConfigError: the scheme is not registered; the message lists the known ones.
    """
    scheme = scheme_of(url)
    target = registry.get(scheme)
    if target is None:
        known = ", ".join(f"{name}://" for name in sorted(registry))
        raise ConfigError(f"unknown {kind} URL {url!r}: known schemes are {known}")
    module_name, _, attr = target.partition(":")
    return getattr(importlib.import_module(module_name), attr)
