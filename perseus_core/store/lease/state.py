"""The state of a lease, as its owner reads it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from perseus_core.plumbing.topology import RedisClient
from perseus_core.store.lease.errors import LeaseLost
from perseus_core.store.lease.heartbeat import HeartbeatLoop, HeartbeatResult
from perseus_core.store.lease.slot import SlotKey
from perseus_core.wire.models import InstanceStatus
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import Clock, system_clock


class LeaseState:
    """What a lease knows: the in-memory status, whether the slot is held, and
    how the heartbeat is doing. `Lease` adds what it does with them,
    including `heartbeat`, the tick its heartbeat task runs.

    Args: see `Lease`.
    """

    heartbeat: Callable[[], Awaitable[HeartbeatResult]]

    def __init__(
        self,
        redis: RedisClient,
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
        self._slot = SlotKey(redis, settings, status.exchange_id)
        self._settings = settings
        self._clock = clock
        self._on_lost = on_lost
        self._on_recreated = on_recreated
        self._after_tick = after_tick
        self.instance_id: str = status.instance_id
        self.exchange_id = status.exchange_id
        self.key = self._slot.key
        self.epoch_key = self._slot.epoch_key
        self._status = status
        self._version = 0
        self._written_version = 0
        self._held = False
        self._confirmed_at: float | None = None
        self._lost: LeaseLost | None = None
        self._lock = asyncio.Lock()
        self._loop = HeartbeatLoop(settings, self.exchange_id, self.heartbeat, lambda: self._held)

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
    def confirmed_at(self) -> float | None:
        """When (`time.monotonic()`) the last write that Redis confirmed restarting
        the key's TTL was sent; None before the first claim.

        The key lives at least until this + the TTL (by this host's clock, up to
        clock-rate differences with the server): what a watchdog that must kill
        the child before anyone else can claim the slot counts from.
        """
        return self._confirmed_at

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
        return self._loop.running

    @property
    def heartbeat_count(self) -> int:
        """Successful heartbeat ticks (refreshed or re-created) since creation."""
        return self._loop.count

    @property
    def heartbeat_failures(self) -> int:
        """Ticks that failed on a Redis error (and were retried on the next tick)."""
        return self._loop.failures

    @property
    def last_error(self) -> str | None:
        """The most recent heartbeat failure, one line; None after a success."""
        return self._loop.last_error
