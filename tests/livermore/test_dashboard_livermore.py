"""The dashboard in a mixed fleet, through Pilot: a Livermore-held slot's card,
its stop over Livermore's channel, the refusal without an owner identity, and
a dead Livermore exchange known only by its history."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import redis as sync_redis
from textual.widgets import Label

from perseus_core.present import last_seen_text
from perseus_core.present.exchange import Timing
from perseus_core.present.fleet import exchange_json
from perseus_core.store.network import FleetReader
from perseus_core.wire.settings import Settings
from perseus_tui import render
from perseus_tui.app import PerseusApp
from perseus_tui.observed import OfflineObserver
from perseus_tui.screens.confirm import ConfirmScreen
from perseus_tui.widgets.instance_table import row_cells
from perseus_tui.widgets.status_panel import status_lines
from tests.livermore.shapes import LivermoreServer, LivermoreWriter
from tests.tui.test_dashboard import card_text, command_lines
from tests.waiting import eventually

SUB = "google-oauth2|1234"


def livermore(r: sync_redis.Redis, exchange_id: int, name: str, host: str) -> LivermoreWriter:
    writer = LivermoreWriter(r, exchange_id, name, host, "203.0.113.9")
    assert writer.claim()
    writer.bring_up()
    return writer


def dead_kucoin(r: sync_redis.Redis) -> None:
    """A Livermore server that ran kucoin and died: history, no key, no catalog entry."""
    livermore(r, 5, "kucoin", "lm-host-05").deregister()


async def test_history_only_exchange_is_listed_offline_by_status_and_discover(
    settings: Settings, r: sync_redis.Redis, redis: object
) -> None:
    dead_kucoin(r)
    reader = FleetReader(redis)  # type: ignore[arg-type]
    view = (await reader.snapshot()).get(5)
    assert view is not None and not view.online and not view.in_catalog
    assert view.last_known is not None and view.last_known.hostname == "lm-host-05"
    assert view.last_seen is not None and view.last_seen.source == "entry"
    now = datetime.now(UTC)  # the table row and the detail screen label it like the card
    said = last_seen_text(view, now)
    assert said is not None and said.startswith("last entry ") and said.endswith(" ago")
    assert said in [cell.plain for cell in row_cells(view, now, Timing())]
    assert any(said in line.plain for line in status_lines(view, now, UTC, Timing()))
    assert (await reader.snapshot(discover_online=False)).get(5) is not None  # remembered
    assert [e.name for e in await reader.discover()] == ["kucoin"]


async def test_last_seen_is_the_heartbeat_a_reader_saw(
    settings: Settings, r: sync_redis.Redis, redis: object
) -> None:
    writer = livermore(r, 2, "binance", "lm-host-02")
    writer.heartbeat()
    reader = FleetReader(redis)  # type: ignore[arg-type]
    online = (await reader.snapshot()).get(2)
    assert online is not None and online.online and online.last_seen is None
    writer.deregister()
    view = (await reader.snapshot()).get(2)
    assert view is not None and view.last_seen is not None
    assert view.last_seen.source == "heartbeat"
    assert view.last_seen.at == (online.heartbeat_at or online.status.last_heartbeat)  # type: ignore[union-attr]
    assert exchange_json(view, datetime.now(UTC), Timing())["lastSeen"]["source"] == "heartbeat"


async def test_dashboard_steers_a_livermore_slot_and_lists_a_dead_one(
    make_app: Callable[..., PerseusApp], settings: Settings, r: sync_redis.Redis
) -> None:
    kraken = livermore(r, 4, "kraken", "lm-host-04")  # no identity in the catalog
    kraken.heartbeat()
    dead_kucoin(r)
    r.hset("perseus:exchanges", "2", f'{{"id":2,"name":"binance","livermoreSub":"{SUB}"}}')
    app = make_app()
    with LivermoreServer(
        settings.redis_url, SUB, "lm-host-02", {"binance": 2}, running="binance"
    ) as responder:
        async with app.run_test(size=(120, 40)) as pilot:
            await eventually(
                lambda: "ACTIVE" in card_text(app, 2) and "lm-host-02" in card_text(app, 2)
            )
            await eventually(lambda: "OFFLINE" in card_text(app, 5), within=5)
            assert "lm-host-05" in card_text(app, 5) and "last entry" in card_text(app, 5)
            # Its history is in the feed, though it has neither a key nor a catalog entry.
            await eventually(lambda: any(e.stream == "kucoin" for e in app.dashboard.feed.entries))
            # Without an identity: refused at once, naming the holder.
            app.dashboard.selected_id = 4
            await pilot.press("x")
            await eventually(
                lambda: "refused" in command_lines(app),
                what=f"{app.focused} {command_lines(app)!r} {app.screen}",
            )
            assert "lm-host-04" in command_lines(app) and "--livermore-sub" in command_lines(app)
            assert not isinstance(app.screen, ConfirmScreen)
            # With one: the confirmation counts the listener, the responder answers.
            app.dashboard.selected_id = 2
            await pilot.press("x")
            await eventually(lambda: isinstance(app.screen, ConfirmScreen), within=5)
            said = str(app.screen.query_one("#explanation", Label).render())
            assert "lm-host-02" in said and "the one Livermore server listening" in said
            await pilot.press("y")
            await eventually(lambda: "✔ Stop" in command_lines(app), within=5, what="done")
            assert f"Acknowledged by the Livermore server ({SUB})" in command_lines(app)
            assert "done: binance is " in command_lines(app)  # what the key showed
            assert [c["type"] for c in responder.received] == ["stop"]
            # A server this dashboard saw online dies: its card says when its heartbeat was seen.
            kraken.deregister()
            await pilot.press("r")  # re-read now (the test's poll period is long)
            await eventually(lambda: "OFFLINE" in card_text(app, 4), within=5)
            assert "last heartbeat" in card_text(app, 4)


async def test_a_stop_between_two_reads_is_observed_as_expected(
    settings: Settings, r: sync_redis.Redis, redis: object
) -> None:
    """Livermore deletes its key right after `stopped`: a dashboard whose last
    read showed it active words the loss from the stream, not as an expiry."""
    writer = livermore(r, 2, "binance", "lm-host-02")
    reader = FleetReader(redis)  # type: ignore[arg-type]
    observer = OfflineObserver()
    before = {view.exchange_id: view for view in (await reader.snapshot()).exchanges}
    for state in ("stopping", "stopped"):
        writer.transition(state)
    writer.deregister()
    after = {view.exchange_id: view for view in (await reader.snapshot()).exchanges}
    [seen] = observer.compare(before, after, datetime.now(UTC))
    line = render.entry_line(seen, UTC, datetime.now(UTC)).plain
    assert "offline after stopped, as expected" in line and "unexpected" not in line


async def test_dashboard_refuses_a_stop_that_two_servers_would_hear(
    make_app: Callable[..., PerseusApp], settings: Settings, r: sync_redis.Redis
) -> None:
    """Two servers on one identity: the stop is refused at once (no question),
    saying why, and neither server receives anything."""
    r.hset("perseus:exchanges", "2", f'{{"id":2,"name":"binance","livermoreSub":"{SUB}"}}')
    exchanges = {"binance": 2, "kraken": 4}
    app = make_app()
    with (
        LivermoreServer(settings.redis_url, SUB, "lm-a", exchanges, running="binance") as one,
        LivermoreServer(settings.redis_url, SUB, "lm-b", exchanges, running="kraken") as two,
    ):
        async with app.run_test(size=(120, 40)) as pilot:
            await eventually(lambda: "ACTIVE" in card_text(app, 2))
            app.dashboard.selected_id = 2
            await pilot.press("x")
            await eventually(lambda: "any one of them would take it" in command_lines(app))
            assert not isinstance(app.screen, ConfirmScreen)
        assert one.received == two.received == []
