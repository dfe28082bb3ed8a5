"""Registering Lua scripts once per Redis client."""

from __future__ import annotations

import weakref

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript

_REGISTERED: weakref.WeakKeyDictionary[Redis | RedisCluster, dict[str, AsyncScript]] = (
    weakref.WeakKeyDictionary()
)


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
