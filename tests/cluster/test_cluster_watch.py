"""Reading on a cluster: the watcher subscribes on every master, whose keys
it is told of, and the changed exchanges are re-read without a command
across slots; a slot's statuses are read by one script, or by MGET for a
user who may not run scripts."""

from __future__ import annotations

from redis.asyncio.cluster import RedisCluster

from perseus_core.plumbing.connection import connect
from perseus_core.store.network import FleetReader, StatusWatcher
from perseus_core.wire.settings import Settings
from tests.conftest import fast_settings
from tests.core.test_fleet_watch import NOTIFY, status_json, watched_changes
from tests.core.test_network import catalog, online


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


async def test_a_user_without_scripts_reads_the_statuses_undated(
    cluster_redis: RedisCluster, cluster_url: str
) -> None:
    """A slot's payloads and PTTLs come from one script; refused, the
    payloads are read by MGET and left undated (aged by `lastHeartbeat`)."""
    every_node = RedisCluster.ALL_NODES
    rules = ("on", ">pw", "~*", "&*", "+@all", "-@scripting")  # 6.2 has no EVAL_RO to name
    await cluster_redis.execute_command(
        "ACL", "SETUSER", "noscripts", *rules, target_nodes=every_node
    )
    client = connect(fast_settings(cluster_url.replace("redis://", "redis://noscripts:pw@")))
    try:
        for exchange_id, name in ((1, "alpha"), (2, "beta"), (3, "gamma")):
            await catalog(cluster_redis, exchange_id, name)  # type: ignore[arg-type]
            await online(cluster_redis, exchange_id, status_json(exchange_id, name))  # type: ignore[arg-type]
        views = (await FleetReader(client).snapshot()).exchanges
        assert [view.exchange_name for view in views if view.online] == ["alpha", "beta", "gamma"]
        assert all(view.heartbeat_at is None for view in views)
        dated = (await FleetReader(cluster_redis).snapshot()).exchanges
        assert all(view.heartbeat_at is not None for view in dated)
    finally:
        await client.aclose()
        await cluster_redis.execute_command("ACL", "DELUSER", "noscripts", target_nodes=every_node)
