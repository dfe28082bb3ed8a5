"""Deterministic screenshots of every dashboard screen (`python -m perseus_cli.apps.screenshots`).

The same seeded fleet, frozen clock, pinned time zone and fixed Redis label
are used by the snapshot tests (tests/tui), so what `make screenshots` writes
is what the tests compare against. Nothing in the output depends on the
machine, the day, the time zone or the port of the throw-away Redis.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from textual.app import App
from textual.pilot import Pilot
from textual.widgets import Log
from textual.widgets._footer import FooterKey

from perseus_cli.apps.redis_server import RedisServer
from perseus_cli.apps.screenshot_demo import (
    command_in_progress,
    demo_app,
    demo_dismissed,
    seed_demo,
    settle_demo,
)
from perseus_cli.apps.screenshot_fleet import (
    DISPLAY_URL,
    FIXED_NOW,
    HOSTILE_HOSTNAME,
    OPERATOR,
    SCREENSHOT_TZ,
    seed_empty,
    seed_fleet,
    seed_fleet_with_output,
    seed_hostile,
    seed_incidents,
)
from perseus_core.wire.settings import Settings
from perseus_tui.app import PerseusApp, create_app
from perseus_tui.screens.output import OutputScreen
from perseus_tui.widgets.footer import PerseusFooter

__all__ = [
    "DISPLAY_URL",
    "FIXED_NOW",
    "HOSTILE_HOSTNAME",
    "SCREENSHOT_TZ",
    "SHOTS",
    "UNREACHABLE",
    "Shot",
    "main",
    "render_all",
    "screenshot_app",
    "screenshot_settings",
    "seed_empty",
    "seed_fleet",
    "seed_hostile",
    "settle",
    "unreachable_run_before",
    "wait_for",
]


def screenshot_settings(url: str) -> Settings:
    """Settings for a screenshot run: slow polls (nothing changes), fast blocking reads."""
    return Settings(
        redis_url=url, refresh_ms=60_000, block_ms=200, socket_timeout_ms=1_000, public_ip="off"
    )


def screenshot_app(url: str, *, read_only: bool = False) -> PerseusApp:
    """The app exactly as the CLI builds it, with the clock, zone and label pinned."""
    app = create_app(
        screenshot_settings(url),
        clock=lambda: FIXED_NOW,
        read_only=read_only,
        local_tz=SCREENSHOT_TZ,
        target_label=DISPLAY_URL,
        operator=OPERATOR,
    )
    app.animation_level = "none"
    return app


async def wait_for(
    pilot: Pilot[None], condition: Callable[[], bool], limit_s: float = 10.0
) -> None:
    """Let the app run until `condition()` holds (raise TimeoutError after `limit_s`)."""
    deadline = time.monotonic() + limit_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the dashboard did not reach the expected state in time")
        await pilot.pause(0.05)


def keys_drawn(app: PerseusApp) -> bool:
    """Whether the key bar shows each key greyed out exactly as `check_action`
    answers now: the footer recomposes a frame or two after the answers
    change (an agent's presence read a moment after the first paint), and a
    screenshot taken in between would show either bar by chance."""
    try:
        footers = list(app.screen.query(PerseusFooter))
    except Exception:  # a screen being replaced: ask again
        return False
    enabled = {
        binding.action: is_enabled
        for _node, binding, is_enabled, _tooltip in app.screen.active_bindings.values()
    }
    return all(
        key.has_class("-disabled") != enabled[key.action]
        for footer in footers
        for key in footer.query(FooterKey)
        if key.action in enabled
    )


def drawn(
    run_before: Callable[[Pilot[None]], Awaitable[None]],
) -> Callable[[Pilot[None]], Awaitable[None]]:
    """`run_before`, then wait until the key bar is drawn as it stands (`keys_drawn`)."""

    async def run(pilot: Pilot[None]) -> None:
        await run_before(pilot)
        app = pilot.app
        assert isinstance(app, PerseusApp)
        await wait_for(pilot, lambda: keys_drawn(app))
        await pilot.pause()

    return run


def screen_text(app: App[Any]) -> str:
    """Every row of the app's current screen as the compositor renders it."""
    strips = app.screen._compositor.render_strips()
    return "\n".join("".join(segment.text for segment in strip) for strip in strips)


def cards_drawn(app: PerseusApp) -> bool:
    """Whether the cards are painted: the first one's title (its `#id`) is on screen.

    The grid binds its cards a frame after the read, and a bound card paints a
    frame or more later: beside two CPU hogs a screenshot once caught the
    grid with no card painted yet, its focus already on the first one. (The
    cards of one frame are painted together; a card cut by a narrow screen's
    edge may show no title.)"""
    dashboard = app.dashboard
    if dashboard.showing_table or not app.views:
        return True
    cards = dashboard.grid.visible_cards
    return bool(cards) and f"#{cards[0].exchange_id}" in screen_text(app)


async def settle(pilot: Pilot[None], limit_s: float = 10.0) -> None:
    """Wait until the fleet, the feed history and the timelines are on screen
    (each within `limit_s`)."""
    app = pilot.app
    assert isinstance(app, PerseusApp)
    await wait_for(pilot, lambda: app.loaded.is_set() and app.history_loaded.is_set(), limit_s)
    await wait_for(pilot, lambda: app.timelines_read, limit_s)
    await wait_for(pilot, lambda: app.focused is not None, limit_s)  # the first card, mounted
    await wait_for(pilot, lambda: cards_drawn(app), limit_s)
    await pilot.pause()


async def _settle_empty(pilot: Pilot[None]) -> None:
    app = pilot.app
    assert isinstance(app, PerseusApp)
    await wait_for(pilot, lambda: app.loaded.is_set() and app.history_loaded.is_set())
    await pilot.pause()


WATCHED_S = 3_600
"""The detail screenshot's heartbeat sparkline: an hour of watching, simulated."""
STRIP_CURSOR_STEPS = 18
"""Slices the detail screenshot moves its strip's cursor back: onto coinbase's start."""


def watched_an_hour(app: PerseusApp) -> None:
    """Record an hour of heartbeat ages before the frozen "now", as a dashboard
    watching that long would have: every exchange beats every 15 s, and the
    first one was late once (25 s) forty minutes in."""
    traces = app.fleet.traces
    views = app.fleet.ordered
    traces.forget(())  # begun at the frozen "now": begin again an hour earlier
    for second in range(WATCHED_S + 1):
        at = FIXED_NOW - timedelta(seconds=WATCHED_S - second)
        for view in views:
            age: float | None = None
            if view.status is not None:
                age = float(second % 15)
                if view.exchange_id == 1 and 2_400 <= second < 2_410:
                    age = float(second - 2_375)  # 25 s to 34 s: late, then overdue
            traces.note(view.exchange_id, at, age)


async def _open_detail(pilot: Pilot[None]) -> None:
    await settle(pilot)
    app = pilot.app
    assert isinstance(app, PerseusApp)
    watched_an_hour(app)
    await pilot.press("enter")
    await wait_for(
        pilot, lambda: "History" in str(pilot.app.screen.query_one("#history").border_title)
    )
    pilot.app.screen.query_one("#timeline").focus()
    await pilot.press(*["left"] * STRIP_CURSOR_STEPS)
    await pilot.pause(0.3)


async def _press_then_settle(pilot: Pilot[None], *keys_: str) -> None:
    await settle(pilot)
    await pilot.press(*keys_)
    await pilot.pause()


async def _help(pilot: Pilot[None]) -> None:
    await _press_then_settle(pilot, "question_mark")


def _output_live(app: object) -> bool:
    """The output screen is open, every seeded line shown, the live read on."""
    if not isinstance(app, PerseusApp) or not isinstance(app.screen, OutputScreen):
        return False
    log = app.screen.query_one(Log)
    return log.line_count == 6 and "live" in str(log.border_subtitle)


async def _output(pilot: Pilot[None]) -> None:
    """`o` on the first card: its child's output."""
    await settle(pilot)
    await pilot.press("o")
    await wait_for(pilot, lambda: _output_live(pilot.app))
    await pilot.pause()


async def _stop_confirmation(pilot: Pilot[None]) -> None:
    await _press_then_settle(pilot, "x")


async def _table(pilot: Pilot[None]) -> None:
    await _press_then_settle(pilot, "t")


def unreachable_run_before(kill: Callable[[], None]) -> Callable[[Pilot[None]], Awaitable[None]]:
    """Load the fleet, then take Redis away and wait for the banner."""

    async def run(pilot: Pilot[None]) -> None:
        app = pilot.app
        assert isinstance(app, PerseusApp)
        await settle(pilot)
        kill()

        def refused() -> bool:
            # The first failure may be "connection closed"; retry until the
            # steady-state reason shows, so the screenshot is always the same.
            if "refused" in app.dashboard.banner.text:
                return True
            app.request_refresh()
            return False

        await wait_for(pilot, refused)
        await pilot.pause()

    return run


@dataclass(frozen=True)
class Shot:
    """One screenshot: a name, a terminal size, the data, and what to do before taking it."""

    name: str
    size: tuple[int, int]
    seed: Callable[[str], None]
    run_before: Callable[[Pilot[None]], Awaitable[None]]
    description: str
    make_app: Callable[[str], PerseusApp] = screenshot_app
    """The app for a Redis URL (the demo's own for the demo shots)."""


SHOTS: tuple[Shot, ...] = (
    Shot("dashboard_120x40", (120, 40), seed_fleet, settle, "every state, offline, corrupt, ready"),
    Shot("dashboard_80x24", (80, 24), seed_fleet, settle, "the same fleet on a small terminal"),
    Shot(
        "incidents_120x40",
        (120, 40),
        seed_incidents,
        settle,
        "stopped by an operator, crashed, FATAL, standbys after a takeover",
    ),
    Shot(
        "incidents_80x24",
        (80, 24),
        seed_incidents,
        settle,
        "the incidents on a small terminal",
    ),
    Shot(
        "detail",
        (120, 40),
        seed_fleet,
        _open_detail,
        "the 24-hour strip (cursor on the start), an hour's heartbeat ages, every field,"
        " the history",
    ),
    Shot("help", (120, 40), seed_fleet, _help, "every key binding"),
    Shot(
        "output",
        (120, 40),
        seed_fleet_with_output,
        _output,
        "a child's output, markup in a line shown as written",
    ),
    Shot("stop_confirmation", (120, 40), seed_fleet, _stop_confirmation, "stop asks first"),
    Shot("table", (120, 40), seed_fleet, _table, "the table view for large fleets"),
    Shot("hostile_hostname", (120, 40), seed_hostile, settle, "markup shown literally"),
    Shot("empty_fleet", (80, 24), seed_empty, _settle_empty, "how to add the first exchange"),
    Shot("demo_120x40", (120, 40), seed_demo, settle_demo, "the demo's intro panel", demo_app),
    Shot(
        "demo_80x24",
        (80, 24),
        seed_demo,
        demo_dismissed,
        "every demo card at 80x24: heartbeats fresh, late and overdue, one FATAL",
        demo_app,
    ),
    Shot(
        "command_in_progress",
        (120, 40),
        seed_demo,
        command_in_progress,
        "a start acknowledged, in the command bar",
        demo_app,
    ),
)
"""Every screen but the unreachable banner, which needs a server it may kill."""

UNREACHABLE = "redis_unreachable"
"""Name of the screenshot of the connection banner (stale cards, Redis gone)."""


async def _capture(
    app: PerseusApp, size: tuple[int, int], run_before: Callable[[Pilot[None]], Awaitable[None]]
) -> str:
    async with app.run_test(size=size) as pilot:
        await drawn(run_before)(pilot)
        await pilot.wait_for_scheduled_animations()
        await pilot.pause()
        return app.export_screenshot(title="Perseus")


async def render_all() -> dict[str, str]:
    """Render every screen; returns SVG text by screenshot name."""
    rendered: dict[str, str] = {}
    with RedisServer() as server:
        for shot in SHOTS:
            shot.seed(server.url)
            app = shot.make_app(server.url)
            rendered[shot.name] = await _capture(app, shot.size, shot.run_before)
        seed_fleet(server.url)
        app = screenshot_app(server.url)
        rendered[UNREACHABLE] = await _capture(app, (120, 40), unreachable_run_before(server.kill))
    return rendered


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point (`make screenshots`)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", type=Path, help="where to write the SVG files")
    args = parser.parse_args(argv)
    directory: Path = args.directory
    directory.mkdir(parents=True, exist_ok=True)
    for name, svg in asyncio.run(render_all()).items():
        path = directory / f"{name}.svg"
        path.write_text(svg, encoding="utf-8")
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
