"""`Instance`: what a service embeds (and the agent drives) to be a Perseus node.

It ties the pieces together: the lifecycle (validated transitions with a
capped history), the lease (the status key, its heartbeat and fencing) and the
activity stream (one entry per transition or error, published by
`Publisher`).

Typical use::

    instance = Instance(redis, settings, exchange_id=1, exchange_name="coinbase")
    await instance.claim()                       # raises ClaimConflict if taken
    await instance.transition(ConnectionState.STARTING)
    ...
    await instance.close()                       # releases the exchange

Failure policy, in one place:

- A claim that makes this instance the exchange's holder after another process
  (the last holder on record, or the one whose key it took over) is noted
  in a `holder` entry in Perseus's own stream (`_note_holder`,
  docs/wire-format.md 2.7); a failure to write it is only logged.
- An invalid transition raises `InvalidTransition` and changes nothing.
- Every valid transition and every recorded error is applied in memory first;
  Redis only hears about it afterwards. When Redis is unreachable the caller is
  not crashed: the call returns a `Publication` whose `error` says what did not
  reach Redis, and the failure is logged (`perseus_core.instance.publication`
  says how the status key and the activity stream catch up).
- A status key found gone with the exchange free is re-created from memory, and
  an `error` entry says so (`lastError` is left alone: the incident is Redis's)
  and why: it expired, it was deleted by another writer while its TTL still
  ran (a Livermore server's deregistration; named when the shared stream
  shows who), or Redis lost its data (`KeyRecreated`).
- When a write finds another holder of the exchange, the lease is lost: the call
  raises `LeaseLost` (after applying and logging the change), the heartbeat
  stops, `lastError` records it, an `error` entry is appended, and
  `on_lease_lost` is called once, in its own task, so the embedding service
  can fence itself. Later calls no longer touch the status key; transitions
  and errors are still appended, to Perseus's own stream: only the slot's
  holder writes to `logs:network:{name}` (see `Publisher`).

What an instance is made of is public, so a caller reads each thing where it
lives: `instance.lease` (held, epoch, lost, confirmed_at), `instance.heartbeat`
(running, count, failures, last_error; start, stop, tick) and
`instance.publisher` (unsent_entries, last_write_error).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from types import TracebackType
from typing import Any

from perseus_core import __version__
from perseus_core.instance.heartbeat import Heartbeat
from perseus_core.instance.publication import (
    MAX_ERROR_CHARS,
    Publication,
    Publisher,
    describe_failure,
)
from perseus_core.plumbing.errors import REDIS_ERRORS
from perseus_core.plumbing.processes import process_scope
from perseus_core.plumbing.tasks import TaskGroup
from perseus_core.plumbing.topology import RedisClient
from perseus_core.store.activity import ActivityLog
from perseus_core.store.lease import (
    KeyRecreated,
    Lease,
    LeaseLost,
    Vanishing,
    make_instance_id,
    unique_start_ms,
    wire_now,
)
from perseus_core.wire.lifecycle import DEFAULT_HISTORY_SIZE, Lifecycle, TransitionRecord
from perseus_core.wire.models import (
    MAX_PID,
    ConnectionState,
    ErrorEntry,
    HolderEntry,
    InstanceStatus,
    StateTransitionEntry,
    holder_process,
    validate_exchange_name,
)
from perseus_core.wire.settings import Settings
from perseus_core.wire.text import clean
from perseus_core.wire.timeutil import Clock, format_ts, system_clock

log = logging.getLogger(__name__)

MAX_TOKEN_CHARS = 400
"""Longest previous holder token copied from the stream into a `holder` entry."""

LeaseLostCallback = Callable[[LeaseLost], Awaitable[None] | None]
"""`on_lease_lost`: a plain function or a coroutine function."""


def validate_identity(exchange_id: int, exchange_name: str, symbol_count: int) -> None:
    """Refuse what would make a bad status key or activity stream.

    Raises:
        ValueError: a bad exchange name, a negative exchange id or symbol count.
    """
    validate_exchange_name(exchange_name)
    if exchange_id < 0:
        raise ValueError(f"exchange_id must be >= 0, got {exchange_id}")
    if symbol_count < 0:
        raise ValueError(f"symbol_count must be >= 0, got {symbol_count}")


def initial_status(
    exchange_id: int,
    exchange_name: str,
    hostname: str,
    instance_id: str,
    now: datetime,
    **fields: Any,
) -> InstanceStatus:
    """The status of a new instance: idle, nothing claimed, no error."""
    return InstanceStatus(
        exchange_id=exchange_id,
        exchange_name=exchange_name,
        hostname=hostname,
        ip_address=None,
        country_code=None,
        connection_state=ConnectionState.IDLE,
        connected_at=None,
        last_heartbeat=now,
        last_state_change=now,
        registered_at=now,
        last_error=None,
        last_error_at=None,
        instance_id=instance_id,
        epoch=None,
        pid=os.getpid(),
        pid_scope=process_scope(),
        version=__version__,
        **fields,
    )


class Instance:
    """One exchange instance: its lifecycle, its lease and its activity log.

    Args:
        redis: client for short commands; the caller owns and closes it.
        settings: heartbeat interval/TTL, retention, per-call time budget.
        exchange_id: the exchange.
        exchange_name: written to the status key and names the activity stream.
        hostname: defaults to this machine's hostname.
        admin_email, admin_display_name: operator identity shown by dashboards.
        symbol_count: initial `symbolCount`.
        on_lease_lost: called once (in its own task) when another instance is
            found holding the exchange; sync or async. It may call back into this
            instance (transition, close) without deadlocking.
        clock: source of every timestamp written.
        history_size: how many transitions `history` keeps.
    """

    def __init__(
        self,
        redis: RedisClient,
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
        validate_identity(exchange_id, exchange_name, symbol_count)
        self._settings = settings
        self._clock = clock
        self.exchange_id = exchange_id
        self.exchange_name = exchange_name
        self.hostname = hostname or socket.gethostname()
        self.pid = os.getpid()
        now = wire_now(clock)
        self.instance_id = make_instance_id(
            self.hostname, exchange_id, self.pid, unique_start_ms(now)
        )
        status = initial_status(
            exchange_id,
            exchange_name,
            self.hostname,
            self.instance_id,
            now,
            admin_email=admin_email,
            admin_display_name=admin_display_name,
            symbol_count=symbol_count,
            ttl_ms=settings.heartbeat_ttl_ms,
            heartbeat_interval_ms=settings.heartbeat_interval_ms,
        )
        self.activity = ActivityLog(redis, settings)
        """The exchange's activity log, for entries beyond transitions and errors."""
        self._lifecycle = Lifecycle(history_size=history_size)
        self._tasks = TaskGroup(log, f"perseus {exchange_name}")
        self._on_lease_lost = on_lease_lost
        self.lease = Lease(
            redis,
            settings,
            status,
            clock=clock,
            on_lost=self._lease_lost,
            on_recreated=self._key_recreated,
        )
        """The status key: `held`, `epoch`, `lost`, `confirmed_at`."""
        self.publisher = Publisher(
            self.lease, self.activity, settings, clock=clock, tasks=self._tasks
        )
        """How changes reach Redis: `unsent_entries`, `last_write_error`."""
        self.heartbeat = Heartbeat(self.lease, self.publisher, settings)
        """The lease's ticking: `running`, `count`, `failures`, `last_error`."""

    # --- read-only view ---------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """The current lifecycle state (`idle` until the first transition)."""
        return self._lifecycle.state

    @property
    def status(self) -> InstanceStatus:
        """The current in-memory status: what the key holds, or will on the next tick."""
        return self.lease.status

    @property
    def history(self) -> list[TransitionRecord]:
        """The most recent transitions, oldest first (capped at `history_size`)."""
        return self._lifecycle.history

    # --- lease ------------------------------------------------------------------

    async def claim(self, *, heartbeat: bool = True) -> None:
        """Claim the exchange (INCR epoch, SET NX PX) and, by default, start the heartbeat.

        The heartbeat starts unless `heartbeat=False`, because a claim without
        one silently expires after the TTL. Retrying after a lost reply is safe.

        Raises:
            ClaimConflict: another live instance holds the exchange.
            RedisUnavailable: Redis did not answer.
        """
        await self.lease.claim()
        if heartbeat:
            self.heartbeat.start()
        await self._note_holder()

    async def _note_holder(self) -> None:
        """After a claim: write a `holder` entry when this process follows
        another holder, or when no holder is on record yet (so the next
        claimant can name this one).

        The predecessor is the holder whose key the lease took over (its
        process proven gone), else the last `holder` entry of Perseus's
        stream. One naming this very process (an agent that claims again
        for its next run, with a new `startMs`) is no change: nothing is
        written. Never raises: the claim stands whatever the stream says.
        """
        replaced = self.lease.replaced
        via = "claim"
        if replaced is not None:
            previous = (replaced.instance_id or "", replaced.hostname, replaced.pid)
            via = "takeover"
        else:
            try:
                async with asyncio.timeout(self._settings.socket_timeout_ms / 1000):
                    last = await self.activity.last_holder(self.exchange_name)
            except REDIS_ERRORS as exc:
                log.warning(
                    "exchange %s: cannot read the last holder on record, no holder entry: %s",
                    self.exchange_id,
                    describe_failure(exc, self._settings),
                )
                return
            if last is None or not last.instance_id:
                previous = ("", "", None)
            elif holder_process(last.instance_id) == holder_process(self.instance_id):
                return
            else:  # read from Redis: copied bounded, a pid only if it is one
                number = last.pid
                pid = int(number) if number.isascii() and number.isdecimal() else None
                pid = pid if pid is not None and pid <= MAX_PID else None
                previous = (last.instance_id[:MAX_TOKEN_CHARS], last.hostname[:255], pid)
        status = self.lease.status
        entry = HolderEntry(
            timestamp=format_ts(wire_now(self._clock)),
            exchange_id=str(self.exchange_id),
            exchange_name=self.exchange_name,
            hostname=self.hostname,
            ip=status.ip_address or "",
            instance_id=self.instance_id,
            pid=str(self.pid),
            epoch="" if status.epoch is None else str(status.epoch),
            via=via,
            previous_instance_id=previous[0],
            previous_hostname=previous[1],
            previous_pid="" if previous[2] is None else str(previous[2]),
        )
        await self.publisher.append_quietly(entry)

    async def release(self) -> bool:
        """Stop the heartbeat and delete the status key if it is still ours.

        Never raises on Redis errors: the heartbeat has stopped, so the key expires
        within its TTL anyway; the failure is logged and kept in
        `publisher.last_write_error`.

        Returns:
            True if our key was deleted now; False otherwise (nothing held,
            already expired, or Redis did not answer).

        Raises:
            LeaseLost: another instance holds the exchange; its key is left alone.
        """
        await self.heartbeat.stop()
        try:
            return await self.lease.release()
        except LeaseLost:
            raise
        except REDIS_ERRORS as exc:
            message = describe_failure(exc, self._settings)
            self.publisher.note_failure(f"status key not deleted (it expires by TTL): {message}")
            return False

    async def close(self) -> None:
        """Stop the heartbeat, release the exchange if held, and wait for background work.

        Never raises for Redis trouble or a lost lease. Does not close the Redis
        client (the caller owns it).
        """
        await self.heartbeat.stop()
        if self.lease.held:
            try:
                await self.release()
            except LeaseLost:
                pass  # already reported through on_lease_lost
        await self._tasks.join()

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
            InvalidTransition: docs/wire-format.md 1.2 does not allow it (nothing changed).
            LeaseLost: another instance holds the exchange (the transition is applied
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
        return await self.publisher.publish(entry)

    async def record_error(self, message: str) -> Publication:
        """Set `lastError`/`lastErrorAt` and append an `error` entry with the current state.

        Raises:
            LeaseLost: as for `transition`.
        """
        now = wire_now(self._clock)
        text = message[:MAX_ERROR_CHARS]
        self._apply(last_error=text, last_error_at=now)
        return await self.publisher.publish(self.publisher.error_entry(text, now))

    async def set_ip(self, ip: str | None, country: str | None = None) -> Publication:
        """Set `ipAddress` and `countryCode` (no activity entry).

        Raises:
            LeaseLost: as for `transition`.
        """
        self._apply(ip_address=ip, country_code=country)
        return await self.publisher.publish(None)

    async def set_symbol_count(self, n: int) -> Publication:
        """Set `symbolCount` (no activity entry).

        Raises:
            ValueError: `n` is negative.
            LeaseLost: as for `transition`.
        """
        if n < 0:
            raise ValueError(f"symbol count must be >= 0, got {n}")
        self._apply(symbol_count=n)
        return await self.publisher.publish(None)

    # --- what the lease reports ---------------------------------------------------
    # The lease calls these inside its critical section: they only update memory
    # and schedule the rest (the service's callback, the `error` entry) as tasks.

    def _lease_lost(self, exc: LeaseLost) -> None:
        """Another instance holds the exchange: stop ticking, `lastError` says so,
        the embedding service is told (to fence itself), then the stream."""
        self.heartbeat.stop_soon()
        now = wire_now(self._clock)
        text = str(exc)[:MAX_ERROR_CHARS]
        self._apply(last_error=text, last_error_at=now)
        entry = self.publisher.error_entry(text, now)
        self._tasks.spawn(self._after_lease_lost(exc, entry), "lease lost")

    async def _after_lease_lost(self, exc: LeaseLost, entry: ErrorEntry) -> None:
        # The callback first: fencing must not wait on a slow append.
        callback = self._on_lease_lost
        if callback is not None:
            try:
                result = callback(exc)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                # The service's code, whatever it raises: the entry below must still be written.
                log.exception("exchange %s: on_lease_lost callback failed", self.exchange_id)
        await self.publisher.append_quietly(entry)

    def _key_recreated(self, recreated: KeyRecreated) -> None:
        """The key had vanished with the exchange still free: re-created, and
        the stream told why (found out in a task: naming a deleter reads the
        stream)."""
        now = wire_now(self._clock)
        found = time.monotonic()
        self._tasks.spawn(self._note_recreated(recreated, now, found), "key re-created")

    async def _note_recreated(self, recreated: KeyRecreated, now: datetime, found: float) -> None:
        deleter = None
        if recreated.cause is Vanishing.DELETED:
            # A second more than the key was held: the window is cut on the
            # server's clock after a round trip (on a loaded host, a long one),
            # and the claimant's entry may follow the claim by milliseconds.
            held_ms = recreated.held_ms + (time.monotonic() - found) * 1000 + 1_000
            deleter = await self._other_writer(held_ms)
        text = vanished_text(
            recreated, self._settings.heartbeat_ttl_ms, self.exchange_name, deleter
        )
        await self.publisher.append_quietly(self.publisher.error_entry(text, now))

    async def _other_writer(self, within_ms: float) -> str | None:
        """The host of the newest entry another writer put in the shared stream
        within the last `within_ms` (while this instance held the key), or None.

        A Livermore server whose claim was refused writes its own error entry
        there before it gives up and deregisters, and its deregistration is a
        plain DEL of whatever key is there: the likeliest deleter.
        """
        try:
            entries = await self.activity.shared_since(self.exchange_name, within_ms)
        except REDIS_ERRORS as exc:
            log.debug("exchange %s: cannot read who wrote meanwhile: %s", self.exchange_id, exc)
            return None
        for entry in entries:
            if entry.hostname and entry.hostname != self.hostname:
                return entry.hostname
        return None

    # --- internals --------------------------------------------------------------

    def _apply(self, **changes: Any) -> None:
        self.lease.set_status(self.lease.status.model_copy(update=changes))


def vanished_text(
    recreated: KeyRecreated, ttl_ms: int, exchange_name: str, deleter: str | None
) -> str:
    """The `error` entry's words for a status key that was found gone and re-created.

    Args:
        recreated: what the lease knew (`KeyRecreated`).
        ttl_ms: the TTL every heartbeat sets.
        exchange_name: names the shared stream searched for the deleter.
        deleter: the host that wrote to that stream while the key was held
            (the likeliest deleter), if any.
    """
    status = recreated.status
    key = f"exchange:{status.exchange_id}:status"
    ttl_s = ttl_ms / 1000
    since_s = recreated.since_heartbeat_ms / 1000
    if recreated.cause is Vanishing.DATA_LOST:
        why = (
            f"status key {key} was gone, and so was the epoch counter "
            f"perseus:epoch:{status.exchange_id}: Redis lost its data (a restart without "
            "persistence, a failover or a flush)"
        )
    elif recreated.cause is Vanishing.DELETED:
        stream = f"logs:network:{exchange_name.lower()}"
        if deleter is not None:
            who = (
                f"probably {clean(deleter, 100)}, which wrote to {stream} while this instance "
                "held the key: a Livermore server's deregistration is a plain DEL"
            )
        else:
            who = (
                f"nobody else wrote to {stream} meanwhile; a Livermore server's "
                "deregistration is a plain DEL and leaves no entry"
            )
        why = (
            f"status key {key} was deleted by another writer {since_s:.1f}s after this "
            f"instance's last heartbeat, {recreated.ttl_left_ms / 1000:.1f}s before its "
            f"{ttl_s:g}s TTL could have run out ({who})"
        )
    else:
        why = (
            f"status key {key} had expired (no heartbeat reached Redis within the {ttl_s:g}s "
            f"TTL: the last confirmed one was sent {since_s:.1f}s before)"
        )
    return (
        f"{why}; re-created it from this instance's state "
        f"({status.connection_state.value}, epoch {status.epoch})"
    )
