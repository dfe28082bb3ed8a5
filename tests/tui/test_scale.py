"""The dashboard with 1,000 and 10,000 exchanges: every one reachable by scrolling,
by keys and by the filter, in cards and table, with a bounded number of cards."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta

import pytest
import redis as sync_redis
from textual.pilot import Pilot

from perseus_cli.apps.screenshots import FIXED_NOW, drawn, screenshot_app, settle, wait_for
from perseus_core.wire import keys
from perseus_core.wire.models import CatalogEntry, ConnectionState, InstanceStatus
from perseus_tui.app import PerseusApp
from perseus_tui.widgets.card_grid import ROWS_BEYOND, CardGrid
from perseus_tui.widgets.instance_card import InstanceCard

SIZES = (1_000, 10_000)
STATES = (
    ConnectionState.ACTIVE,
    ConnectionState.WARMING,
    ConnectionState.STARTING,
    ConnectionState.IDLE,
)
OFFLINE_EVERY = 7
"""Every seventh exchange has no status key: offline, shown by its catalog entry only."""

SnapCompare = Callable[..., bool]


def name(exchange_id: int) -> str:
    """A unique name that no other exchange's name contains (`ex00001` is not in `ex10001`)."""
    return f"ex{exchange_id:05d}"


def host(exchange_id: int) -> str:
    """A unique host, found by the filter only for its own exchange."""
    return f"node-{exchange_id:05d}.example"


def host_part(exchange_id: int) -> str:
    """Part of the host, in no name: what an operator types to find a machine."""
    return host(exchange_id).split(".")[0]


NOTIFY = "K$gxzht"
"""The keyspace notifications docs/production-redis.md asks of a large fleet's
server: the feed and the status watcher then read only what changed."""


@pytest.fixture
def fleet_url(redis_url: str) -> Iterator[str]:
    """The shared server set up as a large fleet's should be (`NOTIFY`), and back."""
    with sync_redis.Redis.from_url(redis_url) as admin:
        admin.config_set("notify-keyspace-events", NOTIFY)
        try:
            yield redis_url
        finally:
            admin.config_set("notify-keyspace-events", "")


def seed_large_fleet(url: str, size: int) -> None:
    """`size` exchanges (ids 1..size) against the screenshot clock, in batches."""
    catalog, statuses = _large_fleet(size)
    with sync_redis.Redis.from_url(url, decode_responses=True) as client:
        client.flushall()
        for start in range(0, size, 1_000):
            pipe = client.pipeline(transaction=False)
            pipe.hset(keys.CATALOG_KEY, mapping=dict(catalog[start : start + 1_000]))
            for key, status in statuses[start : start + 1_000]:
                pipe.set(key, status, ex=3_600)
            pipe.execute()


@functools.cache
def _large_fleet(size: int) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """The catalog's fields and the status keys of `size` exchanges, made once
    per size: each test at a size seeds the same fleet again."""
    catalog = [
        (
            str(exchange_id),
            CatalogEntry(
                id=exchange_id, name=name(exchange_id), display_name=f"Ex {exchange_id}"
            ).to_json(),
        )
        for exchange_id in range(1, size + 1)
    ]
    statuses = [
        (keys.status_key(exchange_id), _status(exchange_id))
        for exchange_id in range(1, size + 1)
        if exchange_id % OFFLINE_EVERY
    ]
    return catalog, statuses


def _status(exchange_id: int) -> str:
    state = STATES[exchange_id % len(STATES)]
    changed = FIXED_NOW - timedelta(minutes=exchange_id % 50 + 1)
    return InstanceStatus(
        exchange_id=exchange_id,
        exchange_name=name(exchange_id),
        hostname=host(exchange_id),
        ip_address=f"203.0.113.{exchange_id % 250 + 1}",
        connection_state=state,
        symbol_count=exchange_id % 200,
        connected_at=changed if state is ConnectionState.ACTIVE else None,
        last_heartbeat=FIXED_NOW - timedelta(seconds=exchange_id % 9),
        last_state_change=changed,
        registered_at=changed - timedelta(seconds=6),
        instance_id=f"{host(exchange_id)}:{exchange_id}:4242:1770700000000",
        epoch=3,
        pid=4242,
        version="0.1.0",
        ttl_ms=45_000,
        heartbeat_interval_ms=15_000,
    ).to_json()


async def _loaded(pilot: Pilot[None], size: int) -> PerseusApp:
    app = pilot.app
    assert isinstance(app, PerseusApp)
    await wait_for(pilot, lambda: len(app.views) == size, limit_s=60)
    # The history and the timelines of 10,000 exchanges take more than the
    # screenshots' 10 s on a machine whose cores are busy with other work.
    await settle(pilot, limit_s=60)
    return app


async def _to_cards(pilot: Pilot[None], app: PerseusApp) -> CardGrid:
    if app.dashboard.showing_table:
        await pilot.press("t")
    grid = app.dashboard.grid
    await wait_for(pilot, lambda: app.focused is grid and bool(grid.visible_cards))
    await pilot.pause()
    return grid


