"""`Instance`: what a service embeds (and the agent drives) to be a Perseus node.

It ties the pieces together: the lifecycle (validated transitions with a
capped history), the lease (the status key, its heartbeat and fencing) and the
activity stream (one entry per transition or error).

Failure policy, in one place:

- An invalid transition raises `InvalidTransition` and changes nothing.
- Every valid transition and every recorded error is applied in memory first;
  Redis only hears about it afterwards. When Redis is unreachable the caller is
  not crashed: the call returns a `Publication` whose `error` says what did not
  reach Redis, and the failure is logged. The status key catches up by itself
  (the next heartbeat tick writes the whole payload). An activity entry is
  never re-sent blindly, because XADD is not idempotent and a lost reply would
  duplicate it; instead the entries that failed are summarised in one `error`
  entry as soon as Redis answers again, so the stream shows the gap.
- When the heartbeat (or a write) finds the status key gone and nobody else
  holding the slot (Redis restarted, or this process stalled past the TTL),
  the key is re-created from memory and an `error` entry says so: the stream
  records that the instance was briefly shown offline. `lastError` is left
  alone, so an instance's own last error is not hidden by an incident Redis
  had.
- When a write finds another holder in the slot, the lease is lost: the call
  raises `LeaseLost` (after applying and logging the change), the heartbeat
  stops, `lastError` records it, an `error` entry is appended, and
  `on_lease_lost` is called once, in its own task, so the owner can fence
  itself. Later calls no longer touch the status key; transitions and errors
  are still appended to the activity stream.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Any, TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from perseus_core import __version__
from perseus_core.plumbing.connection import describe_redis_error
from perseus_core.plumbing.errors import TRANSIENT_ERRORS
from perseus_core.store.activity import ActivityLog
from perseus_core.store.lease import (
    HeartbeatResult,
    Lease,
    LeaseLost,
    make_instance_id,
    unique_start_ms,
    wire_now,
)
from perseus_core.wire.lifecycle import DEFAULT_HISTORY_SIZE, Lifecycle, TransitionRecord
from perseus_core.wire.models import (
    ConnectionState,
    ErrorEntry,
    InstanceStatus,
    StateTransitionEntry,
    validate_exchange_name,
)
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import Clock, format_ts, system_clock

log = logging.getLogger(__name__)

_T = TypeVar("_T")

MAX_ERROR_CHARS = 2_000
"""Longest error message stored in `lastError` and in an error entry."""

MAX_UNSENT_DETAILS = 20
"""How many unwritten activity entries are described individually in the gap note."""

_REDIS_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, RedisError)

LeaseLostCallback = Callable[[LeaseLost], Awaitable[None] | None]
"""`on_lease_lost`: a plain function or a coroutine function."""


class StatusWrite(StrEnum):
    """What happened to the status key after a change in memory."""

    WRITTEN = "written"
    """The key holds the change."""
    NOT_HELD = "not_held"
    """The slot is not held (before claim, after release or loss): memory only, by design."""
    DEFERRED = "deferred"
    """Redis did not answer: the change is in memory and the next heartbeat tick writes it."""


@dataclass(frozen=True, slots=True)
class Publication:
    """What reached Redis after a change that has already been applied in memory.

    Attributes:
        status: the fate of the status key write.
        entry_id: the activity stream ID of the entry, or None if no entry was
            written (none is due, or the append failed: see `error`).
        error: one line per part that did not reach Redis, or None.
    """

    status: StatusWrite
    entry_id: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when everything that was due reached Redis."""
        return self.error is None


def _describe(exc: BaseException, settings: Settings) -> str:
    if isinstance(exc, TRANSIENT_ERRORS):
        return describe_redis_error(settings, exc)
    return f"{type(exc).__name__}: {exc}"


def _summarise(entry: StateTransitionEntry | ErrorEntry) -> str:
    if isinstance(entry, StateTransitionEntry):
        return f"{entry.from_state}->{entry.to_state} at {entry.timestamp}"
    return f"error {entry.error[:80]!r} at {entry.timestamp}"


