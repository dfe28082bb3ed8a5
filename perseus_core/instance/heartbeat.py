"""The heartbeat of an instance: its lease's `heartbeat` every interval, in a task.

A tick is one EVALSHA (`Lease.heartbeat`). What a tick that Redis confirmed
means to the rest of the instance is said here, once: the publisher notes the
activity entries it could not write, and every renewal listener (the agent's
child watchdog) hears the lease's new confirmed time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from perseus_core.instance.publication import Publisher
from perseus_core.plumbing.connection import describe_redis_error
from perseus_core.plumbing.errors import TRANSIENT_ERRORS
from perseus_core.plumbing.tasks import raise_if_cancelling, wait_event
from perseus_core.store.lease import HeartbeatResult, Lease
from perseus_core.wire.errors import PerseusError
from perseus_core.wire.settings import Settings

log = logging.getLogger(__name__)

RenewalListener = Callable[[float], None]
"""Told, after each tick Redis confirmed, the lease's `confirmed_at` (monotonic seconds)."""


FAILED_TICK_RETRY_MAX_S = 1.0
"""Longest wait before retrying a failed tick."""


def retry_delay_s(interval_s: float) -> float:
    """How soon a failed tick is retried: a quarter of the interval, at most
    `FAILED_TICK_RETRY_MAX_S` (a refused connection costs next to nothing; a
    hung Redis makes each try last its socket timeout anyway), at least 50 ms."""
    return max(0.05, min(interval_s / 4, FAILED_TICK_RETRY_MAX_S))


class Heartbeat:
    """Ticks a lease every heartbeat interval, and counts how it went.

    Late ticks are skipped rather than burst. A tick that raises is counted,
    logged once per failure streak and retried soon (`retry_delay_s`), not a
    whole interval later: when Redis answers again, the lease is renewed at
    once, and so is the child watchdog's deadline, which an outage has
    brought close (the watchdog must not kill a child when Redis came back
    in time). The heartbeat must outlive any failure, since a dead heartbeat
    silently gives the exchange away when the key expires. The task ends
    when the lease is lost or no longer held.

    Args:
        lease: the lease to keep.
        publisher: told after each confirmed tick that Redis answers again.
        settings: the interval, and the Redis URL for error messages.
    """

    def __init__(self, lease: Lease, publisher: Publisher, settings: Settings) -> None:
        self._lease = lease
        self._publisher = publisher
        self._settings = settings
        self._interval_s = settings.heartbeat_interval_ms / 1000
        self._retry_s = retry_delay_s(self._interval_s)
        self._stop_event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listeners: list[RenewalListener] = []
        self._failure_streak = 0
        self.count = 0
        """Ticks Redis confirmed (refreshed or re-created) since creation."""
        self.failures = 0
        """Ticks that failed on an error (and were retried on the next interval)."""
        self.last_error: str | None = None
        """The most recent failure, one line; None after a success."""

    @property
    def running(self) -> bool:
        """Whether the heartbeat task is alive."""
        return self._task is not None and not self._task.done()

    def on_renewal(self, listener: RenewalListener) -> None:
        """Call `listener` after every tick Redis confirmed, for as long as this
        heartbeat lives. It runs in the heartbeat's task: it must not block."""
        self._listeners.append(listener)

    def start(self) -> None:
        """Start the task (no-op if it is running).

        Raises:
            PerseusError: the exchange is not held (claim it first).
        """
        if not self._lease.held:
            raise PerseusError(
                f"cannot heartbeat {self._lease.key}: the exchange is not held (claim it)"
            )
        if self.running:
            return
        self._stop_event = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"perseus heartbeat {self._lease.key}"
        )

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

    async def tick(self) -> HeartbeatResult:
        """One heartbeat now (the task runs one every interval).

        Raises:
            redis / OS errors: Redis did not answer.
        """
        result = await self._lease.heartbeat()
        if result in (HeartbeatResult.REFRESHED, HeartbeatResult.RECREATED):
            self._confirmed()
        return result

    def _confirmed(self) -> None:
        """Count a tick Redis confirmed and tell whoever waits for one."""
        self.count += 1
        if self._failure_streak:
            log.info(
                "exchange %s: heartbeat back after %d failed tick(s)",
                self._lease.exchange_id,
                self._failure_streak,
            )
        self._failure_streak = 0
        self.last_error = None
        self._publisher.after_tick()
        confirmed_at = self._lease.confirmed_at
        if confirmed_at is None:
            return
        for listener in self._listeners:
            try:
                listener(confirmed_at)
            except Exception:
                log.exception("exchange %s: a renewal listener failed", self._lease.exchange_id)

    async def _run(self) -> None:
        """Tick every interval until stopped, released or lost. Never dies on errors."""
        interval = self._interval_s
        next_due = time.monotonic() + interval
        while self._lease.held and not self._stop_event.is_set():
            if await wait_event(self._stop_event, next_due - time.monotonic()):
                return
            now = time.monotonic()
            next_due += interval
            if next_due <= now:  # late (slow tick, busy loop): skip, do not burst
                next_due = now + interval
            try:
                result = await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelling()  # a cancellation redis-py turned into an error
                self._failed(exc)
                next_due = min(next_due, time.monotonic() + self._retry_s)
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
        exchange_id = self._lease.exchange_id
        if self._failure_streak == 1:
            log.warning("exchange %s: heartbeat failed, retrying: %s", exchange_id, message)
        else:
            log.debug("exchange %s: heartbeat failed again: %s", exchange_id, message)
