"""Snapshot tests of every screen, from the same app factory, data and frozen clock as
`make screenshots` (perseus_cli.apps.screenshots).

Update after an intended change with `make snapshots`, then look at the report
or at the regenerated SVGs before committing them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
import redis as sync_redis
from textual.command import CommandList, CommandPalette
from textual.pilot import Pilot
from textual.widgets import Input

from perseus_cli.apps.redis_server import RedisServer
from perseus_cli.apps.screenshots import (
    SHOTS,
    Shot,
    drawn,
    screenshot_app,
    seed_fleet,
    settle,
    unreachable_run_before,
    wait_for,
)
from perseus_core.wire.keys import activity_key
from perseus_tui.app import PerseusApp

SnapCompare = Callable[..., bool]


@pytest.mark.parametrize("shot", SHOTS, ids=lambda shot: shot.name)
def test_screen(shot: Shot, snap_compare: SnapCompare, redis_url: str) -> None:
    """Each screen as `make screenshots` renders it (see Shot.description)."""
    shot.seed(redis_url)
    app = shot.make_app(redis_url)
    assert snap_compare(app, terminal_size=shot.size, run_before=drawn(shot.run_before))


def test_redis_unreachable(snap_compare: SnapCompare, fresh_redis: RedisServer) -> None:
    """Redis goes away after the fleet loaded: banner with countdown, cards kept but stale."""
    seed_fleet(fresh_redis.url)
    app = screenshot_app(fresh_redis.url)
    assert snap_compare(
        app, terminal_size=(120, 40), run_before=drawn(unreachable_run_before(fresh_redis.kill))
    )


async def _filtered(pilot: Pilot[None]) -> None:
    """A filter typed and kept: the cards and the feed show only what matches."""
    await settle(pilot)
    await pilot.press("slash", *"kraken", "enter")
    await pilot.pause()


def test_active_filter(snap_compare: SnapCompare, redis_url: str) -> None:
    """`/kraken` then Enter: one card, the feed's kraken lines, the filter kept."""
    seed_fleet(redis_url)
    assert snap_compare(
        screenshot_app(redis_url), terminal_size=(120, 40), run_before=drawn(_filtered)
    )


def test_read_only(snap_compare: SnapCompare, redis_url: str) -> None:
    """Started with --read-only: the header says so, start and stop are greyed out."""
    seed_fleet(redis_url)
    app = screenshot_app(redis_url, read_only=True)
    assert snap_compare(app, terminal_size=(120, 40), run_before=drawn(settle))


def _paused_with_held(redis_url: str) -> Callable[[Pilot[None]], Awaitable[None]]:
    """Pause the feed, then let two new entries arrive: they are held and counted."""

    async def run(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, PerseusApp)
        await settle(pilot)
        await pilot.press("p")
        with sync_redis.Redis.from_url(redis_url) as client:
            for n in range(2):
                fields = {"event": "error", "exchangeName": "kraken", "error": f"held {n}"}
                client.xadd(activity_key("kraken"), fields)  # type: ignore[arg-type]
        await wait_for(pilot, lambda: app.dashboard.feed.held_count == 2)
        await pilot.pause()

    return run


def test_paused_feed(snap_compare: SnapCompare, redis_url: str) -> None:
    """`p` pauses the feed: entries that arrive are held, and the title counts them."""
    seed_fleet(redis_url)
    app = screenshot_app(redis_url)
    assert snap_compare(
        app, terminal_size=(120, 40), run_before=drawn(_paused_with_held(redis_url))
    )


async def _palette(pilot: Pilot[None]) -> None:
    """The command palette, opened and searched: exchanges and dashboard keys."""
    await settle(pilot)
    await pilot.press("ctrl+p")
    await wait_for(pilot, lambda: isinstance(pilot.app.screen, CommandPalette))
    await pilot.press(*"stop")
    await wait_for(pilot, lambda: _searched(pilot.app.screen, "stop"))
    await pilot.pause()


def _searched(palette: object, typed: str) -> bool:
    """The palette has gathered every hit for `typed`: the list is final, not a batch.

    The palette refreshes its list in batches while its providers still answer, so a
    count of hits can be reached before the last batch lands (and under load it is).
    """
    if not isinstance(palette, CommandPalette) or palette.query_one(Input).value != typed:
        return False
    gathering = palette._GATHER_COMMANDS_GROUP
    busy = any(w.group == gathering and not w.is_finished for w in palette.workers)
    return not busy and palette.query_one(CommandList).option_count > 0


def test_command_palette(snap_compare: SnapCompare, redis_url: str) -> None:
    """Ctrl+P, `stop`: the matching commands, exchange names highlighted as plain text."""
    seed_fleet(redis_url)
    assert snap_compare(
        screenshot_app(redis_url), terminal_size=(120, 40), run_before=drawn(_palette)
    )
