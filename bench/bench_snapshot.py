"""Snapshot read: Perseus's network read against one GET per exchange, same run.

The TypeScript dashboard reads every exchange's status with its own GET. Perseus
reads the catalog and every status key in one round trip per node. Both sides
here do the same work end to end: read the catalog, read every status key and
validate every payload into an `InstanceStatus`, so the difference is the
round trips and nothing else.

The per-key side gathers its GETs concurrently over a pool of 64 connections
(one connection per in-flight GET is what concurrency needs; 10,000 sockets
would only measure connection setup).

Target at 10,000 exchanges: at least 15x faster than the per-key GETs and a
median under 100 ms including validation.

redis-py parses replies with `hiredis` (a default dependency of Perseus) when
it is installed. `--without-hiredis` measures what an install without it gets,
redis-py's pure-Python parser and command packer, on both sides alike.

`--cluster` runs the same on a local Redis Cluster (3 masters, 3 replicas);
the per-key side then keeps at most 64 GETs in flight (a semaphore: the
cluster client's pools refuse, rather than queue, a 65th connection).

The steady state with keyspace notifications (`perseus_watched`): the
server (every master) sends them (`K$gxzh`), a `StatusWatcher` is told which
status keys were written, and `FleetReader.refresh` re-reads only those,
as the dashboard's poll does between its full reads. Each run rewrites
`--changed` random payloads (default 667: one second of heartbeats of
10,000 exchanges at the production 15 s), waits (untimed) until the watcher
was told of every one, then times the re-read.

Usage: `.venv/bin/python bench/bench_snapshot.py [--runs N] [--sizes 100,1000,10000]
[--without-hiredis] [--cluster] [--changed N]`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import sys
import time
from datetime import UTC, datetime
from typing import Any, cast

if "--without-hiredis" in sys.argv:
    # Before redis-py is first imported: it then finds no hiredis, exactly as
    # on an install without it, and picks its own parser and packer.
    sys.modules["hiredis"] = None  # type: ignore[assignment]

from _common import (
    Report,
    at_least,
    at_most,
    bench_settings,
    median,
    ms,
    redis_server,
    run_async,
    seed_fleet,
    status_payload,
)
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster

from perseus_cli.apps.redis_cluster import RedisClusterNodes
from perseus_core.plumbing.connection import connect
from perseus_core.plumbing.topology import RedisClient
from perseus_core.store.network import FleetReader, FleetSnapshot, StatusWatcher
from perseus_core.wire import keys
from perseus_core.wire.errors import PayloadError
from perseus_core.wire.models import CatalogEntry, InstanceStatus
from perseus_core.wire.settings import Settings
from perseus_tui.heap import collector_paused

POOL_SIZE = 64
SPEEDUP_TARGET = 15.0
MEDIAN_TARGET_MS = 100.0
NOTIFY = "K$gxzh"
"""The keyspace notifications `StatusWatcher` needs (`WATCH_CLASSES`)."""
CHANGED = 667
"""Payloads rewritten per steady-state run: one second of heartbeats of
10,000 exchanges at the production 15 s."""


async def per_key_snapshot(redis: RedisClient) -> tuple[int, int]:
    """The per-key approach: the catalog, then one GET per exchange, concurrently.

    Returns (statuses validated, payload errors) so the work cannot be skipped.
    """
    raw_catalog = cast(dict[str, str], await redis.hgetall(keys.CATALOG_KEY))
    entries = []
    for raw in raw_catalog.values():
        try:
            entries.append(CatalogEntry.from_json(raw))
        except PayloadError:
            continue
    if isinstance(redis, RedisCluster):  # its pools refuse a 65th connection: bound it here
        in_flight = asyncio.Semaphore(POOL_SIZE)

        async def get(key: str) -> Any:
            async with in_flight:
                return await redis.get(key)

        payloads = await asyncio.gather(*(get(keys.status_key(e.id)) for e in entries))
    else:  # the blocking pool of 64 connections bounds it
        payloads = await asyncio.gather(*(redis.get(keys.status_key(e.id)) for e in entries))
    ok = errors = 0
    for payload in payloads:
        if payload is None:
            continue
        try:
            InstanceStatus.from_json(payload)
            ok += 1
        except PayloadError:
            errors += 1
    return ok, errors


def _count(snapshot: FleetSnapshot) -> tuple[int, int]:
    ok = sum(1 for view in snapshot.exchanges if view.status is not None)
    errors = sum(1 for view in snapshot.exchanges if view.error is not None)
    return ok, errors


async def perseus_cold(redis: RedisClient, settings: Settings) -> tuple[int, int]:
    """Perseus's read as the judged figure: a new FleetReader, so its payload
    cache is empty and every payload is validated, and no keyspace SCAN (the
    per-key side does not look for unlisted exchanges either)."""
    reader = FleetReader(redis)
    return _count(await reader.snapshot(discover_online=False))


async def perseus_cold_scan(redis: RedisClient, settings: Settings) -> tuple[int, int]:
    """A new reader with its defaults, as `perseus status` runs it: the first
    snapshot also SCANs for online exchanges missing from the catalog."""
    reader = FleetReader(redis)
    return _count(await reader.snapshot())


async def perseus_steady(reader: FleetReader) -> tuple[int, int]:
    """The dashboard's poll: the same reader again, payloads unchanged since its
    previous snapshot, so validation is served from its cache."""
    return _count(await reader.snapshot(discover_online=False))


PAUSE_COLLECTOR = True
"""Run every side inside `collector_paused()`, as the dashboard's poll and
`perseus status` read (`--without-collector-pause`: as the library alone does)."""


async def timed(fn: Any, *args: Any) -> tuple[float, tuple[int, int]]:
    """Wall time of one awaited call, and its result."""
    start = time.perf_counter()
    with collector_paused() if PAUSE_COLLECTOR else contextlib.nullcontext():
        result = await fn(*args)
    return time.perf_counter() - start, result


async def perseus_watched(redis: RedisClient, size: int, changed: int, runs: int) -> dict[str, Any]:
    """The steady state with keyspace notifications: a reader that took its
    full snapshot re-reads the `changed` exchanges the watcher was told of.
    Median and min wall time of the re-read, over `runs` runs."""
    reader = FleetReader(redis)
    watcher = StatusWatcher(redis)
    if not await watcher.start():
        return {"perseus_watched": "no keyspace notifications"}
    times: list[float] = []
    rng = random.Random(size)
    try:
        await reader.snapshot(discover_online=False)
        for _ in range(runs + 1):  # the first one warms the path up
            ids = set(rng.sample(range(1, size + 1), min(changed, size)))
            now = datetime.now(UTC)
            async with redis.pipeline(transaction=False) as pipe:
                for i in ids:
                    pipe.set(keys.status_key(i), status_payload(i, now), px=3_600_000)
                await pipe.execute()
            told: set[int] = set()
            deadline = time.monotonic() + 30
            while not told >= ids and time.monotonic() < deadline:
                told.update(watcher.take()[0])
                await asyncio.sleep(0.01)
            if not told >= ids:
                raise RuntimeError(f"told of {len(told & ids)} of {len(ids)} changes")
            start = time.perf_counter()
            with collector_paused() if PAUSE_COLLECTOR else contextlib.nullcontext():
                views = await reader.refresh(told)
            elapsed = time.perf_counter() - start
            if views is None or len(views) != len(told):
                raise RuntimeError("the re-read did not answer for every change")
            times.append(elapsed)
    finally:
        await watcher.aclose()
    times = times[1:]
    return {
        "perseus_watched_median_ms": ms(median(times)),
        "perseus_watched_min_ms": ms(min(times)),
        "perseus_watched_changed": min(changed, size),
    }


def per_key_client_for(settings: Settings, cluster: bool) -> tuple[RedisClient, Any]:
    """The per-key side's client, and its pool to close (None on a cluster)."""
    if cluster:
        client = RedisCluster.from_url(
            settings.redis_url, decode_responses=True, max_connections=POOL_SIZE, socket_timeout=30
        )
        return client, None
    pool: BlockingConnectionPool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=POOL_SIZE,
        decode_responses=True,
        socket_timeout=30,
    )
    return Redis(connection_pool=pool), pool


