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

Usage: `.venv/bin/python bench/bench_snapshot.py [--runs N] [--sizes 100,1000,10000]
[--without-hiredis]`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
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
)
from redis.asyncio import BlockingConnectionPool, Redis

from perseus_core.plumbing.connection import connect
from perseus_core.store.network import FleetReader, FleetSnapshot
from perseus_core.wire import keys
from perseus_core.wire.errors import PayloadError
from perseus_core.wire.models import CatalogEntry, InstanceStatus
from perseus_core.wire.settings import Settings
from perseus_tui.heap import collector_paused

POOL_SIZE = 64
SPEEDUP_TARGET = 15.0
MEDIAN_TARGET_MS = 100.0


async def per_key_snapshot(redis: Redis) -> tuple[int, int]:
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


async def perseus_cold(redis: Redis, settings: Settings) -> tuple[int, int]:
    """Perseus's read as the judged figure: a new FleetReader, so its payload
    cache is empty and every payload is validated, and no keyspace SCAN (the
    per-key side does not look for unlisted exchanges either)."""
    reader = FleetReader(redis)
    return _count(await reader.snapshot(discover_online=False))


async def perseus_cold_scan(redis: Redis, settings: Settings) -> tuple[int, int]:
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


async def measure(settings: Settings, sizes: list[int], runs: int) -> dict[str, Any]:
    """Alternate the two approaches run by run so drift affects both alike."""
    figures: dict[str, Any] = {}
    redis = connect(settings)
    pool: BlockingConnectionPool = BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=POOL_SIZE,
        decode_responses=True,
        socket_timeout=30,
    )
    per_key_client = Redis(connection_pool=pool)
    try:
        for size in sizes:
            await seed_fleet(redis, size)
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
            }
    finally:
        await redis.aclose()
        await per_key_client.aclose()
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
    args = parser.parse_args()
    global PAUSE_COLLECTOR
    PAUSE_COLLECTOR = not args.without_collector_pause
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    report = Report("snapshot")
    with redis_server() as server:
        settings = bench_settings(server.url)
        report.figures = run_async(lambda: measure(settings, sizes, args.runs))
        report.figures["collector_paused"] = PAUSE_COLLECTOR
        report.figures["method"] = (
            "median wall time; perseus = a new FleetReader's snapshot(discover_online=False), "
            "so every payload is validated (with_scan: its default first snapshot, which also "
            "SCANs the keyspace; steady_cached: the same reader again on unchanged payloads, "
            "as the dashboard polls); per_key_get = HGETALL catalog + one GET per exchange "
            f"gathered concurrently over a {POOL_SIZE}-connection pool, validating every "
            "payload too; runs interleave the four; each read inside "
            "perseus_tui.heap.collector_paused() as the dashboard and `perseus status` "
            "call it, unless collector_paused is false"
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
        report.emit(server)


if __name__ == "__main__":
    main()
