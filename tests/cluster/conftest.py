"""A real Redis Cluster for the whole session: 3 masters, 3 replicas.

Started from the same redis-server binary as every other test (no redis-cli:
the cluster is formed with CLUSTER MEET, ADDSLOTS and REPLICATE sent from
Python), with a short node timeout so a killed master's replica takes over
within seconds. `cluster_url` empties every master before each test.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from perseus_cli.apps.redis_cluster import SLOTS, RedisClusterNodes
from perseus_core.plumbing.connection import connect
from perseus_core.wire import keys
from perseus_core.wire.settings import Settings
from tests.conftest import fast_settings

MASTERS = 3


def master_index(key: str) -> int:
    """Which of the launcher's masters (0, 1, 2) serves `key` before any failover."""
    return key_slot(key.encode()) * MASTERS // SLOTS


def _spread_fleet() -> list[tuple[int, str]]:
    """Three (id, name) pairs whose streams land on three different masters,
    each status key on yet another master than its stream."""
    fleet = []
    for name in ("binance_us", "coinbase", "kraken"):
        stream_master = master_index(keys.activity_key(name))
        exchange_id = next(
            i for i in range(1, 1000) if master_index(keys.status_key(i)) == (stream_master + 1) % 3
        )
        fleet.append((exchange_id, name))
    return fleet


FLEET = _spread_fleet()
"""Exchanges spread over every master: their keys never share a node by chance."""


@pytest.fixture(scope="session")
def cluster() -> Iterator[RedisClusterNodes]:
    """One 3-master, 3-replica cluster for the session."""
    with RedisClusterNodes(MASTERS, 1, node_timeout_ms=1_000) as nodes:
        yield nodes


@pytest.fixture
def cluster_url(cluster: RedisClusterNodes) -> str:
    """URL of a node of the (emptied) cluster."""
    cluster.wait_ready()
    cluster.flush()
    return cluster.url


@pytest.fixture
def make_cluster_settings(cluster_url: str) -> Callable[..., Settings]:
    """Settings on the cluster, heartbeat at test speed."""

    def factory(**overrides: object) -> Settings:
        return fast_settings(str(overrides.pop("redis_url", cluster_url)), **overrides)

    return factory


@pytest.fixture
def cluster_settings(make_cluster_settings: Callable[..., Settings]) -> Settings:
    """Default fast settings on the emptied cluster."""
    return make_cluster_settings()


@pytest.fixture
async def cluster_redis(cluster_settings: Settings) -> AsyncIterator[RedisCluster]:
    """A cluster client made by `connect`, as every Perseus component makes it."""
    client = connect(cluster_settings)
    assert isinstance(client, RedisCluster)
    try:
        yield client
    finally:
        await client.aclose()
