"""Tasks the tests run in real worker processes (``-A tests.taskapp:app``)."""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from jobkit import App
from jobkit.errors import Retry

app = App("tests")


@app.task
def add(a: int, b: int) -> int:
    return a + b


@app.task
def boom(message: str = "boom") -> None:
    raise ValueError(message)


@app.task
def sleepy(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def bump(path: str) -> int:
    """Count calls in a file, across processes (one line per call)."""
    with open(path, "a") as f:
        f.write(f"{os.getpid()}\n")
    return len(Path(path).read_text().splitlines())


@app.task(max_retries=3, retry_backoff=0)
def flaky(path: str, failures: int) -> int:
    """Fail ``failures`` times, then return the number of calls."""
    calls = bump(path)
    if calls <= failures:
        raise ConnectionError(f"failure {calls}")
    return calls


@app.task(max_retries=2, retry_backoff=0)
def always_fails(path: str) -> None:
    bump(path)
    raise RuntimeError("always")


@app.task(max_retries=5, retry_backoff=0, retry_on=ConnectionError)
def picky(path: str) -> None:
    bump(path)
    raise KeyError("not retried")


@app.task(max_retries=1)
def asks_retry(path: str) -> int:
    calls = bump(path)
    if calls == 1:
        raise Retry(delay=1, reason="not yet")
    return calls


@app.task(time_limit=1, ttr=5)
def overruns(path: str, seconds: float) -> str:
    bump(path)
    time.sleep(seconds)
    return "finished"


@app.task(ttr=2)
def long_job(path: str, seconds: float) -> float:
    bump(path)
    time.sleep(seconds)
    return seconds


@app.task(max_retries=2, ttr=2)
def crash(path: str) -> None:
    """Kill the worker process running it, every time."""
    bump(path)
    os._exit(3)


@app.task
def unserialisable() -> object:
    return {1, 2}


@app.task
def tagged(path: str, tag: str, seconds: float = 0.0) -> str:
    """Append ``tag`` to a file (one line per run, across processes), then sleep."""
    with open(path, "a") as f:
        f.write(f"{tag}\n")
    time.sleep(seconds)
    return tag


@app.task(max_retries=3, retry_backoff=1.0)
def fails_with_backoff(path: str) -> None:
    """Record when each attempt started, then raise: every attempt fails."""
    with open(path, "a") as f:
        f.write(f"{time.time()}\n")
    raise RuntimeError("fails every time")


@app.task
def fails_until(path: str, flag: str) -> int:
    """Fail (no retries) until the file ``flag`` exists; return the number of calls."""
    calls = bump(path)
    if not os.path.exists(flag):
        raise RuntimeError(f"{flag} is missing")
    return calls


@app.task
def slow_first_run(path: str, seconds: float) -> int:
    """Sleep ``seconds`` on the first run only; return how many runs there were."""
    calls = bump(path)
    if calls == 1:
        time.sleep(seconds)
    return calls


class Unprintable(Exception):
    """An exception that cannot be turned into text: ``str()`` and ``repr()`` raise."""

    def __str__(self) -> str:
        raise RuntimeError("no text for this one")

    def __repr__(self) -> str:
        raise RuntimeError("no repr either")


class BadNotes(Exception):
    """An exception whose traceback cannot be formatted (reading ``__notes__`` raises)."""

    @property
    def __notes__(self) -> list[str]:
        raise RuntimeError("no notes")


ODD_EXCEPTIONS: dict[str, Callable[[], BaseException]] = {
    "unprintable": Unprintable,
    "bad_notes": lambda: BadNotes("notes"),
    "surrogate": lambda: ValueError("lone \ud800 and NUL \0"),
    "system_exit": lambda: SystemExit(3),
    "keyboard_interrupt": KeyboardInterrupt,
    "base_exception": lambda: BaseException("base"),
}


@app.task
def raises_oddly(kind: str) -> None:
    """Raise one of :data:`ODD_EXCEPTIONS`: none of them may take a worker slot down."""
    raise ODD_EXCEPTIONS[kind]()
