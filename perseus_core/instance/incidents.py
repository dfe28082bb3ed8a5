"""What an instance does when its lease tells it about an incident.

The lease calls these hooks inside its critical section, so they only update
memory and schedule the rest (the owner's callback, the `error` entry) in the
instance's background tasks.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable

from perseus_core.instance.publication import MAX_ERROR_CHARS, Publisher
from perseus_core.plumbing.tasks import TaskGroup
from perseus_core.store.lease import Lease, LeaseLost, wire_now
from perseus_core.wire.models import ErrorEntry, InstanceStatus
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import Clock

log = logging.getLogger(__name__)

LeaseLostCallback = Callable[[LeaseLost], Awaitable[None] | None]
"""`on_lease_lost`: a plain function or a coroutine function."""


class LeaseIncidents:
    """The lease's `on_lost` and `on_recreated` hooks for one instance.

    Args:
        lease: the instance's lease (its status takes `lastError` on a loss).
        publisher: appends the `error` entry that records each incident.
        settings: the heartbeat TTL, quoted in the re-created key's entry.
        clock: source of the incidents' timestamps.
        tasks: the instance's background tasks.
        on_lease_lost: the owner's callback, called once per loss.
    """

    def __init__(
        self,
        lease: Lease,
        publisher: Publisher,
        settings: Settings,
        *,
        clock: Clock,
        tasks: TaskGroup,
        on_lease_lost: LeaseLostCallback | None,
    ) -> None:
        self._lease = lease
        self._publisher = publisher
        self._settings = settings
        self._clock = clock
        self._tasks = tasks
        self._on_lease_lost = on_lease_lost

    def lost(self, exc: LeaseLost) -> None:
        """Another instance holds the slot: `lastError` says so; fence, then record it."""
        now = wire_now(self._clock)
        text = str(exc)[:MAX_ERROR_CHARS]
        status = self._lease.status
        self._lease.set_status(status.model_copy(update={"last_error": text, "last_error_at": now}))
        entry = self._publisher.error_entry(text, now)
        self._tasks.spawn(self._after_lost(exc, entry), "lease lost")

    async def _after_lost(self, exc: LeaseLost, entry: ErrorEntry) -> None:
        # The owner's callback first: fencing must not wait on a slow append.
        callback = self._on_lease_lost
        if callback is not None:
            try:
                result = callback(exc)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                # The owner's code, whatever it raises: the entry below must still be written.
                log.exception(
                    "exchange %s: on_lease_lost callback failed", self._lease.status.exchange_id
                )
        await self._publisher.append_quietly(entry)

    def recreated(self, status: InstanceStatus) -> None:
        """The key had expired with the slot still free: re-created, and the stream told."""
        ttl_s = self._settings.heartbeat_ttl_ms / 1000
        text = (
            f"status key exchange:{status.exchange_id}:status had expired (no heartbeat reached "
            f"Redis within the {ttl_s:g}s TTL, or Redis lost its data); re-created it from "
            f"this instance's state ({status.connection_state.value}, epoch {status.epoch})"
        )
        entry = self._publisher.error_entry(text, wire_now(self._clock))
        self._tasks.spawn(self._publisher.append_quietly(entry), "key re-created")
