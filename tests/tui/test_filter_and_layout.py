"""The filter keeps keys typed right after `/`; layout holds from 80 columns up."""

from __future__ import annotations

from collections.abc import Callable

from redis.asyncio import Redis
from rich.cells import cell_len
from textual import events
from textual.widgets import Input

from perseus_cli.apps.screenshots import seed_fleet
from perseus_core.present import badge
from perseus_core.wire import keys
from perseus_core.wire.models import CatalogEntry, ErrorEntry
from perseus_tui.app import PerseusApp
from perseus_tui.screens.detail import DetailScreen
from perseus_tui.widgets.history_feed import HistoryFeed
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
        grid = app.dashboard.grid
        assert app.screen.focused is grid and grid.selected_id == 2  # Enter kept the filter


async def test_a_key_typed_before_slash_in_the_same_burst_keeps_its_binding(
    make_app: Callable[..., PerseusApp], redis: Redis
) -> None:
    """`t/zu⏎` arriving at once: the view switches (the `t` is not swallowed by the
    filter input that `/` opens) and the filter is `zu`."""
    await _catalog(redis, "alpha", "zulu")
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await eventually(lambda: app.dashboard.grid.card(2) is not None)
        await pilot.pause()
        assert not app.dashboard.showing_table
        for key, char in (("t", "t"), ("slash", "/"), ("z", "z"), ("u", "u"), ("enter", "\r")):
            app.post_message(events.Key(key, char))
        await eventually(lambda: app.dashboard.showing_table)
        await pilot.pause()
        assert app.dashboard.filter_input.value == "zu"
        assert app.screen.focused is app.dashboard.table  # Enter gave the keyboard back


async def test_badges_are_never_clipped_from_80_columns(
    make_app: Callable[..., PerseusApp], redis_url: str
) -> None:
    """Every card's first line ends with its whole badge, at every width, with a
    scrollbar or without."""
    seed_fleet(redis_url)
    for width, height in ((80, 24), (97, 30), (120, 40), (121, 24), (160, 50)):
        app = make_app()
        async with app.run_test(size=(width, height)) as pilot:
            await eventually(lambda: len(app.dashboard.grid.visible_cards) == 9)  # noqa: B023
            await pilot.pause()
            for card in app.dashboard.grid.visible_cards:
                first = card.render().plain.splitlines()[0]
                label = badge(card.view).text
                assert first.endswith(label), (width, first)
                assert cell_len(first) <= card.content_size.width, (width, first)


async def test_the_detail_history_wraps_a_long_reason(
    make_app: Callable[..., PerseusApp], redis: Redis
) -> None:
    await _catalog(redis, "alpha")
    reason = "upstream refused the session: " + " ".join(f"detail{n}" for n in range(30)) + " END"
    error = ErrorEntry(
        timestamp="2026-02-10T22:44:00.000Z", error=reason, exchange_id="1",
        exchange_name="alpha", hostname="alpha-host", state="active",
    )  # fmt: skip
    await redis.xadd(keys.activity_key("alpha"), error.to_fields())  # type: ignore[arg-type]
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await eventually(lambda: app.dashboard.grid.card(1) is not None)
        await pilot.pause()
        await pilot.press("enter")
        await eventually(lambda: isinstance(app.screen, DetailScreen))
        history = app.screen.query_one(HistoryFeed)
        await eventually(lambda: bool(history.visible_entries))
        await pilot.pause()
        rows = ["".join(seg.text for seg in history.render_line(y)) for y in range(12)]
        text = " ".join(row.strip() for row in rows)
        assert "END" in text and "detail29" in text, rows  # nothing cut off
        assert history.row_count() > 1


async def test_cursor_keys_on_a_table_the_filter_emptied(
    make_app: Callable[..., PerseusApp], redis: Redis
) -> None:
    """A filter that matches nothing leaves the table no row; the cursor keys,
    Enter and another rebuild (a refresh) find nothing to select, and say so
    by doing nothing."""
    await _catalog(redis, "alpha", "zulu")
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await eventually(lambda: app.dashboard.grid.card(2) is not None)
        await pilot.press("t", "slash", "z", "z", "z", "enter")
        assert app.dashboard.showing_table and app.dashboard.table.row_count == 0
        await pilot.press("up", "down", "k", "j", "enter", "r", "home", "end", "pageup")
        await pilot.pause()
        assert app.is_running and not isinstance(app.screen, DetailScreen)
        await pilot.press("escape")  # the filter cleared: both rows, and the cursor, are back
        await eventually(lambda: app.dashboard.table.row_count == 2)
        await pilot.press("down")
        await eventually(lambda: app.dashboard.selected_id == 2)
    assert app.return_code in (None, 0)
