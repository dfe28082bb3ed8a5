"""Scale: the dashboard with 1,000 exchanges, first full paint and CPU per refresh cycle.

A catalog of 1,000 exchanges, every one online, and the real dashboard
(headless, 120x40). Above 60 exchanges it shows the table; the cards are
measured too (after `t`), for information.

- First full paint: from `create_app` to the first frame rendered once every
  exchange is in the view (the app started, connected, read the fleet,
  built 1,000 rows and rendered them).
- Full refresh cycle: every status payload is rewritten (new heartbeat
  times, as a round of heartbeats does), then `r`; this process's CPU time
  from the request to the first frame rendered after the new read was
  shown (the read, the validation of 1,000 changed payloads, the diff, the
  render).
- Clock tick cycle: once a second the dashboard advances every heartbeat age;
  CPU from the tick to the frame that shows it.

With `--history`, every exchange's two activity streams first get an hour of
realistic transitions, errors and commands (`_common.seed_history`), and the
cycles are measured once the dashboard has read every exchange's timeline
window, so each row's strip is drawn from real entries. A dashboard without
timelines (an older tree) just reads the same streams into its feed: the
same script measures both.

Targets: first full paint < 1.5 s; each refresh cycle < 100 ms of CPU (judged
on the full refresh and on the clock tick, in the default view).

Usage: `.venv/bin/python bench/bench_scale.py [--exchanges N] [--cycles N] [--history]`
"""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from _common import (
    Report,
    at_most,
    bench_settings,
    median,
    ms,
    percentile,
    redis_server,
    run_async,
    seed_fleet,
    seed_history,
    touch_fleet,
    wait_until,
)
from textual.css.query import NoMatches

from perseus_core.plumbing.connection import connect
from perseus_core.wire.settings import Settings

TARGET_PAINT_S = 1.5
TARGET_CYCLE_CPU_MS = 100.0
CYCLE_LIMIT_S = 60.0
"""A refresh cycle that has not shown its result after this long is reported as stuck."""
PHASE_BUDGET_S = 60.0
"""No new cycle is started after this long in one phase (samples so far are reported)."""


def _summary(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"median_ms": None, "p90_ms": None, "max_ms": None, "samples": 0}
    return {
        "median_ms": ms(median(values)),
        "p90_ms": ms(percentile(values, 90)),
        "max_ms": ms(max(values)),
        "samples": len(values),
    }


