"""Letting `aclose()`, called from any task, interrupt a tail's Redis call."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from perseus_core.plumbing.tasks import raise_if_cancelling, wait_event

_T = TypeVar("_T")


class Closed(Exception):
    """Raised inside the tail when `aclose()` interrupted an operation."""


class CloseGuard:
    """Runs one operation at a time so that `close()` can cut it short.

    The iterating task and the closing task are usually different: the
    closer cancels the operation's own task, and the iterating task sees
    `Closed` instead of a cancellation that is not its own.
    """

    def __init__(self) -> None:
        self.closed = False
        self._closing = asyncio.Event()
        self._inflight: asyncio.Future[Any] | None = None

    async def run(self, operation: Callable[[], Awaitable[_T]]) -> _T:
        """Run `operation` as its own task; raises `Closed` once closed.

        A cancellation of the calling task itself propagates.
        """
        if self.closed:
            raise Closed

        async def run() -> _T:
            return await operation()

        current = asyncio.current_task()
        cancelling_before = current.cancelling() if current is not None else 0
        task = asyncio.ensure_future(run())
        self._inflight = task
        try:
            result = await task
        except asyncio.CancelledError:
            if self.closed and current is not None and current.cancelling() == 0:
                raise Closed from None
            raise
        finally:
            self._inflight = None
        # On Python 3.11 redis-py's internal `wait_for` can swallow the
        # cancellation it forwards to the inner task, which then returns
        # normally: re-raise it here so Ctrl-C and task.cancel() still stop us.
        if current is not None and current.cancelling() > cancelling_before:
            raise asyncio.CancelledError
        return result

    async def sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when closed; never while cancelled (redis-py
        can swallow a cancellation and return the reply, and Python 3.11's
        `wait_for` loses one that lands as the sleep ends)."""
        raise_if_cancelling()
        await wait_event(self._closing, seconds)
        raise_if_cancelling()

    async def close(self) -> None:
        """Mark closed, wake any sleeper and cancel the operation in flight."""
        self.closed = True
        self._closing.set()
        inflight = self._inflight
        if inflight is not None and not inflight.done():
            inflight.cancel()
            await asyncio.wait({inflight})
