"""Tasks the workflow tests run, in this process or in worker processes (``-A tests.canvasapp:app``).

Worker processes get their broker from ``CANVAS_BROKER_URL``: a beanstalk
broker that SIGKILLs its own process just before putting a message of the
task named in the file ``CANVAS_DIE_BEFORE_PUT`` (and deletes that file
first, so that only one worker dies). That is the moment between storing a
job's outcome and putting the job it made due, the one the fault tests aim at.
"""
from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from jobkit import App
from jobkit.brokers.beanstalk import BeanstalkBroker
from tests.taskapp import bump


class DyingBroker(BeanstalkBroker):
    """beanstalk, except that it dies as the file ``CANVAS_DIE_BEFORE_PUT`` asks."""

    def put(self, body: bytes, **options: Any) -> int:
        die_before(body)
        return super().put(body, **options)

    def put_many(self, messages: Any) -> list[int]:
        for message in messages:
            die_before(message.body)
        return super().put_many(messages)


def die_before(body: bytes) -> None:
    marker = os.environ.get("CANVAS_DIE_BEFORE_PUT")
    if not marker or not os.path.exists(marker):
        return
    if json.loads(body).get("task") == Path(marker).read_text().strip():
        os.remove(marker)
        os.kill(os.getpid(), signal.SIGKILL)


_url = os.environ.get("CANVAS_BROKER_URL")
app = App("canvas", broker=DyingBroker(_url) if _url else None)


@app.task
def add(a: int, b: int) -> int:
    return a + b


@app.task
def mul(a: int, b: int) -> int:
    return a * b


@app.task
def tsum(numbers: list[int]) -> int:
    return sum(numbers)


@app.task
def counted_sum(numbers: list[int], path: str) -> int:
    """A chord callback that counts its runs in ``path`` (one line per run, across processes)."""
    bump(path)
    return sum(numbers)


@app.task
def counted(value: Any, path: str) -> Any:
    """Count runs in ``path``; return the value it was given."""
    bump(path)
    return value


@app.task
def fail(*args: Any) -> None:
    raise ValueError(f"bad link {args!r}")


@app.task(max_retries=3, retry_backoff=0)
def flaky_add(a: int, b: int, path: str, failures: int) -> int:
    """Fail ``failures`` times (counted in ``path``), then add."""
    if bump(path) <= failures:
        raise ConnectionError("not yet")
    return a + b


@app.task
def die_once(a: int, b: int, marker: str) -> int:
    """SIGKILL the worker process running it when ``marker`` exists (deleting it first); else add."""
    if os.path.exists(marker):
        os.remove(marker)
        os.kill(os.getpid(), signal.SIGKILL)
    return a + b


@app.task
def echo(*args: Any, **kwargs: Any) -> list[Any]:
    return [list(args), kwargs]


@app.task(ttr=5)
def slow_inc(x: int, seconds: float, path: str) -> int:
    """Count runs in ``path``, sleep, return ``x + 1``."""
    bump(path)
    time.sleep(seconds)
    return x + 1
