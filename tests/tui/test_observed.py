"""Going offline and coming back, seen by the dashboard: in the feed and the detail
history, marked as its own observation, and never written into the activity stream."""

from __future__ import annotations

from collections.abc import Callable

from redis.asyncio import Redis

from perseus_core.instance import Instance
from perseus_core.wire import keys
from perseus_core.wire.models import CatalogEntry, ConnectionState
from perseus_core.wire.settings import Settings
from perseus_tui import render
from perseus_tui.app import PerseusApp
from perseus_tui.screens.detail import DetailScreen
from perseus_tui.widgets.activity_feed import ActivityFeed
from tests.waiting import eventually


def _events(feed: ActivityFeed) -> list[str]:
    return [entry.event for entry in feed.entries if entry.stream == "beta"]


async def test_offline_and_back_are_observed_and_never_written(
    make_app: Callable[..., PerseusApp], make_settings: Callable[..., Settings], redis: Redis
) -> None:
    settings = make_settings(heartbeat_ttl_ms=1_000)  # no expiry from a busy machine alone
    entry = CatalogEntry(id=2, name="beta", display_name="Beta")
    await redis.hset(keys.CATALOG_KEY, "2", entry.to_json())
    first = Instance(redis, settings, exchange_id=2, exchange_name="beta", hostname="beta-host")
    await first.claim()
    for state in (ConnectionState.STARTING, ConnectionState.WARMING, ConnectionState.ACTIVE):
        await first.transition(state)
    app = make_app(settings=make_settings(refresh_ms=200))
    async with app.run_test(size=(120, 40)) as pilot:
        feed = app.dashboard.feed
        await eventually(lambda: app.views.get(2) is not None and app.views[2].status is not None)
        await first.heartbeat.stop()  # killed: nothing written, the key expires

        async def expired() -> bool:
            return await redis.exists(keys.status_key(2)) == 0

        await eventually(expired, within=5)
        await eventually(lambda: "observed_offline" in _events(feed), within=5)
        gone = next(e for e in feed.entries if e.event == "observed_offline")
        line = render.entry_line(gone, None, app.clock()).plain
        assert "offline" in line and "while active" in line and "beta-host" in line
        assert "observed by this dashboard" in line

        second = Instance(redis, settings, exchange_id=2, exchange_name="beta", hostname="b2")
        await second.claim()
        await eventually(lambda: "observed_online" in _events(feed), within=5)

        await pilot.press("enter")  # the detail screen of the selected (only) exchange
        await eventually(lambda: isinstance(app.screen, DetailScreen))
        history = app.screen.query_one(ActivityFeed)
        await eventually(lambda: "observed_offline" in _events(history), within=5)
        assert "observed_online" in _events(history)
        assert "state_transition" in _events(history)  # the stream's own entries as well

    written = await redis.xrange(keys.activity_key("beta"))
    assert written and all(fields["event"] == "state_transition" for _, fields in written)
    await second.close()
    await first.close()
