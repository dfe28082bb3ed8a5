"""Taking a slot: `SET NX`, adopting our own lost-reply win, replacing a dead
holder on this host, or naming the live holder in a `ClaimConflict`."""

from __future__ import annotations

import logging
import os

from perseus_core.plumbing.processes import pid_is_running
from perseus_core.store.lease.errors import ClaimConflict
from perseus_core.store.lease.slot import Found, SlotKey
from perseus_core.wire.models import InstanceStatus

log = logging.getLogger(__name__)

CLAIM_ATTEMPTS = 5
"""How often a claim (or a re-create) looks again when the key changes under it."""


async def claim_slot(
    slot: SlotKey, instance_id: str, candidate: InstanceStatus, epoch: int
) -> InstanceStatus:
    """Write `candidate` (owner token `instance_id`, epoch `epoch`) as the slot's holder.

    Returns:
        The payload now in the key: `candidate`, or, when an earlier attempt
        of ours had won but its reply was lost, the candidate carrying that
        attempt's epoch and registration time.

    Raises:
        ClaimConflict: another live instance holds the slot.
    """
    found = Found(exists=False)
    for _ in range(CLAIM_ATTEMPTS):
        if await slot.create(candidate):
            return candidate
        found = await slot.read_holder()
        if not found.exists:
            continue  # expired between SET NX and the read: try again
        holder = found.status
        if holder is not None and holder.instance_id == instance_id:
            # An earlier attempt of ours was applied but its reply was lost.
            adopted = candidate.model_copy(
                update={
                    "epoch": holder.epoch if holder.epoch is not None else epoch,
                    "registered_at": holder.registered_at,
                }
            )
            if await slot.update(instance_id, adopted, refresh=True) == 1:
                return adopted
            continue
        if holder is not None and holder.instance_id and may_take_over(holder, candidate.hostname):
            if await slot.update(holder.instance_id, candidate, refresh=True) == 1:
                log.warning(
                    "exchange %s: took over the slot from %s: its pid %s is no longer "
                    "running on this host",
                    candidate.exchange_id,
                    holder.instance_id,
                    holder.pid,
                )
                return candidate
            continue  # it changed under us: look again
        raise ClaimConflict(
            holder,
            found.ttl_ms,
            exchange_id=candidate.exchange_id,
            detail=(
                why_not_taken_over(holder, candidate.hostname)
                if holder is not None
                else found.detail
            ),
        )
    raise ClaimConflict(
        found.status,
        found.ttl_ms,
        exchange_id=candidate.exchange_id,
        detail="the slot kept changing hands while claiming",
    )


def may_take_over(holder: InstanceStatus, hostname: str) -> bool:
    """Same host, a recorded pid that is not ours, and that pid is gone."""
    return (
        holder.hostname == hostname
        and holder.pid is not None
        and holder.pid != os.getpid()
        and not pid_is_running(holder.pid)
    )


def why_not_taken_over(holder: InstanceStatus, hostname: str) -> str | None:
    """For a same-host holder, why the takeover rule did not apply."""
    if holder.hostname != hostname or holder.pid is None:
        return None
    if holder.pid == os.getpid():
        return f"held by this process (pid {holder.pid}) under another owner token"
    if pid_is_running(holder.pid):
        return f"pid {holder.pid} is still running on this host"
    return f"pid {holder.pid} is gone, but the payload has no instanceId to replace safely"
