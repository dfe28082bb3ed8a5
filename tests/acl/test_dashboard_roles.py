"""The dashboard as the documented roles, on each version's lines: a viewer's
shows the fleet, says it is read-only from the first read (probed without
writing) and never offers start or stop; an operator's starts and stops an
agent run as the agent user. Neither is refused anything but what the
dashboard's probe of its rights asks on Redis 6.2 (refused before it could
write). An operator short of a Livermore right is told which one."""

from __future__ import annotations

from collections.abc import Callable

from perseus_core.plumbing.connection import connect
from perseus_core.wire import keys
from perseus_core.wire.models import CatalogEntry
from perseus_core.wire.settings import Settings
from perseus_tui.app import PerseusApp
from perseus_tui.screens.confirm import ConfirmScreen
from tests.acl.conftest import USERS, AclServer, Denial
from tests.agent.conftest import SpawnAgent
from tests.livermore.shapes import LivermoreServer
from tests.tui.test_dashboard import card_text, command_lines
from tests.waiting import eventually

AGENT, OPERATOR, VIEWER = USERS


async def test_a_viewer_sees_the_fleet_read_only(
    acl: AclServer,
    make_app: Callable[..., PerseusApp],
    make_settings: Callable[..., Settings],
) -> None:
    admin = connect(make_settings(redis_url=acl.admin_url))
    try:
        entry = CatalogEntry(id=3, name="kraken", display_name="Kraken")
        await admin.hset(keys.CATALOG_KEY, "3", entry.to_json())
    finally:
        await admin.aclose()
    app = make_app(settings=make_settings(redis_url=acl.viewer, refresh_ms=60_000))
    async with app.run_test(size=(120, 40)) as pilot:
        await eventually(lambda: app.dashboard.grid.card(3) is not None, what="the card")
        await eventually(lambda: app.read_only, within=5, what="read-only")
        assert "may not XADD perseus:commands:3" in app.read_only_reason
        bindings = app.screen.active_bindings
        assert bindings["s"].enabled is False and bindings["x"].enabled is False
        await pilot.press("s")
        await pilot.pause()
    admin = connect(make_settings(redis_url=acl.admin_url))
    try:
        assert await admin.exists(keys.commands_key(3)) == 0  # nothing was sent
    finally:
        await admin.aclose()
    # Whether it may send commands was asked without sending any: from a
    # script on Redis 7 (nothing refused); on 6.2 by probes whose refusals
    # changed nothing. Nothing else was refused.
    expected = (
        set()
        if acl.version >= (7, 0)
        else {
            Denial(VIEWER, "command", "xadd"),
            Denial(VIEWER, "command", "blpop"),
            Denial(VIEWER, "command", "hset"),  # recording what it wants
        }
    )
    assert set(acl.denials()) == expected


async def test_an_operator_starts_and_stops_an_agent_from_the_dashboard(
    acl: AclServer,
    make_app: Callable[..., PerseusApp],
    make_settings: Callable[..., Settings],
    spawn_agent: SpawnAgent,
) -> None:
    agent = spawn_agent(exchange_id=1, name="coinbase", args=["--warmup", "0.2"], url=acl.agent)
    await agent.wait_log("listening for commands")
    app = make_app(settings=make_settings(redis_url=acl.operator, refresh_ms=300))
    async with app.run_test(size=(120, 40)) as pilot:
        await eventually(lambda: "READY" in card_text(app, 1), within=10, what="a ready card")
        assert not app.read_only
        app.dashboard.grid.select(1)
        await pilot.press("s")
        await eventually(lambda: "Running for" in card_text(app, 1), within=15)
        await eventually(lambda: "✔ Start" in command_lines(app), within=10, what="done")
        await pilot.press("x")
        await eventually(lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await eventually(lambda: "STOPPED" in card_text(app, 1), within=15)
        assert "stopped by " in card_text(app, 1)  # the operator's stop holds, and says who
        await eventually(lambda: command_lines(app).count("done") >= 2, within=10)
    assert agent.running
    # The probe of whether it may send commands: nothing refused.
    assert acl.denials() == []


async def test_an_operator_without_pubsub_numsub_is_told_so_before_a_livermore_stop(
    acl: AclServer,
    make_app: Callable[..., PerseusApp],
    make_settings: Callable[..., Settings],
) -> None:
    sub = "google-oauth2|1234"
    url = acl.user_without(OPERATOR, "operator-short", "+pubsub|numsub")
    with acl.admin() as admin:
        entry = CatalogEntry(id=2, name="binance", display_name="Binance", livermore_sub=sub)
        admin.hset(keys.CATALOG_KEY, "2", entry.to_json())
    app = make_app(settings=make_settings(redis_url=url, refresh_ms=60_000))
    with LivermoreServer(acl.admin_url, sub, "lm-a", {"binance": 2}, running="binance") as lm:
        async with app.run_test(size=(120, 40)) as pilot:
            await eventually(lambda: "ACTIVE" in card_text(app, 2), what="the Livermore card")
            app.dashboard.selected_id = 2
            await pilot.press("x")
            named = f"this user may not PUBSUB NUMSUB livermore:commands:{sub}"
            await eventually(lambda: named in command_lines(app), what="the refusal")
            assert not isinstance(app.screen, ConfirmScreen)
    assert lm.received == []
