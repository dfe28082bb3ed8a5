"""The lease's Lua scripts: every write after the claim is a compare-and-set on
the holder token, so a holder that lost the exchange can never touch the new
holder's key. Every script touches exactly one key, passed in KEYS, so ACLs
and Redis Cluster routing see it."""

from __future__ import annotations

from dataclasses import dataclass

from redis.commands.core import AsyncScript

from perseus_core.plumbing.scripts import registered_scripts
from perseus_core.plumbing.topology import RedisClient

# Return codes shared by the holder-checked scripts:
#   1  done (the key held our instanceId)
#   0  the key does not exist (expired, deleted, or Redis lost its data)
#  -1  the key holds someone else's payload (or one that is not JSON we wrote)

_HOLDER_OF = """
local function holder_of(raw)
  local ok, doc = pcall(cjson.decode, raw)
  if ok and type(doc) == 'table' and type(doc['instanceId']) == 'string' then
    return doc['instanceId'], doc
  end
  return nil, nil
end
"""

HEARTBEAT_LUA = (
    _HOLDER_OF
    + """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local holder, doc = holder_of(raw)
if holder ~= ARGV[1] then return -1 end
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
"""KEYS: status key. ARGV: our instanceId, lastHeartbeat timestamp, TTL in ms."""

UPDATE_LUA = (
    _HOLDER_OF
    + """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
if holder_of(raw) ~= ARGV[1] then return -1 end
if ARGV[3] == '' then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
"""
)
"""KEYS: status key. ARGV: expected holder instanceId, new payload, TTL in ms or ''
(empty: keep the TTL, as docs/wire-format.md 1.1 says status updates do). Also
the same-host takeover: compare-and-set against the *old* holder's instanceId."""

RELEASE_LUA = (
    _HOLDER_OF
    + """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
if holder_of(raw) ~= ARGV[1] then return -1 end
redis.call('DEL', KEYS[1])
return 1
"""
)
"""KEYS: status key. ARGV: our instanceId. Compare-and-delete."""

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


READ_LUA = """
return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}
"""
"""KEYS: status key. The payload (nil when there is none) and its PTTL, read
together. A script rather than MULTI/EXEC: on Redis Cluster, redis-py queues
each command of a transaction on an event loop of its own in a new thread."""


@dataclass(frozen=True, slots=True)
class LeaseScripts:
    """The lease scripts registered on one client (see `registered_scripts`)."""

    heartbeat: AsyncScript
    update: AsyncScript
    release: AsyncScript
    epoch_floor: AsyncScript
    read: AsyncScript

    @classmethod
    def on(cls, redis: RedisClient) -> LeaseScripts:
        """The scripts on `redis`, registered once and shared by its leases."""
        return cls(
            *registered_scripts(
                redis, HEARTBEAT_LUA, UPDATE_LUA, RELEASE_LUA, EPOCH_FLOOR_LUA, READ_LUA
            )
        )