async def measure(
    settings: Settings,
    sizes: list[int],
    runs: int,
    *,
    cluster: bool = False,
    changed: int = CHANGED,
) -> dict[str, Any]:
    """Alternate the two approaches run by run so drift affects both alike."""
    figures: dict[str, Any] = {}
    redis = connect(settings)
    per_key_client, pool = per_key_client_for(settings, cluster)
    try:
        for size in sizes:
            await seed_fleet(cast(Redis, redis), size)  # a cluster client pipelines alike
            steady_reader = FleetReader(redis)
            sides: dict[str, tuple[Any, ...]] = {
                "perseus": (perseus_cold, redis, settings),
                "perseus_with_scan": (perseus_cold_scan, redis, settings),
                "perseus_steady_cached": (perseus_steady, steady_reader),
                "per_key_get": (per_key_snapshot, per_key_client),
            }
            times: dict[str, list[float]] = {name: [] for name in sides}
            # Warm every path (connections, pool, caches) before timing.
            for fn, *args in sides.values():
                await fn(*args)
            for _ in range(runs):
                for name, (fn, *args) in sides.items():
                    elapsed, (ok, errors) = await timed(fn, *args)
                    if ok != size or errors:
                        raise RuntimeError(f"{name} saw {ok}/{size} statuses, {errors} errors")
                    times[name].append(elapsed)
            medians = {name: median(values) for name, values in times.items()}
            figures[str(size)] = {
                "perseus_median_ms": ms(medians["perseus"]),
                "perseus_min_ms": ms(min(times["perseus"])),
                "perseus_with_scan_median_ms": ms(medians["perseus_with_scan"]),
                "perseus_steady_cached_median_ms": ms(medians["perseus_steady_cached"]),
                "per_key_get_median_ms": ms(medians["per_key_get"]),
                "per_key_get_min_ms": ms(min(times["per_key_get"])),
                "speedup": round(medians["per_key_get"] / medians["perseus"], 2),
                "runs": runs,
                **await perseus_watched(redis, size, changed, runs),
            }
    finally:
        await redis.aclose()
        await per_key_client.aclose()
        if pool is not None:
            await pool.aclose()
    return figures


