"""Tasks with limits and a schedule, run by real worker and beat processes (``-A tests.limitapp:app``)."""
from __future__ import annotations

import os
import time

from jobkit import App

app = App("limits")
TICK_QUEUE = "ticks"


@app.task(rate_limit="10/s", queue="rated")
def rated(i: int) -> int:
    return i


@app.task(concurrency_limit=2, concurrency_key="account", queue="keyed")
def keyed(account: str, seconds: float) -> str:
    time.sleep(seconds)
    return account


@app.task(concurrency_limit=1, ttr=3, queue="single")
def single(path: str, seconds: float) -> int:
    """Hold the task's one slot for ``seconds`` on the first run, not after (count runs in ``path``)."""
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    with open(path) as f:
        runs = len(f.read().splitlines())
    if runs == 1:
        time.sleep(seconds)
    return runs


@app.periodic(every=1, queue=TICK_QUEUE)
def tick() -> None:
    """Append a line to $LIMITS_TICK_LOG per run."""
    with open(os.environ["LIMITS_TICK_LOG"], "a") as f:
        f.write(f"{time.time()}\n")
