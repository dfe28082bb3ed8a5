"""One exchange slot's status key and epoch counter, as the lease reads and writes them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from perseus_core.plumbing.topology import RedisClient
from perseus_core.store.lease.scripts import LeaseScripts
from perseus_core.wire import keys
from perseus_core.wire.errors import PayloadError
from perseus_core.wire.models import InstanceStatus
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import format_ts

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Found:
    """What the status key holds: nothing, a readable holder, or an unreadable payload."""

    exists: bool
    status: InstanceStatus | None = None
    ttl_ms: int = -2
    detail: str | None = None


class SlotKey:
    """The Redis side of a lease: each method is one round trip on one key.

    Every call has one time budget, retries included, so the caller's event
    loop never waits on an unresponsive server longer than the socket timeout.
    The owner-checked writes return the scripts' codes: 1 done, 0 the key is
    gone, -1 someone else's payload (see `scripts`).
    """

    def __init__(self, redis: RedisClient, settings: Settings, exchange_id: int) -> None:
        self.redis = redis
        self.key = keys.status_key(exchange_id)
        self.epoch_key = keys.epoch_key(exchange_id)
        self.ttl_ms = settings.heartbeat_ttl_ms
        self._call_timeout_s = settings.socket_timeout_ms / 1000
        self._scripts = LeaseScripts.on(redis)

    async def io(self, awaitable: Awaitable[_T]) -> _T:
        """Await one Redis call within the per-call budget."""
        async with asyncio.timeout(self._call_timeout_s):
            return await awaitable

    async def next_epoch(self) -> int:
        """INCR the epoch counter: the epoch of a new claim."""
        return int(await self.io(self.redis.incr(self.epoch_key)))

    async def create(self, status: InstanceStatus) -> bool:
        """`SET NX PX`: write the payload only if nobody holds the slot."""
        return bool(
            await self.io(self.redis.set(self.key, status.to_json(), px=self.ttl_ms, nx=True))
        )

    async def read_holder(self) -> Found:
        """The payload and its remaining TTL, read together."""
        raw, ttl = await self.io(self._scripts.read(keys=[self.key]))
        if raw is None:
            return Found(exists=False)
        try:
            return Found(True, InstanceStatus.from_json(raw), int(ttl))
        except PayloadError as exc:
            return Found(True, None, int(ttl), str(exc))

    async def update(self, owner: str, status: InstanceStatus, *, refresh: bool) -> int:
        """Replace the payload if `owner` holds it; `refresh` also resets the TTL."""
        ttl = str(self.ttl_ms) if refresh else ""
        return int(
            await self.io(
                self._scripts.update(keys=[self.key], args=[owner, status.to_json(), ttl])
            )
        )

    async def refresh(self, owner: str, now: datetime) -> int:
        """Reset the TTL and lastHeartbeat if `owner` holds the key."""
        return int(
            await self.io(
                self._scripts.heartbeat(keys=[self.key], args=[owner, format_ts(now), self.ttl_ms])
            )
        )

    async def delete(self, owner: str) -> int:
        """Delete the key if `owner` holds it."""
        return int(await self.io(self._scripts.release(keys=[self.key], args=[owner])))

    async def raise_epoch_floor(self, epoch: int) -> None:
        """Raise the epoch counter to at least `epoch` (after Redis lost its data)."""
        await self.io(self._scripts.epoch_floor(keys=[self.epoch_key], args=[epoch]))
