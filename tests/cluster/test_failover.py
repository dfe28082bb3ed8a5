"""A master killed with SIGKILL under load: its replica takes over and every
part of Perseus carries on (the long form is `bench/failover.py`)."""

from __future__ import annotations

from collections.abc import Callable

from perseus_cli.apps.redis_cluster import RedisClusterNodes
from perseus_core.wire.settings import Settings
from tests.cluster.failover import failover_drill


async def test_a_killed_master_is_survived(
    cluster: RedisClusterNodes, make_cluster_settings: Callable[..., Settings]
) -> None:
    settings = make_cluster_settings(heartbeat_interval_ms=100, heartbeat_ttl_ms=2_000)
    try:
        figures = await failover_drill(cluster, settings)
    finally:
        cluster.revive()
    assert figures.cluster_ok_s is not None, figures
    for resumed in (figures.heartbeat_s, figures.tail_s, figures.snapshot_s, figures.command_s):
        assert resumed is not None and resumed < 20, figures
    # Nothing acknowledged and kept is missed or repeated by the tail; what the
    # old master acknowledged but never replicated is all that may be lost.
    assert figures.delivered_twice == 0 and figures.missed_by_tail == 0, figures
    assert len(figures.lost_by_replication) <= figures.acknowledged, figures
    # A rival that got the slot while the key was lost is noticed within a
    # heartbeat or two by the old holder, which fences itself.
    assert figures.two_holders_s <= 3 * settings.heartbeat_interval_ms / 1000, figures
