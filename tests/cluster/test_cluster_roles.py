"""The documented reader roles on a Redis Cluster: with the lines of the
cluster's version plus the cluster rights docs/production-redis.md names, an
operator and a viewer read every exchange's heartbeat age and agents (the
read-only scripts go, per slot, as EVAL_RO on Redis 7, whose lines make a
reader's keys read-only), and no node refuses them anything."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
import redis as sync_redis

from perseus_cli.apps.redis_cluster import RedisClusterNodes
from perseus_core.instance import Instance
from perseus_core.plumbing.connection import connect
from perseus_core.store.network import FleetReader
from perseus_core.store.presence import AgentAnnouncer
from perseus_core.wire import keys
from perseus_core.wire.models import CatalogEntry, ConnectionState
from perseus_core.wire.settings import Settings
from tests.acl.conftest import DOC, PASSWORDS, USERS, documented_acl_lines, variant_of
from tests.cluster.conftest import FLEET

AGENT, OPERATOR, VIEWER = USERS
READERS = (OPERATOR, VIEWER)


def cluster_rights() -> list[str]:
    """The rights docs/production-redis.md says every role needs on a cluster."""
    found = re.search(r"On Redis Cluster add (.*?) to every role", DOC.read_text(), re.S)
    assert found is not None, "docs/production-redis.md names no cluster rights"
    return " ".join(re.findall(r"`([^`]+)`", found.group(1))).split()


def node_clients(cluster: RedisClusterNodes) -> Iterator[sync_redis.Redis]:
    for node in cluster.nodes:
        if node.pid is not None:
            yield sync_redis.Redis(port=node.port, decode_responses=True)


@pytest.fixture
def readers(cluster: RedisClusterNodes, cluster_url: str) -> Iterator[dict[str, str]]:
    """The documented operator and viewer on every node (ACLs are per node),
    with the cluster rights added: user -> URL. Removed afterwards: the
    cluster is the session's."""
    with sync_redis.Redis.from_url(cluster_url, decode_responses=True) as first:
        major, minor = str(first.info("server")["redis_version"]).split(".")[:2]
    variant = variant_of((int(major), int(minor)))
    assert variant is not None
    lines = [w + cluster_rights() for w in documented_acl_lines(variant) if w[2] in READERS]
    for client in node_clients(cluster):
        with client:
            for words in lines:
                client.execute_command(*words)
            client.execute_command("ACL", "LOG", "RESET")
    host_port = cluster_url.removeprefix("redis://")
    passwords = {OPERATOR: PASSWORDS["OPERATOR_PASSWORD"], VIEWER: PASSWORDS["VIEWER_PASSWORD"]}
    yield {user: f"redis://{user}:{passwords[user]}@{host_port}" for user in READERS}
    for client in node_clients(cluster):
        with client:
            client.execute_command("ACL", "DELUSER", *READERS)


@pytest.mark.parametrize("role", READERS)
async def test_readers_date_heartbeats_and_see_agents_on_every_master(
    cluster: RedisClusterNodes,
    readers: dict[str, str],
    make_cluster_settings: Callable[..., Settings],
    role: str,
) -> None:
    long_ttl = make_cluster_settings(heartbeat_ttl_ms=60_000)
    admin = connect(long_ttl)
    holders = []
    try:
        for exchange_id, name in FLEET:
            entry = CatalogEntry(id=exchange_id, name=name, display_name=name)
            await admin.hset(keys.CATALOG_KEY, str(exchange_id), entry.to_json())
        held_id, held_name = FLEET[0]
        holder = Instance(admin, long_ttl, exchange_id=held_id, exchange_name=held_name)
        holders.append(holder)
        await holder.claim(heartbeat=False)
        for exchange_id, name in FLEET[1:]:
            waiting = AgentAnnouncer(
                admin,
                long_ttl,
                exchange_id=exchange_id,
                exchange_name=name,
                state=lambda: ConnectionState.IDLE,
            )
            await waiting.publish()
        reader = connect(make_cluster_settings(redis_url=readers[role]))
        try:
            snapshot = await FleetReader(reader).snapshot()
        finally:
            await reader.aclose()
    finally:
        for holder in holders:
            await holder.close()
        await admin.aclose()
    held = snapshot.get(held_id)
    assert held is not None and held.online and held.heartbeat_at is not None
    for exchange_id, _ in FLEET[1:]:
        view = snapshot.get(exchange_id)
        assert view is not None and view.error is None
        assert [agent.exchange_id for agent in view.agents] == [exchange_id]
    refused = []
    for client in node_clients(cluster):
        with client:
            old = str(client.info("server")["redis_version"]).startswith("6.")
            refused += [
                (e["username"], e["reason"], e["object"])
                for e in client.acl_log()
                # 6.2 refuses redis-py's CLIENT SETINFO on connect (the doc says so).
                if not (old and (e["reason"], e["object"]) == ("command", "client"))
            ]
    assert refused == []
