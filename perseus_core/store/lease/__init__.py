"""The lease on an exchange's status key: who holds `exchange:{id}:status`,
proven by the key's TTL and fenced by a compare-and-set on the holder token.

Modules: `lease` (the `Lease`, the errors it raises and the holder tokens)
and `scripts` (its Lua, one key each).
"""

from perseus_core.store.lease.lease import (
    RATE_MARGIN,
    ClaimConflict,
    HeartbeatResult,
    KeyRecreated,
    Lease,
    LeaseLost,
    Vanishing,
    make_instance_id,
    unique_start_ms,
    wire_now,
)

__all__ = [
    "RATE_MARGIN",
    "ClaimConflict",
    "HeartbeatResult",
    "KeyRecreated",
    "Lease",
    "LeaseLost",
    "Vanishing",
    "make_instance_id",
    "unique_start_ms",
    "wire_now",
]
