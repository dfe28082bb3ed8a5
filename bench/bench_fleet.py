"""Fleet at scale: the dashboard watching 1,000 or 10,000 exchanges, every goal in one run.

A catalog of N exchanges, each with a live status payload (a long TTL, so
nothing heartbeats), on one private redis-server or, with `--cluster`, a
local Redis Cluster of 3 masters and 3 replicas (keyspace notifications on
with `--notify`). The real dashboard (`create_app`, headless `App.run_test`,
120x40, default settings: a full fleet read every 5 s) runs in this process;
whatever writes to Redis while it is measured runs in producer processes of
its own (`_common.Producers`), so the dashboard's process shares nothing but
the machine. Phases, in this order, each with a time limit (a figure not
reached within its limit is reported as null, and its check as not met):

1. Redis CPU before the dashboard starts (for information: what the servers
   cost on their own, a cluster's nodes pinging each other).
2. First paint: from `create_app` to the first frame rendered with all N
   exchanges in the view (the table), as bench_scale measures it.
3. Refresh cycle CPU: every status rewritten, then `r`; this process's CPU
   from the request to the first frame rendered after the new read was
   shown, as bench_scale measures it (`_tui.refresh_cycle_cpu`).
4. Redis CPU of the idle fleet's dashboard: used_cpu_sys + used_cpu_user
   (INFO) summed over every node while only the dashboard talks to Redis (no
   heartbeats, no writers), as a share of one core.
5. Event to screen with the feed at `--feed-rate` entries/s (2,000) from a
   background producer: t0 before an agent's XADD, end when the feed renders
   the entry, as bench_event_to_screen measures it (`_tui.event_to_screen`).
6. Key press p99 during a burst of `--rate` entries/s (20,000) spread over
   every stream by several producer processes: `p` every 50 ms until the
   frame showing its effect, as bench_burst measures it
   (`_tui.key_press_latency`); the achieved rate is reported.
7. RSS after `--minutes` more with the feed at `--feed-rate`: resident memory
   at the end (sampled every 10 s along the way).

The report is one JSON line (runs collected in one file stay one line each).

Targets (the first column for N <= 1,000, else the second): first paint
< 1 s / < 2 s; event to screen p99 < 50 / < 100 ms; refresh cycle CPU median
< 10 / < 30 ms; key press p99 < 50 / < 100 ms; RSS < 150 / < 300 MB; Redis CPU
idle < 1 / < 2 % of one core.

Usage: `.venv/bin/python bench/bench_fleet.py [--exchanges 10000] [--cluster [--notify]]
[--minutes 10] [--burst-seconds 60] [--rate 20000] [--feed-rate 2000] [--idle-seconds 30]`
"""

from __future__ import annotations

import argparse
import asyncio
import time
from dataclasses import dataclass
from typing import Any

from _common import (
    Producers,
    RedisTarget,
    Report,
    at_most,
    bench_settings,
    ms,
    redis_target,
    rss_bytes,
    run_async,
    seed_fleet,
    touch_fleet,
)
from _tui import (
    FrameClock,
    ShowCounter,
    event_to_screen,
    everything_shown,
    key_press_latency,
    refresh_cycle_cpu,
    running_dashboard,
)

from perseus_core.plumbing.connection import connect
from perseus_core.store.activity import ActivityLog
from perseus_tui.app import PerseusApp


@dataclass(frozen=True)
class Goals:
    """The goals of one fleet size (the large-fleet table in bench/README.md)."""

    first_paint_s: float
    event_p99_ms: float
    refresh_cpu_ms: float
    key_p99_ms: float
    rss_mb: float
    redis_cpu_percent: float


GOALS_1K = Goals(1.0, 50.0, 10.0, 50.0, 150.0, 1.0)
GOALS_10K = Goals(2.0, 100.0, 30.0, 100.0, 300.0, 2.0)

CYCLES = 10
CYCLE_LIMIT_S = 60.0
"""A refresh cycle not shown after this long ends its phase (counted at its cost so far)."""
EVENTS = 200
SETTLE_S = 3.0
"""Quiet before a Redis CPU window: the previous phase's last reads are over."""
RSS_SAMPLE_S = 10.0


def goals_for(exchanges: int) -> Goals:
    """The first column up to 1,000 exchanges, the second above."""
    return GOALS_1K if exchanges <= 1_000 else GOALS_10K


async def redis_cpu_percent(target: RedisTarget, seconds: float) -> float:
    """Redis CPU (every node) over the next `seconds`, as a % of one core."""
    before = await asyncio.to_thread(target.cpu_seconds)
    start = time.perf_counter()
    await asyncio.sleep(seconds)
    used = await asyncio.to_thread(target.cpu_seconds) - before
    return round(used / (time.perf_counter() - start) * 100, 3)


