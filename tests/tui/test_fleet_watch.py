"""The dashboard's poll with keyspace notifications: changed exchanges are
read as Redis tells of them, the whole fleet only at the safety net's interval."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from perseus_cli.apps.redis_server import RedisServer
from perseus_core.plumbing.connection import connect
from perseus_core.wire import keys
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
