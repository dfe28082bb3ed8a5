"""The filter keeps keys typed right after `/`; layout holds from 80 columns up."""

from __future__ import annotations

from collections.abc import Callable

from redis.asyncio import Redis
from textual import events
from textual.widgets import Input

from perseus_core.wire import keys
from perseus_core.wire.models import CatalogEntry
from perseus_tui.app import PerseusApp
from perseus_tui.screens.detail import DetailScreen
from tests.waiting import eventually


async def _catalog(redis: Redis, *names: str) -> None:
    for index, name in enumerate(names, start=1):
        entry = CatalogEntry(id=index, name=name, display_name=name.title())
        await redis.hset(keys.CATALOG_KEY, str(index), entry.to_json())


async def test_keys_typed_right_after_slash_go_to_the_filter(
    make_app: Callable[..., PerseusApp], redis: Redis
) -> None:
    await _catalog(redis, "alpha", "zulu")
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await eventually(lambda: app.dashboard.grid.card(2) is not None)
        await pilot.pause()
        # As a terminal delivers a burst: every key queued before the first is handled.
        for key, char in (("slash", "/"), ("z", "z"), ("u", "u"), ("enter", "\r")):
            app.post_message(events.Key(key, char))
        await pilot.pause()
        assert not isinstance(app.screen, DetailScreen)
        assert app.dashboard.query_one("#filter-input", Input).value == "zu"
        shown = [card.exchange_id for card in app.dashboard.grid.visible_cards]
        assert shown == [2]
        assert app.screen.focused is app.dashboard.grid.card(2)  # Enter kept the filter
