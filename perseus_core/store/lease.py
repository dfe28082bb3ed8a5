"""The slot lease: who owns `exchange:{id}:status`, proven by a key with a TTL.

Only one live process may own an exchange slot. Ownership is the status key
itself (the TTL is the liveness signal other readers already use), marked with
an owner token, `instanceId` (WIRE.md 2.2). Every write after the claim is a
compare-and-set on that token inside one Lua script, so a holder that stalled
past its TTL and lost the slot can never overwrite or delete the new holder's
key. A separate counter, `perseus:epoch:{id}`, increases each time the slot
changes hands and is stored in the payload: it survives expiries of the status
key, so anything acting on the holder's behalf can be fenced by epoch.

Every script touches exactly one key, passed in KEYS, so ACLs and Redis
Cluster routing see it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import threading
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from perseus_core.plumbing.connection import describe_redis_error
from perseus_core.plumbing.errors import TRANSIENT_ERRORS
from perseus_core.plumbing.processes import pid_is_running
from perseus_core.wire import keys
from perseus_core.wire.errors import PayloadError, PerseusError, RedisUnavailable
from perseus_core.wire.models import InstanceStatus
from perseus_core.wire.settings import Settings
from perseus_core.wire.text import clean
from perseus_core.wire.timeutil import Clock, format_ts, system_clock, to_epoch_ms

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# --- Lua ------------------------------------------------------------------------
#
# Return codes shared by the owner-checked scripts:
#   1  done (the key held our instanceId)
#   0  the key does not exist (expired, deleted, or Redis lost its data)
#  -1  the key holds someone else's payload (or one that is not JSON we wrote)

_OWNER_OF = """
local function owner_of(raw)
  local ok, doc = pcall(cjson.decode, raw)
  if ok and type(doc) == 'table' and type(doc['instanceId']) == 'string' then
    return doc['instanceId'], doc
  end
  return nil, nil
end
"""

HEARTBEAT_LUA = (
    _OWNER_OF
    + """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local owner, doc = owner_of(raw)
if owner ~= ARGV[1] then return -1 end
-- Replace only the lastHeartbeat value, byte for byte: re-encoding with cjson
-- would reorder keys, escape '/' and turn integers above 1e14 into floats.
local stamp = '"lastHeartbeat":"' .. ARGV[2] .. '"'
local updated, n = string.gsub(raw, '"lastHeartbeat"%s*:%s*"[%d%-%+:%.TZ]*"',
  function() return stamp end, 1)
if n ~= 1 then
  doc['lastHeartbeat'] = ARGV[2]
  updated = cjson.encode(doc)
end
redis.call('SET', KEYS[1], updated, 'PX', ARGV[3])
return 1
"""
)
"""KEYS: status key. ARGV: owner instanceId, lastHeartbeat timestamp, TTL in ms."""

UPDATE_LUA = (
    _OWNER_OF
    + """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
if owner_of(raw) ~= ARGV[1] then return -1 end
if ARGV[3] == '' then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
"""
)
"""KEYS: status key. ARGV: expected owner instanceId, new payload, TTL in ms or ''
(empty: keep the TTL, as WIRE.md 1.1 says status updates do). Also the same-host
takeover: compare-and-set against the *old* holder's instanceId."""

RELEASE_LUA = (
    _OWNER_OF
    + """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
if owner_of(raw) ~= ARGV[1] then return -1 end
redis.call('DEL', KEYS[1])
return 1
"""
)
"""KEYS: status key. ARGV: owner instanceId. Compare-and-delete."""

EPOCH_FLOOR_LUA = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
if current < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1])
end
return current
"""
"""KEYS: epoch key. ARGV: epoch. Raise the counter to at least ARGV[1]; used when a
holder re-creates its key after Redis lost its data, so the next claimer still
gets a larger epoch than the one this holder carries."""

_CLAIM_ATTEMPTS = 5

_REDIS_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, RedisError)


# --- identity -------------------------------------------------------------------

_start_lock = threading.Lock()
_last_start_ms = 0


def make_instance_id(hostname: str, exchange_id: int, pid: int, start_ms: int) -> str:
    """The owner token of WIRE.md 2.2: `{hostname}:{exchangeId}:{pid}:{startMs}`."""
    return f"{hostname}:{exchange_id}:{pid}:{start_ms}"


def unique_start_ms(moment: datetime) -> int:
    """`moment` in epoch ms, bumped so no two calls in this process return the same value.

    Two `Instance`s created in the same millisecond (or under a fixed test
    clock) would otherwise get the same owner token and each would mistake the
    other's key for its own.
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


