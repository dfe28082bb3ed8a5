"""The dashboard's poll with keyspace notifications: changed exchanges are
read as Redis tells of them, the whole fleet only at the safety net's interval."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from perseus_cli.apps.redis_server import RedisServer
from perseus_core.plumbing.connection import connect
from perseus_core.store.network import FleetReader
from perseus_core.wire import keys
from perseus_tui.service import PARTIAL_REFRESH_MAX
from tests.conftest import fast_settings
from tests.core.test_fleet_watch import NOTIFY, status_json
from tests.core.test_network import catalog, online
from tests.tui.test_dashboard import AppFactory, card_text
from tests.waiting import eventually


@pytest.fixture
async def own_redis(fresh_redis: RedisServer) -> AsyncIterator[Redis]:
    """A client of `fresh_redis`, notifications on, one exchange online."""
    client = connect(fast_settings(fresh_redis.url))
    assert isinstance(client, Redis)
    await client.config_set("notify-keyspace-events", NOTIFY)
    await catalog(client, 1, "alpha")
    await online(client, 1, status_json(1, "alpha", "starting"))
    try:
        yield client
    finally:
        await client.aclose()


async def test_a_change_is_shown_without_waiting_for_a_full_read(
    make_app: AppFactory, fresh_redis: RedisServer, own_redis: Redis
) -> None:
    settings = fast_settings(fresh_redis.url, refresh_ms=600_000, full_refresh_ms=600_000)
    app = make_app(settings=settings)
    async with app.run_test(size=(120, 40)):
        await eventually(lambda: "STARTING" in card_text(app, 1), what="the first read")
        await online(own_redis, 1, status_json(1, "alpha", "warming"))
        await eventually(lambda: "WARMING" in card_text(app, 1), what="the change, told")
        await own_redis.delete(keys.status_key(1))
        await eventually(lambda: "OFFLINE" in card_text(app, 1), what="the deletion, told")


async def test_the_full_read_still_runs_as_the_safety_net(
    make_app: AppFactory, fresh_redis: RedisServer, own_redis: Redis
) -> None:
    settings = fast_settings(fresh_redis.url, refresh_ms=600_000, full_refresh_ms=300)
    app = make_app(settings=settings)
    async with app.run_test(size=(120, 40)):
        await eventually(lambda: "STARTING" in card_text(app, 1), what="the first read")
        # A change nobody is told of (as if its notification were lost).
        await own_redis.config_set("notify-keyspace-events", "")
        await online(own_redis, 1, status_json(1, "alpha", "warming"))
        await own_redis.config_set("notify-keyspace-events", NOTIFY)
        await eventually(lambda: "WARMING" in card_text(app, 1), what="the safety net's read")


async def test_a_flood_of_activity_rereads_only_what_redis_does_not_tell(
    make_app: AppFactory,
    fresh_redis: RedisServer,
    own_redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Activity on more exchanges than a partial re-read takes: Redis tells the
    status writes of those online, so only the offline ones are read again
    (their last-known entry), and the whole fleet is not read after every
    batch (at 10,000 exchanges each full read held the screen about 200 ms)."""
    online_ids = range(2, PARTIAL_REFRESH_MAX + 6)
    for exchange_id in online_ids:
        await catalog(own_redis, exchange_id, f"ex{exchange_id}")
        await online(own_redis, exchange_id, status_json(exchange_id, f"ex{exchange_id}"))
    offline_id = PARTIAL_REFRESH_MAX + 6
    await catalog(own_redis, offline_id, "quiet")
    full_reads = 0
    snapshot = FleetReader.snapshot

    async def counted(self: FleetReader, **kwargs: Any) -> Any:
        nonlocal full_reads
        full_reads += 1
        return await snapshot(self, **kwargs)

    monkeypatch.setattr(FleetReader, "snapshot", counted)
    settings = fast_settings(fresh_redis.url, refresh_ms=600_000, full_refresh_ms=600_000)
    app = make_app(settings=settings)
    async with app.run_test(size=(120, 40)):
        await eventually(lambda: "STARTING" in card_text(app, 1), what="the first read")
        assert full_reads == 1
        async with own_redis.pipeline(transaction=False) as pipe:
            for exchange_id in (*online_ids, offline_id):
                name = "quiet" if exchange_id == offline_id else f"ex{exchange_id}"
                pipe.xadd(keys.activity_key(name), {"event": "error", "error": f"flood {name}"})
            await pipe.execute()
        newest = (await own_redis.xrevrange(keys.activity_key("quiet"), count=1))[0][0]
        await online(own_redis, 1, status_json(1, "alpha", "warming"))  # told: wakes the poll

        def offline_reread() -> bool:
            known = app.views[offline_id].last_known
            return known is not None and known.id == newest

        await eventually(offline_reread, what="the offline exchange's newest entry")
        await eventually(lambda: "WARMING" in card_text(app, 1), what="the change, told")
        assert full_reads == 1
