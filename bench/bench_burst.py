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

With `--cluster` the same runs on a local Redis Cluster (3 masters, 3
replicas, keyspace notifications on, as a fleet of this size needs them),
and `--exchanges N` spreads the entries over N exchanges' shared streams (the
dashboard follows both streams of each: 2N). One producer process may not
keep up with 20,000 entries/s: `--producers P` splits the exchanges between
P processes, each writing its share through one pipeline per master, and the
report gives the rate they achieved together.

Usage: `.venv/bin/python bench/bench_burst.py [--rate 5000] [--seconds 5]
[--exchanges 10] [--cluster] [--producers 1]`
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

from perseus_cli.apps.redis_cluster import RedisClusterNodes
from perseus_core.plumbing.connection import connect
from perseus_core.wire import keys
from perseus_core.wire.models import ErrorEntry, StateTransitionEntry
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import format_ts

EXCHANGES = 10
KEY_EVERY_S = 0.05
TARGET_KEY_P99_MS = 150.0
TARGET_RSS_MB = 50.0
TARGET_CLUSTER_KEY_P99_MS = {1_000: 50.0, 10_000: 100.0}
"""The large-fleet key-press targets on a cluster, by fleet size (up to)."""
TARGET_CLUSTER_RSS_MB = 300.0


# --- producer (runs in its own process) -------------------------------------------


def _node_clients(url: str, names: list[str]) -> tuple[list[Any], list[int]]:
    """One plain client per server and, per name, the index of the client
    whose server holds its stream: a single server, or each cluster master
    (the cluster client's own pipeline costs more per command than the
    entries cost the dashboard, and one producer would fall behind)."""
    import redis as sync_redis
    from redis.cluster import RedisCluster

    with sync_redis.Redis.from_url(url) as probe:
        clustered = bool(int(probe.info("cluster").get("cluster_enabled", 0)))
    if not clustered:
        return [sync_redis.Redis.from_url(url, decode_responses=True)], [0] * len(names)
    cluster = RedisCluster.from_url(url)
    try:
        where: dict[tuple[str, int], int] = {}
        owners = []
        for name in names:
            node = cluster.get_node_from_key(keys.activity_key(name))
            owners.append(where.setdefault((node.host, node.port), len(where)))
    finally:
        cluster.close()
    clients = [
        sync_redis.Redis(host=host, port=port, decode_responses=True) for host, port in where
    ]
    return clients, owners


def produce(url: str, rate: int, seconds: float, exchange_ids: list[int]) -> None:
    """Append `rate` entries/s for `seconds` across these exchanges' shared
    streams, in turn; print a JSON summary."""
    tick_s = 0.01
    per_tick = max(1, round(rate * tick_s))
    total = int(rate * seconds)
    last_ids: dict[str, str] = {}
    sent = 0
    late_ticks = 0
    all_names = [exchange_name(i) for i in exchange_ids]
    clients, owners = _node_clients(url, all_names)
    try:
        start = time.perf_counter()
        tick = 0
        while sent < total:
            due = start + tick * tick_s
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            elif delay < -tick_s:
                late_ticks += 1
            pipes = [client.pipeline(transaction=False) for client in clients]
            names: list[list[str]] = [[] for _ in clients]
            for _ in range(min(per_tick, total - sent)):
                index = sent % len(exchange_ids)
                exchange_id = exchange_ids[index]
                name = all_names[index]
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
                pipes[owners[index]].xadd(keys.activity_key(name), entry.to_fields())
                names[owners[index]].append(name.lower())
                sent += 1
            for pipe, written in zip(pipes, names, strict=True):
                if written:
                    for name, entry_id in zip(written, pipe.execute(), strict=True):
                        last_ids[name] = entry_id
            tick += 1
        elapsed = time.perf_counter() - start
    finally:
        for client in clients:
            client.close()
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


