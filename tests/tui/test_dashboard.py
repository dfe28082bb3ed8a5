"""The dashboard driven by keys against a real Redis, real instances and real agents."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from redis.asyncio import Redis
from textual.command import CommandList, CommandPalette
from textual.widgets import ContentSwitcher
from textual.widgets._footer import FooterKey

from perseus_cli.apps.redis_server import RedisServer
from perseus_cli.apps.screenshots import HOSTILE_HOSTNAME, seed_fleet, seed_hostile
from perseus_core.instance import Instance
from perseus_core.plumbing.connection import connect
from perseus_core.store.activity import ActivityLog
from perseus_core.store.network import ExchangeView
from perseus_core.store.presence import AgentAnnouncer
from perseus_core.wire import keys
from perseus_core.wire.models import (
    ActivityEntry,
    CatalogEntry,
    ConnectionState,
    ErrorEntry,
    InstanceStatus,
)
from perseus_core.wire.settings import Settings
from perseus_tui import service
from perseus_tui.app import PerseusApp
from perseus_tui.messages import DetailRequested
from perseus_tui.screens.confirm import ConfirmScreen
from perseus_tui.screens.dashboard import FEED_MIN_HEIGHT
from perseus_tui.screens.detail import DetailScreen
from perseus_tui.screens.help import HelpScreen
from perseus_tui.widgets import instance_table
from perseus_tui.widgets.activity_feed import ActivityFeed
from perseus_tui.widgets.command_bar import CommandBar, line_content
from perseus_tui.widgets.empty_fleet import EmptyFleet
from perseus_tui.widgets.footer import PerseusFooter
from perseus_tui.widgets.instance_card import CARD_HEIGHT, InstanceCard
from perseus_tui.widgets.instance_table import CELL_PADDING, InstanceTable
from tests.tui.conftest import Notes
from tests.waiting import eventually

AppFactory = Callable[..., PerseusApp]


def card_text(app: PerseusApp, exchange_id: int) -> str:
    card = app.dashboard.grid.card(exchange_id)
    return card.render().plain if card is not None else ""


def command_lines(app: PerseusApp) -> str:
    """The command bar's lines, as plain text."""
    return "\n".join(line_content(line).plain for line in app.commands)


def feed_text(feed: ActivityFeed) -> list[str]:
    return [f"{e.stream} {e.event} {getattr(e, 'to_state', '')}" for e in feed.visible_entries]


async def add_catalog(redis: Redis, exchange_id: int, name: str, display: str = "") -> None:
    entry = CatalogEntry(id=exchange_id, name=name, display_name=display or name.title())
    await redis.hset(keys.CATALOG_KEY, str(exchange_id), entry.to_json())


async def test_card_follows_instance_and_feed_is_pushed_without_polling(
    make_app: AppFactory, settings: Settings, redis: Redis
) -> None:
    """With a 60 s poll, transitions still show at once: the feed is push, the cards follow it."""
    await add_catalog(redis, 1, "alpha")
    instance = Instance(
        redis, settings, exchange_id=1, exchange_name="alpha", hostname="alpha-host"
    )
    await instance.claim()
    app = make_app()
    async with app.run_test(size=(120, 40)):
        await eventually(lambda: "IDLE" in card_text(app, 1))
        await eventually(app.history_loaded.is_set)
        feed = app.dashboard.feed
        before = len(feed.entries)
        await instance.transition(ConnectionState.STARTING)
        await eventually(lambda: "STARTING" in card_text(app, 1), within=5)
        await eventually(lambda: len(feed.entries) > before, within=5)
        transitions = [e for e in feed.entries if e.event == "state_transition"]
        assert transitions[0].stream == "alpha"
        assert getattr(transitions[0], "to_state", "") == "starting"
        await instance.transition(ConnectionState.WARMING)
        await instance.transition(ConnectionState.ACTIVE)
        await eventually(lambda: "Running for" in card_text(app, 1), within=5)
        assert "alpha-host" in card_text(app, 1)
        # Newest first: active above warming above starting. The card may show
        # ACTIVE (from its own read) a moment before the tail delivers the entry.

        def newest_states() -> list[str]:
            entries = feed.entries
            return [getattr(e, "to_state", "") for e in entries if e.event == "state_transition"]

        await eventually(lambda: newest_states()[:3] == ["active", "warming", "starting"], within=5)
        assert newest_states()[:3] == ["active", "warming", "starting"]
    await instance.close()


async def test_card_goes_offline_when_the_key_expires(
    make_app: AppFactory, make_settings: Callable[..., Settings], redis: Redis
) -> None:
    settings = make_settings()
    await add_catalog(redis, 2, "beta")
    instance = Instance(redis, settings, exchange_id=2, exchange_name="beta", hostname="beta-host")
    await instance.claim()
    await instance.transition(ConnectionState.STARTING)
    app = make_app(settings=make_settings(refresh_ms=300))
    async with app.run_test(size=(120, 40)):
        await eventually(lambda: "STARTING" in card_text(app, 2))
        await instance.heartbeat.stop()  # the process "dies": no more refreshes, the TTL runs out
        await eventually(lambda: "OFFLINE" in card_text(app, 2), within=5)
        text = card_text(app, 2)
        assert "beta-host" in text and "starting" in text  # last known host and state
        assert app.dashboard.grid.card(2).has_class("-offline")  # type: ignore[union-attr]
    await instance.close()


