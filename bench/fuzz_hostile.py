"""Hostile data, the long form: every corpus value on every surface in several zones.

The suite (`tests/fuzz/`) reads every case on the five CLI surfaces and a
sample on all seven; this reads every case of the hostile corpus
(`tests/fuzz/corpus.py`) on all seven surfaces (`perseus status`, `status
--json`, `log`, `log --json`, `catalog list`, the notifier, the dashboard
through Pilot) under each of several `TZ` zones, one process per zone, in
parallel, each on its own database of one private redis-server. It then runs
the property tests with many more generated examples, presses Enter then Esc
every 0.12 s on the detail screen 100 times while data arrives, and opens and
closes the detail and help screens 40 times each on a quiet fleet, reporting
the memory they keep (RSS and tracemalloc) and whether every closed screen
was released.

Counted: crashes (an exception escaped, or a non-zero exit other than the one
clear error line), tracebacks shown, raw escape or control characters shown,
and every other problem (markup interpreted, the healthy exchange missing,
the bad key not named). Targets: all zero; screens released.

Usage: `.venv/bin/python bench/fuzz_hostile.py [--examples 2000] [--zones UTC,Asia/Tokyo]`
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tracemalloc
from collections import Counter
from typing import Any

from _common import ROOT, Report, bench_settings, exactly, holds, redis_server, rss_bytes

from perseus_tui.app import create_app
from perseus_tui.screens.detail import DetailScreen
from perseus_tui.screens.help import HelpScreen
from tests.fuzz.corpus import build_corpus
from tests.fuzz.surfaces import SURFACES, open_and_close
from tests.fuzz.test_screens import busy_fleet, seed
from tests.waiting import eventually

ZONES = ("UTC", "Asia/Tokyo", "America/New_York", "Pacific/Kiritimati")
SCREEN_ROUNDS = 40
ENTER_ESC_ROUNDS = 100
SOCKET_TIMEOUT_MS = 5_000
"""The production default (the other benchmarks use a generous 30 s)."""
KEY_PACE_S = 0.06
"""Enter, then Esc 0.06 s later: one open-and-close every 0.12 s."""


def kind_of(problem: str) -> str:
    """The counter a problem line goes to."""
    if problem.startswith("crashed") or problem.startswith("exit code"):
        return "crashes"
    if problem.startswith("traceback"):
        return "tracebacks"
    if problem.startswith("raw control"):
        return "escapes"
    return "other_problems"


def corpus_in_zones(url: str, zones: list[str]) -> dict[str, Any]:
    """Every case on every surface, one subprocess per zone, all at once."""
    names = [case.name for case in build_corpus()]
    processes = []
    for db, zone in enumerate(zones, start=1):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PERSEUS_")}
        env["TZ"] = zone
        db_url = url.rsplit("/", 1)[0] + f"/{db}"
        argv = [sys.executable, "-m", "tests.fuzz.batch", db_url, zone, *names]
        processes.append(
            subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    counts: Counter[str] = Counter()
    failures: list[dict[str, Any]] = []
    checks = 0
    for zone, process in zip(zones, processes, strict=True):
        out, err = process.communicate()
        if process.returncode != 0 or "Traceback" in err:
            counts["crashes"] += 1
            failures.append({"zone": zone, "batch": err.strip().splitlines()[-1:]})
        for line in out.splitlines():
            result = json.loads(line)
            for surface, problems in result["problems"].items():
                checks += 1
                for problem in problems:
                    counts[kind_of(problem)] += 1
                    failures.append({"zone": zone, "case": result["case"], "surface": surface})
                    failures[-1]["problem"] = problem[:300]
    return {
        "cases": len(names),
        "surfaces": len(SURFACES),
        "zones": zones,
        "checks": checks,
        "expected_checks": len(names) * len(SURFACES) * len(zones),
        **{key: counts[key] for key in ("crashes", "tracebacks", "escapes", "other_problems")},
        "failures": failures[:30],
    }


def properties(examples: int) -> dict[str, Any]:
    """The property tests with `examples` generated cases each."""
    env = dict(os.environ, HYPOTHESIS_EXAMPLES=str(examples))
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    argv += ["tests/fuzz/test_properties.py"]
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    return {
        "examples_per_property": examples,
        "passed": done.returncode == 0,
        "summary": done.stdout.strip().splitlines()[-1:],
    }


async def screens(url: str) -> dict[str, Any]:
    """Enter/Esc under load, then the memory that opening screens keeps."""
    from redis.asyncio import Redis

    redis = Redis.from_url(url.rsplit("/", 1)[0] + "/0", decode_responses=True)
    try:
        await redis.flushdb()
        async with busy_fleet(redis):
            under_load = await enter_esc_under_load(redis)
        await redis.flushdb()
        await seed(redis)
        memory = await open_close_memory(redis)
    finally:
        await redis.aclose()
    return {"enter_esc_under_load": under_load, "open_close": memory}


async def enter_esc_under_load(redis: Any) -> dict[str, Any]:
    """Enter, Esc every 0.12 s, `ENTER_ESC_ROUNDS` times, while the fleet
    writes every 30 ms and the dashboard re-reads it every 100 ms; the app
    is left at once afterwards, with whatever keys are still queued."""
    app = create_app(bench_settings(_url(redis), refresh_ms=100), operator="bench@fuzz")
    app.animation_level = "none"
    opened = 0
    figures: dict[str, Any] = {"rounds": ENTER_ESC_ROUNDS}
    try:
        async with app.run_test(size=(120, 40)):
            await eventually(lambda: 1 in app.views and app.history_loaded.is_set(), within=60)
            for _ in range(ENTER_ESC_ROUNDS):
                app.simulate_key("enter")
                await asyncio.sleep(KEY_PACE_S)
                opened += isinstance(app.screen, DetailScreen)
                app.simulate_key("escape")
                await asyncio.sleep(KEY_PACE_S)
            figures["running_after"] = app.is_running
    except Exception as exc:  # a crash is the figure
        figures["crash"] = f"{type(exc).__name__}: {exc}"
    figures["detail_seen_open"] = opened
    figures["return_code"] = app.return_code
    return figures


async def open_close_memory(redis: Any) -> dict[str, Any]:
    """Open and close detail, then help, `SCREEN_ROUNDS` times each (waiting
    for each to show), on a quiet fleet: what memory stays afterwards."""
    settings = bench_settings(_url(redis), socket_timeout_ms=SOCKET_TIMEOUT_MS)
    app = create_app(settings, operator="bench@fuzz")
    app.animation_level = "none"
    figures: dict[str, Any] = {"rounds": SCREEN_ROUNDS}
    async with app.run_test(size=(120, 40)) as pilot:
        await eventually(lambda: 1 in app.views and app.history_loaded.is_set(), within=60)
        await pilot.pause()
        gc.collect()
        tracemalloc.start()
        for round_of in ("first", "second"):  # the second shows whether growth goes on
            rss_before, traced_before = rss_bytes(), tracemalloc.get_traced_memory()[0]
            for key, kind in (("enter", DetailScreen), ("question_mark", HelpScreen)):
                kept = await open_and_close(app, key, kind, SCREEN_ROUNDS)
                figures[f"{round_of}_{kind.__name__}_still_in_memory"] = kept
            await pilot.pause()
            gc.collect()
            rss_growth = (rss_bytes() - rss_before) / 2**20
            traced = (tracemalloc.get_traced_memory()[0] - traced_before) / 2**20
            figures[f"{round_of}_rss_growth_mb"] = round(rss_growth, 1)
            figures[f"{round_of}_traced_growth_mb"] = round(traced, 2)
        tracemalloc.stop()
    return figures


def _url(redis: Any) -> str:
    kwargs = redis.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=2_000, help="hypothesis examples each")
    parser.add_argument("--zones", default=",".join(ZONES), help="comma-separated TZ names")
    args = parser.parse_args()
    report = Report("fuzz_hostile")
    with redis_server() as server:
        corpus = report.figures["corpus"] = corpus_in_zones(server.url, args.zones.split(","))
        report.figures["properties"] = properties(args.examples)
        shown = report.figures["screens"] = asyncio.run(screens(server.url))
        report.check(exactly("checks run", corpus["checks"], corpus["expected_checks"], ""))
        for key in ("crashes", "tracebacks", "escapes", "other_problems"):
            report.check(exactly(f"corpus {key}", corpus[key], 0, ""))
        report.check(holds("property tests pass", report.figures["properties"]["passed"]))
        load = shown["enter_esc_under_load"]
        survived = "crash" not in load and load["return_code"] in (None, 0)
        report.check(holds("dashboard survives Enter/Esc every 0.12 s", survived))
        for kind in ("DetailScreen", "HelpScreen"):
            for round_of in ("first", "second"):
                kept = shown["open_close"][f"{round_of}_{kind}_still_in_memory"]
                report.check(exactly(f"closed {kind}s kept ({round_of} 40)", kept, 0, ""))
        report.emit(server)


if __name__ == "__main__":
    main()