async def measure(target: RedisTarget, args: argparse.Namespace) -> dict[str, Any]:
    """Seed the fleet, then run every phase against the one dashboard."""
    exchanges: int = args.exchanges
    settings = bench_settings(target.url)
    redis = connect(settings)
    figures: dict[str, Any] = {
        "exchanges": exchanges,
        "redis": "cluster 3+3" if target.cluster else "single server",
        "keyspace_events": args.keyspace_events,
        "terminal": "120x40 headless",
        "dashboard_refresh_ms": settings.refresh_ms,
        "run": {
            "minutes": args.minutes,
            "burst_seconds": args.burst_seconds,
            "burst_rate_per_s": args.rate,
            "feed_rate_per_s": args.feed_rate,
            "idle_seconds": args.idle_seconds,
            "paint_limit_s": args.paint_limit,
        },
    }
    problems: list[str] = []
    clock: FrameClock | None = None
    shows: ShowCounter | None = None
    first_paint: asyncio.Future[Any] | None = None

    def install(app: PerseusApp) -> None:
        nonlocal clock, shows, first_paint
        clock = FrameClock(app)
        shows = ShowCounter(app)
        first_paint = clock.when(everything_shown(app, exchanges))

    try:
        started = time.perf_counter()
        await seed_fleet(redis, exchanges)
        figures["seed_s"] = round(time.perf_counter() - started, 2)
        await asyncio.sleep(SETTLE_S)
        figures["redis_cpu_percent_without_dashboard"] = await redis_cpu_percent(
            target, args.idle_seconds
        )

        launched = time.perf_counter()
        try:
            async with running_dashboard(
                settings, before_start=install, problems=problems, limit_s=args.paint_limit
            ) as (app, pilot):
                assert clock is not None and shows is not None and first_paint is not None
                await phases(app, pilot, clock, shows, first_paint, launched, target, args, figures)
        except TimeoutError:
            # The dashboard did not show its first read (or its feed history) in time.
            problems.append(
                f"the dashboard did not show its first read within {args.paint_limit:g} s;"
                " the phases after it did not run"
            )
            if first_paint is not None and first_paint.done():
                figures["first_paint_ms"] = ms(first_paint.result().wall - launched)
    finally:
        await redis.aclose()
    if problems:
        figures["problems"] = problems
    return figures


async def phases(
    app: PerseusApp,
    pilot: Any,
    clock: FrameClock,
    shows: ShowCounter,
    first_paint: asyncio.Future[Any],
    launched: float,
    target: RedisTarget,
    args: argparse.Namespace,
    figures: dict[str, Any],
) -> None:
    """Phases 2-7 against the running dashboard (see the module docstring)."""
    exchanges: int = args.exchanges
    redis = connect(app.settings)
    try:
        left = max(1.0, args.paint_limit - (time.perf_counter() - launched))
        try:
            painted = await asyncio.wait_for(asyncio.shield(first_paint), left)
            figures["first_paint_ms"] = ms(painted.wall - launched)
        except TimeoutError:
            figures["first_paint_ms"] = None
            figures.setdefault("problems", []).append(
                f"not every exchange was in the view within {args.paint_limit:g} s"
            )
        figures["view"] = "table" if app.dashboard.showing_table else "cards"

        # Align with the poll: a request resets its 5 s, so the cycles that
        # follow one another do not meet a periodic read.
        count = shows.calls
        app.request_refresh()
        await clock.next_frame_when(shows.grew(count), CYCLE_LIMIT_S)

        async def rewrite_statuses() -> None:
            await touch_fleet(redis, exchanges)

        figures["refresh_cycle_cpu"] = await refresh_cycle_cpu(
            app, clock, shows, rewrite_statuses,
            cycles=CYCLES, cycle_limit_s=CYCLE_LIMIT_S, phase_limit_s=120.0,
        )  # fmt: skip

        await asyncio.sleep(SETTLE_S)
        cpu_start = time.process_time()
        figures["redis_cpu_percent_idle_dashboard"] = await redis_cpu_percent(
            target, args.idle_seconds
        )
        figures["dashboard_cpu_percent_idle"] = round(
            (time.process_time() - cpu_start) / args.idle_seconds * 100, 1
        )

        log = ActivityLog(redis, app.settings)
        feed = Producers(target, args.feed_rate, 600.0, exchanges)
        async with feed:
            await asyncio.sleep(2.0)  # the feed at its rate before the first event
            events = await event_to_screen(
                app, clock, log, exchanges, events=EVENTS, phase_limit_s=180.0
            )
            events["background"] = await feed.stop()
        figures["event_to_screen"] = events

        await asyncio.sleep(SETTLE_S)
        burst = Producers(target, args.rate, args.burst_seconds, exchanges)
        rss_before = rss_bytes()
        async with burst:
            keys = await key_press_latency(app, clock, while_=lambda: burst.running)
            keys["producers"] = await burst.stop()
        keys["rss_growth_mb"] = round((rss_bytes() - rss_before) / 2**20, 1)
        figures["burst"] = keys

        await pilot.pause()
        samples: list[float] = []
        background = Producers(target, args.feed_rate, args.minutes * 60 + 30, exchanges)
        async with background:
            end = time.perf_counter() + args.minutes * 60
            while (left := end - time.perf_counter()) > 0:
                await asyncio.sleep(min(RSS_SAMPLE_S, left))
                samples.append(rss_bytes() / 2**20)
            rss_producers = await background.stop()
        figures["rss"] = {
            "after_phase_mb": round(samples[-1], 1) if samples else None,
            "peak_sampled_mb": round(max(samples), 1) if samples else None,
            "first_sample_mb": round(samples[0], 1) if samples else None,
            "phase_minutes": args.minutes,
            "dashboard_uptime_s": round(time.perf_counter() - launched, 1),
            "background": rss_producers,
        }
    finally:
        await redis.aclose()


