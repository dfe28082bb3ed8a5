"""Reading only what changed on a cluster: the watcher subscribes on every
master, whose keys it is told of, and the changed exchanges are re-read
without a command across slots."""

from __future__ import annotations

from redis.asyncio.cluster import RedisCluster

from perseus_core.store.network import StatusWatcher
from perseus_core.wire.settings import Settings
from tests.core.test_fleet_watch import NOTIFY, watched_changes


async def test_changed_exchanges_are_read_on_their_own(
    cluster_redis: RedisCluster, cluster_settings: Settings
) -> None:
    every_node = RedisCluster.ALL_NODES
    await cluster_redis.config_set("notify-keyspace-events", NOTIFY, target_nodes=every_node)
    try:
        await watched_changes(cluster_redis, cluster_settings)
    finally:
        await cluster_redis.config_set("notify-keyspace-events", "", target_nodes=every_node)


async def test_one_master_without_notifications_means_no_subscription(
    cluster_redis: RedisCluster,
) -> None:
    every_node = RedisCluster.ALL_NODES
    await cluster_redis.config_set("notify-keyspace-events", NOTIFY, target_nodes=every_node)
    try:
        master = cluster_redis.get_primaries()[0]
        await cluster_redis.config_set("notify-keyspace-events", "Kt", target_nodes=master)
        watcher = StatusWatcher(cluster_redis)
        assert not await watcher.start()
        assert not watcher.watching
    finally:
        await cluster_redis.config_set("notify-keyspace-events", "", target_nodes=every_node)
