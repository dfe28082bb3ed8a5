"""The slot lease: who owns `exchange:{id}:status`, proven by a key with a TTL.

Only one live process may own an exchange slot. Ownership is the status key
itself (the TTL is the liveness signal other readers already use), marked with
an owner token, `instanceId` (docs/wire-format.md 2.2). Every write after the
claim is a compare-and-set on that token inside one Lua script, so a holder
that stalled past its TTL and lost the slot can never overwrite or delete the
new holder's key. A separate counter, `perseus:epoch:{id}`, increases each
time the slot changes hands and is stored in the payload: it survives expiries
of the status key, so anything acting on the holder's behalf can be fenced by
epoch.

Modules: `scripts` (the Lua, one key each), `slot` (the key's round trips),
`claim` (taking the slot), `heartbeat` (the ticking task), `state` and `lease`
(the `Lease` its owner holds), `errors`, `identity` (owner tokens).
"""

from perseus_core.store.lease.errors import ClaimConflict, LeaseLost
from perseus_core.store.lease.heartbeat import HeartbeatResult
from perseus_core.store.lease.identity import make_instance_id, unique_start_ms, wire_now
from perseus_core.store.lease.lease import Lease
from perseus_core.store.lease.scripts import (
    EPOCH_FLOOR_LUA,
    HEARTBEAT_LUA,
    RELEASE_LUA,
    UPDATE_LUA,
)

__all__ = [
    "EPOCH_FLOOR_LUA",
    "HEARTBEAT_LUA",
    "RELEASE_LUA",
    "UPDATE_LUA",
    "ClaimConflict",
    "HeartbeatResult",
    "Lease",
    "LeaseLost",
    "make_instance_id",
    "unique_start_ms",
    "wire_now",
]
