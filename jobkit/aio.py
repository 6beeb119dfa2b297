"""Running a task on an event loop: its time limit and its cancellation.

Every pool runs ``async def`` tasks through :func:`call_async`: the thread
and process pools on a loop of the job's own (``asyncio.run``), the asyncio
pool (:mod:`jobkit.asyncpool`) on its one shared loop. The time limit is an
``asyncio.timeout`` around the coroutine, and a cancellation of the job,
seen by the worker's heartbeat in another thread, cancels the asyncio task
that awaits it, so that the coroutine gets ``CancelledError`` at its next
``await``. A sync task run on a loop (asyncio pool) runs in the loop's
default executor, with the same limit on the wait for it.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from jobkit.errors import TimeLimitExceeded

if TYPE_CHECKING:
    from jobkit.context import JobContext
    from jobkit.task import Task


async def call_async(context: JobContext, task: Task[Any, Any], args: Sequence[Any],
                     kwargs: Mapping[str, Any]) -> Any:
    """Await ``task`` with ``args`` and ``kwargs`` in the current asyncio task.

    Raises:
        TimeLimitExceeded: it ran longer than the task's ``time_limit``.
        asyncio.CancelledError: the job was cancelled.
        BaseException: whatever the task raised.
    """
    loop = asyncio.get_running_loop()
    current = asyncio.current_task()
    if current is not None:
        context.on_cancel(lambda: _cancel_from_any_thread(loop, current))
    limit = task.options.time_limit
    try:
        async with asyncio.timeout(limit) as scope:
            if task.is_async:
                return await task.fn(*args, **kwargs)
            return await asyncio.to_thread(task.fn, *args, **kwargs)
    except TimeoutError:
        if scope.expired():
            raise TimeLimitExceeded(f"ran longer than its time limit of {limit} s") from None
        raise


def _cancel_from_any_thread(loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: the job is over
        loop.call_soon_threadsafe(task.cancel)