def main() -> None:
    """Parse arguments, run, print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed runs per size (default 7)")
    parser.add_argument("--sizes", default="100,1000,10000", help="comma-separated catalog sizes")
    parser.add_argument(
        "--without-hiredis",
        action="store_true",
        help="measure redis-py without hiredis (its pure-Python reply parser)",
    )
    parser.add_argument(
        "--without-collector-pause",
        action="store_true",
        help="read with the garbage collector as the library leaves it, instead of "
        "paused around each read as the dashboard and `perseus status` do",
    )
    parser.add_argument("--cluster", action="store_true", help="on a local Redis Cluster (3+3)")
    parser.add_argument(
        "--changed",
        type=int,
        default=CHANGED,
        help=f"payloads rewritten per steady-state run (default {CHANGED})",
    )
    args = parser.parse_args()
    global PAUSE_COLLECTOR
    PAUSE_COLLECTOR = not args.without_collector_pause
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    report = Report("snapshot")
    servers: contextlib.AbstractContextManager[Any] = (
        RedisClusterNodes(keyspace_events=NOTIFY)
        if args.cluster
        else redis_server("notify-keyspace-events", NOTIFY)
    )
    with servers as server:
        settings = bench_settings(server.url)
        report.figures = run_async(
            lambda: measure(settings, sizes, args.runs, cluster=args.cluster, changed=args.changed)
        )
        report.figures["redis"] = "cluster 3+3" if args.cluster else "single"
        report.figures["collector_paused"] = PAUSE_COLLECTOR
        report.figures["method"] = (
            "median wall time; perseus = a new FleetReader's snapshot(discover_online=False), "
            "so every payload is validated (with_scan: its default first snapshot, which also "
            "SCANs the keyspace; steady_cached: the same reader again on unchanged payloads, "
            "as the dashboard polls); per_key_get = HGETALL catalog + one GET per exchange "
            f"gathered concurrently over a {POOL_SIZE}-connection pool, validating every "
            "payload too (on a cluster, at most 64 GETs in flight); runs interleave the four; "
            "watched = FleetReader.refresh of the exchanges a StatusWatcher was told "
            "changed (keyspace notifications on), after rewriting that many payloads; "
            "each read inside perseus_tui.heap.collector_paused() as the dashboard and "
            "`perseus status` call it, unless collector_paused is false"
        )
        largest = report.figures.get("10000")
        if largest is not None:
            report.check(at_least("speedup at 10,000", largest["speedup"], SPEEDUP_TARGET, "x"))
            report.check(
                at_most(
                    "perseus median at 10,000", largest["perseus_median_ms"], MEDIAN_TARGET_MS, "ms"
                )
            )
        else:
            report.notes.append("10,000 not in --sizes: the targets were not checked")
        report.emit(None if args.cluster else server)


if __name__ == "__main__":
    main()
