"""Heartbeat cost: Redis commands per tick, and Redis CPU for 10,000 instances.

Two measurements against a private redis-server, both with the real
`perseus_core.instance.Instance` (its lease registers the heartbeat Lua once
and sends one EVALSHA per tick):

1. Commands per tick. One instance heartbeats every 100 ms. Between two tick
   boundaries the server's INFO commandstats are reset and read; MONITOR runs
   alongside to tell the commands a client sent (round trips) from the ones
   the script ran inside Redis (commandstats counts both: an EVALSHA that
   does GET + SET shows up as three calls). Target: 1 client command per tick.

2. Redis CPU at fleet scale. 10,000 instances (real `Instance` objects in
   this process, on 50 clients of at most 4 connections each) heartbeat at
   the production interval, 15 s (667 heartbeats/s). The server's
   used_cpu_sys + used_cpu_user over two whole intervals gives its CPU share;
   divided by the EVALSHAs it ran, the CPU per heartbeat, from which other
   intervals extrapolate (`--interval-ms` compresses the interval; a single
   Python process drives about 1,300 heartbeats/s on this machine, so much
   faster than 7 s measures the client, not Redis). No target is set for this
   one; it is reported.

Usage: `.venv/bin/python bench/bench_heartbeat.py [--instances N] [--interval-ms MS]
[--seconds S]`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

from _common import Report, bench_settings, exactly, redis_server, run_async
from redis.asyncio import BlockingConnectionPool, Redis

from perseus_core.instance import Instance
from perseus_core.plumbing.connection import connect
from perseus_core.wire.settings import Settings

PRODUCTION_INTERVAL_S = 15.0
IGNORED_COMMANDS = {"info", "config", "monitor", "client", "ping"}
"""Commands this benchmark itself sends while measuring."""


def _commandstats(info: dict[str, Any]) -> dict[str, int]:
    """`{command: calls}` from INFO commandstats, whatever shape redis-py parsed."""
    calls: dict[str, int] = {}
    for name, value in info.items():
        command = name.removeprefix("cmdstat_")
        if isinstance(value, dict):
            calls[command] = int(value.get("calls", 0))
    return calls


async def _next_tick(instance: Instance, limit_s: float = 5.0) -> int:
    """Wait until the instance completes its next heartbeat; returns the new count.

    Measuring between two tick completions (the next tick is a whole interval
    away) makes the window hold exactly N ticks, not N plus a partial one.
    """
    start = instance.heartbeat.count
    deadline = time.monotonic() + limit_s
    while instance.heartbeat.count == start:
        if time.monotonic() > deadline:
            raise RuntimeError("the instance stopped heartbeating")
        await asyncio.sleep(0.001)
    return instance.heartbeat.count


async def commands_per_tick(settings: Settings, ticks: int) -> dict[str, Any]:
    """Figure 1: what one heartbeat tick costs in commands."""
    redis = connect(settings)
    admin = connect(settings)
    monitor_client = connect(settings)
    seen: list[dict[str, Any]] = []
    try:
        instance = Instance(redis, settings, exchange_id=1, exchange_name="coinbase")
        await instance.claim()
        for _ in range(3):  # past the first tick, which may have to load the script
            await _next_tick(instance)
        own = await redis.client_id()
        own_addr = next(c["addr"] for c in await admin.client_list() if int(c["id"]) == int(own))

        async def watch() -> None:
            async with monitor_client.monitor() as monitor:
                async for command in monitor.listen():
                    seen.append(command)

        watcher = asyncio.create_task(watch())
        await asyncio.sleep(0.2)  # MONITOR is attached
        first = await _next_tick(instance)
        await admin.config_resetstat()
        mark = len(seen)
        while instance.heartbeat.count < first + ticks:
            await _next_tick(instance)
        stats = _commandstats(await admin.info("commandstats"))
        window = seen[mark:]
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await instance.close()
    finally:
        await redis.aclose()
        await admin.aclose()
        await monitor_client.aclose()
    counted = {k: v for k, v in stats.items() if k not in IGNORED_COMMANDS}
    from_client = [
        c for c in window if f"{c.get('client_address')}:{c.get('client_port')}" == own_addr
    ]
    in_scripts = [c for c in window if c.get("client_type") == "lua"]
    sent = [c["command"].split()[0].lower() for c in from_client]
    return {
        "ticks": ticks,
        "heartbeat_interval_ms": settings.heartbeat_interval_ms,
        "client_commands": len(from_client),
        "client_commands_by_name": {name: sent.count(name) for name in sorted(set(sent))},
        "client_commands_per_tick": round(len(from_client) / ticks, 3),
        "commands_run_inside_scripts_per_tick": round(len(in_scripts) / ticks, 3),
        "commandstats_calls": counted,
        "commandstats_calls_per_tick": round(sum(counted.values()) / ticks, 3),
    }


async def fleet_cpu(
    settings: Settings, instances: int, seconds: float, connections: int
) -> dict[str, Any]:
    """Figure 2: Redis CPU while `instances` real instances heartbeat."""
    pools = [
        BlockingConnectionPool.from_url(
            settings.redis_url,
            max_connections=4,
            decode_responses=True,
            socket_timeout=settings.socket_timeout_ms / 1000,
        )
        for _ in range(connections)
    ]
    clients: list[Redis] = [Redis(connection_pool=pool) for pool in pools]
    admin = connect(settings)
    fleet: list[Instance] = []
    try:
        claim_start = time.perf_counter()
        batch = 500
        for start in range(0, instances, batch):
            group = [
                Instance(
                    clients[i % connections],
                    settings,
                    exchange_id=i + 1,
                    exchange_name=f"exchange-{i + 1}",
                    hostname=f"trader-{i % 97:02d}",
                )
                for i in range(start, min(instances, start + batch))
            ]
            await asyncio.gather(*(member.claim() for member in group))
            fleet.extend(group)
        claim_s = time.perf_counter() - claim_start
        # One whole interval so that every instance is ticking, spread as it claimed.
        await asyncio.sleep(settings.heartbeat_interval_ms / 1000 + claim_s)

        def server_cpu(info: dict[str, Any]) -> float:
            return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

        before_cpu = server_cpu(await admin.info("cpu"))
        await admin.config_resetstat()
        before_ticks = sum(m.heartbeat.count for m in fleet)
        client_cpu_before = time.process_time()
        wall_start = time.perf_counter()
        await asyncio.sleep(seconds)
        wall = time.perf_counter() - wall_start
        after_cpu = server_cpu(await admin.info("cpu"))
        stats = _commandstats(await admin.info("commandstats"))
        client_cpu = time.process_time() - client_cpu_before
        ticks = sum(m.heartbeat.count for m in fleet) - before_ticks
        failures = sum(m.heartbeat.failures for m in fleet)
        online = sum(1 for m in fleet if m.lease.held)
        for start in range(0, len(fleet), batch):
            await asyncio.gather(*(m.close() for m in fleet[start : start + batch]))
        fleet.clear()
    finally:
        for member in fleet:
            with contextlib.suppress(Exception):
                await member.close()
        for client in clients:
            await client.aclose()
        for pool in pools:
            await pool.aclose()
        await admin.aclose()
    evalsha = stats.get("evalsha", 0)
    cpu = after_cpu - before_cpu
    per_heartbeat_us = cpu / evalsha * 1e6 if evalsha else float("nan")
    production_rate = instances / PRODUCTION_INTERVAL_S
    expected_rate = instances / (settings.heartbeat_interval_ms / 1000)
    return {
        "instances": instances,
        "heartbeat_interval_ms": settings.heartbeat_interval_ms,
        "clients": connections,
        "max_connections": connections * 4,
        "claim_all_s": round(claim_s, 2),
        "window_s": round(wall, 2),
        "heartbeats_expected_per_s": round(expected_rate, 1),
        "heartbeats_done_per_s": round(ticks / wall, 1),
        "evalsha_per_s": round(evalsha / wall, 1),
        "heartbeat_failures": failures,
        "instances_holding_lease_at_end": online,
        "redis_cpu_s": round(cpu, 3),
        "redis_cpu_percent_of_one_core": round(cpu / wall * 100, 2),
        "redis_cpu_per_heartbeat_us": round(per_heartbeat_us, 2),
        "redis_cpu_percent_at_production_interval": round(
            production_rate * per_heartbeat_us / 1e6 * 100, 2
        ),
        "production_heartbeats_per_s": round(production_rate, 1),
        "client_process_cpu_percent_of_one_core": round(client_cpu / wall * 100, 1),
        "other_commands_in_window": {
            k: v for k, v in stats.items() if k not in IGNORED_COMMANDS | {"evalsha", "get", "set"}
        },
    }


def main() -> None:
    """Parse arguments, run both measurements, print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=10_000)
    parser.add_argument(
        "--interval-ms", type=int, default=15_000, help="heartbeat interval of the fleet"
    )
    parser.add_argument(
        "--seconds", type=float, default=30.0, help="fleet measurement window (2 intervals)"
    )
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--ticks", type=int, default=30, help="ticks for commands-per-tick")
    args = parser.parse_args()
    report = Report("heartbeat")
    with redis_server() as server:
        fast = bench_settings(server.url, heartbeat_interval_ms=100, heartbeat_ttl_ms=400)
        per_tick = run_async(lambda: commands_per_tick(fast, args.ticks))
        report.figures["commands_per_tick"] = per_tick
        report.check(
            exactly(
                "client commands per heartbeat tick",
                per_tick["client_commands_per_tick"],
                1,
                "commands",
            )
        )
        fleet_settings = bench_settings(
            server.url,
            heartbeat_interval_ms=args.interval_ms,
            heartbeat_ttl_ms=args.interval_ms * 3,
        )
        report.figures["fleet"] = run_async(
            lambda: fleet_cpu(fleet_settings, args.instances, args.seconds, args.connections)
        )
        report.notes.append(
            "commandstats counts the GET and SET the heartbeat script runs inside Redis as "
            "calls of their own; client_commands_per_tick (from MONITOR, commands sent by the "
            "instance's connection) is the round-trip figure the target is about"
        )
        report.emit(server)


if __name__ == "__main__":
    main()
