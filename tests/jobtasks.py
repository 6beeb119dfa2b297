"""Tasks that look inside their job: progress, cancellation, async (``-A tests.jobtasks:app``).

Each task that a test watches from outside writes lines to a file named by
its first argument: one line ``start <pid>`` when it starts, and what it saw.
"""
from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import Any

from jobkit import App, current_job

app = App("jobtasks")
TICK_S = 0.01  # how often a cooperative task looks at its job


def note(path: str, text: str) -> None:
    with open(path, "a") as f:
        f.write(f"{text}\n")


def lines(path: str | Path) -> list[str]:
    return Path(path).read_text().splitlines() if Path(path).exists() else []


def wait_for_file(flag: str, limit_s: float = 60.0) -> None:
    deadline = time.monotonic() + limit_s
    while not os.path.exists(flag) and time.monotonic() < deadline:
        time.sleep(TICK_S)


@app.task
def whoami() -> dict[str, Any]:
    ctx = current_job()
    return {"id": ctx.id, "attempt": ctx.attempt, "cancelled": ctx.cancelled}


@app.task(max_retries=2, retry_backoff=0)
def attempt_until(n: int) -> int:
    """Fail until the job's attempt number reaches ``n``; return it."""
    attempt = current_job().attempt
    if attempt < n:
        raise ConnectionError(f"attempt {attempt}")
    return attempt


@app.task
def reports_progress(path: str, flag: str) -> str:
    """Report 40 % with meta, then wait (up to a minute) for ``flag`` to exist."""
    note(path, f"start {os.getpid()}")
    current_job().progress(0.4, step="resize", done=4, of=10)
    wait_for_file(flag)
    current_job().progress(1.0, step="done")
    return "ok"


@app.task
def tight_progress(steps: int) -> int:
    """Report progress ``steps`` times as fast as it can."""
    ctx = current_job()
    for i in range(1, steps + 1):
        ctx.progress(i / steps, i=i)
    return steps


@app.task(ttr=2)
def touches(path: str, seconds: float) -> str:
    """Run past its TTR, touching its job every half second."""
    note(path, f"start {os.getpid()}")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        current_job().touch()
        time.sleep(0.5)
    return "touched"


@app.task
def cooperative(path: str) -> str:
    """Work until the job is cancelled, then say so and stop."""
    note(path, f"start {os.getpid()}")
    ctx = current_job()
    deadline = time.monotonic() + 120
    while not ctx.cancelled and time.monotonic() < deadline:
        time.sleep(TICK_S)
    note(path, "saw cancelled" if ctx.cancelled else "never cancelled")
    return "stopped"


@app.task
def sleeps_forever(path: str) -> None:
    """Ignore everything, for an hour."""
    note(path, f"start {os.getpid()}")
    time.sleep(3600)


@app.task
async def async_cooperative(path: str) -> str:
    """Await until the job is cancelled (``CancelledError``), then say so."""
    note(path, f"start {os.getpid()}")
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        note(path, f"cancelled; flag {current_job().cancelled}")
        raise
    return "never"


@app.task
async def async_ignores_cancel(path: str) -> None:
    """Swallow every cancellation and await on, for an hour."""
    note(path, f"start {os.getpid()}")
    deadline = time.monotonic() + 3600
    while time.monotonic() < deadline:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            note(path, "ignored a cancellation")


@app.task
async def async_whoami(delay_s: float = 0.0) -> dict[str, Any]:
    await asyncio.sleep(delay_s)
    ctx = current_job()
    ctx.progress(1.0, where="async")
    return {"id": ctx.id, "attempt": ctx.attempt, "thread": threading.get_ident()}


@app.task(time_limit=1, max_retries=1, retry_backoff=0)
async def async_overruns(path: str) -> str:
    note(path, f"start {os.getpid()}")
    await asyncio.sleep(60)
    return "finished"


@app.task(max_retries=3, retry_backoff=0)
async def async_flaky(path: str, failures: int) -> int:
    note(path, "call")
    calls = len(lines(path))
    if calls <= failures:
        raise ConnectionError(f"failure {calls}")
    return calls


@app.task
async def gather_sleeps(n: int, seconds: float) -> int:
    """Await ``n`` sleeps at once; return how many ended."""
    done = await asyncio.gather(*(asyncio.sleep(seconds, result=1) for _ in range(n)))
    return sum(done)


@app.task
async def async_sleep(seconds: float) -> float:
    await asyncio.sleep(seconds)
    return seconds


class Rendezvous:
    """``n`` jobs wait for one another on the worker's event loop (one process only)."""

    def __init__(self) -> None:
        self.arrived = 0
        self.threads: set[int] = set()
        self.event: asyncio.Event | None = None


RENDEZVOUS = Rendezvous()


@app.task
async def meet(n: int, limit_s: float = 60.0) -> int:
    """Return once ``n`` jobs of this task are running at the same time."""
    here = RENDEZVOUS
    if here.event is None:
        here.event = asyncio.Event()
    here.arrived += 1
    here.threads.add(threading.get_ident())
    if here.arrived >= n:
        here.event.set()
    await asyncio.wait_for(here.event.wait(), limit_s)
    return here.arrived


@app.task
def sync_in_any_pool(x: int) -> int:
    return x * 2


@app.task
def pid() -> int:
    return os.getpid()
