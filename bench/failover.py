"""Failover on Redis Cluster: kill -9 a master under load, measure the recovery.

Each round starts a fresh 3-master, 3-replica cluster (1 s node timeout),
runs three heartbeating instances (100 ms interval), a live tail, a writer
appending to every stream each 50 ms, a command client pinging one agent and
a rival claiming that agent's slot, then kills the master holding the agent's
status key (see `tests/cluster/failover.py`, the same drill the suite runs
once). Seconds are from the kill.

Targets: the tail delivers no entry twice and misses none that Redis kept;
two holders of one slot at most one heartbeat interval; heartbeat, tail (on
the killed master's streams and on the others'), snapshot and commands back
within 10 s.

Usage: `.venv/bin/python bench/failover.py [--rounds 5] [--ttl-ms 2000]`
"""

from __future__ import annotations

import argparse
from dataclasses import asdict

from _common import Report, at_most, exactly, median, run_async

from perseus_cli.apps.redis_cluster import RedisClusterNodes
from perseus_core.wire.settings import Settings
from tests.cluster.failover import FailoverFigures, failover_drill

INTERVAL_MS = 100


def _round(ttl_ms: int) -> FailoverFigures:
    with RedisClusterNodes(3, 1, node_timeout_ms=1_000) as nodes:
        settings = Settings(
            redis_url=nodes.url,
            heartbeat_interval_ms=INTERVAL_MS,
            heartbeat_ttl_ms=ttl_ms,
            public_ip="off",
            block_ms=200,
            socket_timeout_ms=1_000,
        )
        return run_async(lambda: failover_drill(nodes, settings))  # type: ignore[no-any-return]


def _worst(values: list[float | None]) -> float:
    """The largest figure; infinity when a round never got there."""
    return max((v if v is not None else float("inf")) for v in values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ttl-ms", type=int, default=2_000, help="status key TTL")
    args = parser.parse_args()
    report = Report("failover")
    rounds = [_round(args.ttl_ms) for _ in range(args.rounds)]
    series = {
        name: [getattr(r, name) for r in rounds]
        for name in (
            "cluster_ok_s",
            "heartbeat_s",
            "tail_s",
            "tail_others_s",
            "snapshot_s",
            "command_s",
        )
    }
    report.figures.update(
        rounds=len(rounds),
        heartbeat_interval_ms=INTERVAL_MS,
        heartbeat_ttl_ms=args.ttl_ms,
        node_timeout_ms=1_000,
        **{
            f"{name}_median": median([v for v in values if v is not None])
            for name, values in series.items()
        },
        **{f"{name}_max": _worst(values) for name, values in series.items()},
        entries_acknowledged=sum(r.acknowledged for r in rounds),
        entries_lost_by_replication=sum(len(r.lost_by_replication) for r in rounds),
        delivered_twice=sum(r.delivered_twice for r in rounds),
        missed_by_tail=sum(r.missed_by_tail for r in rounds),
        rounds_where_the_rival_claimed=sum(r.rival_claimed for r in rounds),
        two_holders_s_max=max(r.two_holders_s for r in rounds),
        rounds_detail=[asdict(r) for r in rounds],
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
    for name in ("heartbeat_s", "tail_s", "tail_others_s", "snapshot_s", "command_s"):
        report.check(
            at_most(f"{name[:-2]} back after the kill (worst)", _worst(series[name]), 10.0, "s")
        )
    report.emit()


if __name__ == "__main__":
    main()
