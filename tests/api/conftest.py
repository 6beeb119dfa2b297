"""Fixtures of the API tests: a fresh App on the in-process broker and backend, and a client."""
from __future__ import annotations

from collections.abc import Iterator

import falcon.testing
import pytest

from jobkit import App
from jobkit.api import create_app
from jobkit.config import Settings
from tests.api.app import make_app


@pytest.fixture
def jobkit_app() -> Iterator[App]:
    instance = make_app()
    yield instance
    instance.close()


@pytest.fixture
def settings() -> Settings:
    return Settings(broker_url="memory://", backend_url="memory://")


@pytest.fixture
def client(settings: Settings, jobkit_app: App) -> falcon.testing.TestClient:
    return falcon.testing.TestClient(create_app(settings, jobkit_app))
