"""Small helpers shared by the tests."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(probe: Callable[[], T], timeout_s: float = 10.0, what: str = "condition") -> T:
    """Poll ``probe`` until it returns something truthy (errors count as falsy); return that.

    Raises:
        AssertionError: still falsy after ``timeout_s`` seconds.
    """
    deadline = time.monotonic() + timeout_s
    pause = 0.005
    last: object = None
    while True:
        try:
            value = probe()
            if value:
                return value
            last = value
        except Exception as exc:  # noqa: BLE001 - not ready yet
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached after {timeout_s} s (last: {last!r})")
        time.sleep(pause)
        pause = min(pause * 2, 0.1)
