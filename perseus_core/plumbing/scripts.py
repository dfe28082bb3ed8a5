"""Lua scripts on a Redis client: registering write scripts once, and the
command a read-only script is sent with."""

from __future__ import annotations

import weakref

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript
from redis.exceptions import NoPermissionError, ResponseError

_REGISTERED: weakref.WeakKeyDictionary[Redis | RedisCluster, dict[str, AsyncScript]] = (
    weakref.WeakKeyDictionary()
)
_READ_ONLY_EVAL: weakref.WeakKeyDictionary[Redis | RedisCluster, str] = weakref.WeakKeyDictionary()

EVAL_RO_PROBE = "return 1"
"""The script `read_script_command` runs once per client: it touches no key,
so the answer depends only on the command and the user's right to it."""


def registered_scripts(redis: Redis | RedisCluster, *sources: str) -> tuple[AsyncScript, ...]:
    """The `Script` objects of `sources` on `redis`, registered once per client.

    redis-py then sends EVALSHA and loads a script only when the server does
    not know it (first use, or after Redis restarted and lost its script
    cache), so every object working with the same client shares one
    registration. The cache holds the client weakly: a closed and dropped
    client takes its scripts with it.

    Args:
        redis: the client the scripts run on.
        sources: Lua sources, in the order the scripts are returned.
    """
    known = _REGISTERED.get(redis)
    if known is None:
        known = _REGISTERED[redis] = {}
    for source in sources:
        if source not in known:
            known[source] = redis.register_script(source)
    return tuple(known[source] for source in sources)


async def read_script_command(redis: Redis | RedisCluster) -> str:
    """`EVAL_RO` where the server has it and this user may run it, else `EVAL`:
    the command to send a script that only reads, asked once per client.

    Redis 7 judges every key passed to `EVAL` as read *and written* (the
    script could write), so a user whose keys are read-only (`%R~`) is refused
    `EVAL` even for a script that only reads; `EVAL_RO` declares the script
    read-only and is judged as a read. Redis 6.2 has no `EVAL_RO` (and no
    read-only key patterns: there `EVAL` runs with the caller's rights, which
    is enough). A Redis 7 user without `+eval_ro` (the 6.2 lines of
    docs/production-redis.md kept after an upgrade) gets `EVAL` as before.

    The question is one `EVAL_RO` of a script that touches no key, on the first
    read of a client. Only a decisive answer is remembered (it ran; unknown
    command; not permitted); any other refusal (a busy server) answers `EVAL`
    this once and is asked again next time. Connection errors propagate: the
    read that needed the answer could not have been made either.
    """
    known = _READ_ONLY_EVAL.get(redis)
    if known is not None:
        return known
    try:
        await redis.execute_command("EVAL_RO", EVAL_RO_PROBE, 0)
    except NoPermissionError:
        command = "EVAL"
    except ResponseError as exc:
        if "unknown command" not in str(exc).lower():
            return "EVAL"
        command = "EVAL"
    else:
        command = "EVAL_RO"
    _READ_ONLY_EVAL[redis] = command
    return command
