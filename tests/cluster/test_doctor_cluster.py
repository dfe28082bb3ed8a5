"""`perseus doctor` on the 3-master, 3-replica cluster: it says what it is."""

from __future__ import annotations

import asyncio
import json

from click.testing import CliRunner
from redis.asyncio.cluster import RedisCluster

from perseus_cli.main import cli
from tests.cluster.conftest import master_index


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