async def measure(
    settings: Settings, exchanges: int, cycles: int, *, history: bool = False
) -> dict[str, Any]:
    """First paint, refresh cycles and tick cycles, table then cards."""
    from _tui import FrameClock, running_dashboard

    redis = connect(settings)
    figures: dict[str, Any] = {"exchanges": exchanges, "terminal": "120x40 headless"}
    problems: list[str] = []
    clock: FrameClock | None = None
    first_paint: asyncio.Future[Any] | None = None
    shown_calls = 0
    tick_samples: list[tuple[float, asyncio.Future[Any]]] = []
    sample_ticks = False

    try:
        await seed_fleet(redis, exchanges)
        if history:
            written = await seed_history(redis, exchanges, end=datetime.now(UTC))
            figures["history_entries"] = written

        def install(app: Any) -> None:
            nonlocal clock, first_paint
            clock = FrameClock(app)
            dashboard = app.dashboard

            def everything_shown() -> bool:
                if not (app.loaded.is_set() and dashboard.is_mounted):
                    return False
                try:
                    if dashboard.showing_table:
                        return bool(dashboard.table.row_count == exchanges)
                    return len(dashboard.grid.visible_cards) == exchanges
                except NoMatches:
                    return False

            first_paint = clock.when(everything_shown)
            original_show = dashboard.show_views
            original_tick = dashboard.tick

            def show_views(*args: Any, **kwargs: Any) -> None:
                nonlocal shown_calls
                original_show(*args, **kwargs)
                shown_calls += 1

            def tick(now: Any) -> None:
                cpu = time.process_time()
                original_tick(now)
                if sample_ticks and clock is not None:
                    tick_samples.append((cpu, clock.when(lambda: True)))

            dashboard.show_views = show_views
            dashboard.tick = tick

        launched = time.perf_counter()
        async with running_dashboard(settings, before_start=install, problems=problems) as (
            app,
            pilot,
        ):
            assert clock is not None and first_paint is not None
            painted = await asyncio.wait_for(first_paint, 30)
            figures["first_full_paint_ms"] = ms(painted.wall - launched)
            figures["view_at_start"] = "table" if app.dashboard.showing_table else "cards"
            if history and hasattr(app, "timelines_read"):
                read_from = time.perf_counter()
                if not await wait_until(lambda: app.timelines_read, CYCLE_LIMIT_S):
                    problems.append("the timeline windows were not all read in time")
                figures["timelines_read_after_paint_ms"] = ms(time.perf_counter() - read_from)

            async def refresh_cycles() -> dict[str, Any]:
                costs: list[float] = []
                walls: list[float] = []
                phase_end = time.perf_counter() + PHASE_BUDGET_S
                for _ in range(cycles):
                    if time.perf_counter() > phase_end:
                        break  # enough to judge; a pathological app would take forever
                    await touch_fleet(redis, exchanges)
                    await asyncio.sleep(0.3)
                    calls = shown_calls

                    def shown_again(calls: int = calls) -> bool:
                        return shown_calls > calls

                    done = clock.when(shown_again)
                    start_cpu, start_wall = time.process_time(), time.perf_counter()
                    app.request_refresh()
                    try:
                        frame = await asyncio.wait_for(done, CYCLE_LIMIT_S)
                    except TimeoutError:
                        # Counted at what it cost so far; a stuck app is not sampled again.
                        costs.append(time.process_time() - start_cpu)
                        walls.append(time.perf_counter() - start_wall)
                        return {**_summary(costs), "wall": _summary(walls), "timed_out": True}
                    costs.append(frame.cpu - start_cpu)
                    walls.append(frame.wall - start_wall)
                return {**_summary(costs), "wall": _summary(walls), "timed_out": False}

            async def tick_cycles(seconds: float) -> list[float]:
                nonlocal sample_ticks
                tick_samples.clear()
                sample_ticks = True
                await asyncio.sleep(seconds)
                sample_ticks = False
                costs = []
                for start, future in tick_samples:
                    try:
                        frame = await asyncio.wait_for(future, CYCLE_LIMIT_S)
                    except TimeoutError:
                        costs.append(time.process_time() - start)  # at least this much
                        break
                    costs.append(frame.cpu - start)
                return costs

            async def idle_cpu(seconds: float) -> float:
                start_cpu, start_wall = time.process_time(), time.perf_counter()
                await asyncio.sleep(seconds)
                return (time.process_time() - start_cpu) / (time.perf_counter() - start_wall)

            await pilot.pause()
            figures["table"] = {
                "full_refresh_cycle_cpu": await refresh_cycles(),
                "clock_tick_cycle_cpu": _summary(await tick_cycles(cycles + 0.5)),
                "cpu_percent_of_one_core_between_refreshes": round(await idle_cpu(3.0) * 100, 1),
            }

            # The cards, for information: switch, wait until all are shown, measure.
            grid = app.dashboard.grid

            def all_cards() -> bool:
                cards = grid.visible_cards
                return len(cards) == exchanges and all(card.is_mounted for card in cards)

            switched = clock.when(lambda: not app.dashboard.showing_table and all_cards())
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            await pilot.press("t")
            frame = await asyncio.wait_for(switched, 120)
            figures["cards"] = {
                "switch_to_cards_paint_ms": ms(frame.wall - start_wall),
                "switch_to_cards_cpu_ms": ms(frame.cpu - start_cpu),
                "full_refresh_cycle_cpu": await refresh_cycles(),
                "clock_tick_cycle_cpu": _summary(await tick_cycles(cycles + 0.5)),
                "cpu_percent_of_one_core_between_refreshes": round(await idle_cpu(3.0) * 100, 1),
            }
    finally:
        await redis.aclose()
    if problems:
        figures["problems"] = problems
    return figures


def _check(report: Report, name: str, value: float, limit: float, unit: str) -> None:
    report.check(at_most(name, value, limit, unit))


def main() -> None:
    """Parse arguments, run, print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exchanges", type=int, default=1_000)
    parser.add_argument("--cycles", type=int, default=10)
    parser.add_argument(
        "--history",
        action="store_true",
        help="seed an hour of activity per exchange and wait for the timelines first",
    )
    args = parser.parse_args()
    report = Report("scale")
    with redis_server() as server:
        # Refreshes happen on request only, so each measured cycle is one we asked for.
        settings = bench_settings(server.url, refresh_ms=3_600_000)
        figures = run_async(
            lambda: measure(settings, args.exchanges, args.cycles, history=args.history)
        )
        report.figures = figures
        _check(
            report, "first full paint", figures["first_full_paint_ms"] / 1000, TARGET_PAINT_S, "s"
        )
        table = figures["table"]
        _check(
            report,
            "full refresh cycle CPU (table, median)",
            table["full_refresh_cycle_cpu"]["median_ms"],
            TARGET_CYCLE_CPU_MS,
            "ms",
        )
        _check(
            report,
            "full refresh cycle CPU (table, max)",
            table["full_refresh_cycle_cpu"]["max_ms"],
            TARGET_CYCLE_CPU_MS,
            "ms",
        )
        _check(
            report,
            "clock tick cycle CPU (table, max)",
            table["clock_tick_cycle_cpu"]["max_ms"],
            TARGET_CYCLE_CPU_MS,
            "ms",
        )
        report.notes.append(
            "cards figures are for information: above 60 exchanges the dashboard shows the table"
        )
        report.emit(server)


if __name__ == "__main__":
    main()
