"""The lease itself: the in-memory status, the writes that keep the key in step
with it, and release."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable

from redis.exceptions import RedisError

from perseus_core.plumbing.connection import describe_redis_error
from perseus_core.plumbing.errors import REDIS_ERRORS, TRANSIENT_ERRORS
from perseus_core.store.lease.claim import CLAIM_ATTEMPTS, claim_slot
from perseus_core.store.lease.errors import LeaseLost
from perseus_core.store.lease.heartbeat import HeartbeatResult
from perseus_core.store.lease.identity import wire_now
from perseus_core.store.lease.slot import Found
from perseus_core.store.lease.state import LeaseState
from perseus_core.wire.errors import PerseusError, RedisUnavailable
from perseus_core.wire.models import InstanceStatus

log = logging.getLogger(__name__)


class Lease(LeaseState):
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
        sent_at = time.monotonic()
        try:
            epoch = await self._slot.next_epoch()
            version = self._version
            now = wire_now(self._clock)
            candidate = self._status.model_copy(
                update={"epoch": epoch, "registered_at": now, "last_heartbeat": now}
            )
            claimed = await claim_slot(self._slot, self.instance_id, candidate, epoch)
        except TRANSIENT_ERRORS as exc:
            raise RedisUnavailable(describe_redis_error(self._settings, exc)) from exc
        self._won(claimed, version)
        self._confirmed_at = sent_at

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
        sent_at = time.monotonic()
        code = await self._slot.update(self.instance_id, self._status, refresh=refresh)
        if code == 1:
            self._written_version = max(self._written_version, version)
            if refresh:
                self._confirmed_at = sent_at
            return HeartbeatResult.REFRESHED
        if code == 0:
            return await self._recreate(via)
        raise await self._lose(via)

    async def _recreate(self, via: str) -> HeartbeatResult:
        """The key is gone: put it back from memory, unless someone else took the slot."""
        for _ in range(CLAIM_ATTEMPTS):
            version = self._version
            self._status = self._status.model_copy(update={"last_heartbeat": wire_now(self._clock)})
            sent_at = time.monotonic()
            if await self._slot.create(self._status):
                self._written_version = max(self._written_version, version)
                self._confirmed_at = sent_at
                await self._raise_epoch_floor()
                log.warning(
                    "exchange %s: status key %s had expired; re-created it from memory",
                    self.exchange_id,
                    self.key,
                )
                if self._on_recreated is not None:
                    self._run_hook(functools.partial(self._on_recreated, self._status))
                return HeartbeatResult.RECREATED
            found = await self._slot.read_holder()
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
            await self._slot.raise_epoch_floor(self._status.epoch)
        except REDIS_ERRORS as exc:
            log.warning(
                "exchange %s: could not restore the epoch counter: %s", self.exchange_id, exc
            )

    async def _lose(self, via: str, found: Found | None = None) -> LeaseLost:
        """Drop the lease for good and tell the owner. Returns the error to raise."""
        if found is None:
            try:
                found = await self._slot.read_holder()
            except REDIS_ERRORS as exc:
                found = Found(True, None, -2, f"could not read it: {exc}")
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
        self._loop.stop_soon()
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
            code = await self._slot.delete(self.instance_id)
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
        self._loop.succeeded()
        if self._after_tick is not None:
            self._run_hook(self._after_tick)
        return result

    async def _tick(self) -> HeartbeatResult:
        if self._written_version != self._version:
            return await self._write_current(refresh=True, via="heartbeat")
        now = wire_now(self._clock)
        sent_at = time.monotonic()
        code = await self._slot.refresh(self.instance_id, now)
        if code == 1:
            self._status = self._status.model_copy(update={"last_heartbeat": now})
            self._confirmed_at = sent_at
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
        self._loop.start(f"perseus heartbeat {self.key}")

    async def stop(self) -> None:
        """Stop the heartbeat task, letting a tick in flight finish first.

        A tick is never cut in half, so a stop does not leave a command sent
        whose outcome nobody looked at. Safe to call from the task itself.
        """
        await self._loop.stop()
