"""Reading the entries of a time window per exchange, for state timelines.

A timeline (`perseus_core.present.timeline`) needs an exchange's entries of
the window and the state across its start. One read per exchange serves it:
from each of its two streams the newest `count` entries of the window (by
stream ID, the Redis server's clock), and from its shared stream the newest
few entries before the window, whose newest transition tells the state at
its start. The reads of many exchanges go out in one pipeline (on a Redis
Cluster the client splits it per node; every command names one key).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from perseus_core.plumbing.connection import refused
from perseus_core.store.activity.cursors import StreamRows, stream_name
from perseus_core.wire import keys
from perseus_core.wire.models import ActivityEntry, StateTransitionEntry, parse_entry
from perseus_core.wire.timeutil import to_epoch_ms

EDGE_SCAN = 20
"""Entries read before the window in search of the transition that tells the
state across its start (errors may sit between it and the window)."""


@dataclass(frozen=True, slots=True)
class Window:
    """One exchange's entries for its timeline.

    Attributes:
        entries: the window's entries from both streams, and the newest
            transition before it (if one of the `EDGE_SCAN` newest entries
            before it is one), in no particular order.
        known_from: None when the read covers the whole window; else the
            time of the oldest entry read (a stream had more than `count`
            entries in the window: what came before is not known).
        error: why a stream could not be read (its entries are left out).
    """

    entries: list[ActivityEntry] = field(default_factory=list)
    known_from: datetime | None = None
    error: str | None = None


async def read_windows(
    redis: Redis | RedisCluster, names: Iterable[str], *, since: datetime, count: int
) -> dict[str, Window]:
    """The window from `since` to now of every named exchange, by lower-cased name.

    Raises:
        ValueError: `count` < 1.
        redis errors: Redis is unreachable (a refused key is reported in `Window.error`).
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    wanted = sorted({name.lower() for name in names})
    if not wanted:
        return {}
    low = f"{to_epoch_ms(since)}-0"
    async with redis.pipeline(transaction=False) as pipe:
        for name in wanted:
            for key in (keys.activity_key(name), keys.perseus_activity_key(name)):
                pipe.xrevrange(key, max="+", min=low, count=count)
            pipe.xrevrange(keys.activity_key(name), max=f"({low}", min="-", count=EDGE_SCAN)
        results = await pipe.execute(raise_on_error=False)
    return {
        name: _window(name, results[3 * index : 3 * index + 3], count)
        for index, name in enumerate(wanted)
    }


def _window(name: str, results: list[Any], count: int) -> Window:
    """One exchange's window from its three replies (shared, Perseus, before)."""
    shared, ours, before = results
    stream_keys = (keys.activity_key(name), keys.perseus_activity_key(name))
    entries: list[ActivityEntry] = []
    known_from: datetime | None = None
    error: str | None = None
    for key, result in zip(stream_keys, (shared, ours), strict=True):
        if isinstance(result, ResponseError):
            error = str(refused(result, "XREVRANGE", key))
            continue
        if isinstance(result, Exception):
            raise result
        rows = cast(StreamRows, result)
        read = [parse_entry(i, fields or {}, stream_name(key), key) for i, fields in rows]
        entries += read
        oldest = read[-1].moment if read and len(rows) >= count else None
        if oldest is not None and (known_from is None or oldest > known_from):
            known_from = oldest  # a stream cut short: before its oldest, nothing is known
    if isinstance(before, ResponseError):
        error = error or str(refused(before, "XREVRANGE", stream_keys[0]))
    elif isinstance(before, Exception):
        raise before
    elif known_from is None:
        edge = (parse_entry(i, f or {}, name, stream_keys[0]) for i, f in cast(StreamRows, before))
        newest = next((e for e in edge if isinstance(e, StateTransitionEntry)), None)
        if newest is not None:
            entries.append(newest)
    return Window(entries, known_from, error)
