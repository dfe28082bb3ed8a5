"""Redis Cluster over TLS, every node dialled by an address its certificate
does not name: the managed-cluster case that `tls_server_name` is for.

Three masters, each behind its own TLS endpoint; each node announces its
endpoint's port (`cluster-announce-port`), so the cluster tells clients to
dial 127.0.0.1 at those ports, while the certificate names only
`SERVER_NAME` and localhost.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import pytest
from redis.asyncio.cluster import RedisCluster

from perseus_cli.apps.redis_cluster import RedisClusterNodes
from perseus_core.instance import Instance
from perseus_core.plumbing.connection import connect
from perseus_core.store.activity import ActivityLog
from perseus_core.store.network import FleetReader
from perseus_core.wire.errors import RedisUnavailable
from perseus_core.wire.models import ConnectionState
from perseus_core.wire.settings import Settings
from tests.cluster.conftest import FLEET
from tests.conftest import fast_settings
from tests.tls.certs import SERVER_NAME, Certs
from tests.tls.conftest import ping
from tests.tls.proxy import TlsProxy


@pytest.fixture(scope="module")
def tls_cluster_url(certs: Certs) -> Iterator[str]:
    """A `rediss://` URL by IP to one node of a 3-master cluster behind TLS."""
    cluster = RedisClusterNodes(3, 0)
    with contextlib.ExitStack() as stack:
        proxies = [
            stack.enter_context(TlsProxy(certs, node.port, require_client_cert=False))
            for node in cluster.nodes
        ]
        for node, proxy in zip(cluster.nodes, proxies, strict=True):
            # Announce the TLS endpoint's port; the bus keeps the node's own.
            node.extra_args += (
                "--cluster-announce-port", str(proxy.port),
                "--cluster-announce-bus-port", str(node.port + 10_000),
            )  # fmt: skip
        with cluster:
            yield f"rediss://127.0.0.1:{proxies[0].port}/0"


@pytest.fixture
def settings_for(tls_cluster_url: str, certs: Certs) -> Callable[..., Settings]:
    def factory(**overrides: object) -> Settings:
        return fast_settings(tls_cluster_url, tls_ca_file=str(certs.ca), **overrides)

    return factory


async def test_a_cluster_dialled_by_ip_is_verified_against_the_server_name(
    settings_for: Callable[..., Settings],
) -> None:
    settings = settings_for(tls_server_name=SERVER_NAME)
    redis = connect(settings)
    assert isinstance(redis, RedisCluster)  # detected over TLS, through the server name
    clients = [connect(settings) for _ in FLEET]
    fleet = [
        Instance(client, settings, exchange_id=i, exchange_name=name, hostname="host-a")
        for client, (i, name) in zip(clients, FLEET, strict=True)
    ]
    try:
        for instance in fleet:  # status keys and streams on all three masters
            await instance.claim()
            assert (await instance.transition(ConnectionState.STARTING)).ok
        snapshot = await FleetReader(redis).snapshot()
        assert sorted(v.exchange_id for v in snapshot.exchanges if v.online) == sorted(
            i for i, _ in FLEET
        )
        for _, name in FLEET:
            page = await ActivityLog(redis, settings).page(name, count=5)
            assert sorted(e.event for e in page.entries) == ["holder", "state_transition"]
    finally:
        for instance in fleet:
            await instance.close()
        for client in [*clients, redis]:
            await client.aclose()


async def test_without_the_server_name_the_certificate_is_refused(
    settings_for: Callable[..., Settings],
) -> None:
    with pytest.raises(RedisUnavailable, match="TLS certificate not accepted"):
        await ping(settings_for())
