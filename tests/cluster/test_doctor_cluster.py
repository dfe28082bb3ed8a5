"""`perseus doctor` on the 3-master, 3-replica cluster: it says what it is,
what the documented readers may do there, and how the live tail waits: a
blocking read per slot group up to 64 groups, past that a wake-up from
keyspace notifications or a poll, as `activity.reads` does."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import redis as sync_redis
from click.testing import CliRunner
from redis.asyncio.cluster import RedisCluster

from perseus_cli.apps.redis_cluster import RedisClusterNodes
from perseus_cli.main import cli
from perseus_core.store.activity.reads import BLOCKING_GROUPS_MAX
from perseus_core.wire import keys
from perseus_core.wire.models import CatalogEntry
from tests.cluster.conftest import FLEET, master_index
from tests.cluster.test_cluster_roles import OPERATOR, VIEWER, node_clients, readers  # noqa: F401


async def test_doctor_names_the_cluster(cluster_url: str) -> None:
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["doctor", "--json"], env={"PERSEUS_REDIS_URL": cluster_url}
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    mode = next(c for c in report["checks"] if c["check"] == "mode")
    assert mode["value"] == "cluster: 6 nodes, 3 masters, 16384/16384 slots, ok"
    assert report["facts"]["cluster"]["masters"] == 3
    assert report["facts"]["roles"] == ["viewer", "operator", "agent"]
    tail = next(c for c in report["checks"] if c["check"] == "live tail")
    assert (
        tail["value"]
        == "blocks: one blocking XREAD per slot group of streams (0, of at most 64 read so)"
    )


async def test_doctor_counts_entries_of_no_exchange_on_every_master(
    cluster_url: str, cluster_redis: RedisCluster
) -> None:
    """`logs:network:unknown` (a Livermore start that failed before it knew its
    exchange, exchangeId 0) and a stream naming only slot 0, on other masters
    than a real exchange's stream: counted, never listed as an exchange."""
    failed = {"event": "error", "exchangeId": "0", "exchangeName": "unknown", "state": "idle"}
    for _ in range(3):
        await cluster_redis.xadd("logs:network:unknown", failed)  # type: ignore[arg-type]
    await cluster_redis.xadd("logs:network:coinbase", {"event": "error", "exchangeId": "1"})
    zero = next(
        f"stray{i}" for i in range(100)
        if len({master_index(f"perseus:activity:stray{i}"), master_index("logs:network:unknown"),
                master_index("logs:network:coinbase")}) == 3
    )  # fmt: skip
    await cluster_redis.xadd(f"perseus:activity:{zero}", {"event": "error", "exchangeId": "0"})
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["doctor", "--json"], env={"PERSEUS_REDIS_URL": cluster_url}
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["facts"]["streams_of_no_exchange"] == {
        "logs:network:unknown": 3,
        f"perseus:activity:{zero}": 1,
    }
    status = await asyncio.to_thread(
        CliRunner().invoke, cli, ["status", "--json"], env={"PERSEUS_REDIS_URL": cluster_url}
    )
    listed = [(i["exchangeId"], i["exchangeName"]) for i in json.loads(status.stdout)["instances"]]
    assert listed == [(1, "coinbase")]


async def doctor_json(url: str, *args: str) -> dict[str, Any]:
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["doctor", "--json", *args], env={"PERSEUS_REDIS_URL": url}
    )
    assert result.exit_code == 0, result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def tail_of(report: dict[str, Any]) -> str:
    return str(next(c for c in report["checks"] if c["check"] == "live tail")["value"])


async def test_the_documented_readers_on_the_cluster(
    cluster: RedisClusterNodes,
    readers: dict[str, str],  # noqa: F811
    cluster_redis: RedisCluster,
) -> None:
    for exchange_id, name in FLEET:
        entry = CatalogEntry(id=exchange_id, name=name, display_name=name)
        await cluster_redis.hset(keys.CATALOG_KEY, str(exchange_id), entry.to_json())
    for user, fit in ((VIEWER, ["viewer"]), (OPERATOR, ["viewer", "operator"])):
        report = await doctor_json(readers[user])
        assert report["facts"]["roles"] == fit
        assert tail_of(report).startswith("blocks: one blocking XREAD per slot group")
        assert next(c for c in report["checks"] if c["check"] == "key types")["ok"] is True
    with sync_redis.Redis.from_url(cluster.url, decode_responses=True) as first:
        version = str(first.info("server")["redis_version"])
    if not version.startswith("6."):  # on 6.2 the rights are probed, and refusals logged
        refused = []
        for client in node_clients(cluster):
            with client:
                refused += [(e["username"], e["object"]) for e in client.acl_log()]
        assert refused == []


async def test_the_tail_of_a_large_fleet_polls_without_notifications(
    cluster: RedisClusterNodes,
    readers: dict[str, str],  # noqa: F811
    cluster_redis: RedisCluster,
) -> None:
    # 40 exchanges: 80 streams in more slot groups than are read blocking.
    for exchange_id in range(1, 41):
        entry = CatalogEntry(id=exchange_id, name=f"venue{exchange_id}")
        await cluster_redis.hset(keys.CATALOG_KEY, str(exchange_id), entry.to_json())
    admin = await doctor_json(cluster.url)
    groups = admin["facts"]["tail_slot_groups"]
    assert groups > BLOCKING_GROUPS_MAX
    assert tail_of(admin).startswith(f"polls every 0.5 s ({groups} slot groups): ")
    assert "notify-keyspace-events lacks K and t on " in tail_of(admin)
    # A viewer may not CONFIG GET: its tail cannot see them, and polls.
    viewer = await doctor_json(readers[VIEWER])
    assert tail_of(viewer) == (
        f"polls every 0.5 s ({groups} slot groups): this user may not CONFIG GET"
        " to see whether keyspace notifications are on"
    )
    masters = [n for n in node_clients(cluster) if n.info("replication")["role"] == "master"]
    try:
        for node in masters:
            node.config_set("notify-keyspace-events", "Kt")
        woken = await doctor_json(cluster.url)
    finally:
        for node in masters:
            node.config_set("notify-keyspace-events", "")
            node.close()
    assert tail_of(woken) == (
        f"wakes on keyspace notifications ({groups} slot groups; every master sends them)"
    )
