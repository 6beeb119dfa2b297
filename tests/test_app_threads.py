"""App wiring under threads: every thread must see the same broker and backend."""
from __future__ import annotations

import threading
import time
from typing import Any

import pytest

import jobkit.app
from jobkit import App
from jobkit.backends.memory import MemoryBackend
from jobkit.brokers.memory import MemoryBroker


def test_threads_racing_to_first_use_share_one_broker_and_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[object] = []

    def slow(factory: Any) -> Any:
        def build(url: str, **options: Any) -> Any:
            time.sleep(0.02)  # widen the window between "is it None?" and the assignment
            made.append(factory(url))
            return made[-1]
        return build

    monkeypatch.setattr(jobkit.app, "broker_from_url", slow(MemoryBroker))
    monkeypatch.setattr(jobkit.app, "backend_from_url", slow(MemoryBackend))
    app = App("race", broker="memory://", backend="memory://")
    seen: list[tuple[object, object]] = []
    threads = [threading.Thread(target=lambda: seen.append((app.broker, app.backend))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(made) == 2
    assert len(set(seen)) == 1
