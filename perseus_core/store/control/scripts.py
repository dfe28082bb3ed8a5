"""The control channel's few atomic writes, as Lua scripts on one key each.

The sender's append trims the command stream by age in the same step; the
server's writes set a key and its expiry together, so no record or reply is
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

APPEND_COMMAND_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local args = {'MINID', '~', string.format('%d', now - tonumber(ARGV[1])), '*'}
for i = 2, #ARGV do args[#args + 1] = ARGV[i] end
return redis.call('XADD', KEYS[1], unpack(args))
"""
"""KEYS: the command stream. ARGV: the command expiry in ms, then field, value...

Appends a command and trims the stream by age: entries older than the
command expiry, by the Redis server's clock (the clock of stream IDs). Those
would be answered `Command expired` anyway, so no unread live command is ever
dropped, however many are sent (a cap by length would drop the oldest unread
ones in a flood). The sender runs it with a plain EVAL on a connection of its
own, sent exactly once (see `sender.ControlClient.submit`), so it is not
among the registered `ControlScripts`."""

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
    """The command server's scripts registered on one client (see `registered_scripts`)."""

    claim: AsyncScript
    record: AsyncScript
    reply: AsyncScript

    @classmethod
    def on(cls, redis: RedisClient) -> ControlScripts:
        """The scripts on `redis`, registered once and shared."""
        return cls(*registered_scripts(redis, CLAIM_LUA, RECORD_LUA, REPLY_LUA))
