"""A command server's hold on Redis: connected or not, and retrying until closed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from perseus_core.plumbing.connection import describe_redis_error
from perseus_core.plumbing.errors import TRANSIENT_ERRORS
from perseus_core.plumbing.tasks import wait_event
from perseus_core.store.control.common import new_backoff
from perseus_core.wire.settings import Settings

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class Stopped(Exception):
    """Raised inside the server when it is closing and Redis is unreachable."""


class ServerLink:
    """Tracks whether the last Redis call succeeded, logs each outage once, and
    retries writes with backoff until they succeed or the server closes.

    Args:
        settings: for error messages naming the Redis target.
        exchange_name: for log lines.
    """

    def __init__(self, settings: Settings, exchange_name: str) -> None:
        self._settings = settings
        self._exchange_name = exchange_name
        self.closing = asyncio.Event()
        self.connected = False
        self.last_error: str | None = None

    def mark_ok(self) -> None:
        """The last call succeeded; say so once after an outage."""
        if not self.connected and self.last_error is not None:
            log.info("command server for %s reconnected", self._exchange_name)
        self.connected = True
        self.last_error = None

    def mark_down(self, exc: BaseException) -> None:
        """The last call failed; log it when it starts an outage."""
        message = describe_redis_error(self._settings, exc)
        if self.connected or self.last_error is None:
            log.warning("command server for %s: %s", self._exchange_name, message)
        self.connected = False
        self.last_error = message

    async def pause(self, seconds: float) -> None:
        """Sleep, but wake up at once when the server is closed."""
        await wait_event(self.closing, seconds)

    async def retry(self, op: Callable[[], Awaitable[_T]]) -> _T:
        """Run a Redis operation until it succeeds; give up only when closing.

        Raises:
            Stopped: the server is closing and Redis did not answer.
        """
        backoff = new_backoff()
        while True:
            try:
                result = await op()
            except TRANSIENT_ERRORS as exc:
                self.mark_down(exc)
                if self.closing.is_set():
                    raise Stopped from exc
                await self.pause(backoff.next_delay())
                continue
            self.mark_ok()
            return result
