"""A small App for the API tests, and helpers that read like the assertions.

``app`` (module level) is what ``jobkit api -A tests.api.app:app`` serves in
the real-server tests; the fixtures in ``conftest.py`` build a fresh App per test.
"""
from __future__ import annotations

import json
from typing import Any

import falcon.testing

from jobkit import App
from jobkit.runner import Runner
from examples.hashing import hash_payload as seed_hash

JSON = {"Content-Type": "application/json"}


def make_app(broker: str = "memory://", backend: str = "memory://") -> App:
    """An App with the seed's task and a few others, on in-process broker and backend by default."""
    app = App("api-test", broker=broker, backend=backend)
    app.task(name="hash_payload")(seed_hash.fn)

    @app.task
    def echo(value: Any) -> Any:
        """Return the value unchanged."""
        return value

    @app.task(queue="math", priority=10)
    def add(a: int, b: int) -> int:
        return a + b

    @app.task
    def boom() -> None:
        raise ValueError("boom")

    return app


app = make_app()


def post(client: falcon.testing.TestClient, path: str, body: Any = None, *, raw: bytes | None = None,
         content_type: str | None = "application/json", **headers: str) -> falcon.testing.Result:
    """POST ``body`` as JSON (or ``raw`` bytes) with ``content_type``."""
    data = raw if raw is not None else json.dumps(body).encode()
    all_headers = dict(headers)
    if content_type is not None:
        all_headers["Content-Type"] = content_type
    return client.simulate_post(path, body=data, headers=all_headers)


def work(app: App, queues: tuple[str, ...] = ("default",)) -> None:
    """Run one job the way a worker does (reserve, claim, run, store, settle)."""
    runner = Runner(app, "test-worker")
    consumer = app.broker.consumer(list(queues))
    try:
        delivery = consumer.reserve(1)
        assert delivery is not None, "no job to run"
        attempt = runner.prepare(consumer, delivery)
        if attempt is not None:
            runner.settle(consumer, attempt, runner.execute(attempt))
    finally:
        consumer.close()


def enqueued(app: App) -> int:
    """How many jobs the broker ever took plus how many records exist."""
    taken = sum(counts["total"] for counts in app.broker.stats().values())
    return taken + sum(app.backend.counts().values())


def assert_error(result: falcon.testing.Result, status: int) -> None:
    """The status, and a Falcon-style JSON error body."""
    assert result.status_code == status, result.text
    assert result.headers["content-type"].startswith("application/json")
    assert isinstance(result.json["title"], str) and result.json["title"]


def assert_refused(client: falcon.testing.TestClient, app: App, result: falcon.testing.Result,
                   status: int, headers: dict[str, str] | None = None) -> None:
    """A JSON 4xx, nothing enqueued or recorded, and the API still answers."""
    assert 400 <= status < 500
    assert_error(result, status)
    assert enqueued(app) == 0
    assert client.simulate_get("/healthz").status_code == 200
    assert client.simulate_get("/v1/queues", headers=headers).status_code == 200
