"""The pipelined reads of status keys: payloads and their PTTLs, per node and slot.

Chunked `MGET`s and, per chunk, one script returning every key's `PTTL` go
out in one pipeline; on Redis Cluster every `MGET` holds keys of one hash
slot only, so no command ever spans slots. The `PTTL` dates each heartbeat
on the server's clock: every writer resets the key's TTL on each heartbeat,
so the heartbeat happened `TTL - PTTL` ago, whatever the writer's clock says.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from itertools import chain
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ResponseError

from perseus_core.store.network.catalog import RedisClient
from perseus_core.wire import keys
from perseus_core.wire.models import InstanceStatus

Reads = tuple[list[str | None], list[int]]
"""Status payloads (None: no key) and their PTTLs in milliseconds, by id order."""


LIVERMORE_TTL_MS = 45_000
"""The status key TTL every Livermore server sets on each heartbeat
(docs/wire-format.md part 4); its payloads carry no `ttlMs`."""


def writer_ttl_ms(status: InstanceStatus | None) -> int | None:
    """The TTL the holder of `status` sets on every heartbeat: its own `ttlMs`,
    Livermore's fixed 45 s for a payload with no `instanceId` (another writer),
    None when unknown (an older Perseus writer, an unreadable payload).

    Never this reader's own setting: a dashboard at the default 45 s watching
    agents at 6 s would otherwise call every fresh heartbeat 39 s old.
    """
    if status is None:
        return None
    if status.ttl_ms is not None:
        return status.ttl_ms
    return LIVERMORE_TTL_MS if status.instance_id is None else None


def heartbeat_moment(
    read_at: datetime, status: InstanceStatus | None, pttl_ms: int | None
) -> datetime | None:
    """When the key's last heartbeat happened on this host's clock, from its
    PTTL read at `read_at`: the writer's TTL minus the PTTL earlier. None when
    the PTTL cannot date it: no key (-2), no expiry (-1), an unknown writer TTL
    (`writer_ttl_ms`), or more time left than that TTL."""
    ttl_ms = writer_ttl_ms(status)
    if pttl_ms is None or ttl_ms is None or pttl_ms < 0 or pttl_ms > ttl_ms:
        return None
    return read_at - timedelta(milliseconds=ttl_ms - pttl_ms)


PTTL_SCRIPT = "local t = {} for i, k in ipairs(KEYS) do t[i] = redis.call('PTTL', k) end return t"
"""The PTTLs of all its KEYS in one command. One PTTL command per key would
quadruple a 10,000-key steady-state snapshot (the client's per-command cost);
this adds one small EVAL per MGET. The script runs with the caller's ACL rights,
so a read-only user can run it and still write nothing."""

MGET_CHUNK = 1_000
"""Keys per MGET: large enough to keep commands few, small enough that one
command never holds the server for long (other clients interleave between
the pipeline's commands)."""


class StatusReads:
    """The pipelined reads of status keys, chunked per node and hash slot."""

    def __init__(self, redis: RedisClient) -> None:
        """Read through `redis` (decoded responses); cluster-aware when it is a cluster."""
        self._redis = redis
        self._cluster = isinstance(redis, RedisCluster)

    def queue_mgets(self, pipe: Any, ids: Sequence[int]) -> list[list[int]] | None:
        """Queue the MGETs of the given ids' status keys on `pipe`, then their
        PTTLs in the same chunks (`PTTL_SCRIPT`): in order, `MGET_CHUNK`
        keys each, on a single Redis (returns None); one hash slot per group
        (then chunked) on a cluster, where no command may span slots (returns
        the index groups, for `_ungroup`).

        Keys are passed as bytes: redis-py would otherwise encode each one
        while packing the command, a tenth of a 10,000-key read.
        """
        status_keys = [keys.status_key(i).encode() for i in ids]
        if not self._cluster:
            chunks = [
                status_keys[start : start + MGET_CHUNK]
                for start in range(0, len(status_keys), MGET_CHUNK)
            ]
            for chunk in chunks:
                pipe.execute_command("MGET", *chunk)
            for chunk in chunks:
                pipe.execute_command("EVAL", PTTL_SCRIPT, len(chunk), *chunk)
            return None
        by_slot: dict[int, list[int]] = {}
        for index, key in enumerate(status_keys):
            by_slot.setdefault(key_slot(key), []).append(index)
        groups: list[list[int]] = []
        for indexes in by_slot.values():
            groups.extend(indexes[i : i + MGET_CHUNK] for i in range(0, len(indexes), MGET_CHUNK))
        for group in groups:
            pipe.execute_command("MGET", *(status_keys[i] for i in group))
        for group in groups:
            pipe.execute_command("EVAL", PTTL_SCRIPT, len(group), *(status_keys[i] for i in group))
        return groups

    async def catalog_and_statuses(
        self, ids: Sequence[int]
    ) -> tuple[dict[str, str] | ResponseError, Reads]:
        """HGETALL of the catalog, MGETs and PTTLs of the given ids' status
        keys, one pipeline.

        A catalog Redis refuses to read (a key of the wrong type, an ACL) is
        returned as its error, not raised: the statuses read in the same
        pipeline still make a snapshot. Any other failure raises.
        """
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.CATALOG_KEY)
            groups = self.queue_mgets(pipe, ids)
            results = await pipe.execute(raise_on_error=False)
        catalog = results[0]
        mgets = results[: 1 + (len(results) - 1) // 2]
        for result in mgets[1:] if isinstance(catalog, ResponseError) else mgets:
            if isinstance(result, Exception):
                raise result
        return catalog, _split(len(ids), groups, results[1:])

    async def mget(self, ids: Sequence[int]) -> Reads:
        """The status payloads of the given ids (None where there is no key)
        and their PTTLs."""
        async with self._redis.pipeline(transaction=False) as pipe:
            groups = self.queue_mgets(pipe, ids)
            results = await pipe.execute(raise_on_error=False)
        return _split(len(ids), groups, results)


def _split(size: int, groups: list[list[int]] | None, results: Sequence[Any]) -> Reads:
    """The payloads and the PTTLs (both in id order) from a `queue_mgets`
    pipeline. A failed MGET raises; a refused PTTL script (a user without
    EVAL) only leaves those keys undated (-1), to be aged by `lastHeartbeat`."""
    half = len(results) // 2
    for result in results[:half]:
        if isinstance(result, Exception):
            raise result
    pttls = [
        [-1] * len(mget) if isinstance(r, Exception) else r
        for mget, r in zip(results[:half], results[half:], strict=True)
    ]
    return _ungroup(size, groups, results[:half]), _ungroup(size, groups, pttls)


def _ungroup(size: int, groups: Iterable[list[int]] | None, results: Sequence[Any]) -> list[Any]:
    """The chunked replies (MGETs, PTTL scripts) back in the order of the ids
    they were queued for."""
    if groups is None:  # in order
        return list(chain.from_iterable(results))
    values: list[Any] = [None] * size
    for group, chunk in zip(groups, results, strict=True):
        for index, value in zip(group, chunk, strict=True):
            values[index] = value
    return values
