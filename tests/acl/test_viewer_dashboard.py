"""The dashboard of a viewer: the fleet is shown, it says it is read-only
from the first read (probed without writing), and it never offers start or
stop."""

from __future__ import annotations

from collections.abc import Callable

from perseus_core.plumbing.connection import connect
from perseus_core.wire import keys
from perseus_core.wire.models import CatalogEntry
from perseus_core.wire.settings import Settings
from perseus_tui.app import PerseusApp
from tests.acl.conftest import AclServer
from tests.waiting import eventually


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