# --- errors ---------------------------------------------------------------------


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
    """The slot is held by another live instance; the message says by whom.

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
        what = f"exchange {exchange_id}" if exchange_id is not None else "the exchange slot"
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
    """Another instance holds the slot this one believed it held.

    The owner must fence itself: stop acting as the exchange's instance. The
    lease never writes to the slot's key again after raising this.

    Attributes:
        exchange_id: the slot.
        instance_id: the owner token that lost it (ours).
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


# --- the lease ------------------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class _Scripts:
    heartbeat: AsyncScript
    update: AsyncScript
    release: AsyncScript
    epoch_floor: AsyncScript


_SCRIPTS: weakref.WeakKeyDictionary[Redis, _Scripts] = weakref.WeakKeyDictionary()


def _scripts_for(redis: Redis) -> _Scripts:
    """The lease scripts, registered once per client and shared by its leases.

    redis-py then sends EVALSHA and loads a script only when the server does
    not know it (first use, or after Redis restarted and lost its cache).
    """
    scripts = _SCRIPTS.get(redis)
    if scripts is None:
        scripts = _Scripts(
            heartbeat=redis.register_script(HEARTBEAT_LUA),
            update=redis.register_script(UPDATE_LUA),
            release=redis.register_script(RELEASE_LUA),
            epoch_floor=redis.register_script(EPOCH_FLOOR_LUA),
        )
        _SCRIPTS[redis] = scripts
    return scripts


@dataclass(frozen=True, slots=True)
class _Found:
    exists: bool
    status: InstanceStatus | None = None
    ttl_ms: int = -2
    detail: str | None = None


