"""Timelines: the window read per exchange, and the dashboard's memory after an hour of watching.

A catalog of 1,000 exchanges, every one online, and each exchange's two
activity streams filled with an hour of realistic transitions, errors and
commands (`_common.seed_history`: flapping, restarted and quiet exchanges).

- Window read: what the dashboard reads once per exchange for its state
  timelines (`read_windows`, the last day, `TIMELINE_READ_COUNT` entries per
  stream, `TIMELINE_BATCH` exchanges per pipeline, as `FleetService` sends
  them). Timed for the whole fleet (CPU of this process and wall, per run,
  and per exchange), and for one exchange read on its own (the latency of
  the smallest read: one pipeline of three XREVRANGEs).
- Memory after an hour: the real dashboard (headless, 120x40) on a clock the
  benchmark drives. The clock starts at the seeded hour's beginning; once
  every exchange's window is read, the clock is advanced second by second
  through the hour, and each second the app's own clock tick runs (which
  records every exchange's heartbeat age into its trace and redraws the rows
  on screen); every 15 simulated seconds every status is rewritten with a
  heartbeat at the simulated time and the fleet is read again. So the
  traces end up as after an hour of watching, and the timelines hold the
  hour of entries. Reported: the resident memory of this process before
  the app, once the windows are read and after the hour (after a full
  collection), and the deep size of the two books the timelines and the
  sparklines keep (every object reachable from them, classes excluded).

Targets: none set by the issue; the figures are reported (`checks` holds
that the hour ran and every window was read).

Usage: `.venv/bin/python bench/bench_timelines.py [--exchanges N] [--runs N] [--hour-s S]`
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from _common import (
    Report,
    bench_settings,
    exchange_name,
    holds,
    median,
    ms,
    percentile,
    redis_server,
    rss_bytes,
    run_async,
    seed_fleet,
    seed_history,
    touch_fleet,
    wait_until,
)

from perseus_core.plumbing.connection import connect
from perseus_core.present.timeline import DAY
from perseus_core.store.activity.windows import read_windows
from perseus_core.wire.settings import Settings
from perseus_tui.service import TIMELINE_BATCH, TIMELINE_READ_COUNT

POLL_EVERY_S = 15
"""Simulated seconds between two fleet reads during the hour (a heartbeat round each)."""
SINGLE_READS = 200
"""Exchanges read one at a time for the single-read latency."""
LIMIT_S = 120.0
"""Longest wait for the app to read every window or show a read."""


def _mb(size: float) -> float:
    return round(size / 1e6, 1)


def deep_size(root: object) -> tuple[int, int]:
    """Bytes and objects reachable from `root`, classes, modules and functions
    excluded (they are shared with the rest of the process)."""
    shared = (type, type(sys), type(deep_size))
    seen: set[int] = set()
    stack = [root]
    size = count = 0
    while stack:
        item = stack.pop()
        if id(item) in seen or isinstance(item, shared):
            continue
        seen.add(id(item))
        size += sys.getsizeof(item)
        count += 1
        stack.extend(gc.get_referents(item))
    return size, count


async def window_reads(settings: Settings, exchanges: int, runs: int) -> dict[str, Any]:
    """The whole fleet's window reads as the dashboard sends them, and single reads."""
    redis = connect(settings)
    names = [exchange_name(i).lower() for i in range(1, exchanges + 1)]
    try:
        cpu: list[float] = []
        wall: list[float] = []
        entries = 0
        for _ in range(runs):
            since = datetime.now(UTC) - DAY
            start_cpu, start_wall = time.process_time(), time.perf_counter()
            read = 0
            for first in range(0, len(names), TIMELINE_BATCH):
                windows = await read_windows(
                    redis,
                    names[first : first + TIMELINE_BATCH],
                    since=since,
                    count=TIMELINE_READ_COUNT,
                )
                read += sum(len(window.entries) for window in windows.values())
            cpu.append(time.process_time() - start_cpu)
            wall.append(time.perf_counter() - start_wall)
            entries = read
        single: list[float] = []
        single_cpu: list[float] = []
        step = max(1, len(names) // SINGLE_READS)
        for name in names[::step][:SINGLE_READS]:
            since = datetime.now(UTC) - DAY
            start_cpu, start_wall = time.process_time(), time.perf_counter()
            await read_windows(redis, [name], since=since, count=TIMELINE_READ_COUNT)
            single.append(time.perf_counter() - start_wall)
            single_cpu.append(time.process_time() - start_cpu)
    finally:
        await redis.aclose()
    return {
        "entries_read": entries,
        "fleet_read_cpu_ms": {"median": ms(median(cpu)), "min": ms(min(cpu)), "runs": runs},
        "fleet_read_wall_ms": {"median": ms(median(wall)), "min": ms(min(wall)), "runs": runs},
        "per_exchange_in_fleet_read_cpu_us": round(median(cpu) / exchanges * 1e6, 1),
        "per_exchange_in_fleet_read_wall_us": round(median(wall) / exchanges * 1e6, 1),
        "single_exchange_read_wall_ms": {
            "median": ms(median(single)),
            "p99": ms(percentile(single, 99)),
            "samples": len(single),
        },
        "single_exchange_read_cpu_ms": {"median": ms(median(single_cpu))},
    }


class SimClock:
    """The app's clock, advanced by the benchmark."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


async def an_hour_watched(
    settings: Settings, exchanges: int, start: datetime, hour_s: int
) -> dict[str, Any]:
    """The dashboard watching the fleet for `hour_s` simulated seconds from `start`."""
    from _tui import running_dashboard

    redis = connect(settings)
    clock = SimClock(start)
    gc.collect()
    rss_before = rss_bytes()
    figures: dict[str, Any] = {}
    problems: list[str] = []
    try:
        async with running_dashboard(settings, clock=clock, problems=problems) as (app, pilot):
            if not await wait_until(lambda: app.timelines_read, LIMIT_S):
                problems.append("the timeline windows were not all read in time")
            figures["all_windows_read"] = app.timelines_read
            gc.collect()
            rss_read = rss_bytes()
            tick_cpu: list[float] = []
            simulated = 0
            hour_from = time.perf_counter()
            for second in range(1, hour_s + 1):
                clock.now = start + timedelta(seconds=second)
                if second % POLL_EVERY_S == 0:
                    await touch_fleet(redis, exchanges, now=clock.now)
                    shown = app.fleet
                    app.request_refresh()
                    if not await wait_until(lambda s=shown: app.fleet is not s, LIMIT_S, 0.002):
                        problems.append(f"a fleet read was not shown at {second} s")
                        break
                cpu = time.process_time()
                app._tick()
                tick_cpu.append(time.process_time() - cpu)
                simulated = second
                if second % 10 == 0:
                    await pilot.pause()  # frames, messages and the feed's work, as in real time
            figures["simulated_seconds"] = simulated
            figures["hour_wall_s"] = round(time.perf_counter() - hour_from, 1)
            figures["tick_cpu_during_hour_ms"] = {
                "median": ms(median(tick_cpu)),
                "p90": ms(percentile(tick_cpu, 90)),
                "max": ms(max(tick_cpu, default=float("nan"))),
                "note": "the tick's own work (traces, header, rows on screen), not the render",
            }
            await pilot.pause()
            gc.collect()
            rss_after = rss_bytes()
            fleet = app.fleet
            timelines_bytes, timelines_objects = deep_size(fleet.timelines)
            traces_bytes, traces_objects = deep_size(fleet.traces)
            kept = [
                len(history.entries)
                for view in fleet.ordered
                if (history := fleet.timelines.history(view.exchange_name)) is not None
            ]
            traced = [
                len(trace.values())
                for view in fleet.ordered
                if (trace := fleet.traces.trace(view.exchange_id)) is not None
            ]
            figures["memory"] = {
                "rss_before_app_mb": _mb(rss_before),
                "rss_windows_read_mb": _mb(rss_read),
                "rss_after_hour_mb": _mb(rss_after),
                "growth_over_hour_mb": _mb(rss_after - rss_read),
                "growth_since_before_app_mb": _mb(rss_after - rss_before),
                "timelines_book_mb": _mb(timelines_bytes),
                "timelines_book_objects": timelines_objects,
                "traces_book_mb": _mb(traces_bytes),
                "traces_book_objects": traces_objects,
                "entries_kept": sum(kept),
                "entries_kept_max_per_exchange": max(kept, default=0),
                "traces": len(traced),
                "trace_slots_used_max": max(traced, default=0),
            }
    finally:
        await redis.aclose()
    if problems:
        figures["problems"] = problems
    return figures


def main() -> None:
    """Parse arguments, run, print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exchanges", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=5, help="timed fleet window reads")
    parser.add_argument("--hour-s", type=int, default=3_600, help="simulated seconds watched")
    args = parser.parse_args()
    report = Report("timelines")
    with redis_server() as server:
        settings = bench_settings(server.url, refresh_ms=3_600_000)

        async def run() -> dict[str, Any]:
            redis = connect(settings)
            try:
                await seed_fleet(redis, args.exchanges)
                end = datetime.now(UTC)
                written = await seed_history(redis, args.exchanges, end=end)
            finally:
                await redis.aclose()
            figures: dict[str, Any] = {"exchanges": args.exchanges, "history_entries": written}
            figures["window_read"] = await window_reads(settings, args.exchanges, args.runs)
            start = end - timedelta(seconds=args.hour_s)
            figures["hour"] = await an_hour_watched(settings, args.exchanges, start, args.hour_s)
            return figures

        figures = run_async(run)
        report.figures = figures
        hour = figures["hour"]
        report.check(holds("every exchange's window read", bool(hour.get("all_windows_read"))))
        simulated = hour.get("simulated_seconds") == args.hour_s
        report.check(holds("the whole hour simulated", simulated))
        report.notes.append("no targets: the issue asks for these figures to be reported")
        report.emit(server)


if __name__ == "__main__":
    main()
