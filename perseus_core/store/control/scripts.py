"""The control channel's few atomic writes, as Lua scripts on one key each.

Each writes a key and sets its expiry in one step, so no record or reply is
ever left without one. Scripts rather than MULTI/EXEC: on Redis Cluster,
redis-py queues every command of a transaction on a private event loop in a
thread of its own (and may do I/O there), which costs a thread per command
and can stall the caller's loop; a script is one command, routed by its key
(passed in KEYS, so ACLs see it too).
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.commands.core import AsyncScript

from perseus_core.plumbing.scripts import registered_scripts
from perseus_core.plumbing.topology import RedisClient

CLAIM_LUA = """
local created = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
local current = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {created, current}
"""
"""KEYS: outcome hash. ARGV: field, record, retention ms. Returns whether
this call created the field, and the field's value now."""

RECORD_LUA = """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""
"""KEYS: outcome hash. ARGV: field, record, retention ms."""

REPLY_LUA = """
redis.call('RPUSH', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""
"""KEYS: reply list. ARGV: reply JSON, TTL in seconds."""


@dataclass(frozen=True, slots=True)
class ControlScripts:
    """The control scripts registered on one client (see `registered_scripts`)."""

    claim: AsyncScript
    record: AsyncScript
    reply: AsyncScript

    @classmethod
    def on(cls, redis: RedisClient) -> ControlScripts:
        """The scripts on `redis`, registered once and shared."""
        return cls(*registered_scripts(redis, CLAIM_LUA, RECORD_LUA, REPLY_LUA))
