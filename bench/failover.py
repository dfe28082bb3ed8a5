"""Failover on Redis Cluster: kill -9 a master under load, measure the recovery.

Each round starts a fresh 3-master, 3-replica cluster (1 s node timeout),
runs three heartbeating instances (100 ms interval), a live tail, a writer
appending to every stream each 50 ms, a command client pinging one agent and
a rival claiming that agent's slot, then kills the master holding the agent's
status key (see `tests/cluster/failover.py`, the same drill the suite runs
once). Seconds are from the kill.

Rounds alternate which node the settings' URL names, the one every client
is made from: the master that is killed (rounds 1, 3, 5...) or a master that
survives (rounds 2, 4, 6...).

Targets: every round recovers (each part back within 10 s); the tail
delivers no entry twice and misses none that Redis kept; two holders of one
slot at most one heartbeat interval.

Usage: `.venv/bin/python bench/failover.py [--rounds 5] [--ttl-ms 2000]`
(`PERSEUS_REDIS_SERVER` picks the redis-server binary, as for the tests.)
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict

from _common import Report, at_most, exactly, median, run_async

from perseus_cli.apps.redis_cluster import RedisClusterNodes
from perseus_cli.apps.redis_server import find_redis_server, redis_server_version
from perseus_core.wire.settings import Settings
from tests.cluster.failover import FailoverFigures, failover_drill

INTERVAL_MS = 100
RESUMED_WITHIN_S = 10.0
SERIES = ("cluster_ok_s", "heartbeat_s", "tail_s", "tail_others_s", "snapshot_s", "command_s")
RESUMED = ("heartbeat_s", "tail_s", "tail_others_s", "snapshot_s", "command_s")


def _round(number: int, ttl_ms: int) -> FailoverFigures:
    with RedisClusterNodes(3, 1, node_timeout_ms=1_000) as nodes:
        settings = Settings(
            redis_url=nodes.url,  # replaced by the node the drill chooses
            heartbeat_interval_ms=INTERVAL_MS,
            heartbeat_ttl_ms=ttl_ms,
            public_ip="off",
            block_ms=200,
            socket_timeout_ms=1_000,
        )
        figures: FailoverFigures = run_async(
            lambda: failover_drill(nodes, settings, kill_startup_node=number % 2 == 0)
        )
        return figures


def _worst(values: list[float | None]) -> float:
    """The largest figure; infinity when a round never got there (none: no rounds)."""
    return max((v if v is not None else math.inf for v in values), default=math.nan)


def _recovered(figures: FailoverFigures) -> bool:
    """Everything back within the target, nothing repeated or missed by the tail."""
    return (
        figures.cluster_ok_s is not None
        and all(
            (seconds := getattr(figures, name)) is not None and seconds < RESUMED_WITHIN_S
            for name in RESUMED
        )
        and figures.delivered_twice == 0
        and figures.missed_by_tail == 0
    )


def _summary(rounds: list[FailoverFigures]) -> dict[str, float]:
    """Median and worst of every series over `rounds` (a round that never got
    there counts as infinitely late in the worst, and is left out of the median)."""
    series = {name: [getattr(r, name) for r in rounds] for name in SERIES}
    return {
        **{
            f"{name}_median": median([v for v in values if v is not None])
            for name, values in series.items()
        },
        **{f"{name}_max": _worst(values) for name, values in series.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ttl-ms", type=int, default=2_000, help="status key TTL")
    args = parser.parse_args()
    report = Report("failover")
    major, minor = redis_server_version(find_redis_server())
    rounds = [_round(number, args.ttl_ms) for number in range(args.rounds)]
    series = {name: [getattr(r, name) for r in rounds] for name in SERIES}
    killed_startup = [r for r in rounds if r.startup_node_killed]
    survived_startup = [r for r in rounds if not r.startup_node_killed]
    report.figures.update(
        redis_version=f"{major}.{minor}",
        rounds=len(rounds),
        rounds_recovered=sum(_recovered(r) for r in rounds),
        rounds_killing_the_startup_node=len(killed_startup),
        rounds_killing_the_startup_node_recovered=sum(_recovered(r) for r in killed_startup),
        heartbeat_interval_ms=INTERVAL_MS,
        heartbeat_ttl_ms=args.ttl_ms,
        node_timeout_ms=1_000,
        **_summary(rounds),
        when_the_startup_node_was_killed=_summary(killed_startup),
        when_the_startup_node_survived=_summary(survived_startup),
        entries_acknowledged=sum(r.acknowledged for r in rounds),
        entries_lost_by_replication=sum(len(r.lost_by_replication) for r in rounds),
        delivered_twice=sum(r.delivered_twice for r in rounds),
        missed_by_tail=sum(r.missed_by_tail for r in rounds),
        rounds_where_the_rival_claimed=sum(r.rival_claimed for r in rounds),
        two_holders_s_max=max(r.two_holders_s for r in rounds),
        rounds_detail=[asdict(r) for r in rounds],
    )
    report.check(
        exactly(
            "rounds where something did not recover",
            len(rounds) - report.figures["rounds_recovered"],
            0,
            "rounds",
        )
    )
    report.check(
        exactly("entries the tail delivered twice", report.figures["delivered_twice"], 0, "entries")
    )
    report.check(
        exactly(
            "entries kept by Redis the tail missed", report.figures["missed_by_tail"], 0, "entries"
        )
    )
    report.check(
        at_most(
            "two holders of one slot", report.figures["two_holders_s_max"], INTERVAL_MS / 1000, "s"
        )
    )
    for name in RESUMED:
        report.check(
            at_most(
                f"{name[:-2]} back after the kill (worst)",
                _worst(series[name]),
                RESUMED_WITHIN_S,
                "s",
            )
        )
    report.emit()


if __name__ == "__main__":
    main()
