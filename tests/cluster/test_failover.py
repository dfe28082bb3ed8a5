"""A master killed with SIGKILL under load: its replica takes over and every
part of Perseus carries on (the long form is `bench/failover.py`)."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import pytest
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from perseus_cli.apps.redis_cluster import RedisClusterNodes
from perseus_cli.apps.redis_server import free_port
from perseus_core.plumbing.connection import connect, connect_blocking, describe_redis_error
from perseus_core.plumbing.errors import REDIS_ERRORS
from perseus_core.wire import keys
from perseus_core.wire.settings import Settings
from tests.cluster.conftest import FLEET
from tests.cluster.failover import failover_drill
from tests.waiting import eventually


@pytest.mark.timeout(120)  # the drill ends by itself within about 50 s, whatever fails
async def test_a_killed_master_is_survived(
    cluster: RedisClusterNodes, make_cluster_settings: Callable[..., Settings]
) -> None:
    """The killed master is the node the settings' URL names, which every
    client was made from (the long form also kills a master it does not name)."""
    settings = make_cluster_settings(heartbeat_interval_ms=100, heartbeat_ttl_ms=2_000)
    try:
        figures = await failover_drill(cluster, settings, kill_startup_node=True)
    finally:
        cluster.revive()
        # Whatever the drill left unclosed warns now, failing this test
        # rather than whichever test the garbage collector happens to run in.
        gc.collect()
    assert figures.cluster_ok_s is not None, figures
    resumed = (figures.heartbeat_s, figures.tail_s, figures.snapshot_s, figures.command_s)
    assert all(seconds is not None for seconds in resumed), figures
    # The streams of the masters still up are read all along: before the
    # killed master's slots are served again.
    assert figures.tail_others_s is not None, figures
    assert figures.tail_others_s < figures.cluster_ok_s, figures
    # Nothing acknowledged and kept is missed or repeated by the tail; what the
    # old master acknowledged but never replicated is all that may be lost.
    assert figures.delivered_twice == 0 and figures.missed_by_tail == 0, figures
    assert len(figures.lost_by_replication) <= figures.acknowledged, figures
    # A rival that got the slot while the key was lost is noticed within a
    # heartbeat or two by the old holder, which fences itself.
    assert figures.two_holders_s <= 3 * settings.heartbeat_interval_ms / 1000, figures


async def test_reads_go_on_when_the_node_asked_for_keys_dies(
    cluster: RedisClusterNodes, make_cluster_settings: Callable[..., Settings]
) -> None:
    """redis-py asks one node where an XREAD's keys are; when that master dies,
    a stream on another master is still read, by a client that, like the
    tail and the command server, does not let redis-py retry for it."""
    settings = make_cluster_settings()
    client = connect_blocking(settings)
    assert isinstance(client, RedisCluster)
    client.set_retry(Retry(NoBackoff(), 0))
    try:
        await client.xread({keys.activity_key(FLEET[0][1]): "0"}, count=1)
        asked = client.commands_parser.node
        victim = next(node for node in cluster.nodes if node.port == int(asked.port))
        stream = next(
            key
            for _, name in FLEET
            if cluster.master_of(key := keys.activity_key(name)) is not victim
        )
        await client.xadd(stream, {"event": "probe"})
        victim.kill()

        async def read() -> Any:
            try:
                return await client.xread({stream: "0"}, count=1)
            except REDIS_ERRORS:
                return None

        # A dead node refuses at once: this takes milliseconds (the slot map
        # may be refreshed meanwhile, once the replica has taken over).
        assert await eventually(read, within=10, what=f"an XREAD of {stream}")
    finally:
        await client.aclose()
        cluster.revive()


async def test_the_node_that_failed_is_named(cluster_settings: Settings) -> None:
    """The line a person reads names the cluster node that could not be
    reached when the URL names another: after a failover the URL's node may
    be alive and well, and the dead one is the one to look at."""
    client = connect(cluster_settings, retry=Retry(NoBackoff(), 0))
    gone = ClusterNode("127.0.0.1", free_port())  # nothing listens there any more
    try:
        with pytest.raises(REDIS_ERRORS) as failed:
            await client.ping(target_nodes=gone)
    finally:
        await client.aclose()
    message = describe_redis_error(cluster_settings, failed.value)
    assert message == (
        f"cannot reach Redis at {cluster_settings.redis_url} "
        f"(cluster node 127.0.0.1:{gone.port}): connection refused"
    )
