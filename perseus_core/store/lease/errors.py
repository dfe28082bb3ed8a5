"""Why a claim failed and how a lease was lost: messages that name the holder."""

from __future__ import annotations

from perseus_core.wire.errors import PerseusError
from perseus_core.wire.models import InstanceStatus
from perseus_core.wire.text import clean
from perseus_core.wire.timeutil import format_ts


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