async def measure(
    settings: Settings, rate: int, seconds: float, exchanges: int, producers: int, cluster: bool
) -> dict[str, Any]:
    """Run the burst into the dashboard and judge what it did."""
    from _tui import FrameClock, running_dashboard
    from textual import events

    redis = connect(settings)
    frames: FrameClock | None = None

    def install(app: Any) -> None:
        nonlocal frames
        frames = FrameClock(app)

    try:
        await seed_fleet(redis, exchanges)
        async with running_dashboard(settings, before_start=install) as (app, pilot):
            assert frames is not None
            dashboard = app.dashboard
            feed = dashboard.feed
            delivered = 0
            original_add = dashboard.add_feed_entries

            adding: list[float] = []

            def counting_add(entries: Any) -> None:
                nonlocal delivered
                batch = list(entries)
                delivered += len(batch)
                started = time.perf_counter()
                original_add(batch)
                adding.append(time.perf_counter() - started)

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

            shares = [
                ",".join(str(i) for i in range(first, exchanges + 1, producers))
                for first in range(1, min(producers, exchanges) + 1)
            ]
            procs = [
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    __file__,
                    "--produce",
                    settings.redis_url,
                    str(rate / len(shares)),
                    str(seconds),
                    share,
                    stdout=asyncio.subprocess.PIPE,
                )
                for share in shares
            ]
            try:
                handled: list[float] = []
                shown: list[float] = []
                missed_keys = 0
                when: list[float] = []
                burst_start = time.perf_counter()
                cpu_start = time.process_time()
                assert app._driver is not None
                while any(proc.returncode is None for proc in procs):
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
                outs = [(await asyncio.wait_for(p.communicate(), 30))[0] for p in procs]
            finally:
                for proc in procs:
                    if proc.returncode is None:
                        proc.kill()
                        await proc.wait()
            parts = [json.loads(out.decode().strip().splitlines()[-1]) for out in outs]
            summary = {
                "processes": len(parts),
                "sent": sum(part["sent"] for part in parts),
                "seconds": max(part["seconds"] for part in parts),
                "late_ticks": sum(part["late_ticks"] for part in parts),
                "last_ids": {k: v for part in parts for k, v in part["last_ids"].items()},
            }
            summary["rate_per_s"] = round(summary["sent"] / summary["seconds"], 1)
            if feed.paused:
                feed.paused = False
            # Let the dashboard drain: nothing new delivered for a second.
            drain_start = time.perf_counter()
            last = -1
            while delivered != last or delivered < summary["sent"]:
                last = delivered
                await asyncio.sleep(1.0)
                rss_peak = max(rss_peak, rss_bytes())
                if time.perf_counter() - drain_start > 120:
                    break
            drain_s = time.perf_counter() - drain_start - 1.0
            cpu_s = time.process_time() - cpu_start
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
            # Every stream the feed shows an entry of shows its newest; with
            # streams enough to fill half the feed, the newest of others may
            # rightly be gone (several producers' last entries interleave).
            shown_streams = {name for name, _ in keys_seen}
            in_feed = set(keys_seen)
            every_stream = len(summary["last_ids"]) <= feed.max_lines // 2
            newest_present = all(
                (name, entry_id) in in_feed
                for name, entry_id in summary["last_ids"].items()
                if name in shown_streams or every_stream
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
        "exchanges": exchanges,
        "streams_followed": 2 * exchanges,
        "redis": "cluster 3+3, notify-keyspace-events Kt" if cluster else "single",
        "burst_wall_s": round(burst_wall, 2),
        "entries_delivered_to_feed": delivered,
        "drain_after_burst_s": round(max(0.0, drain_s), 2),
        "dashboard_cpu_s_burst_and_drain": round(cpu_s, 2),
        "dashboard_cpu_ms_per_1000_entries": round(cpu_s * 1e6 / max(1, summary["sent"]), 1),
        "feed_batches": len(adding),
        "feed_batch_add_p99_ms": ms(percentile(adding, 99)),
        "feed_batch_add_max_ms": ms(max(adding)) if adding else None,
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
        url, rate, seconds, ids = sys.argv[2:6]
        produce(url, round(float(rate)), float(seconds), [int(i) for i in ids.split(",")])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=5_000, help="entries per second")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--exchanges", type=int, default=EXCHANGES, help="fleet size")
    parser.add_argument("--cluster", action="store_true", help="on a local Redis Cluster")
    parser.add_argument("--producers", type=int, default=1, help="producer processes")
    args = parser.parse_args()
    report = Report("burst")

    def run(url: str) -> None:
        settings = bench_settings(url)
        figures = run_async(
            lambda: measure(
                settings, args.rate, args.seconds, args.exchanges, args.producers, args.cluster
            )
        )
        report.figures = figures
        key_target = TARGET_KEY_P99_MS
        if args.cluster:
            sizes = sorted(TARGET_CLUSTER_KEY_P99_MS)
            size = next((n for n in sizes if args.exchanges <= n), sizes[-1])
            key_target = TARGET_CLUSTER_KEY_P99_MS[size]
        report.check(
            at_most(
                "key press to repainted result p99 during the burst",
                figures["key_to_repaint_p99_ms"],
                key_target,
                "ms",
            )
        )
        if args.cluster:
            rss = figures["rss_after_mb"]
            report.check(at_most("RSS after the burst", rss, TARGET_CLUSTER_RSS_MB, "MB"))
        else:
            report.check(at_most("RSS growth", figures["rss_growth_mb"], TARGET_RSS_MB, "MB"))
        bounded = figures["feed_lines"] <= figures["feed_max_lines"]
        report.check(holds("feed bounded (lines <= max lines)", bounded))
        ordered = (
            figures["feed_per_stream_newest_first"]
            and figures["feed_duplicates"] == 0
            and figures["feed_has_newest_of_every_stream"]
        )
        report.check(holds("feed in order, no duplicate, newest entries kept", ordered))
        sent = figures["producer"]["sent"]
        report.check(
            exactly(
                "entries delivered to the feed / appended",
                round(figures["entries_delivered_to_feed"] / sent, 4),
                1,
                "ratio",
            )
        )

    if args.cluster:
        with RedisClusterNodes(keyspace_events="Kt") as nodes:
            run(nodes.url)
            report.emit()
        return
    with redis_server() as server:
        run(server.url)
        report.emit(server)


if __name__ == "__main__":
    main()
