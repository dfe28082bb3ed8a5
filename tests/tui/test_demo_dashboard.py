"""The demo's dashboard as a newcomer meets it: the intro panel, Gemini selected, every
card on an 80x24 terminal, each heartbeat colour, the help's legend, and the feed
taking the rows the cards leave."""

from __future__ import annotations

from collections.abc import Callable

from textual.pilot import Pilot
from textual.widgets import ContentSwitcher

from perseus_cli.apps.redis_server import RedisServer
from perseus_cli.apps.screenshot_demo import MEMBERS, demo_app, seed_demo
from perseus_core.present import Tone
from perseus_core.wire.settings import Settings
from perseus_tui import render
from perseus_tui.app import PerseusApp
from perseus_tui.screens.help import HelpScreen, Legend
from perseus_tui.screens.intro import IntroScreen
from perseus_tui.widgets.card_grid import CardGrid
from perseus_tui.widgets.empty_fleet import EmptyFleet
from perseus_tui.widgets.instance_card import CARD_HEIGHT
from tests.waiting import eventually


def _beat_style(app: PerseusApp, exchange_id: int) -> str:
    """The style of a card's heartbeat age (its fourth line, or second when compact)."""
    card = app.dashboard.grid.card(exchange_id)
    assert card is not None
    line = next(row for row in card.render().split("\n") if row.plain.startswith("♥"))
    return " ".join(str(span.style) for span in line.spans if "text-" in str(span.style))


async def _past_the_intro(app: PerseusApp, pilot: Pilot[None]) -> None:
    """The intro opens over the loaded fleet; Enter closes it onto the selected card."""
    await eventually(lambda: app.loaded.is_set() and isinstance(app.screen, IntroScreen))
    await pilot.press("enter")
    await eventually(lambda: isinstance(app.screen.focused, CardGrid))
    await pilot.pause()


async def test_the_demo_at_80x24_explains_itself_and_fits(redis_url: str) -> None:
    seed_demo(redis_url)
    app = demo_app(redis_url)
    async with app.run_test(size=(80, 24)) as pilot:
        await _past_the_intro(app, pilot)
        grid = app.dashboard.grid
        assert app.screen.focused is grid and app.dashboard.selected_id == 7  # Gemini
        assert grid.card(7) is not None and grid.card(7).has_class("-cursor")
        await eventually(lambda: grid.compact, what="two-line cards, to fit 80x24")
        await pilot.pause()
        cards = grid.visible_cards
        assert len(cards) == len(MEMBERS) == 6
        for card in cards:  # every card whole on screen, none scrolled away
            assert grid.region.contains_region(card.region), card.id
        assert "no heartbeat for 5s" in card_plain(app, 3)  # killed, key not expired yet
        assert render.TONE_TEXT[Tone.SUCCESS] in _beat_style(app, 1)
        assert render.TONE_TEXT[Tone.WARNING] in _beat_style(app, 5)  # lagging
        assert f"bold {render.TONE_TEXT[Tone.ERROR]}" in _beat_style(app, 3)
        await pilot.press("i")
        await eventually(lambda: isinstance(app.screen, IntroScreen))
        await pilot.press("escape")
        await eventually(lambda: not isinstance(app.screen, IntroScreen))


def card_plain(app: PerseusApp, exchange_id: int) -> str:
    card = app.dashboard.grid.card(exchange_id)
    return card.render().plain if card is not None else ""


async def test_full_cards_at_120x40_and_the_feed_takes_the_rest(redis_url: str) -> None:
    seed_demo(redis_url)
    app = demo_app(redis_url)
    async with app.run_test(size=(120, 40)) as pilot:
        await _past_the_intro(app, pilot)
        dashboard = app.dashboard
        grid = dashboard.grid
        assert not grid.compact and grid.region.height == 2 * CARD_HEIGHT  # no blank rows
        feed = dashboard.feed.region
        assert feed.y == grid.region.bottom  # the feed starts right under the cards
        footer_top = app.screen.size.height - 1
        assert feed.bottom == footer_top  # and takes every row down to the footer


async def test_the_help_has_a_legend_of_states_and_colours(redis_url: str) -> None:
    seed_demo(redis_url)
    app = demo_app(redis_url)
    async with app.run_test(size=(120, 40)) as pilot:
        await eventually(lambda: isinstance(app.screen, IntroScreen))
        await pilot.press("enter", "question_mark")
        await eventually(lambda: isinstance(app.screen, HelpScreen))
        legend = app.screen.query_one(Legend).render().plain
        for words in ("● ACTIVE", "◇ READY", "○ OFFLINE", "✖ BAD STATUS", "fresh", "late"):
            assert words in legend, words


async def test_an_empty_fleet_that_is_on_its_way_says_so(
    make_app: Callable[..., PerseusApp],
    make_settings: Callable[..., Settings],
    fresh_redis: RedisServer,
) -> None:
    settings = make_settings(redis_url=fresh_redis.url, refresh_ms=60_000)
    app = make_app(settings=settings, expecting="Starting the demo's agents…")
    async with app.run_test(size=(80, 24)):
        await eventually(lambda: app.loaded.is_set())
        await eventually(lambda: app.dashboard.query_one(ContentSwitcher).current == "empty")
        text = app.dashboard.query_one(EmptyFleet).render()
        assert "Starting the demo's agents" in str(text) and "No exchanges" not in str(text)