def _cards_bounded(app: PerseusApp, grid: CardGrid) -> None:
    """No more cards exist than fill the grid's height, a partly shown row each
    end and `ROWS_BEYOND` rows more."""
    cards = list(app.screen.query(InstanceCard))  # hidden ones included
    rows = -(-grid.scrollable_content_region.height // grid.row_height) + 1 + ROWS_BEYOND
    assert len(cards) <= rows * grid.columns, (len(cards), rows, grid.columns)


def _on_screen(grid: CardGrid, exchange_id: int) -> bool:
    card = grid.card(exchange_id)
    return card is not None and grid.region.contains_region(card.region)


def _table_lines(app: PerseusApp) -> list[str]:
    table = app.dashboard.table
    return [table.render_line(y).text for y in range(table.size.height)]


@pytest.mark.parametrize("size", SIZES)
async def test_cards_reach_every_exchange_by_keys_and_by_scrolling(
    fleet_url: str, size: int
) -> None:
    seed_large_fleet(fleet_url, size)
    app = screenshot_app(fleet_url)
    async with app.run_test(size=(120, 40)) as pilot:
        await _loaded(pilot, size)
        grid = await _to_cards(pilot, app)
        assert len(grid.matching_ids) == size
        await pilot.pause()
        assert grid.compact  # fitted on the switch: no row of the cards is cut off
        _cards_bounded(app, grid)

        await pilot.press("end")
        assert app.dashboard.selected_id == size
        await wait_for(pilot, lambda: _on_screen(grid, size))
        assert grid.card(size) is not None and grid.card(size).has_class("-cursor")  # type: ignore[union-attr]
        _cards_bounded(app, grid)

        await pilot.press("left", "up", "up")
        expected = size - 1 - 2 * grid.columns
        assert app.dashboard.selected_id == expected
        await wait_for(pilot, lambda: _on_screen(grid, expected))
        await pilot.press("home", "right", "down")
        assert app.dashboard.selected_id == 2 + grid.columns
        await wait_for(pilot, lambda: _on_screen(grid, 2 + grid.columns) and grid.scroll_y == 0)
        await pilot.press("pagedown", "pagedown")
        assert app.dashboard.selected_id is not None and app.dashboard.selected_id > 2
        await wait_for(pilot, lambda: _on_screen(grid, app.dashboard.selected_id or 0))

        grid.scroll_end(animate=False, immediate=True)  # the mouse wheel's way down
        await wait_for(pilot, lambda: _on_screen(grid, size))
        _cards_bounded(app, grid)


@pytest.mark.parametrize("size", SIZES)
async def test_the_table_reaches_every_exchange_by_keys(fleet_url: str, size: int) -> None:
    seed_large_fleet(fleet_url, size)
    app = screenshot_app(fleet_url)
    async with app.run_test(size=(120, 40)) as pilot:
        await _loaded(pilot, size)
        table = app.dashboard.table
        assert app.dashboard.showing_table and table.row_count == size
        assert app.focused is table

        await pilot.press("ctrl+end")
        assert app.dashboard.selected_id == size
        last = " ".join(cell.plain for cell in table.get_row(size)[:3])  # id, exchange, state
        await wait_for(
            pilot, lambda: any(last in " ".join(line.split()) for line in _table_lines(app))
        )
        await pilot.press("up", "k")
        assert app.dashboard.selected_id == size - 2
        await pilot.press("ctrl+home", "pagedown", "j")
        assert app.dashboard.selected_id is not None and app.dashboard.selected_id > 2
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.screen is not app.dashboard)


@pytest.mark.parametrize("size", SIZES)
async def test_the_filter_finds_any_one_exchange_by_name_or_host(fleet_url: str, size: int) -> None:
    wanted = size - 1
    seed_large_fleet(fleet_url, size)
    app = screenshot_app(fleet_url)
    async with app.run_test(size=(120, 40)) as pilot:
        await _loaded(pilot, size)
        dashboard = app.dashboard
        table = dashboard.table
        for typed in (name(wanted), host_part(wanted)):
            await pilot.press("slash", *typed, "enter")
            assert table.row_count == 1 and table.selected_id == wanted, typed
            assert dashboard.selected_id == wanted
            await pilot.press("escape")
            assert table.row_count == size

        grid = await _to_cards(pilot, app)
        for typed in (name(wanted), host_part(wanted)):
            await pilot.press("slash", *typed, "enter")
            assert grid.matching_ids == [wanted], typed
            await wait_for(pilot, lambda: _on_screen(grid, wanted))
            assert [card.exchange_id for card in grid.visible_cards] == [wanted]
            assert dashboard.selected_id == wanted
            await pilot.press("escape")
            assert len(grid.matching_ids) == size
        _cards_bounded(app, grid)


def _at_the_end(keys_to_end: tuple[str, ...]) -> Callable[[Pilot[None]], Awaitable[None]]:
    async def run(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, PerseusApp)
        await wait_for(pilot, lambda: len(app.views) > 0 and app.loaded.is_set(), limit_s=60)
        await settle(pilot, limit_s=60)
        await pilot.press(*keys_to_end)
        await pilot.pause()

    return run


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(
    ("view", "keys_to_end"), [("table", ("ctrl+end",)), ("cards", ("t", "end"))]
)
def test_the_last_exchanges(
    snap_compare: SnapCompare, fleet_url: str, size: int, view: str, keys_to_end: tuple[str, ...]
) -> None:
    """The fleet scrolled to its end: the last exchanges, the last one selected."""
    seed_large_fleet(fleet_url, size)
    assert snap_compare(
        screenshot_app(fleet_url),
        terminal_size=(120, 40),
        run_before=drawn(_at_the_end(keys_to_end)),
    )