class Instance:
    """One exchange instance: its lifecycle, its slot lease and its activity log.

    Typical use::

        instance = Instance(redis, settings, exchange_id=1, exchange_name="coinbase")
        await instance.claim()                       # raises ClaimConflict if taken
        await instance.transition(ConnectionState.STARTING)
        ...
        await instance.close()                       # releases the slot

    Args:
        redis: client for short commands; the caller owns and closes it.
        settings: heartbeat interval/TTL, retention, per-call time budget.
        exchange_id: the slot.
        exchange_name: written to the status key and names the activity stream.
        hostname: defaults to this machine's hostname.
        admin_email: operator identity shown by dashboards.
        admin_display_name: operator's display name.
        symbol_count: initial `symbolCount`.
        on_lease_lost: called once (in its own task) when another instance is
            found holding the slot; sync or async. It may call back into this
            instance (transition, close) without deadlocking.
        clock: source of every timestamp written.
        history_size: how many transitions `history` keeps.
    """

    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        *,
        exchange_id: int,
        exchange_name: str,
        hostname: str | None = None,
        admin_email: str | None = None,
        admin_display_name: str | None = None,
        symbol_count: int = 0,
        on_lease_lost: LeaseLostCallback | None = None,
        clock: Clock = system_clock,
        history_size: int = DEFAULT_HISTORY_SIZE,
    ) -> None:
        validate_exchange_name(exchange_name)
        if exchange_id < 0:
            raise ValueError(f"exchange_id must be >= 0, got {exchange_id}")
        if symbol_count < 0:
            raise ValueError(f"symbol_count must be >= 0, got {symbol_count}")
        self._settings = settings
        self._clock = clock
        self._on_lease_lost = on_lease_lost
        self.exchange_id = exchange_id
        self.exchange_name = exchange_name
        self.hostname = hostname or socket.gethostname()
        self.pid = os.getpid()
        now = wire_now(clock)
        self.instance_id = make_instance_id(
            self.hostname, exchange_id, self.pid, unique_start_ms(now)
        )
        status = InstanceStatus(
            exchange_id=exchange_id,
            exchange_name=exchange_name,
            hostname=self.hostname,
            ip_address=None,
            country_code=None,
            admin_email=admin_email,
            admin_display_name=admin_display_name,
            connection_state=ConnectionState.IDLE,
            symbol_count=symbol_count,
            connected_at=None,
            last_heartbeat=now,
            last_state_change=now,
            registered_at=now,
            last_error=None,
            last_error_at=None,
            instance_id=self.instance_id,
            epoch=None,
            pid=self.pid,
            version=__version__,
        )
        self.activity = ActivityLog(redis, settings)
        """The exchange's activity log, for entries beyond transitions and errors."""
        self._lifecycle = Lifecycle(history_size=history_size)
        self._lease = Lease(
            redis,
            settings,
            status,
            clock=clock,
            on_lost=self._lease_lost,
            on_recreated=self._key_recreated,
            after_tick=self._after_tick,
        )
        self._call_timeout_s = settings.socket_timeout_ms / 1000
        self._publish_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._unsent: deque[StateTransitionEntry | ErrorEntry] = deque(maxlen=MAX_UNSENT_DETAILS)
        self._unsent_total = 0
        self._flushing = False
        self.last_write_error: str | None = None
        """The most recent failure to reach Redis from a call (not the heartbeat)."""

    # --- read-only view ---------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """The current lifecycle state (`idle` until the first transition)."""
        return self._lifecycle.state

    @property
    def status(self) -> InstanceStatus:
        """The current in-memory status: what the key holds, or will on the next tick."""
        return self._lease.status

    @property
    def history(self) -> list[TransitionRecord]:
        """The most recent transitions, oldest first (capped at `history_size`)."""
        return self._lifecycle.history

    @property
    def holds_lease(self) -> bool:
        """Whether this instance believes it owns the slot (claimed, not released or lost)."""
        return self._lease.held

    @property
    def epoch(self) -> int | None:
        """The fencing epoch of the current (or last) claim; None before the first."""
        return self._lease.epoch

    @property
    def lease_lost(self) -> LeaseLost | None:
        """How the lease was lost, if it was; cleared by a new claim."""
        return self._lease.lost

    @property
    def heartbeat_count(self) -> int:
        """Successful heartbeat ticks so far."""
        return self._lease.heartbeat_count

    @property
    def heartbeat_failures(self) -> int:
        """Heartbeat ticks that failed on a Redis error (each retried on the next tick)."""
        return self._lease.heartbeat_failures

    @property
    def last_heartbeat_error(self) -> str | None:
        """The heartbeat's latest failure, one line; None once a tick succeeds again."""
        return self._lease.last_error

    @property
    def heartbeat_running(self) -> bool:
        """Whether the heartbeat task is alive."""
        return self._lease.heartbeat_running

    @property
    def unsent_entries(self) -> int:
        """Activity entries that failed to append and are not yet noted in the stream."""
        return self._unsent_total

    # --- lease ------------------------------------------------------------------

    async def claim(self, *, heartbeat: bool = True) -> None:
        """Claim the slot (INCR epoch, SET NX PX) and, by default, start the heartbeat.

        The heartbeat starts unless `heartbeat=False`, because a claim without
        one silently expires after the TTL. Retrying after a lost reply is safe.

        Raises:
            ClaimConflict: another live instance holds the slot.
            RedisUnavailable: Redis did not answer.
        """
        await self._lease.claim()
        if heartbeat:
            self._lease.start()

    def start_heartbeat(self) -> None:
        """Start the heartbeat task (no-op if running).

        Raises:
            PerseusError: the slot is not held.
        """
        self._lease.start()

    async def stop_heartbeat(self) -> None:
        """Stop the heartbeat task after any tick in flight; the key then expires by TTL."""
        await self._lease.stop()

    async def heartbeat(self) -> HeartbeatResult:
        """Run one heartbeat tick now (the task does this every interval).

        Raises:
            redis / OS errors: Redis did not answer.
        """
        return await self._lease.heartbeat()

    async def release(self) -> bool:
        """Stop the heartbeat and delete the status key if it is still ours.

        Never raises on Redis errors: the heartbeat has stopped, so the key
        expires within its TTL anyway; the failure is logged and kept in
        `last_write_error`.

        Returns:
            True if our key was deleted now; False otherwise (nothing held,
            already expired, or Redis did not answer).

        Raises:
            LeaseLost: another instance holds the slot; its key is left alone.
        """
        try:
            return await self._lease.release()
        except LeaseLost:
            raise
        except _REDIS_ERRORS as exc:
            message = _describe(exc, self._settings)
            self.last_write_error = f"status key not deleted (it expires by TTL): {message}"
            log.warning("exchange %s: %s", self.exchange_id, self.last_write_error)
            return False

    async def close(self) -> None:
        """Stop the heartbeat, release the slot if held, and wait for background work.

        Never raises for Redis trouble or a lost lease. Does not close the Redis
        client (the caller owns it).
        """
        await self._lease.stop()
        if self._lease.held:
            try:
                await self.release()
            except LeaseLost:
                pass  # already reported through on_lease_lost
        current = asyncio.current_task()
        pending = [t for t in self._tasks if t is not current]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def __aenter__(self) -> Instance:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- changes ----------------------------------------------------------------

    async def transition(self, to: ConnectionState) -> Publication:
        """Move to `to`: validate, update memory, write the status key, log the entry.

        `lastStateChange` becomes now; `connectedAt` is set on entering
        `active` and cleared otherwise. Without the lease (before claim, after
        release or loss) only the activity entry is written.

        Raises:
            InvalidTransition: WIRE.md 1.2 does not allow it (nothing changed).
            LeaseLost: another instance holds the slot (the transition is applied
                in memory and logged; the key was not touched).
        """
        now = wire_now(self._clock)
        record = self._lifecycle.advance(to, now)
        self._apply(
            connection_state=to,
            last_state_change=now,
            connected_at=now if to is ConnectionState.ACTIVE else None,
        )
        status = self.status
        entry = StateTransitionEntry(
            timestamp=format_ts(now),
            from_state=record.from_state.value,
            to_state=record.to_state.value,
            exchange_id=str(self.exchange_id),
            exchange_name=self.exchange_name,
            hostname=self.hostname,
            ip=status.ip_address or "",
            admin_email=status.admin_email or "",
        )
        return await self._publish(entry)

    async def record_error(self, message: str) -> Publication:
        """Set `lastError`/`lastErrorAt` and append an `error` entry with the current state.

        Raises:
            LeaseLost: as for `transition`.
        """
        now = wire_now(self._clock)
        text = message[:MAX_ERROR_CHARS]
        self._apply(last_error=text, last_error_at=now)
        return await self._publish(self._error_entry(text, now))

    async def set_ip(self, ip: str | None, country: str | None = None) -> Publication:
        """Set `ipAddress` and `countryCode` (no activity entry).

        Raises:
            LeaseLost: as for `transition`.
        """
        self._apply(ip_address=ip, country_code=country)
        return await self._publish(None)

    async def set_symbol_count(self, n: int) -> Publication:
        """Set `symbolCount` (no activity entry).

        Raises:
            ValueError: `n` is negative.
            LeaseLost: as for `transition`.
        """
        if n < 0:
            raise ValueError(f"symbol count must be >= 0, got {n}")
        self._apply(symbol_count=n)
        return await self._publish(None)

    # --- internals --------------------------------------------------------------

    def _apply(self, **changes: Any) -> None:
        self._lease.set_status(self._lease.status.model_copy(update=changes))

    def _error_entry(self, text: str, now: Any) -> ErrorEntry:
        return ErrorEntry(
            timestamp=format_ts(now),
            error=text,
            exchange_id=str(self.exchange_id),
            exchange_name=self.exchange_name,
            hostname=self.hostname,
            ip=self.status.ip_address or "",
            state=self.state.value,
        )

    async def _io(self, awaitable: Awaitable[_T]) -> _T:
        async with asyncio.timeout(self._call_timeout_s):
            return await awaitable

    async def _publish(self, entry: StateTransitionEntry | ErrorEntry | None) -> Publication:
        """Write the status key (if held), then append `entry`; see the module docstring."""
        lost: LeaseLost | None = None
        errors: list[str] = []
        async with self._publish_lock:
            write = StatusWrite.NOT_HELD
            try:
                if await self._lease.publish():
                    write = StatusWrite.WRITTEN
            except LeaseLost as exc:
                lost = exc
            except _REDIS_ERRORS as exc:
                write = StatusWrite.DEFERRED
                errors.append(
                    "status key not updated yet (the heartbeat retries it): "
                    + _describe(exc, self._settings)
                )
            entry_id = None
            if entry is not None:
                entry_id = await self._append(entry, errors)
        if lost is not None:
            raise lost
        error = "; ".join(errors) or None
        if error is not None:
            self.last_write_error = error
            log.warning("exchange %s: %s", self.exchange_id, error)
        return Publication(write, entry_id, error)

    async def _append(
        self, entry: StateTransitionEntry | ErrorEntry, errors: list[str]
    ) -> str | None:
        try:
            await self._flush_unsent()
            return await self._io(self.activity.append(self.exchange_name, entry))
        except _REDIS_ERRORS as exc:
            self._unsent.append(entry)
            self._unsent_total += 1
            errors.append(
                f"{entry.event} entry not written to the activity stream: "
                + _describe(exc, self._settings)
            )
            return None

    async def _flush_unsent(self) -> None:
        """If entries failed earlier, note them in one `error` entry (raises on failure)."""
        if not self._unsent_total:
            return
        total = self._unsent_total
        described = "; ".join(_summarise(e) for e in self._unsent)
        shown = len(self._unsent)
        suffix = f" (the last {shown}: {described})" if shown < total else f": {described}"
        text = (
            f"{total} activity entr{'y' if total == 1 else 'ies'} could not be written "
            f"while Redis was unreachable{suffix}"
        )[:MAX_ERROR_CHARS]
        await self._io(
            self.activity.append(self.exchange_name, self._error_entry(text, wire_now(self._clock)))
        )
        self._unsent.clear()
        self._unsent_total = 0

    def _spawn(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        task = asyncio.get_running_loop().create_task(
            coro, name=f"perseus {self.exchange_name} {what}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error(
                "exchange %s: %s failed",
                self.exchange_id,
                task.get_name(),
                exc_info=task.exception(),
            )

    async def _append_quietly(self, entry: ErrorEntry) -> None:
        errors: list[str] = []
        await self._append(entry, errors)
        if errors:
            log.warning("exchange %s: %s", self.exchange_id, "; ".join(errors))

    # Lease hooks: run inside the lease's critical section, so they only update
    # memory and schedule the rest.

    def _lease_lost(self, exc: LeaseLost) -> None:
        now = wire_now(self._clock)
        text = str(exc)[:MAX_ERROR_CHARS]
        self._apply(last_error=text, last_error_at=now)
        self._spawn(self._after_lease_lost(exc, self._error_entry(text, now)), "lease lost")

    async def _after_lease_lost(self, exc: LeaseLost, entry: ErrorEntry) -> None:
        # The owner's callback first: fencing must not wait on a slow append.
        callback = self._on_lease_lost
        if callback is not None:
            try:
                result = callback(exc)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                log.exception("exchange %s: on_lease_lost callback failed", self.exchange_id)
        await self._append_quietly(entry)

    def _key_recreated(self, status: InstanceStatus) -> None:
        ttl_s = self._settings.heartbeat_ttl_ms / 1000
        text = (
            f"status key exchange:{self.exchange_id}:status had expired (no heartbeat reached "
            f"Redis within the {ttl_s:g}s TTL, or Redis lost its data); re-created it from "
            f"this instance's state ({status.connection_state.value}, epoch {status.epoch})"
        )
        self._spawn(
            self._append_quietly(self._error_entry(text, wire_now(self._clock))), "key re-created"
        )

    def _after_tick(self) -> None:
        if self._unsent_total and not self._flushing:
            self._flushing = True
            self._spawn(self._flush_in_background(), "unsent note")

    async def _flush_in_background(self) -> None:
        try:
            async with self._publish_lock:
                await self._flush_unsent()
        except _REDIS_ERRORS as exc:
            log.debug("exchange %s: unsent note not written yet: %s", self.exchange_id, exc)
        finally:
            self._flushing = False