class Lease:
    """Claim, keep and release one exchange slot; the heartbeat task lives here.

    The lease keeps the in-memory status that is the source of truth for the
    key: `set_status` replaces it, `publish` writes it. A write that fails on a
    Redis error leaves the status marked unwritten, and the next heartbeat tick
    writes the whole payload instead of only refreshing it, so a transition made
    while Redis was briefly down still reaches the key.

    Hooks are plain callables run inside the lease's critical section: they
    must not await or call back into the lease (schedule a task instead).

    Args:
        redis: client for short commands (the caller owns and closes it).
        settings: heartbeat interval/TTL and the per-call time budget.
        status: the initial payload; must carry `instance_id`.
        clock: source of every timestamp written.
        on_lost: called once when another holder is found.
        on_recreated: called after the key was re-created from memory.
        after_tick: called after every successful heartbeat tick.
    """

    def __init__(
        self,
        redis: Redis,
        settings: Settings,
        status: InstanceStatus,
        *,
        clock: Clock = system_clock,
        on_lost: Callable[[LeaseLost], None] | None = None,
        on_recreated: Callable[[InstanceStatus], None] | None = None,
        after_tick: Callable[[], None] | None = None,
    ) -> None:
        if not status.instance_id:
            raise ValueError("a lease needs a status with an instance_id (its owner token)")
        self._redis = redis
        self._settings = settings
        self._clock = clock
        self._on_lost = on_lost
        self._on_recreated = on_recreated
        self._after_tick = after_tick
        self.instance_id: str = status.instance_id
        self.exchange_id = status.exchange_id
        self.key = keys.status_key(status.exchange_id)
        self.epoch_key = keys.epoch_key(status.exchange_id)
        self._ttl_ms = settings.heartbeat_ttl_ms
        self._interval_s = settings.heartbeat_interval_ms / 1000
        # One budget per Redis call, retries included: the caller's event loop
        # never waits on an unresponsive server longer than this.
        self._call_timeout_s = settings.socket_timeout_ms / 1000
        self._status = status
        self._version = 0
        self._written_version = 0
        self._held = False
        self._lost: LeaseLost | None = None
        self._lock = asyncio.Lock()
        self._stop_event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._failure_streak = 0
        self.heartbeat_count = 0
        """Successful heartbeat ticks (refreshed or re-created) since creation."""
        self.heartbeat_failures = 0
        """Ticks that failed on a Redis error (and were retried on the next tick)."""
        self.last_error: str | None = None
        """The most recent heartbeat failure, one line; None after a success."""
        scripts = _scripts_for(redis)
        self._heartbeat_script = scripts.heartbeat
        self._update_script = scripts.update
        self._release_script = scripts.release
        self._epoch_floor_script = scripts.epoch_floor

    # --- state ---------------------------------------------------------------

    @property
    def status(self) -> InstanceStatus:
        """The current in-memory payload."""
        return self._status

    def set_status(self, status: InstanceStatus) -> None:
        """Replace the in-memory payload (written by the next `publish` or tick)."""
        if status.instance_id != self.instance_id or status.exchange_id != self.exchange_id:
            raise ValueError("set_status cannot change the owner token or the exchange")
        self._status = status
        self._version += 1

    @property
    def held(self) -> bool:
        """Whether this lease believes it owns the slot."""
        return self._held

    @property
    def lost(self) -> LeaseLost | None:
        """How the lease was lost, if it was (cleared by a new claim)."""
        return self._lost

    @property
    def epoch(self) -> int | None:
        """The epoch of the current (or last) claim."""
        return self._status.epoch

    @property
    def heartbeat_running(self) -> bool:
        """Whether the heartbeat task is alive."""
        return self._task is not None and not self._task.done()

    async def _io(self, awaitable: Awaitable[_T]) -> _T:
        async with asyncio.timeout(self._call_timeout_s):
            return await awaitable

    # --- claim ---------------------------------------------------------------

    async def claim(self) -> None:
        """Take the slot: INCR the epoch, then `SET NX PX` the payload.

        Safe to retry after a lost reply: if the key turns out to hold our own
        owner token, the earlier attempt won and is kept. A holder on this
        host (same hostname) whose pid is no longer running is replaced at
        once with a compare-and-set on its token; any other holder is a
        conflict. Does nothing if the slot is already held.

        Raises:
            ClaimConflict: another live instance holds the slot.
            RedisUnavailable: Redis did not answer. The slot does not count as
                held; calling `claim` again is safe and adopts the key if the
                unanswered attempt had in fact won.
        """
        if self._held:
            return
        try:
            await self._claim()
        except TRANSIENT_ERRORS as exc:
            raise RedisUnavailable(describe_redis_error(self._settings, exc)) from exc

    async def _claim(self) -> None:
        epoch = int(await self._io(self._redis.incr(self.epoch_key)))
        version = self._version
        now = wire_now(self._clock)
        candidate = self._status.model_copy(
            update={"epoch": epoch, "registered_at": now, "last_heartbeat": now}
        )
        found = _Found(exists=False)
        for _ in range(_CLAIM_ATTEMPTS):
            if await self._io(
                self._redis.set(self.key, candidate.to_json(), px=self._ttl_ms, nx=True)
            ):
                self._won(candidate, version)
                return
            found = await self._read_holder()
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
                    self._won(adopted, version)
                    return
                continue
            if holder is not None and holder.instance_id and self._may_take_over(holder):
                if await self._update(holder.instance_id, candidate, refresh=True) == 1:
                    log.warning(
                        "exchange %s: took over the slot from %s: its pid %s is no longer "
                        "running on this host",
                        self.exchange_id,
                        holder.instance_id,
                        holder.pid,
                    )
                    self._won(candidate, version)
                    return
                continue  # it changed under us: look again
            raise ClaimConflict(
                holder,
                found.ttl_ms,
                exchange_id=self.exchange_id,
                detail=self._why_not_taken_over(holder) if holder is not None else found.detail,
            )
        raise ClaimConflict(
            found.status,
            found.ttl_ms,
            exchange_id=self.exchange_id,
            detail="the slot kept changing hands while claiming",
        )

    def _same_host(self, holder: InstanceStatus) -> bool:
        return holder.hostname == self._status.hostname

    def _why_not_taken_over(self, holder: InstanceStatus) -> str | None:
        """For a same-host holder, why the takeover rule did not apply."""
        if not self._same_host(holder) or holder.pid is None:
            return None
        if holder.pid == os.getpid():
            return f"held by this process (pid {holder.pid}) under another owner token"
        if pid_is_running(holder.pid):
            return f"pid {holder.pid} is still running on this host"
        return f"pid {holder.pid} is gone, but the payload has no instanceId to replace safely"

    def _may_take_over(self, holder: InstanceStatus) -> bool:
        """Same host, a recorded pid that is not ours, and that pid is gone."""
        return (
            self._same_host(holder)
            and holder.pid is not None
            and holder.pid != os.getpid()
            and not pid_is_running(holder.pid)
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

    async def _read_holder(self) -> _Found:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.get(self.key)
            pipe.pttl(self.key)
            raw, ttl = await self._io(pipe.execute())
        if raw is None:
            return _Found(exists=False)
        try:
            return _Found(True, InstanceStatus.from_json(raw), int(ttl))
        except PayloadError as exc:
            return _Found(True, None, int(ttl), str(exc))

    async def _update(self, owner: str, status: InstanceStatus, *, refresh: bool) -> int:
        ttl = str(self._ttl_ms) if refresh else ""
        return int(
            await self._io(
                self._update_script(keys=[self.key], args=[owner, status.to_json(), ttl])
            )
        )

    # --- writes --------------------------------------------------------------

    async def publish(self) -> bool:
        """Write the in-memory payload to the key, keeping its TTL.

        Returns:
            True if written, False if the slot is not held (nothing to write).

        Raises:
            LeaseLost: another instance holds the slot (nothing was written).
            redis / OS errors: Redis did not answer; the payload stays marked
                unwritten and the next heartbeat tick writes it.
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
        code = await self._update(self.instance_id, self._status, refresh=refresh)
        if code == 1:
            self._written_version = max(self._written_version, version)
            return HeartbeatResult.REFRESHED
        if code == 0:
            return await self._recreate(via)
        raise await self._lose(via)

    async def _recreate(self, via: str) -> HeartbeatResult:
        """The key is gone: put it back from memory, unless someone else took the slot."""
        for _ in range(_CLAIM_ATTEMPTS):
            version = self._version
            self._status = self._status.model_copy(update={"last_heartbeat": wire_now(self._clock)})
            if await self._io(
                self._redis.set(self.key, self._status.to_json(), px=self._ttl_ms, nx=True)
            ):
                self._written_version = max(self._written_version, version)
                await self._raise_epoch_floor()
                log.warning(
                    "exchange %s: status key %s had expired; re-created it from memory",
                    self.exchange_id,
                    self.key,
                )
                if self._on_recreated is not None:
                    self._run_hook(functools.partial(self._on_recreated, self._status))
                return HeartbeatResult.RECREATED
            found = await self._read_holder()
            if not found.exists:
                continue
            if found.status is not None and found.status.instance_id == self.instance_id:
                return HeartbeatResult.REFRESHED  # a retried command of ours wrote it
            raise await self._lose(via, found)
        raise RedisError(f"{self.key} kept appearing and vanishing while re-creating it")

    async def _raise_epoch_floor(self) -> None:
        """After Redis lost its data, restore the epoch counter to at least ours."""
        if self._status.epoch is None:
            return
        try:
            await self._io(
                self._epoch_floor_script(keys=[self.epoch_key], args=[self._status.epoch])
            )
        except _REDIS_ERRORS as exc:
            log.warning(
                "exchange %s: could not restore the epoch counter: %s", self.exchange_id, exc
            )

    async def _lose(self, via: str, found: _Found | None = None) -> LeaseLost:
        """Drop the lease for good and tell the owner. Returns the error to raise."""
        if found is None:
            try:
                found = await self._read_holder()
            except _REDIS_ERRORS as exc:
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
        self._stop_event.set()
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
        """Stop the heartbeat and delete the key if (and only if) it is still ours.

        The lease counts as released even if Redis does not answer: the
        heartbeat has stopped, so the key expires within its TTL.

        Returns:
            True if our key was deleted; False if there was nothing of ours
            (never claimed, already released, or expired).

        Raises:
            LeaseLost: another instance holds the slot; its key is left alone.
            redis / OS errors: Redis did not answer.
        """
        await self.stop()
        if not self._held:
            return False
        async with self._lock:
            if not self._held:
                return False
            self._held = False
            code = int(
                await self._io(self._release_script(keys=[self.key], args=[self.instance_id]))
            )
            if code == 1:
                log.info("exchange %s: released %s", self.exchange_id, self.key)
                return True
            if code == 0:
                return False
            raise await self._lose("release")

    # --- heartbeat -----------------------------------------------------------

    async def heartbeat(self) -> HeartbeatResult:
        """One tick: refresh TTL and lastHeartbeat in one EVALSHA.

        If an earlier write failed, the tick writes the whole payload instead
        (still one script call). A vanished key is re-created from memory;
        another holder means the lease is lost.

        Raises:
            redis / OS errors: Redis did not answer (the task logs and retries).
        """
        if not self._held:
            return HeartbeatResult.NOT_HELD
        async with self._lock:
            if not self._held:
                return HeartbeatResult.NOT_HELD
            try:
                result = await self._tick()
            except LeaseLost:
                return HeartbeatResult.LOST
        self.heartbeat_count += 1
        if self._failure_streak:
            log.info(
                "exchange %s: heartbeat back after %d failed tick(s)",
                self.exchange_id,
                self._failure_streak,
            )
        self._failure_streak = 0
        self.last_error = None
        if self._after_tick is not None:
            self._run_hook(self._after_tick)
        return result

    async def _tick(self) -> HeartbeatResult:
        if self._written_version != self._version:
            return await self._write_current(refresh=True, via="heartbeat")
        now = wire_now(self._clock)
        code = int(
            await self._io(
                self._heartbeat_script(
                    keys=[self.key], args=[self.instance_id, format_ts(now), self._ttl_ms]
                )
            )
        )
        if code == 1:
            self._status = self._status.model_copy(update={"last_heartbeat": now})
            return HeartbeatResult.REFRESHED
        if code == 0:
            return await self._recreate("heartbeat")
        raise await self._lose("heartbeat")

    def start(self) -> None:
        """Start the heartbeat task (no-op if it is running).

        Raises:
            PerseusError: the slot is not held (claim it first).
        """
        if not self._held:
            raise PerseusError(f"cannot heartbeat {self.key}: the slot is not held (claim it)")
        if self.heartbeat_running:
            return
        self._stop_event = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"perseus heartbeat {self.key}"
        )

    async def stop(self) -> None:
        """Stop the heartbeat task, letting a tick in flight finish first.

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

    async def _run(self) -> None:
        """Tick every interval until stopped, released or lost. Never dies on errors."""
        interval = self._interval_s
        next_due = time.monotonic() + interval
        while self._held and not self._stop_event.is_set():
            delay = next_due - time.monotonic()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._stop_event.wait(), delay)
                    return
                except TimeoutError:
                    pass
            now = time.monotonic()
            next_due += interval
            if next_due <= now:  # late (slow tick, busy loop): skip, do not burst
                next_due = now + interval
            try:
                result = await self.heartbeat()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the heartbeat must outlive any failure
                self._tick_failed(exc)
                continue
            if result in (HeartbeatResult.LOST, HeartbeatResult.NOT_HELD):
                return

    def _tick_failed(self, exc: Exception) -> None:
        self.heartbeat_failures += 1
        self._failure_streak += 1
        if isinstance(exc, TRANSIENT_ERRORS):
            message = describe_redis_error(self._settings, exc)
        else:
            message = f"{type(exc).__name__}: {exc}"
        self.last_error = message
        if self._failure_streak == 1:
            log.warning("exchange %s: heartbeat failed, retrying: %s", self.exchange_id, message)
        else:
            log.debug("exchange %s: heartbeat failed again: %s", self.exchange_id, message)
