"""The one interruptible wait, the one group of background tasks, reads side by side
that end together, and a hidden cancellation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any


async def wait_event(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait up to `timeout_s` for `event`; True as soon as it is set, else False.

    This is how every Perseus loop sleeps: a stop, a close or a lost lease
    sets the event and the sleeper wakes at once instead of finishing its nap.
    """
    if event.is_set():
        return True
    if timeout_s <= 0:
        return False
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout_s)
    return event.is_set()


def raise_if_cancelling() -> None:
    """Raise CancelledError when the current task is being cancelled.

    A cancellation that lands while redis-py is inside a timeout of its own
    can come out of the call as a Redis error instead (Python 3.11). A loop
    that retries after Redis errors calls this first, so that a cancelled task
    ends instead of retrying until something else stops it.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def gather_all(*reads: Coroutine[Any, Any, Any]) -> list[Any]:
    """`asyncio.gather` of `reads` that never returns or raises before all of them have ended.

    `asyncio.gather` raises as soon as one fails or is cancelled and leaves
    the others running. A read left running meets the client that its
    caller closes next, and can open a connection that nothing closes. Here
    the others are cancelled and awaited first; what one raised is raised.
    """
    tasks = [asyncio.ensure_future(read) for read in reads]
    try:
        return await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            # Once only: a second cancellation of a read still unwinding from
            # the first (`gather`'s own) would cut its clean-up short.
            if not task.done() and not task.cancelling():
                task.cancel()
        await asyncio.wait(tasks)
        for task in tasks:
            if not task.cancelled():
                task.exception()  # seen: asyncio would log a second failure as unretrieved


class TaskGroup:
    """Background tasks owned by one component: spawned by name, failures logged,
    all cancelled and awaited by `aclose()`.

    Unlike `asyncio.TaskGroup`, one failing task does not cancel the others: a
    failed notification send must not stop the heartbeat. A failure is never
    silent either: it is logged with its traceback to `logger`.
    """

    def __init__(self, logger: logging.Logger, owner: str = "") -> None:
        self._log = logger
        self._owner = owner
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run `coro` in the background as a task called `name`."""
        task = asyncio.create_task(coro, name=f"{self._owner} {name}".strip())
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self._log.error("%s failed: %s", task.get_name(), exc, exc_info=exc)

    async def join(self) -> None:
        """Wait, without cancelling, until every task has finished: work that
        must complete (an entry being written) is not cut short. A task of the
        group may call this; it does not wait for itself."""
        current = asyncio.current_task()
        pending = [task for task in self._tasks if task is not current]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel every task still running and wait until all have finished."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()
