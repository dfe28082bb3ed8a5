"""Event to screen: from XADD to the entry rendered in the dashboard's activity feed.

The dashboard (headless, 120x40, the real app from `create_app`) follows every
stream with blocking reads. For each of 200 events, t0 is taken just before
the entry is appended (the agent's own `ActivityLog.append`: XADD with inline
retention), and the end is the moment the feed's `render_line` produces a
line holding it, which happens while the compositor renders the frame. The
events are spaced 20-60 ms apart at random so that each one is measured on
its own rather than batched with the previous one.

With `--cluster` the same runs on a local Redis Cluster (3 masters, 3
replicas), where the dashboard reads per slot group (a small fleet) or per
node (a large one: `--exchanges 1000`), woken by keyspace notifications with
`--notify`, else polling (see `perseus_core.store.activity.reads`).

Target: p99 under 50 ms (the TypeScript dashboard polls every 5,000 ms).

Usage: `.venv/bin/python bench/bench_event_to_screen.py [--events N]
[--cluster [--exchanges N] [--notify]]`
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import time
from datetime import UTC, datetime
from typing import Any

from _common import (
    Report,
    at_most,
    bench_settings,
    exchange_name,
    median,
    ms,
    percentile,
    redis_server,
    run_async,
    seed_fleet,
)
from _tui import FeedProbe, running_dashboard

from perseus_cli.apps.redis_cluster import RedisClusterNodes
from perseus_core.plumbing.connection import connect
from perseus_core.store.activity import ActivityLog
from perseus_core.wire.models import ErrorEntry
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import format_ts

FLEET = 10
WARMUP_EVENTS = 10
MISSING_AFTER_S = 2.0
TARGET_P99_MS = 50.0


async def measure(settings: Settings, events: int, fleet: int = FLEET) -> dict[str, Any]:
    """Append `events` entries one by one and time each until it is rendered."""
    redis = connect(settings)
    try:
        await seed_fleet(redis, fleet)
        log = ActivityLog(redis, settings)
        async with running_dashboard(settings) as (app, _pilot):
            probe = FeedProbe(app.dashboard.feed)
            latencies: list[float] = []
            missing = 0
            for index in range(WARMUP_EVENTS + events):
                exchange_id = index * 7919 % fleet + 1  # spread over the fleet
                name = exchange_name(exchange_id)
                marker = f"probe-{index:05d}"
                entry = ErrorEntry(
                    timestamp=format_ts(datetime.now(UTC)),
                    error=f"{marker} websocket closed (1006)",
                    exchange_id=str(exchange_id),
                    exchange_name=name,
                    hostname="trader-01.eu-west.internal",
                    ip="203.0.113.7",
                    state="active",
                )
                shown = probe.expect(marker)
                start = time.perf_counter()
                await log.append(name, entry)
                try:
                    await asyncio.wait_for(shown.wait(), MISSING_AFTER_S)
                except TimeoutError:
                    probe.forget(marker)
                    if index >= WARMUP_EVENTS:
                        missing += 1
                    continue
                if index >= WARMUP_EVENTS:
                    latencies.append(probe.seen[marker] - start)
                await asyncio.sleep(random.uniform(0.02, 0.06))
    finally:
        await redis.aclose()
    # A missing event counts as infinitely late: it cannot hide in the percentiles.
    judged = latencies + [math.inf] * missing
    return {
        "events": events,
        "warmup_events_not_counted": WARMUP_EVENTS,
        "missing_after_2s": missing,
        "p50_ms": ms(percentile(judged, 50)),
        "p90_ms": ms(percentile(judged, 90)),
        "p99_ms": ms(percentile(judged, 99)),
        "max_ms": ms(max(judged)) if judged else None,
        "min_ms": ms(min(judged)) if judged else None,
        "mean_of_shown_ms": ms(sum(latencies) / len(latencies)) if latencies else None,
        "median_of_shown_ms": ms(median(latencies)),
        "exchanges": fleet,
        "terminal": "120x40 headless",
    }


def main() -> None:
    """Parse arguments, run, print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--cluster", action="store_true", help="on a local Redis Cluster")
    parser.add_argument("--exchanges", type=int, default=FLEET, help="fleet size")
    parser.add_argument("--notify", action="store_true", help="keyspace notifications on")
    args = parser.parse_args()
    report = Report("event_to_screen")
    if args.cluster:
        events = "Kt" if args.notify else ""
        with RedisClusterNodes(keyspace_events=events) as nodes:
            settings = bench_settings(nodes.url)
            figures = run_async(lambda: measure(settings, args.events, args.exchanges))
            report.figures = {**figures, "redis": "cluster 3+3", "keyspace_events": events}
            report.check(at_most("event to screen p99", figures["p99_ms"], TARGET_P99_MS, "ms"))
            report.emit()
        return
    with redis_server() as server:
        settings = bench_settings(server.url)
        figures = run_async(lambda: measure(settings, args.events, args.exchanges))
        report.figures = figures
        report.check(at_most("event to screen p99", figures["p99_ms"], TARGET_P99_MS, "ms"))
        report.emit(server)


if __name__ == "__main__":
    main()
