"""The lease on one exchange's status key: claim, heartbeat, update, release.

The holder of an exchange is the process whose payload is in
`exchange:{id}:status`, marked with its holder token, `instanceId`
(docs/wire-format.md 2.2). Every write after the claim is a compare-and-set
on that token inside one Lua script (`scripts`), so a holder that stalled
past its TTL can never overwrite or delete the new holder's key. The epoch
counter `perseus:epoch:{id}` grows each time the exchange changes hands and
is stored in the payload, so whatever acts on the holder's behalf can be
fenced by epoch.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

from redis.exceptions import RedisError

from perseus_core.plumbing.connection import describe_redis_error
from perseus_core.plumbing.errors import REDIS_ERRORS, TRANSIENT_ERRORS
from perseus_core.plumbing.processes import gone_from_here, pid_is_running, process_scope
from perseus_core.plumbing.topology import RedisClient
from perseus_core.store.lease.scripts import LeaseScripts
from perseus_core.wire import keys
from perseus_core.wire.errors import PayloadError, PerseusError, RedisUnavailable
from perseus_core.wire.models import InstanceStatus
from perseus_core.wire.settings import Settings
from perseus_core.wire.text import clean
from perseus_core.wire.timeutil import Clock, format_ts, system_clock, to_epoch_ms

log = logging.getLogger(__name__)

_T = TypeVar("_T")

CLAIM_ATTEMPTS = 5
"""How often a claim (or a re-create) looks again when the key changes under it."""


# --- holder tokens and the wire's timestamps ----------------------------------------

_start_lock = threading.Lock()
_last_start_ms = 0


def make_instance_id(hostname: str, exchange_id: int, pid: int, start_ms: int) -> str:
    """The holder token of docs/wire-format.md 2.2: `{hostname}:{exchangeId}:{pid}:{startMs}`."""
    return f"{hostname}:{exchange_id}:{pid}:{start_ms}"


def unique_start_ms(moment: datetime) -> int:
    """`moment` in epoch ms, bumped so no two calls in this process return the same value.

    Two `Instance`s created in the same millisecond (or under a fixed test
    clock) would otherwise get the same holder token and each would mistake
    the other's key for its own.
    """
    global _last_start_ms
    with _start_lock:
        value = max(to_epoch_ms(moment), _last_start_ms + 1)
        _last_start_ms = value
        return value


def wire_now(clock: Clock) -> datetime:
    """`clock()` cut to whole milliseconds, the precision the wire keeps.

    Every timestamp Perseus stores in memory goes through this, so the
    in-memory status always equals what a reader parses back from Redis.
    """
    moment = clock()
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


# --- what a claim or a heartbeat can find -------------------------------------------


class HeartbeatResult(StrEnum):
    """What one heartbeat tick found."""

    REFRESHED = "refreshed"
    """Our key was there; its TTL and lastHeartbeat were refreshed."""
    RECREATED = "recreated"
    """Our key had vanished and nobody held the exchange; it was re-created from memory."""
    LOST = "lost"
    """Another instance holds the exchange; the lease is gone and ticking should stop."""
    NOT_HELD = "not_held"
    """Nothing to do: the exchange was never claimed, or was released or lost earlier."""


RATE_MARGIN = 0.02
"""Part of the TTL kept back for clock-rate differences between this host's
monotonic clock and the Redis server's (NTP keeps rates within 0.05 %, so
this covers a clock running 40 times worse). The child's watchdog kills this
much before the key can expire; a key found gone while more than this was
left of its TTL cannot have expired."""


class Vanishing(StrEnum):
    """Why a held status key was found gone, as far as the lease can prove it."""

    EXPIRED = "expired"
    """Its TTL could have run out: no write reset it in time."""
    DELETED = "deleted"
    """It was gone while its TTL still ran: another writer deleted it (a
    Livermore server's deregistration is a plain `DEL`, docs/wire-format.md
    part 4), or, under a `maxmemory` policy other than `noeviction`, Redis
    evicted it."""
    DATA_LOST = "data_lost"
    """The fencing counter was gone (or behind this lease's epoch) as well:
    Redis lost its data (a restart without persistence, a failover, a flush)."""


@dataclass(frozen=True, slots=True)
class KeyRecreated:
    """What the lease knew when it found its key gone and put it back.

    Every write the lease confirms restarts the key's TTL (`SET ... PX ttl`),
    so the PTTL right after the last confirmed heartbeat is the TTL itself:
    the key could not expire before that heartbeat's send time + the TTL,
    and no extra command is needed to know it.

    Attributes:
        status: the payload the key was re-created with.
        cause: expired, deleted, or lost with the rest of Redis's data.
        ttl_left_ms: how much of its TTL the key had left, by the last
            confirmed heartbeat, when it was found gone (negative: it could
            have expired that long before).
        since_heartbeat_ms: how long before that the last confirmed heartbeat
            was sent.
        held_ms: how long before that the claim was sent.
    """

    status: InstanceStatus
    cause: Vanishing
    ttl_left_ms: float
    since_heartbeat_ms: float
    held_ms: float


def vanishing(ttl_left_ms: float, ttl_ms: int, *, counter_lost: bool | None) -> Vanishing:
    """Why a key found gone with `ttl_left_ms` of its TTL left vanished.

    Args:
        ttl_left_ms: see `KeyRecreated.ttl_left_ms`.
        ttl_ms: the TTL every confirmed write set.
        counter_lost: whether the epoch counter had gone too (None: unknown).
    """
    if counter_lost:
        return Vanishing.DATA_LOST
    if ttl_left_ms > ttl_ms * RATE_MARGIN:
        return Vanishing.DELETED
    return Vanishing.EXPIRED


def _ttl_text(ttl_ms: int) -> str:
    if ttl_ms >= 0:
        return f"its status key expires in {ttl_ms / 1000:.1f}s"
    if ttl_ms == -1:
        return "its status key has no expiry"
    return "its status key's expiry is unknown"


def _holder_text(holder: InstanceStatus) -> str:
    details = [f"IP {clean(holder.ip_address, 64) if holder.ip_address else 'unknown'}"]
    if holder.pid is not None:
        details.append(f"pid {holder.pid}")
    if holder.epoch is not None:
        details.append(f"epoch {holder.epoch}")
    details.append(f"state {holder.connection_state.value}")
    return f"{clean(holder.hostname, 100)} ({', '.join(details)})"


class ClaimConflict(PerseusError):
    """The exchange is held by another live instance; the message says by whom.

    Attributes:
        holder: the current holder's status, or None if its payload is unreadable.
        ttl_ms: remaining TTL of its status key in ms (-1: no expiry, -2: unknown).
    """

    def __init__(
        self,
        holder: InstanceStatus | None,
        ttl_ms: int,
        *,
        exchange_id: int | None = None,
        detail: str | None = None,
    ) -> None:
        self.holder = holder
        self.ttl_ms = ttl_ms
        self.exchange_id = exchange_id
        self.detail = detail
        what = f"exchange {exchange_id}" if exchange_id is not None else "the exchange"
        if holder is None:
            message = f"{what} is already held, but its status payload is unreadable"
        else:
            connected = (
                f"connected since {format_ts(holder.connected_at)}"
                if holder.connected_at is not None
                else "not connected (connectedAt is null)"
            )
            message = f"{what} is already held by {_holder_text(holder)}, {connected}"
        message += f"; {_ttl_text(ttl_ms)}"
        if detail:
            message += f" ({detail})"
        super().__init__(message)


class LeaseLost(PerseusError):
    """Another instance holds the exchange this one believed it held.

    The holder must fence itself: stop acting as the exchange's instance. The
    lease never writes to the status key again after raising this.

    Attributes:
        exchange_id: the exchange.
        instance_id: the holder token that lost it (ours).
        holder: the new holder's status, or None if unknown or unreadable.
        detected_by: `heartbeat`, `update`, `release` or `re-create`.
    """

    def __init__(
        self,
        exchange_id: int,
        instance_id: str,
        holder: InstanceStatus | None,
        *,
        detected_by: str,
        detail: str | None = None,
    ) -> None:
        self.exchange_id = exchange_id
        self.instance_id = instance_id
        self.holder = holder
        self.detected_by = detected_by
        if holder is not None:
            who = f"it is now held by {_holder_text(holder)}"
        else:
            who = f"its status key now holds someone else's payload ({detail or 'unreadable'})"
        super().__init__(f"lease on exchange {exchange_id} lost (found by {detected_by}): {who}")


@dataclass(frozen=True, slots=True)
class _Found:
    """What the status key holds: nothing, a readable holder, or an unreadable payload."""

    exists: bool
    status: InstanceStatus | None = None
    ttl_ms: int = -2
    detail: str | None = None


def _may_take_over(holder: InstanceStatus) -> bool:
    """Whether the holder is proven gone: it recorded where its pid means
    something (`pidScope`), that is where this process runs too, and the pid
    is not running. A shared hostname proves nothing: a container on the host
    network, or a process in another pid namespace, has the host's name but
    pids of its own, so a live holder's pid may simply be invisible here."""
    return gone_from_here(holder.pid_scope, holder.pid)


def _why_not_taken_over(holder: InstanceStatus, hostname: str) -> str | None:
    """For a holder whose pid this process could have checked, or that shares
    its hostname, why the takeover rule did not apply; None for any other holder."""
    pid = holder.pid
    if pid is None:
        return None
    if holder.pid_scope is not None and holder.pid_scope == process_scope():
        if pid == os.getpid():
            return f"held by this process (pid {pid}) under another holder token"
        if pid_is_running(pid):
            return f"pid {pid} is still running on this host"
        return f"pid {pid} is gone, but the payload has no instanceId to replace safely"
    if holder.hostname != hostname:
        return None
    if holder.pid_scope is None:
        return f"same hostname, but the payload has no pidScope: pid {pid} cannot be checked here"
    return (
        f"same hostname, but another pid namespace or boot (pidScope differs): "
        f"pid {pid} cannot be checked here"
    )


# --- the lease ----------------------------------------------------------------------


class Lease:
    """Claim, keep and release one exchange's status key.

    The lease keeps the in-memory status that is the source of truth for the
    key: `set_status` replaces it, `publish` writes it. A write that fails on a
    Redis error leaves the status marked unwritten, and the next `heartbeat`
    writes the whole payload instead of only refreshing it, so a transition
    made while Redis was briefly down still reaches the key.

    The lease does not tick by itself: whoever holds it calls `heartbeat` every
    interval (`perseus_core.instance.Heartbeat` for an `Instance`).

    Every Redis call has one time budget, retries included, so the caller's
    event loop never waits on an unresponsive server longer than the socket
    timeout.

    Hooks are plain callables run inside the lease's critical section: they
    must not await or call back into the lease (schedule a task instead).

    Args:
        redis: client for short commands (the caller owns and closes it).
        settings: the key's TTL and the per-call time budget.
        status: the initial payload; must carry `instance_id`.
        clock: source of every timestamp written.
        on_lost: called once when another holder is found.
        on_recreated: called after the key was re-created from memory, with
            why it had vanished.
    """

    def __init__(
        self,
        redis: RedisClient,
        settings: Settings,
        status: InstanceStatus,
        *,
        clock: Clock = system_clock,
        on_lost: Callable[[LeaseLost], None] | None = None,
        on_recreated: Callable[[KeyRecreated], None] | None = None,
    ) -> None:
        if not status.instance_id:
            raise ValueError("a lease needs a status with an instance_id (its holder token)")
        self.instance_id: str = status.instance_id
        """Our holder token: the key is ours while its `instanceId` is this."""
        self.exchange_id = status.exchange_id
        self.key = keys.status_key(self.exchange_id)
        self.epoch_key = keys.epoch_key(self.exchange_id)
        self._redis = redis
        self._settings = settings
        self._ttl_ms = settings.heartbeat_ttl_ms
        self._call_timeout_s = settings.socket_timeout_ms / 1000
        self._scripts = LeaseScripts.on(redis)
        self._clock = clock
        self._on_lost = on_lost
        self._on_recreated = on_recreated
        self._status = status
        self._version = 0
        self._written_version = 0
        self._held = False
        self._confirmed_at: float | None = None
        self._claimed_at: float | None = None
        self._lost: LeaseLost | None = None
        self.replaced: InstanceStatus | None = None
        """The holder whose key the last claim replaced (its process proven
        gone), or None when the key was free: who this holder took over from."""
        self._lock = asyncio.Lock()

    # --- state -------------------------------------------------------------------

    @property
    def status(self) -> InstanceStatus:
        """The current in-memory payload."""
        return self._status

    def set_status(self, status: InstanceStatus) -> None:
        """Replace the in-memory payload (written by the next `publish` or heartbeat)."""
        if status.instance_id != self.instance_id or status.exchange_id != self.exchange_id:
            raise ValueError("set_status cannot change the holder token or the exchange")
        self._status = status
        self._version += 1

    @property
    def held(self) -> bool:
        """Whether this lease believes it holds the exchange (claimed, not released or lost)."""
        return self._held

    @property
    def confirmed_at(self) -> float | None:
        """When (`time.monotonic()`) the last write that Redis confirmed restarting
        the key's TTL was sent; None before the first claim.

        The key lives at least until this + the TTL (by this host's clock, up to
        clock-rate differences with the server): what a watchdog that must kill
        the child before anyone else can claim the exchange counts from.
        """
        return self._confirmed_at

    @property
    def lost(self) -> LeaseLost | None:
        """How the lease was lost, if it was (cleared by a new claim)."""
        return self._lost

    @property
    def epoch(self) -> int | None:
        """The fencing epoch of the current (or last) claim; None before the first."""
        return self._status.epoch

    # --- claim -------------------------------------------------------------------

    async def claim(self) -> None:
        """Take the exchange: INCR the epoch, then `SET NX PX` the payload.

        Safe to retry after a lost reply: if the key turns out to hold our own
        holder token, the earlier attempt won and is kept. A holder proven
        gone (its `pidScope` is this process's and its pid is not running) is
        replaced at once with a compare-and-set on its token; any other
        holder is a conflict until its key expires, a same-hostname one
        included. Does nothing if the exchange is already held.

        Raises:
            ClaimConflict: another live instance holds the exchange.
            RedisUnavailable: Redis did not answer. The exchange does not count
                as held; calling `claim` again is safe and adopts the key if
                the unanswered attempt had in fact won.
        """
        if self._held:
            return
        sent_at = time.monotonic()
        try:
            epoch = int(await self._io(self._redis.incr(self.epoch_key)))
            version = self._version
            now = wire_now(self._clock)
            candidate = self._status.model_copy(
                update={"epoch": epoch, "registered_at": now, "last_heartbeat": now}
            )
            claimed = await self._take(candidate, epoch)
        except TRANSIENT_ERRORS as exc:
            raise RedisUnavailable(describe_redis_error(self._settings, exc)) from exc
        self._won(claimed, version)
        self._confirmed_at = self._claimed_at = sent_at

    async def _take(self, candidate: InstanceStatus, epoch: int) -> InstanceStatus:
        """Write `candidate` (epoch `epoch`) as the exchange's holder.

        Returns:
            The payload now in the key: `candidate`, or, when an earlier attempt
            of ours had won but its reply was lost, the candidate carrying that
            attempt's epoch and registration time.

        Raises:
            ClaimConflict: another live instance holds the exchange.
        """
        found = _Found(exists=False)
        self.replaced = None
        for _ in range(CLAIM_ATTEMPTS):
            if await self._create(candidate):
                return candidate
            found = await self._read()
            if not found.exists:
                continue  # expired between SET NX and the read: try again
            holder = found.status
            if holder is not None and holder.instance_id == self.instance_id:
                # An earlier attempt of ours was applied but its reply was lost.
                adopted = candidate.model_copy(
                    update={
                        "epoch": holder.epoch if holder.epoch is not None else epoch,
                        "registered_at": holder.registered_at,
                    }
                )
                if await self._update(self.instance_id, adopted, refresh=True) == 1:
                    return adopted
                continue
            if holder is not None and holder.instance_id and _may_take_over(holder):
                if await self._update(holder.instance_id, candidate, refresh=True) == 1:
                    log.warning(
                        "exchange %s: took over from %s: its pid %s is no longer "
                        "running (same pid namespace and boot as this process)",
                        self.exchange_id,
                        holder.instance_id,
                        holder.pid,
                    )
                    self.replaced = holder
                    return candidate
                continue  # it changed under us: look again
            raise ClaimConflict(
                holder,
                found.ttl_ms,
                exchange_id=self.exchange_id,
                detail=(
                    _why_not_taken_over(holder, candidate.hostname)
                    if holder is not None
                    else found.detail
                ),
            )
        raise ClaimConflict(
            found.status,
            found.ttl_ms,
            exchange_id=self.exchange_id,
            detail="the exchange kept changing hands while claiming",
        )

    def _won(self, claimed: InstanceStatus, version_at_start: int) -> None:
        """Adopt a successful claim, keeping changes made to memory meanwhile."""
        self._status = self._status.model_copy(
            update={
                "epoch": claimed.epoch,
                "registered_at": claimed.registered_at,
                "last_heartbeat": claimed.last_heartbeat,
            }
        )
        # Anything set while the claim was in flight is not in the key yet.
        self._written_version = version_at_start
        self._held = True
        self._lost = None
        log.info(
            "exchange %s: claimed %s (epoch %s, %s)",
            self.exchange_id,
            self.key,
            claimed.epoch,
            self.instance_id,
        )

    # --- heartbeat ---------------------------------------------------------------

    async def heartbeat(self) -> HeartbeatResult:
        """One tick: refresh TTL and lastHeartbeat in one EVALSHA.

        If an earlier write failed, the tick writes the whole payload instead
        (still one script call). A vanished key is re-created from memory;
        another holder means the lease is lost.

        Raises:
            redis / OS errors: Redis did not answer (the caller retries next tick).
        """
        if not self._held:
            return HeartbeatResult.NOT_HELD
        async with self._lock:
            if not self._held:
                return HeartbeatResult.NOT_HELD
            try:
                return await self._tick()
            except LeaseLost:
                return HeartbeatResult.LOST

    async def _tick(self) -> HeartbeatResult:
        if self._written_version != self._version:
            return await self._write_current(refresh=True, via="heartbeat")
        now = wire_now(self._clock)
        sent_at = time.monotonic()
        code = await self._refresh(now)
        if code == 1:
            self._status = self._status.model_copy(update={"last_heartbeat": now})
            self._confirmed_at = sent_at
            return HeartbeatResult.REFRESHED
        if code == 0:
            return await self._recreate("heartbeat")
        raise await self._lose("heartbeat")

    # --- writes ------------------------------------------------------------------

    async def publish(self) -> bool:
        """Write the in-memory payload to the key, keeping its TTL.

        Returns:
            True if written, False if the exchange is not held (nothing to write).

        Raises:
            LeaseLost: another instance holds the exchange (nothing was written).
            redis / OS errors: Redis did not answer; the payload stays marked
                unwritten and the next heartbeat writes it.
        """
        if not self._held:
            return False
        async with self._lock:
            if not self._held:
                return False
            await self._write_current(refresh=False, via="update")
            return True

    async def _write_current(self, *, refresh: bool, via: str) -> HeartbeatResult:
        version = self._version
        if refresh:
            self._status = self._status.model_copy(update={"last_heartbeat": wire_now(self._clock)})
        sent_at = time.monotonic()
        code = await self._update(self.instance_id, self._status, refresh=refresh)
        if code == 1:
            self._written_version = max(self._written_version, version)
            if refresh:
                self._confirmed_at = sent_at
            return HeartbeatResult.REFRESHED
        if code == 0:
            return await self._recreate(via)
        raise await self._lose(via)

    async def _recreate(self, via: str) -> HeartbeatResult:
        """The key is gone: put it back from memory, unless someone else took the exchange."""
        found_gone_at = time.monotonic()  # after the reply: the conservative end
        confirmed = self._confirmed_at if self._confirmed_at is not None else found_gone_at
        claimed = self._claimed_at if self._claimed_at is not None else confirmed
        for _ in range(CLAIM_ATTEMPTS):
            version = self._version
            self._status = self._status.model_copy(update={"last_heartbeat": wire_now(self._clock)})
            sent_at = time.monotonic()
            if await self._create(self._status):
                self._written_version = max(self._written_version, version)
                self._confirmed_at = sent_at
                counter_lost = await self._restore_epoch_floor()
                ttl_left_ms = (confirmed - found_gone_at) * 1000 + self._ttl_ms
                recreated = KeyRecreated(
                    self._status,
                    vanishing(ttl_left_ms, self._ttl_ms, counter_lost=counter_lost),
                    ttl_left_ms,
                    (found_gone_at - confirmed) * 1000,
                    (found_gone_at - claimed) * 1000,
                )
                log.warning(
                    "exchange %s: status key %s was gone (%s, %.1fs of its TTL left); "
                    "re-created it from memory",
                    self.exchange_id,
                    self.key,
                    recreated.cause.value,
                    ttl_left_ms / 1000,
                )
                if self._on_recreated is not None:
                    self._run_hook(functools.partial(self._on_recreated, recreated))
                return HeartbeatResult.RECREATED
            found = await self._read()
            if not found.exists:
                continue
            if found.status is not None and found.status.instance_id == self.instance_id:
                return HeartbeatResult.REFRESHED  # a retried command of ours wrote it
            raise await self._lose(via, found)
        raise RedisError(f"{self.key} kept appearing and vanishing while re-creating it")

    async def _restore_epoch_floor(self) -> bool | None:
        """After Redis lost its data, raise the epoch counter to at least ours, so
        the next claimer still gets a larger epoch than the one we carry.

        Returns:
            Whether the counter was behind our epoch (gone with the rest of
            Redis's data: only a claim moves it, and ours had reached our
            epoch); None when that could not be told.
        """
        epoch = self._status.epoch
        if epoch is None:
            return None
        try:
            before = await self._io(self._scripts.epoch_floor(keys=[self.epoch_key], args=[epoch]))
        except REDIS_ERRORS as exc:
            log.warning(
                "exchange %s: could not restore the epoch counter: %s", self.exchange_id, exc
            )
            return None
        return int(before) < epoch

    async def _lose(self, via: str, found: _Found | None = None) -> LeaseLost:
        """Drop the lease for good and tell the holder. Returns the error to raise."""
        if found is None:
            try:
                found = await self._read()
            except REDIS_ERRORS as exc:
                found = _Found(True, None, -2, f"could not read it: {exc}")
        lost = LeaseLost(
            self.exchange_id,
            self.instance_id,
            found.status,
            detected_by=via,
            detail=found.detail,
        )
        first = self._lost is None
        self._held = False
        self._lost = lost
        if first:
            log.error("exchange %s: %s", self.exchange_id, lost)
            if self._on_lost is not None:
                self._run_hook(functools.partial(self._on_lost, lost))
        return lost

    def _run_hook(self, call: Callable[[], None]) -> None:
        try:
            call()
        except Exception:
            log.exception("exchange %s: a lease hook failed", self.exchange_id)

    async def release(self) -> bool:
        """Delete the key if (and only if) it is still ours.

        The lease counts as released even if Redis does not answer: with no
        more heartbeats, the key expires within its TTL. Stop calling
        `heartbeat` first.

        Returns:
            True if our key was deleted; False if there was nothing of ours
            (never claimed, already released, or expired).

        Raises:
            LeaseLost: another instance holds the exchange; its key is left alone.
            redis / OS errors: Redis did not answer.
        """
        if not self._held:
            return False
        async with self._lock:
            if not self._held:
                return False
            self._held = False
            code = await self._delete()
            if code == 1:
                log.info("exchange %s: released %s", self.exchange_id, self.key)
                return True
            if code == 0:
                return False
            raise await self._lose("release")

    # --- round trips: one key each; the holder-checked scripts return 1 done,
    # 0 the key is gone, -1 someone else's payload (see `scripts`) -----------------

    async def _io(self, awaitable: Awaitable[_T]) -> _T:
        """Await one Redis call within the per-call budget."""
        async with asyncio.timeout(self._call_timeout_s):
            return await awaitable

    async def _create(self, status: InstanceStatus) -> bool:
        """`SET NX PX`: write the payload only if nobody holds the exchange."""
        return bool(
            await self._io(self._redis.set(self.key, status.to_json(), px=self._ttl_ms, nx=True))
        )

    async def _read(self) -> _Found:
        """The payload and its remaining TTL, read together."""
        raw, ttl = await self._io(self._scripts.read(keys=[self.key]))
        if raw is None:
            return _Found(exists=False)
        try:
            return _Found(True, InstanceStatus.from_json(raw), int(ttl))
        except PayloadError as exc:
            return _Found(True, None, int(ttl), str(exc))

    async def _update(self, holder: str, status: InstanceStatus, *, refresh: bool) -> int:
        """Replace the payload if `holder` (a token) holds it; `refresh` also resets the TTL."""
        ttl = str(self._ttl_ms) if refresh else ""
        return int(
            await self._io(
                self._scripts.update(keys=[self.key], args=[holder, status.to_json(), ttl])
            )
        )

    async def _refresh(self, now: datetime) -> int:
        """Reset the TTL and lastHeartbeat if the key is ours."""
        return int(
            await self._io(
                self._scripts.heartbeat(
                    keys=[self.key], args=[self.instance_id, format_ts(now), self._ttl_ms]
                )
            )
        )

    async def _delete(self) -> int:
        """Delete the key if it is ours."""
        return int(await self._io(self._scripts.release(keys=[self.key], args=[self.instance_id])))
