"""Burst: 5,000 entries/s for 5 s across 10 streams into the running dashboard.

A separate producer process (so it does not share the dashboard's core)
appends pipelined XADDs on a fixed schedule while the headless dashboard
(120x40, the real app) follows the streams. Meanwhile a key press (`p`,
pause/resume the feed) is sent through the app's driver every 50 ms, as a
terminal would deliver it, and timed until the repainted screen shows its
effect (the first frame rendered after the action ran).

Targets: key press to repainted result p99 < 150 ms during the burst,
resident memory growth < 50 MB, and the feed bounded (at most its 1,000
lines) and in order (each stream newest first, no duplicate, the newest
entry of every stream present once the burst is over). Every entry appended
must reach the dashboard (counted as it is handed to the feed).

Usage: `.venv/bin/python bench/bench_burst.py [--rate 5000] [--seconds 5]`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from functools import partial
from typing import Any

from _common import (
    Report,
    at_most,
    bench_settings,
    exactly,
    exchange_name,
    holds,
    ms,
    percentile,
    redis_server,
    rss_bytes,
    run_async,
    seed_fleet,
)

from perseus_core.plumbing.connection import connect
from perseus_core.wire import keys
from perseus_core.wire.models import ErrorEntry, StateTransitionEntry
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import format_ts

STREAMS = 10
KEY_EVERY_S = 0.05
TARGET_KEY_P99_MS = 150.0
TARGET_RSS_MB = 50.0


# --- producer (runs in its own process) -------------------------------------------


def produce(url: str, rate: int, seconds: float, streams: int) -> None:
    """Append `rate` entries/s for `seconds` across `streams` streams; print a JSON summary."""
    import redis as sync_redis

    tick_s = 0.01
    per_tick = max(1, round(rate * tick_s))
    total = int(rate * seconds)
    last_ids: dict[str, str] = {}
    sent = 0
    late_ticks = 0
    with sync_redis.Redis.from_url(url, decode_responses=True) as client:
        start = time.perf_counter()
        tick = 0
        while sent < total:
            due = start + tick * tick_s
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            elif delay < -tick_s:
                late_ticks += 1
            pipe = client.pipeline(transaction=False)
            names = []
            for _ in range(min(per_tick, total - sent)):
                exchange_id = sent % streams + 1
                name = exchange_name(exchange_id)
                stamp = format_ts(datetime.now(UTC))
                entry: ErrorEntry | StateTransitionEntry
                if sent % 2:
                    entry = ErrorEntry(
                        timestamp=stamp,
                        error=f"burst-{sent:06d} order book checksum mismatch",
                        exchange_id=str(exchange_id),
                        exchange_name=name,
                        hostname="trader-01.eu-west.internal",
                        ip="203.0.113.7",
                        state="active",
                    )
                else:
                    entry = StateTransitionEntry(
                        timestamp=stamp,
                        from_state="warming",
                        to_state="active",
                        exchange_id=str(exchange_id),
                        exchange_name=name,
                        hostname="trader-01.eu-west.internal",
                        ip="203.0.113.7",
                        admin_email=f"burst-{sent:06d}@example.com",
                    )
                pipe.xadd(keys.activity_key(name), entry.to_fields())
                names.append(name.lower())
                sent += 1
            for name, entry_id in zip(names, pipe.execute(), strict=True):
                last_ids[name] = entry_id
            tick += 1
        elapsed = time.perf_counter() - start
    print(
        json.dumps(
            {
                "sent": sent,
                "seconds": round(elapsed, 3),
                "rate_per_s": round(sent / elapsed, 1),
                "late_ticks": late_ticks,
                "last_ids": last_ids,
            }
        ),
        flush=True,
    )


# --- the dashboard side -------------------------------------------------------------


def _grew(items: list[float], size: int) -> bool:
    return len(items) > size


def _id_key(entry_id: str) -> tuple[int, int]:
    ms_part, _, seq = entry_id.partition("-")
    return int(ms_part), int(seq or 0)


async def measure(settings: Settings, rate: int, seconds: float) -> dict[str, Any]:
    """Run the burst into the dashboard and judge what it did."""
    from _tui import FrameClock, running_dashboard
    from textual import events

    redis = connect(settings)
    frames: FrameClock | None = None

    def install(app: Any) -> None:
        nonlocal frames
        frames = FrameClock(app)

    try:
        await seed_fleet(redis, STREAMS)
        async with running_dashboard(settings, before_start=install) as (app, pilot):
            assert frames is not None
            dashboard = app.dashboard
            feed = dashboard.feed
            delivered = 0
            original_add = dashboard.add_feed_entries

            def counting_add(entries: Any) -> None:
                nonlocal delivered
                batch = list(entries)
                delivered += len(batch)
                original_add(batch)

            dashboard.add_feed_entries = counting_add  # type: ignore[method-assign]
            handled_at: list[float] = []
            key_handled = asyncio.Event()

            def on_paused(_paused: bool) -> None:
                handled_at.append(time.perf_counter())
                key_handled.set()

            dashboard.watch(feed, "paused", on_paused, init=False)

            # Settle, then the baseline memory.
            await asyncio.sleep(1.0)
            rss_before = rss_bytes()
            rss_peak = rss_before

            producer = await asyncio.create_subprocess_exec(
                sys.executable,
                __file__,
                "--produce",
                settings.redis_url,
                str(rate),
                str(seconds),
                str(STREAMS),
                stdout=asyncio.subprocess.PIPE,
            )
            try:
                handled: list[float] = []
                shown: list[float] = []
                missed_keys = 0
                when: list[float] = []
                burst_start = time.perf_counter()
                assert app._driver is not None
                while producer.returncode is None:
                    count = len(handled_at)
                    key_handled.clear()
                    repainted = frames.when(partial(_grew, handled_at, count))
                    pressed = time.perf_counter()
                    app._driver.send_message(events.Key("p", "p"))
                    try:
                        await asyncio.wait_for(key_handled.wait(), 2.0)
                        frame_at = (await asyncio.wait_for(repainted, 2.0)).wall
                    except TimeoutError:
                        missed_keys += 1
                        continue
                    handled.append(handled_at[count] - pressed)
                    shown.append(frame_at - pressed)
                    when.append(pressed - burst_start)
                    rss_peak = max(rss_peak, rss_bytes())
                    await asyncio.sleep(max(0.0, KEY_EVERY_S - (time.perf_counter() - pressed)))
                burst_wall = time.perf_counter() - burst_start
                out, _ = await asyncio.wait_for(producer.communicate(), 30)
            finally:
                if producer.returncode is None:
                    producer.kill()
                    await producer.wait()
            summary = json.loads(out.decode().strip().splitlines()[-1])
            if feed.paused:
                feed.paused = False
            # Let the dashboard drain: nothing new delivered for a second.
            drain_start = time.perf_counter()
            last = -1
            while delivered != last or delivered < summary["sent"]:
                last = delivered
                await asyncio.sleep(1.0)
                if time.perf_counter() - drain_start > 30:
                    break
            drain_s = time.perf_counter() - drain_start - 1.0
            await pilot.pause()
            rss_peak = max(rss_peak, rss_bytes())
            rss_after = rss_bytes()

            entries = feed.entries
            per_stream: dict[str, list[tuple[int, int]]] = {}
            for entry in entries:
                per_stream.setdefault(entry.stream, []).append(_id_key(entry.id))
            in_order = all(
                all(a > b for a, b in zip(ids, ids[1:], strict=False))
                for ids in per_stream.values()
            )
            keys_seen = [(e.stream, e.id) for e in entries]
            newest_present = all(
                (name, entry_id) in set(keys_seen) for name, entry_id in summary["last_ids"].items()
            )
            global_inversions = sum(
                1
                for a, b in zip(entries, entries[1:], strict=False)
                if _id_key(a.id) < _id_key(b.id)
            )
    finally:
        await redis.aclose()
    return {
        "producer": {k: v for k, v in summary.items() if k != "last_ids"},
        "streams": STREAMS,
        "burst_wall_s": round(burst_wall, 2),
        "entries_delivered_to_feed": delivered,
        "drain_after_burst_s": round(max(0.0, drain_s), 2),
        "key_presses": len(handled) + missed_keys,
        "key_presses_unhandled_after_2s": missed_keys,
        "key_handled_p50_ms": ms(percentile(handled, 50)),
        "key_handled_p99_ms": ms(percentile(handled, 99)),
        "key_to_repaint_p50_ms": ms(percentile(shown, 50)),
        "key_to_repaint_p99_ms": ms(percentile(shown + [float("inf")] * missed_keys, 99)),
        "key_to_repaint_max_ms": ms(max(shown)) if shown else None,
        "slowest_key_presses": [
            {"at_s": round(at, 2), "repaint_ms": ms(latency)}
            for latency, at in sorted(zip(shown, when, strict=True), reverse=True)[:5]
        ],
        "rss_before_mb": round(rss_before / 2**20, 1),
        "rss_peak_mb": round(rss_peak / 2**20, 1),
        "rss_after_mb": round(rss_after / 2**20, 1),
        "rss_growth_mb": round((rss_peak - rss_before) / 2**20, 1),
        "feed_lines": len(entries),
        "feed_max_lines": feed.max_lines,
        "feed_per_stream_newest_first": in_order,
        "feed_duplicates": len(keys_seen) - len(set(keys_seen)),
        "feed_has_newest_of_every_stream": newest_present,
        "feed_adjacent_pairs_out_of_global_id_order": global_inversions,
    }


def main() -> None:
    """Parse arguments, run, print the JSON report (or be the producer)."""
    if len(sys.argv) > 1 and sys.argv[1] == "--produce":
        url, rate, seconds, streams = sys.argv[2:6]
        produce(url, int(rate), float(seconds), int(streams))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=5_000, help="entries per second")
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    report = Report("burst")
    with redis_server() as server:
        settings = bench_settings(server.url)
        figures = run_async(lambda: measure(settings, args.rate, args.seconds))
        report.figures = figures
        report.check(
            at_most(
                "key press to repainted result p99 during the burst",
                figures["key_to_repaint_p99_ms"],
                TARGET_KEY_P99_MS,
                "ms",
            )
        )
        report.check(at_most("RSS growth", figures["rss_growth_mb"], TARGET_RSS_MB, "MB"))
        bounded = figures["feed_lines"] <= figures["feed_max_lines"]
        report.check(holds("feed bounded (lines <= max lines)", bounded))
        ordered = (
            figures["feed_per_stream_newest_first"]
            and figures["feed_duplicates"] == 0
            and figures["feed_has_newest_of_every_stream"]
        )
        report.check(holds("feed in order, no duplicate, newest of every stream kept", ordered))
        sent = figures["producer"]["sent"]
        report.check(
            exactly(
                "entries delivered to the feed / appended",
                round(figures["entries_delivered_to_feed"] / sent, 4),
                1,
                "ratio",
            )
        )
        report.emit(server)


if __name__ == "__main__":
    main()
