"""`perseus exporter`: the time of one scrape of `/metrics`, at 1,000 and 10,000 exchanges.

A scrape with a cold cache does the whole work: the fleet read (the catalog
and every status key with its PTTL in one pipeline, the agents of every
exchange in one more round trip, Redis's TIME) and the rendering of the page
by prometheus_client from the exporter's collector. It is what the first
scrape after each `--cache-ms` period costs; `cached` is a scrape within the
period (the page already rendered). Every exchange is live, the heaviest
case (each has a heartbeat age, a lateness and an uptime).

Scrapes go over HTTP (httpx, one connection per scrape, as Prometheus does
with `Connection: close`) to an exporter in this process on its own loop.

Target: a cold scrape at 10,000 exchanges in under 200 ms.

Usage: `.venv/bin/python bench/bench_exporter.py [--runs N] [--sizes 1000,10000]`
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import httpx
from _common import Report, at_most, bench_settings, median, ms, redis_server, run_async, seed_fleet

from perseus_core.export import Exporter
from perseus_core.plumbing.connection import connect
from perseus_core.wire.settings import Settings

TARGET_MS = 200.0


async def scrape(client: httpx.AsyncClient, url: str) -> tuple[float, int]:
    """Wall time of one GET /metrics, and the page's size in bytes."""
    started = time.perf_counter()
    response = await client.get(url)
    elapsed = time.perf_counter() - started
    response.raise_for_status()
    return elapsed, len(response.content)


async def measure(settings: Settings, sizes: list[int], runs: int) -> dict[str, Any]:
    """Per size: cold scrapes (cache 0: every scrape reads and renders) and
    cached ones (a long cache: the same page again)."""
    figures: dict[str, Any] = {}
    redis = connect(settings)
    try:
        for size in sizes:
            await seed_fleet(redis, size)
            row: dict[str, Any] = {"runs": runs}
            for label, cache_ms in (("cold", 0), ("cached", 3_600_000)):
                exporter = Exporter(settings, listen="127.0.0.1:0", cache_ms=cache_ms)
                await exporter.start()
                try:
                    async with httpx.AsyncClient(trust_env=False, timeout=60) as client:
                        _, size_bytes = await scrape(client, exporter.url)  # warm up
                        times, reads = [], []
                        for _ in range(runs):
                            elapsed, size_bytes = await scrape(client, exporter.url)
                            times.append(elapsed)
                            reading = exporter.readings.current
                            if reading is not None:
                                reads.append(reading.read_s)
                finally:
                    await exporter.aclose()
                row[f"{label}_median_ms"] = ms(median(times))
                row[f"{label}_min_ms"] = ms(min(times))
                if label == "cold":
                    row["fleet_read_median_ms"] = ms(median(reads))
                    row["page_bytes"] = size_bytes
            figures[str(size)] = row
    finally:
        await redis.aclose()
    return figures


def main() -> None:
    """Parse arguments, run, print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed scrapes per size (default 7)")
    parser.add_argument("--sizes", default="1000,10000", help="comma-separated fleet sizes")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    report = Report("exporter")
    with redis_server() as server:
        settings = bench_settings(server.url)
        report.figures = run_async(lambda: measure(settings, sizes, args.runs))
        report.figures["method"] = (
            "median wall time of GET /metrics over HTTP to an in-process exporter; cold = "
            "cache 0 (fleet read + agents + TIME + rendering), cached = a scrape within the "
            "cache period; fleet_read = the read alone, from the exporter's own figure"
        )
        largest = report.figures.get("10000")
        if largest is not None:
            report.check(
                at_most("cold scrape at 10,000", largest["cold_median_ms"], TARGET_MS, "ms")
            )
        report.emit(server)


if __name__ == "__main__":
    main()
