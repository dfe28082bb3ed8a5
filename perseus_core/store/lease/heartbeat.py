"""The heartbeat task: one tick every interval, never cut short, never dead on an error."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from enum import StrEnum

from perseus_core.plumbing.connection import describe_redis_error
from perseus_core.plumbing.errors import TRANSIENT_ERRORS
from perseus_core.plumbing.tasks import wait_event
from perseus_core.wire.settings import Settings

log = logging.getLogger(__name__)


class HeartbeatResult(StrEnum):
    """What one heartbeat tick found."""

    REFRESHED = "refreshed"
    """Our key was there; its TTL and lastHeartbeat were refreshed."""
    RECREATED = "recreated"
    """Our key had vanished and nobody held the slot; it was re-created from memory."""
    LOST = "lost"
    """Another instance holds the slot; the lease is gone and the heartbeat stops."""
    NOT_HELD = "not_held"
    """Nothing to do: the slot was never claimed, or was released or lost earlier."""


class HeartbeatLoop:
    """Runs `tick` every heartbeat interval in a task, and counts how it went.

    Late ticks are skipped rather than burst. A tick that raises is counted,
    logged once per failure streak and retried on the next interval: the
    heartbeat must outlive any failure, since a dead heartbeat silently gives
    the slot away when the key expires.

    Args:
        settings: the interval, and the Redis URL for error messages.
        exchange_id: for log lines.
        tick: one heartbeat; LOST or NOT_HELD ends the loop.
        active: whether ticking still makes sense (the slot is held).
    """

    def __init__(
        self,
        settings: Settings,
        exchange_id: int,
        tick: Callable[[], Awaitable[HeartbeatResult]],
        active: Callable[[], bool],
    ) -> None:
        self._settings = settings
        self._exchange_id = exchange_id
        self._tick = tick
        self._active = active
        self._interval_s = settings.heartbeat_interval_ms / 1000
        self._stop_event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failure_streak = 0
        self.count = 0
        """Successful ticks (refreshed or re-created) since creation."""
        self.failures = 0
        """Ticks that failed on an error (and were retried on the next tick)."""
        self.last_error: str | None = None
        """The most recent failure, one line; None after a success."""

    @property
    def running(self) -> bool:
        """Whether the heartbeat task is alive."""
        return self._task is not None and not self._task.done()

    def start(self, name: str) -> None:
        """Start the task called `name` (no-op if it is running)."""
        if self.running:
            return
        self._stop_event = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=name)

    def stop_soon(self) -> None:
        """Let the task end after the tick in flight (if any)."""
        self._stop_event.set()

    async def stop(self) -> None:
        """Stop the task, letting a tick in flight finish first.

        A tick is never cut in half, so a stop does not leave a command sent
        whose outcome nobody looked at. Safe to call from the task itself.
        """
        task = self._task
        if task is None:
            return
        self._stop_event.set()
        if task is asyncio.current_task():
            return
        try:
            await task
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            if self._task is task:
                self._task = None

    def succeeded(self) -> None:
        """Count a successful tick; say so if it ends a failure streak."""
        self.count += 1
        if self._failure_streak:
            log.info(
                "exchange %s: heartbeat back after %d failed tick(s)",
                self._exchange_id,
                self._failure_streak,
            )
        self._failure_streak = 0
        self.last_error = None

    async def _run(self) -> None:
        """Tick every interval until stopped, released or lost. Never dies on errors."""
        interval = self._interval_s
        next_due = time.monotonic() + interval
        while self._active() and not self._stop_event.is_set():
            if await wait_event(self._stop_event, next_due - time.monotonic()):
                return
            now = time.monotonic()
            next_due += interval
            if next_due <= now:  # late (slow tick, busy loop): skip, do not burst
                next_due = now + interval
            try:
                result = await self._tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the heartbeat must outlive any failure
                self._failed(exc)
                continue
            if result in (HeartbeatResult.LOST, HeartbeatResult.NOT_HELD):
                return

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        self._failure_streak += 1
        if isinstance(exc, TRANSIENT_ERRORS):
            message = describe_redis_error(self._settings, exc)
        else:
            message = f"{type(exc).__name__}: {exc}"
        self.last_error = message
        if self._failure_streak == 1:
            log.warning("exchange %s: heartbeat failed, retrying: %s", self._exchange_id, message)
        else:
            log.debug("exchange %s: heartbeat failed again: %s", self._exchange_id, message)