async def test_start_and_stop_a_real_agent_through_the_keys(
    make_app: AppFactory, redis_url: str, redis: Redis, spawn_agent: Callable[..., Any]
) -> None:
    agent = spawn_agent(
        redis_url, "--exchange-id", "5", "--exchange-name", "gamma", "--warmup", "0.2",
        "--symbols", "7", "--admin-name", "Ops",
    )  # fmt: skip

    async def agent_up() -> bool:  # idle, no slot
        assert agent.poll() is None, "the agent exited"
        return bool(await redis.exists(keys.agents_key(5)))

    await eventually(agent_up, within=15, what="the agent's presence key")
    app = make_app()
    notes = Notes(app)
    async with app.run_test(size=(120, 40)) as pilot:
        await eventually(lambda: "Gamma #5" in card_text(app, 5) or "gamma #5" in card_text(app, 5))
        # Nothing runs yet, but the idle agent would answer a start: READY, not OFFLINE.
        text = card_text(app, 5)
        assert "READY" in text and "OFFLINE" not in text and f"pid {agent.pid}" in text
        assert "1 ready" in app.header_state().summary.plain
        app.dashboard.grid.select(5)
        await pilot.press("s")
        await eventually(lambda: "Running for" in card_text(app, 5), within=15)
        await eventually(lambda: "✔ Start" in command_lines(app), within=10, what="done")
        # One line for the command, updated in place; no toast for a success.
        line = command_lines(app)
        assert "sent" in line and "Acknowledged by" in line and "done" in line, line
        assert len(app.commands) == 1 and not notes.items, notes.text()
        assert "7 symbols" in card_text(app, 5)

        await pilot.press("x")
        await eventually(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        # The agent stops, goes back to idle and releases the slot, and keeps
        # running: the card says who stopped it (the stop holds), the last
        # state read from the stream (whose newest entry, the stop's audit
        # entry, names none).
        await eventually(lambda: "STOPPED" in card_text(app, 5), within=15)
        assert "stopped by tester@ci" in card_text(app, 5)
        states = [
            getattr(e, "to_state", "") for e in app.dashboard.feed.entries if e.stream == "gamma"
        ]
        assert {"stopping", "stopped", "idle"} <= set(states)
        await eventually(lambda: command_lines(app).count("done") >= 2, 10)
        await eventually(lambda: "Idle for" in card_text(app, 5), within=10)
        view = app.views[5]
        assert view.last_known is not None and view.last_known.state == "idle"
        assert "OFFLINE" not in card_text(app, 5)
        commands = [e for e in app.dashboard.feed.entries if e.event == "command"]
        assert any(getattr(e, "operator", "") == "tester@ci" for e in commands)
    assert agent.poll() is None  # the agent itself keeps running after a stop


async def test_stop_can_be_cancelled(
    make_app: AppFactory, redis: Redis, long_ttl: Settings
) -> None:
    await add_catalog(redis, 3, "delta")
    # A TTL the heartbeat cannot miss on a loaded machine: at the test speed (400 ms)
    # one stalled tick let the key expire, and the card was offline, not idle.
    instance = Instance(redis, long_ttl, exchange_id=3, exchange_name="delta", hostname="d-host")
    await instance.claim()
    app = make_app()
    notes = Notes(app)
    async with app.run_test(size=(120, 40)) as pilot:
        await eventually(lambda: "IDLE" in card_text(app, 3))
        await pilot.press("x")
        await eventually(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")
        await pilot.pause()
        assert not isinstance(app.screen, ConfirmScreen)
        assert not app.commands and not notes.items
        assert await redis.exists(keys.commands_key(3)) == 0
    await instance.close()


async def test_a_key_that_reaches_a_covered_or_closed_question_does_nothing(
    make_app: AppFactory,
) -> None:
    """Keys typed ahead reach a screen late: an answer for a question that another
    screen covers, or that was answered already. Textual's `dismiss` would pop the
    screen on top and run the question's callback again (a second stop sent, the
    dashboard popped, or InvalidStateError); it must do nothing."""
    answers: list[bool | None] = []
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await eventually(app.loaded.is_set)
        question = ConfirmScreen("Stop?")
        app.push_screen(question, answers.append)
        app.action_help()
        await eventually(lambda: isinstance(app.screen, HelpScreen))
        question.action_answer(True)  # covered by the help
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen) and answers == []
        await pilot.press("escape")
        await eventually(lambda: app.screen is question)
        question.action_answer(False)
        question.action_answer(True)  # answered already
        await eventually(lambda: app.screen is app.dashboard)
        await pilot.pause()
        assert answers == [False] and len(app.screen_stack) == 1


async def test_commands_that_cannot_succeed_are_refused_at_once(
    make_app: AppFactory, settings: Settings, redis: Redis
) -> None:
    """Offline (no agent): neither start nor stop is sent; active: start is refused."""
    await add_catalog(redis, 4, "epsilon")
    await add_catalog(redis, 7, "eta")
    instance = Instance(redis, settings, exchange_id=7, exchange_name="eta", hostname="eta-host")
    await instance.claim()
    await instance.transition(ConnectionState.STARTING)
    app = make_app()
    notes = Notes(app)
    async with app.run_test(size=(120, 40)) as pilot:
        await eventually(lambda: "OFFLINE" in card_text(app, 4) and card_text(app, 7))
        app.dashboard.grid.select(4)
        await pilot.pause()
        assert app.screen.active_bindings["s"].enabled is False  # greyed in the footer
        started = time.monotonic()
        await pilot.press("s")
        await eventually(lambda: "refused" in command_lines(app), within=1)
        assert time.monotonic() - started < 1  # no ack timeout waited out
        assert "✖ Start Epsilon #4 refused: no agent runs for it" in command_lines(app)
        await pilot.press("x")
        await eventually(lambda: "Stop Epsilon #4 refused" in command_lines(app), within=1)
        assert not isinstance(app.screen, ConfirmScreen)
        await pilot.press("right")  # the next card: eta, starting
        await pilot.press("s")
        await eventually(lambda: "already starting" in command_lines(app), within=1)
        assert len(app.commands) == 2 and not notes.items, notes.text()
        assert await redis.exists(keys.commands_key(4), keys.commands_key(7)) == 0
    await instance.close()


async def test_no_agent_answered_is_one_failure_toast(
    make_app: AppFactory, make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """An agent's presence that nobody answers behind (it hung): the start is sent,
    times out, and that failure is the one notification."""
    await add_catalog(redis, 8, "theta")
    silent = AgentAnnouncer(
        redis, make_settings(heartbeat_ttl_ms=60_000), exchange_id=8, exchange_name="theta",
        state=lambda: ConnectionState.IDLE, hostname="hung-host",
    )  # fmt: skip
    await silent.publish()
    app = make_app(settings=make_settings(refresh_ms=60_000, ack_timeout_ms=300))
    notes = Notes(app)
    async with app.run_test(size=(120, 40)) as pilot:
        await eventually(lambda: "READY" in card_text(app, 8))
        await pilot.press("s")
        await eventually(lambda: notes.has("no agent answered"), within=5)
        assert [sev for _, _, sev in notes.items] == ["error"], notes.text()
        assert "✖ Start Theta #8: sent" in command_lines(app)


async def test_read_only_disables_start_and_stop_and_says_why(
    make_app: AppFactory, redis: Redis
) -> None:
    await add_catalog(redis, 6, "zeta")
    app = make_app(read_only=True)
    notes = Notes(app)
    async with app.run_test(size=(120, 40)) as pilot:
        await eventually(lambda: bool(card_text(app, 6)))
        bindings = app.screen.active_bindings
        assert bindings["s"].enabled is False and bindings["x"].enabled is False
        await pilot.press("s")
        await pilot.press("x")
        await pilot.pause()
        assert "--read-only" in command_lines(app) and not notes.items, notes.text()
        assert not isinstance(app.screen, ConfirmScreen)
        assert await redis.exists(keys.commands_key(6)) == 0


async def test_an_acl_without_write_rights_switches_to_read_only(
    make_app: AppFactory, make_settings: Callable[..., Settings], fresh_redis: RedisServer
) -> None:
    admin = connect(make_settings(redis_url=fresh_redis.url))
    try:
        await admin.execute_command(
            "ACL", "SETUSER", "viewer", "on", ">secret", "~*", "&*", "+@all", "-@write"
        )
        await add_catalog(admin, 7, "eta")
        waiting = AgentAnnouncer(
            admin, make_settings(heartbeat_ttl_ms=60_000), exchange_id=7, exchange_name="eta",
            state=lambda: ConnectionState.IDLE,
        )  # fmt: skip
        await waiting.publish()  # an agent is ready, so the start is not refused
    finally:
        await admin.aclose()
    url = f"redis://viewer:secret@127.0.0.1:{fresh_redis.port}/0"
    app = make_app(settings=make_settings(redis_url=url, refresh_ms=60_000), target_label=None)
    notes = Notes(app)
    async with app.run_test(size=(120, 40)) as pilot:
        await eventually(lambda: "READY" in card_text(app, 7))
        assert "secret" not in app.target and "***" in app.target
        await pilot.press("s")
        await eventually(lambda: app.read_only, within=5)
        assert "refuses commands" in app.read_only_reason, app.read_only_reason
        assert app.screen.active_bindings["s"].enabled is False
        assert notes.has("Switched to read-only"), notes.text()


async def test_banner_on_redis_loss_and_recovery(
    make_app: AppFactory, make_settings: Callable[..., Settings], fresh_redis: RedisServer
) -> None:
    settings = make_settings(redis_url=fresh_redis.url, refresh_ms=300)
    client = connect(settings)
    await add_catalog(client, 8, "theta")
    app = make_app(settings=settings)
    async with app.run_test(size=(120, 40)):
        await eventually(lambda: bool(card_text(app, 8)) and app.history_loaded.is_set())
        fresh_redis.kill()
        banner = app.dashboard.banner
        await eventually(lambda: app.connected is False, within=5)
        assert banner.has_class("-shown")
        assert "Redis unreachable at redis://redis.example:6379/0" in banner.text
        assert "retrying" in banner.text  # "in Ns", or "now" on a slow machine
        assert "STALE" in card_text(app, 8)  # the card is kept, marked stale

        fresh_redis.start()  # same port, empty data (no persistence)
        await client.aclose()
        client = connect(settings)
        await add_catalog(client, 8, "theta")
        await eventually(lambda: app.connected is True, within=10)
        await eventually(lambda: "STALE" not in card_text(app, 8), within=5)
        assert not banner.has_class("-shown")
        # The live feed resumes on its own: a new entry arrives without a poll.
        log = ActivityLog(client, settings)
        await log.append("theta", ErrorEntry(error="after the restart", exchange_name="theta"))
        await eventually(
            lambda: any(
                getattr(e, "error", "") == "after the restart" for e in app.dashboard.feed.entries
            ),
            within=10,
        )
    await client.aclose()


async def test_the_banner_takes_its_rows_from_the_cards_and_gives_them_back(
    make_app: AppFactory, make_settings: Callable[..., Settings], fresh_redis: RedisServer
) -> None:
    # 120x25: two rows of three full cards fit exactly; the banner's rows do not.
    # With keyspace notifications on, the fleet is read in full only every
    # minute: the lost subscription must bring the banner, not the next read.
    settings = make_settings(redis_url=fresh_redis.url, full_refresh_ms=60_000)
    client = connect(settings)
    await client.config_set("notify-keyspace-events", "K$gxzh")
    for exchange_id in range(1, 7):
        await add_catalog(client, exchange_id, f"x{exchange_id}")
    await client.aclose()
    app = make_app(settings=settings)
    async with app.run_test(size=(120, 25)):
        grid = app.dashboard.grid
        await eventually(lambda: bool(card_text(app, 6)))
        await eventually(lambda: not grid.compact and grid.region.height == 2 * CARD_HEIGHT)
        fresh_redis.kill()
        await eventually(lambda: app.dashboard.banner.has_class("-shown"), within=5)
        await eventually(
            lambda: grid.compact and app.dashboard.feed.region.height >= FEED_MIN_HEIGHT,
            what="compact cards under the banner, and the feed its rows",
        )
        fresh_redis.start()  # notifications off again: the reads are whole every refresh_ms
        await eventually(lambda: app.connected is True, within=10)
        await eventually(lambda: not grid.compact, what="full cards once the banner is gone")


async def test_hostile_strings_show_literally_and_do_nothing(
    make_app: AppFactory, redis_url: str
) -> None:
    seed_hostile(redis_url)
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await eventually(lambda: bool(card_text(app, 9)))
        text = card_text(app, 9)
        assert "[b]x[/b][@click=app.quit]q[" in text  # literally, markup not parsed
        assert "\x1b" not in text and "[31m" not in text  # the escape sequence is gone
        card = app.dashboard.grid.card(9)
        assert card is not None
        await pilot.click(InstanceCard, offset=(12, 2))  # on the hostname
        await pilot.pause()
        assert app.is_running  # the [@click=app.quit] in the hostname did nothing
        await pilot.press("enter")
        await eventually(lambda: isinstance(app.screen, DetailScreen))
        status = app.screen.query_one("#status").render().plain  # type: ignore[attr-defined]
        assert HOSTILE_HOSTNAME.replace("\x1b[31m", "") in status
        assert app.is_running


async def test_filter_table_toggle_help_and_utc(make_app: AppFactory, redis_url: str) -> None:
    seed_fleet(redis_url)
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await eventually(lambda: app.loaded.is_set() and app.history_loaded.is_set())
        await pilot.pause()
        dashboard = app.dashboard
        assert len(dashboard.grid.visible_cards) == 9
        await pilot.press("slash", "k", "r", "a")
        assert [c.exchange_id for c in dashboard.grid.visible_cards] == [2]
        assert {e.stream for e in dashboard.feed.visible_entries} == {"kraken"}
        await pilot.press("escape")
        assert len(dashboard.grid.visible_cards) == 9
        await pilot.press("slash", *"ready")  # exchanges whose agents wait for a start
        assert [c.exchange_id for c in dashboard.grid.visible_cards] == [9]
        await pilot.press("escape")

        await pilot.press("t")
        await pilot.pause()
        table = dashboard.query_one(InstanceTable)
        assert dashboard.showing_table and table.row_count == 9 and app.focused is table
        await pilot.press("t")
        assert not dashboard.showing_table

        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        help_text = app.screen.query_one("#help-text").render().plain  # type: ignore[attr-defined]
        for described in ("Start the selected", "Stop the selected", "Filter", "Table", "UTC"):
            assert described in help_text
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)

        first = dashboard.feed.visible_entries[-1]
        assert first.time is not None
        await pilot.press("u")
        assert app.utc and app.display_tz is not None and str(app.display_tz) == "UTC"


async def test_pause_holds_new_entries_until_resumed(
    make_app: AppFactory, redis: Redis, settings: Settings
) -> None:
    await add_catalog(redis, 1, "alpha")
    log = ActivityLog(redis, settings)
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await eventually(app.history_loaded.is_set)
        feed = app.dashboard.feed
        await pilot.press("p")
        assert feed.paused
        await log.append("alpha", ErrorEntry(error="while paused", exchange_name="alpha"))
        await eventually(lambda: feed.held_count == 1, within=5)
        assert not any(getattr(e, "error", "") == "while paused" for e in feed.entries)
        await pilot.press("p")
        assert getattr(feed.entries[0], "error", "") == "while paused" and feed.held_count == 0


async def test_detail_pages_history_backwards(
    make_app: AppFactory, redis: Redis, settings: Settings
) -> None:
    await add_catalog(redis, 1, "alpha")
    log = ActivityLog(redis, settings)
    for n in range(120):
        await log.append("alpha", ErrorEntry(error=f"e{n}", exchange_name="alpha"))
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await eventually(lambda: bool(card_text(app, 1)))
        await pilot.press("enter")
        await eventually(lambda: isinstance(app.screen, DetailScreen))
        history = app.screen.query_one("#history", ActivityFeed)
        await eventually(lambda: len(history.entries) == 50)
        assert getattr(history.entries[0], "error", "") == "e119"
        await pilot.press("m")
        await eventually(lambda: len(history.entries) == 100)
        await pilot.press("m")
        await eventually(lambda: len(history.entries) == 120)
        assert getattr(history.entries[-1], "error", "") == "e0"
        assert app.screen.active_bindings["m"].enabled is False  # nothing older
        await log.append("alpha", ErrorEntry(error="live", exchange_name="alpha"))
        await eventually(lambda: getattr(history.entries[0], "error", "") == "live", 5)
        await pilot.press("escape")
        assert app.screen is app.dashboard


async def test_an_empty_fleet_says_how_to_add_an_exchange(
    make_app: AppFactory, make_settings: Callable[..., Settings], redis: Redis
) -> None:
    app = make_app(settings=make_settings(refresh_ms=300))
    async with app.run_test(size=(80, 24)) as pilot:
        await eventually(app.loaded.is_set)
        await pilot.pause()
        dashboard = app.dashboard
        empty = dashboard.query_one(EmptyFleet)
        assert dashboard.query_one(ContentSwitcher).current == "empty"
        text = empty.render().plain
        assert "perseus agent --exchange-id 1 --exchange-name coinbase" in text
        assert "perseus catalog add 1 coinbase" in text
        assert "--redis-url redis://redis.example:6379/0" in text  # not the default Redis
        await add_catalog(redis, 1, "alpha")
        await eventually(lambda: bool(card_text(app, 1)), within=5)
        assert dashboard.query_one(ContentSwitcher).current == "cards"


async def test_large_fleet_switches_to_the_table(make_app: AppFactory, redis: Redis) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for exchange_id in range(1, 62):
            entry = CatalogEntry(id=exchange_id, name=f"x{exchange_id}")
            pipe.hset(keys.CATALOG_KEY, str(exchange_id), entry.to_json())
        await pipe.execute()
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await eventually(app.loaded.is_set)
        await pilot.pause()
        assert app.dashboard.showing_table
        assert app.dashboard.query_one(InstanceTable).row_count == 61


def _status_json(exchange_id: int, name: str, **overrides: object) -> str:
    now = datetime.now(UTC)
    values: dict[str, object] = {
        "exchange_id": exchange_id, "exchange_name": name, "hostname": f"{name}-host",
        "connection_state": ConnectionState.ACTIVE, "last_heartbeat": now,
        "last_state_change": now, "registered_at": now, "connected_at": now,
    }  # fmt: skip
    values.update(overrides)
    return InstanceStatus(**values).to_json()  # type: ignore[arg-type]


async def test_table_rows_off_screen_catch_up_when_scrolled_to(
    make_app: AppFactory, redis: Redis
) -> None:
    """Only the rows on screen are rewritten at once; the others show the latest
    read as soon as they scroll into view, and columns grow for wider cells."""
    async with redis.pipeline(transaction=False) as pipe:
        for exchange_id in range(1, 101):
            entry = CatalogEntry(id=exchange_id, name=f"x{exchange_id}")
            pipe.hset(keys.CATALOG_KEY, str(exchange_id), entry.to_json())
        await pipe.execute()
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await eventually(app.loaded.is_set)
        await pilot.pause()
        table = app.dashboard.table
        assert app.dashboard.showing_table and table.row_count == 100
        error = "a long last error, wider than the column has been so far"
        await redis.set(keys.status_key(100), _status_json(100, "x100", last_error=error))
        await redis.set(keys.status_key(1), _status_json(1, "x1"))
        app.request_refresh()
        await eventually(lambda: app.views[100].online and app.views[1].online)
        await pilot.pause()
        assert table.get_row(1)[2].plain == "active"  # on screen: rewritten at once

        table.move_cursor(row=99)  # scrolls the last row into view
        await pilot.pause()
        assert table.column_widths["error"] >= len(error)  # widened when the row was drawn
        lines = [table.render_line(y).text for y in range(table.size.height)]
        row = next(line for line in lines if " x100 " in line)
        assert " active " in row and " x100-host " in row

        def cell(column: str) -> str:
            return table.get_row(100)[list(table.column_widths).index(column)].plain

        assert cell("state") == "active" and cell("host") == "x100-host"
        assert cell("error") == error


async def test_a_table_row_is_built_once_per_change_however_often_it_is_drawn(
    make_app: AppFactory, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The table keeps each row's cells until its view changes or a tick
    passes: drawing the screen again builds nothing, a tick builds each row on
    screen once, and one exchange read again builds its row alone."""
    now = datetime(2026, 2, 10, 22, 45, tzinfo=UTC)
    async with redis.pipeline(transaction=False) as pipe:
        for exchange_id in range(1, 62):
            name = f"x{exchange_id}"
            pipe.hset(
                keys.CATALOG_KEY,
                str(exchange_id),
                CatalogEntry(id=exchange_id, name=name).to_json(),
            )
            pipe.set(
                keys.status_key(exchange_id), _status_json(exchange_id, name, last_heartbeat=now)
            )
        await pipe.execute()
    app = make_app(clock=lambda: now)  # frozen: no tick but the test's own
    async with app.run_test(size=(120, 40)) as pilot:
        await eventually(app.loaded.is_set)
        await pilot.pause()
        table = app.dashboard.table
        assert app.dashboard.showing_table
        built: list[int] = []
        row_cells = instance_table.row_cells

        def counted(view: ExchangeView, *args: Any, **kwargs: Any) -> Any:
            built.append(view.exchange_id)
            return row_cells(view, *args, **kwargs)

        monkeypatch.setattr(instance_table, "row_cells", counted)
        table.tick(now)
        await pilot.pause()
        on_screen = sorted(built)
        assert on_screen == list(range(1, len(on_screen) + 1)) and len(on_screen) > 20

        built.clear()
        table.refresh()
        await pilot.pause()
        assert built == []  # drawn again from the rows kept

        await redis.set(
            keys.status_key(2), _status_json(2, "x2", last_heartbeat=now, symbol_count=7)
        )
        app.request_refresh()
        await eventually(
            lambda: app.views[2].status is not None and app.views[2].status.symbol_count == 7
        )
        await pilot.pause()
        table.refresh()
        await pilot.pause()
        assert built == [2]


async def test_a_narrow_footer_keeps_help_quit_and_the_commands(
    make_app: AppFactory, redis_url: str
) -> None:
    seed_fleet(redis_url)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await eventually(lambda: app.loaded.is_set() and app.focused is not None)
        await pilot.pause()

        def shown() -> set[str]:
            keys_ = app.screen.query("FooterKey")
            return {getattr(key, "action", "") for key in keys_ if key.display}

        assert {"help", "quit", "start", "stop", "open_detail", "filter"} <= shown()
        assert "toggle_utc" not in shown()
        bar = [key for key in app.screen.query("FooterKey") if key.display]
        assert sum(key.outer_size.width for key in bar) <= 80
        await pilot.press("t")  # left out of the footer, and still a key
        await pilot.pause()
        assert app.dashboard.showing_table
        await pilot.resize_terminal(140, 40)
        await pilot.pause()
        assert {"toggle_utc", "pause_feed", "toggle_view", "refresh"} <= shown()


async def test_the_footer_greys_keys_in_place_as_the_selection_moves(
    make_app: AppFactory, redis_url: str
) -> None:
    """Moving between exchanges that may start and ones that may stop greys
    `s` and `x` out and back on the same key widgets: no recompose per move."""
    seed_fleet(redis_url)
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await eventually(lambda: app.loaded.is_set() and app.focused is not None)
        await pilot.pause()
        keys = {key.action: key for key in app.screen.query(FooterKey)}
        seen: set[tuple[bool, bool]] = set()
        for move in ["right"] * 5 + ["down", "left", "left"]:
            await pilot.press(move)
            await pilot.pause()
            answers = tuple(
                app.screen.check_action(action, ()) is True for action in ("start", "stop")
            )
            lit = tuple(not keys[action].has_class("-disabled") for action in ("start", "stop"))
            assert lit == answers, (app.dashboard.selected_id, lit, answers)
            seen.add(answers)
        assert len(seen) > 1  # the moves did change what start and stop may do
        assert {key.action: key for key in app.screen.query(FooterKey)} == keys  # same widgets


async def test_the_footer_recomposes_once_for_changes_that_come_together(
    make_app: AppFactory, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dashboard's keys change twice before its first frame: one recompose
    (it reads the keys as they are when it runs) shows them all. Keys that
    come or go later still recompose the bar, and it shows them."""
    recomposes: list[list[str]] = []
    recompose = PerseusFooter.recompose

    async def counted(footer: PerseusFooter) -> None:
        await recompose(footer)
        keys = footer.query_children(FooterKey)
        recomposes.append([key.action for key in keys if not key.has_class("-command-palette")])

    monkeypatch.setattr(PerseusFooter, "recompose", counted)

    def wanted(app: PerseusApp) -> list[str]:
        bindings = app.screen.active_bindings.values()
        return list(dict.fromkeys(b.action for _, b, _, _ in bindings if b.show))

    seed_fleet(redis_url)
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await eventually(lambda: app.loaded.is_set() and app.focused is not None)
        await pilot.pause()
        assert len(recomposes) == 1, recomposes
        assert recomposes[-1] == wanted(app) and "clear_filter" not in wanted(app)
        await pilot.press("slash", "b", "enter")  # a filter in force: `clear_filter` comes
        await pilot.pause()
        assert "clear_filter" in wanted(app)
        assert recomposes[-1] == wanted(app), recomposes
        await pilot.press("escape")  # and goes
        await pilot.pause()
        assert "clear_filter" not in wanted(app)
        assert recomposes[-1] == wanted(app), recomposes


async def test_at_80_columns_a_refusal_wraps_at_a_word(make_app: AppFactory, redis: Redis) -> None:
    """`s` on an exchange no agent runs: the reason is longer than 80 columns
    and was cut mid-word; it now goes on over a second row, whole."""
    await add_catalog(redis, 3, "binance_us", "Binance.US")
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await eventually(lambda: "OFFLINE" in card_text(app, 3))
        await pilot.press("s")
        await eventually(lambda: bool(app.commands))
        await pilot.pause()
        bar = app.dashboard.query_one(CommandBar)
        rows = [row.rstrip() for row in bar.render().plain.splitlines()]
        said = line_content(app.commands[-1]).plain
        assert len(said) > 80 - 2 and len(rows) == 2 and bar.size.height == 2
        assert " ".join(rows) == said and said.endswith("(start one with `perseus agent`)")


async def test_at_80_columns_the_table_shows_heartbeat_and_uptime_whole(
    make_app: AppFactory, redis_url: str
) -> None:
    """The columns that tell whether an exchange is alive come before where it
    runs, so the edge of an 80-column terminal cuts neither, nor the agent
    words of a ready row."""
    seed_fleet(redis_url)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await eventually(app.loaded.is_set)
        await pilot.press("t")
        await pilot.pause()
        table = app.dashboard.table
        shown = 0
        for key, width in table.column_widths.items():
            shown += width + 2 * CELL_PADDING
            if key == "uptime":
                break
        assert shown <= table.scrollable_content_region.width
        ready = [cell.plain for cell in table.get_row(9)]
        assert ready[3].startswith("agent: Idle for")


async def test_the_selected_card_stays_on_screen_when_the_terminal_shrinks(
    make_app: AppFactory, redis_url: str
) -> None:
    """At 80x24 every card shows; shrunk to 60x20 the grid scrolls, and the
    selected card (the last one) was left out of view."""
    seed_fleet(redis_url)
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await eventually(lambda: app.loaded.is_set() and app.focused is not None)
        grid = app.dashboard.grid
        last = grid.visible_cards[-1].exchange_id
        grid.select(last)
        await pilot.pause()
        assert app.focused is grid and grid.card(last).has_class("-cursor")  # type: ignore[union-attr]
        await pilot.resize_terminal(60, 20)

        def on_screen() -> bool:
            card = grid.card(last)
            return card is not None and grid.region.contains_region(card.region)

        await eventually(on_screen, what="the selected card scrolled into view")
        assert grid.max_scroll_y > 0  # the grid scrolls: not every card fits


@pytest.mark.parametrize("query", ["Stop", "Open Alp"])
async def test_command_palette_lists_exchange_commands(
    make_app: AppFactory, redis: Redis, query: str
) -> None:
    from perseus_tui.commands import ExchangeCommands

    await add_catalog(redis, 1, "alpha", "[b]Alpha[/b]")
    app = make_app()
    async with app.run_test(size=(120, 40)):
        await eventually(app.loaded.is_set)
        provider = ExchangeCommands(app.screen)
        hits = [hit async for hit in provider.search(query)]
        texts = [hit.text for hit in hits]
        assert any("[b]Alpha[/b] #1" in (t or "") for t in texts), texts


@pytest.mark.parametrize(
    ("zone", "local_word"),
    [(UTC, "local time (UTC)"), (ZoneInfo("Asia/Tokyo"), "local time (JST)")],
    ids=["utc-host", "tokyo-host"],
)
async def test_u_says_which_times_it_switched_to(
    make_app: AppFactory, redis: Redis, zone: tzinfo, local_word: str
) -> None:
    """On a host whose local time is UTC, `u` said "Times in UTC" both ways;
    each press now names what it switched to. The palette describes the
    switch as its key does."""
    from perseus_tui.commands import ExchangeCommands

    await add_catalog(redis, 1, "alpha")
    app = make_app(local_tz=zone)
    async with app.run_test(size=(120, 40)) as pilot:
        notes = Notes(app)
        await eventually(app.loaded.is_set)
        await pilot.press("u")
        await pilot.press("u")
        said = [message for _title, message, _severity in notes.items]
        assert said[1] == f"Times in {local_word}"
        assert said[0].startswith("Times in UTC") and said[0] != said[1]
        assert ("local time here is UTC too" in said[0]) == (zone is UTC)

        provider = ExchangeCommands(app.screen)
        helps = {text: help_text for text, _command, help_text in provider._app_commands()}
        assert helps["Switch time zone: UTC / local"] == "Show times in UTC or in local time"


def _palette_hits(app: PerseusApp) -> int:
    """How many commands the open palette lists (0 while it is still searching)."""
    if not isinstance(app.screen, CommandPalette):
        return 0
    found = app.screen.query(CommandList)  # not there until the palette is composed
    return found.first().option_count if found else 0


@pytest.mark.parametrize("typed", ["", "switch view"])
async def test_the_palette_runs_one_command_for_enter_pressed_twice(
    make_app: AppFactory, redis: Redis, typed: str
) -> None:
    """Ctrl+P then Enter twice, typed faster than the app handles them: the
    second Enter reached the palette after the first had closed it, ran the
    command again and closed the dashboard too (a `ScreenStackError`)."""
    await add_catalog(redis, 1, "alpha")
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await eventually(lambda: app.dashboard.grid.card(1) is not None)
        views = []
        for _ in range(4):
            # Queued at once, as a terminal delivers them (`pilot.press` would wait).
            typing = ("space" if char == " " else char for char in typed)
            for key in ("ctrl+p", *typing):
                app.simulate_key(key)
            # The hits listed (the search's, or with nothing typed the commands
            # the palette offers), as a person sees them before Enter: an Enter
            # before that finds nothing to run, and the palette stays open.
            await eventually(lambda: _palette_hits(app) > 0)
            for key in ("enter", "enter"):
                app.simulate_key(key)
            await eventually(lambda: app.screen is app.dashboard)
            await pilot.pause()
            views.append(app.dashboard.showing_table)
        assert app.screen_stack == [app.dashboard]
        if typed:  # the one command found ran once per palette: the view toggled each time
            assert views == [True, False, True, False]
    assert app.return_code in (None, 0)


async def test_a_second_palette_opens_over_a_screen_above_the_first(
    make_app: AppFactory, redis: Redis
) -> None:
    """Enter then Ctrl+P, queued at once: the palette opens first, then the
    detail screen the Enter asked for opens above it; Ctrl+P on the detail
    screen opens a second palette while the first is still in the app (two
    palettes with one id ended the app: `DuplicateIds`)."""
    await add_catalog(redis, 1, "alpha")
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await eventually(lambda: app.dashboard.grid.card(1) is not None)
        await pilot.press("ctrl+p")
        await eventually(lambda: isinstance(app.screen, CommandPalette))
        app.post_message(DetailRequested(1))  # what the dashboard's Enter had asked for
        await eventually(lambda: isinstance(app.screen, DetailScreen))
        await pilot.press("ctrl+p")
        await eventually(lambda: isinstance(app.screen, CommandPalette))
        for _ in range(3):
            await pilot.press("escape")
        await eventually(lambda: app.screen is app.dashboard)
    assert app.return_code in (None, 0)


@pytest.mark.parametrize("keys_", [("pageup",), ("pagedown",), ("z", "z", "pagedown")])
async def test_page_keys_in_a_palette_that_lists_nothing_yet(
    make_app: AppFactory, redis: Redis, keys_: tuple[str, ...]
) -> None:
    """Page Up or Down right after Ctrl+P: the list has no room laid out yet,
    and `OptionList` paged by lines it did not have (a `KeyError`)."""
    await add_catalog(redis, 1, "alpha")
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await eventually(lambda: app.dashboard.grid.card(1) is not None)
        for _ in range(3):
            for key in ("ctrl+p", *keys_):
                app.simulate_key(key)
            await eventually(lambda: isinstance(app.screen, CommandPalette))
            await pilot.press("escape")
            await eventually(lambda: app.screen is app.dashboard)
    assert app.return_code in (None, 0)


async def test_the_theme_picker_takes_one_submission_too(
    make_app: AppFactory, redis: Redis
) -> None:
    """The palette's Theme command opens a second palette: Enter pressed three
    times there closed it, then tried to close the dashboard."""
    await add_catalog(redis, 1, "alpha")
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await eventually(lambda: app.dashboard.grid.card(1) is not None)
        for _ in range(3):
            app.search_themes()
            await eventually(lambda: isinstance(app.screen, CommandPalette))
            await pilot.pause()
            for key in ("enter", "enter", "enter"):
                app.simulate_key(key)
            await eventually(lambda: app.screen is app.dashboard)
            await pilot.pause()
        assert app.screen_stack == [app.dashboard]
    assert app.return_code in (None, 0)


async def test_a_flood_of_entries_reaches_the_feed_bounded_and_in_order(
    make_app: AppFactory, redis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Thousands of entries over many streams, faster than batches are shown
    (the tail waits after a few dozen): the feed ends with the newest entry of
    every stream, newest first per stream, each once, within its bound, and
    every entry was handed to it."""
    monkeypatch.setattr(service, "FEED_WAITING_MAX", 40)
    streams = [f"flood-{n}" for n in range(60)]
    for exchange_id, name in enumerate(streams, start=1):
        await add_catalog(redis, exchange_id, name)
    app = make_app(feed_max_lines=200)
    async with app.run_test(size=(120, 40)):
        await eventually(app.history_loaded.is_set)
        handed: list[ActivityEntry] = []
        original = app.dashboard.add_feed_entries

        def counting(entries: Iterable[ActivityEntry]) -> None:
            batch = list(entries)
            handed.extend(batch)
            original(batch)

        app.dashboard.add_feed_entries = counting  # type: ignore[method-assign]
        newest: dict[str, str] = {}
        for round_no in range(50):
            async with redis.pipeline(transaction=False) as pipe:
                for name in streams:
                    pipe.xadd(keys.activity_key(name), ErrorEntry(error=f"e{round_no}").to_fields())
                for name, entry_id in zip(streams, await pipe.execute(), strict=True):
                    newest[name] = entry_id
        await eventually(lambda: len(handed) >= 50 * len(streams), within=20)
        feed = app.dashboard.feed
        entries = feed.entries
        shown = [(e.stream, e.id) for e in entries]
        assert len(entries) == 200
        assert len(set(shown)) == len(shown)
        assert set(newest.items()) <= set(shown)
        for name in streams:
            ids = [_id_order(entry_id) for stream, entry_id in shown if stream == name]
            assert ids == sorted(ids, reverse=True)
        assert len(handed) == 50 * len(streams)  # nothing handed twice


def _id_order(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq)


async def test_closing_cut_short_leaves_no_worker_outcome_unread(make_app: AppFactory) -> None:
    """The service's close cancels its workers and waits for them: they end
    at once (redis-py swallowed a cancellation that landed in a read of the
    exchanges' names and returned the reply, and the worker slept on until its
    next poll), and when the wait is itself cancelled (the app's shutdown)
    their WorkerCancelled is not left unread (asyncio printed it as a
    traceback when the loop closed)."""
    loop = asyncio.get_running_loop()
    unread: list[dict[str, Any]] = []
    default_handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unread.append(context))
    try:
        app = make_app()
        async with app.run_test(size=(100, 30)):
            await eventually(app.loaded.is_set)
            workers = [worker for worker in app.workers if worker.node is app]  # the service's
            assert workers
            closing = asyncio.ensure_future(app.service.aclose())
            await asyncio.sleep(0)  # it has cancelled the workers and waits for them
            closing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await closing
            await eventually(lambda: all(worker.is_finished for worker in workers))
        await asyncio.sleep(0)
        gc.collect()  # an unread task outcome is reported when the task is collected
    finally:
        loop.set_exception_handler(default_handler)
    assert unread == []