def judge(report: Report, figures: dict[str, Any]) -> None:
    """One check per goal, against the column of this fleet size."""
    goals = goals_for(figures["exchanges"])
    paint = figures.get("first_paint_ms")
    report.check(
        at_most("first paint", None if paint is None else paint / 1000, goals.first_paint_s, "s")
    )
    events = figures.get("event_to_screen", {})
    report.check(
        at_most(
            f"event to screen p99, feed at {figures['run']['feed_rate_per_s']:g} entries/s",
            events.get("p99_ms"),
            goals.event_p99_ms,
            "ms",
        )
    )
    cycle = figures.get("refresh_cycle_cpu", {})
    report.check(
        at_most("refresh cycle CPU, median", cycle.get("median_ms"), goals.refresh_cpu_ms, "ms")
    )
    burst = figures.get("burst", {})
    achieved = burst.get("producers", {}).get("achieved_rate_per_s")
    report.check(
        at_most(
            f"key press p99 during the burst ({achieved or 0:g} entries/s achieved)",
            burst.get("to_repaint", {}).get("p99_ms"),
            goals.key_p99_ms,
            "ms",
        )
    )
    rss = figures.get("rss", {})
    report.check(
        at_most(
            f"dashboard RSS after {figures['run']['minutes']:g} min",
            rss.get("after_phase_mb"),
            goals.rss_mb,
            "MB",
        )
    )
    report.check(
        at_most(
            "Redis CPU of the idle fleet's dashboard (every node)",
            figures.get("redis_cpu_percent_idle_dashboard"),
            goals.redis_cpu_percent,
            "% of one core",
        )
    )


def main() -> None:
    """Parse arguments, run, print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exchanges", type=int, default=10_000)
    parser.add_argument("--cluster", action="store_true", help="on a local Redis Cluster (3+3)")
    parser.add_argument(
        "--notify",
        action="store_true",
        help="keyspace notifications on: K$gxzht, what the dashboard's tail (t) and its"
        " status watcher ($gxzh) use",
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="the RSS phase")
    parser.add_argument("--burst-seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=float, default=20_000, help="burst entries/s")
    parser.add_argument("--feed-rate", type=float, default=2_000, help="background entries/s")
    parser.add_argument("--idle-seconds", type=float, default=30.0, help="Redis CPU window")
    parser.add_argument(
        "--paint-limit", type=float, default=300.0, help="seconds allowed for the first paint"
    )
    args = parser.parse_args()
    args.keyspace_events = "K$gxzht" if args.notify else ""
    report = Report("fleet")
    with redis_target(cluster=args.cluster, keyspace_events=args.keyspace_events) as target:
        report.figures = run_async(lambda: measure(target, args))
        judge(report, report.figures)
        goals = goals_for(args.exchanges)
        report.notes.append(
            f"goals of the {'1,000' if goals is GOALS_1K else '10,000'}-exchange column"
        )
        if args.minutes < 10 or args.burst_seconds < 60:
            report.notes.append(
                f"shortened run: RSS phase {args.minutes:g} min (goal: 10),"
                f" burst {args.burst_seconds:g} s (default 60)"
            )
        report.emit(target.servers[0], one_line=True)


if __name__ == "__main__":
    main()
