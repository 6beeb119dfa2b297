"""Checked by ``mypy --strict`` (tests/test_typing.py): jobs carry their task's result type.

Never imported by pytest (no ``test_`` prefix); each ``assert_type`` fails
the check when a type is not exactly the one named, ``Any`` included.
"""
from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, assert_type

from jobkit import App, AsyncTask, Job, JobContext, JobStatus, Task, current_job

app = App("typing", broker="memory://", backend="memory://")


@app.task
def add(a: int, b: int) -> int:
    return a + b


@app.task(name="greet", queue="typing", max_retries=2)
def greet(name: str) -> str:
    return f"hello {name}"


@app.task
async def fetch(url: str) -> dict[str, int]:
    return {url: len(url)}


@app.task(time_limit=5)
async def slow(seconds: float) -> float:
    ctx = current_job()
    assert_type(ctx, JobContext)
    assert_type(ctx.cancelled, bool)
    assert_type(ctx.attempt, int)
    ctx.progress(0.5, step="half")
    return seconds


def check() -> None:
    as_task: Task[[int, int], int] = add
    assert_type(as_task.delay(1, 2), Job[int])
    assert_type(add.delay(1, 2), Job[int])
    assert_type(add.delay(1, 2).get(), int)
    assert_type(add.apply_async((1, 2), delay=3).get(timeout=1), int)
    assert_type(add(1, 2), int)
    assert_type(greet.delay("x").get(), str)
    as_async: AsyncTask[[str], dict[str, int]] = fetch
    assert_type(as_async.delay("u"), Job[dict[str, int]])
    assert_type(fetch.delay("u").get(), dict[str, int])
    coroutine: Coroutine[Any, Any, dict[str, int]] = fetch("u")
    coroutine.close()
    assert_type(slow.delay(1.0).get(), float)
    assert_type(app.job("some-id").status(), JobStatus)
    assert_type(add.delay(1, 2).status().progress, dict[str, Any] | None)


async def check_direct_calls() -> None:
    assert_type(await fetch("u"), dict[str, int])
    assert_type(await slow(0.0), float)
