"""`perseus exporter` as the documented viewer, on each version's lines: it
reads the whole fleet, its agents and Redis's clock, and Redis refuses it
nothing."""

from __future__ import annotations

from collections.abc import Callable

from perseus_core.export import Exporter
from perseus_core.plumbing.connection import connect
from perseus_core.store.presence import AgentAnnouncer
from perseus_core.wire import keys
from perseus_core.wire.models import CatalogEntry, ConnectionState
from perseus_core.wire.settings import Settings
from tests.acl.conftest import AclServer
from tests.export.conftest import livermore_status, sample, scrape


async def test_the_exporter_runs_as_a_viewer(
    acl: AclServer, make_settings: Callable[..., Settings]
) -> None:
    # The member lives a minute: published once, it must outlast a slow scrape.
    admin_settings = make_settings(
        redis_url=acl.admin_url, heartbeat_interval_ms=20_000, heartbeat_ttl_ms=60_000
    )
    admin = connect(admin_settings)
    announcer = AgentAnnouncer(
        admin,
        admin_settings,
        exchange_id=2,
        exchange_name="binance",
        state=lambda: ConnectionState.IDLE,
        hostname="vm",
    )
    try:
        for entry in (CatalogEntry(id=1, name="coinbase"), CatalogEntry(id=2, name="binance")):
            await admin.hset(keys.CATALOG_KEY, str(entry.id), entry.to_json())
        await admin.set(keys.status_key(1), livermore_status(1, "coinbase"), px=45_000)
        await announcer.publish()
        exporter = Exporter(make_settings(redis_url=acl.viewer), listen="127.0.0.1:0", cache_ms=0)
        await exporter.start()
        try:
            samples = await scrape(exporter.url)
        finally:
            await exporter.aclose()
    finally:
        await admin.aclose()
    one = {"exchange_id": "1", "exchange_name": "coinbase"}
    two = {"exchange_id": "2", "exchange_name": "binance"}
    assert samples[sample("perseus_exchange_up", **one)] == 1
    assert samples[sample("perseus_exchange_up", **two)] == 0
    assert samples[sample("perseus_exchange_agents_present", **two)] == 1
    assert samples[sample("perseus_exporter_redis_up")] == 1
    assert sample("perseus_redis_clock_skew_seconds") in samples
    assert acl.denials() == []
