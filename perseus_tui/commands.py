"""The command palette: start, stop or open any exchange, and every dashboard-wide key.

Theme switching comes from Textual's own system commands, which stay enabled.
Exchange names come from Redis, so hits are built as `Content` (never markup)
and highlighted here rather than with `Matcher.highlight`, which parses markup.
The palette itself, and the theme picker, are Textual's, made safe for fast keys (`Palette`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from textual import on
from textual.binding import Binding
from textual.command import (
    CommandInput,
    CommandList,
    CommandPalette,
    DiscoveryHit,
    Hit,
    Hits,
    Matcher,
    Provider,
)
from textual.content import Content
from textual.message import Message
from textual.widgets import Button, Input, OptionList

from perseus_core.wire.models import CommandType
from perseus_tui.fleet import FleetState
from perseus_tui.messages import CommandRequested, DetailRequested, RefreshRequested
from perseus_tui.screens.base import ExchangeScreen
from perseus_tui.screens.dashboard import DASHBOARD_BINDINGS

MAX_DISCOVERY_EXCHANGES = 30
"""Exchanges listed before anything is typed (typing searches them all)."""


def safe_highlight(matcher: Matcher, text: str) -> Content:
    """`text` as plain content with the fuzzy-matched characters styled."""
    content = Content(text)
    score, offsets = matcher.fuzzy_search.match(matcher.query, text)
    if not score:
        return content
    for offset in offsets:
        if not text[offset].isspace():
            content = content.stylize(matcher.match_style, offset, offset + 1)
    return content


class ExchangeCommands(Provider):
    """Start <exchange>, Stop <exchange>, Open <exchange>, and the view/time toggles.

    The exchanges, and whether start and stop are offered, are those of the
    screen the palette was opened on (none on a screen that shows no fleet).
    """

    def _fleet(self) -> tuple[FleetState, bool]:
        """The fleet the palette's screen shows, and whether it is read-only."""
        screen = self.screen
        if isinstance(screen, ExchangeScreen):
            return screen.fleet, bool(screen.read_only_reason)
        return FleetState(), True

    def _request(self, message: Message) -> Callable[[], object]:
        """A command that posts `message` to the app, as a screen's key would."""
        return partial(self.app.post_message, message)

    def _commands(self) -> list[tuple[str, Callable[[], object], str]]:
        fleet, read_only = self._fleet()
        commands: list[tuple[str, Callable[[], object], str]] = []
        for exchange_id in sorted(fleet.views):
            label = fleet.label(exchange_id)
            commands.append(
                (
                    f"Open {label}",
                    self._request(DetailRequested(exchange_id)),
                    "Every field and the history",
                )
            )
            if not read_only:
                commands.append(
                    (
                        f"Start {label}",
                        self._request(CommandRequested(exchange_id, CommandType.START)),
                        "Send start to its agent",
                    )
                )
                commands.append(
                    (
                        f"Stop {label}",
                        self._request(CommandRequested(exchange_id, CommandType.STOP)),
                        "Send stop (asks first)",
                    )
                )
        return commands + self._app_commands()

    def _app_commands(self) -> list[tuple[str, Callable[[], object], str]]:
        """The keys a narrow footer may leave out, reachable from here too,
        each described as its key's tooltip says (the footer's and the help's words)."""
        app = self.app
        tooltips = {
            binding.id: binding.tooltip
            for binding in (*app.BINDINGS, *DASHBOARD_BINDINGS)
            if isinstance(binding, Binding) and binding.id
        }
        return [
            ("Switch view: cards / table", partial(app.run_action, "toggle_view"),
             tooltips["toggle-view"]),
            ("Switch time zone: UTC / local", partial(app.run_action, "toggle_utc"),
             tooltips["toggle-utc"]),
            ("Refresh every status now", self._request(RefreshRequested()),
             tooltips["refresh"]),
            ("Pause / resume the activity feed", partial(app.run_action, "screen.pause_feed"),
             tooltips["pause-feed"]),
            ("Help: every key, by screen", partial(app.run_action, "help"), tooltips["help"]),
        ]  # fmt: skip

    async def discover(self) -> Hits:
        fleet, _read_only = self._fleet()
        for text, command, help_text in self._app_commands():
            yield DiscoveryHit(text, command, help=help_text)
        for exchange_id in sorted(fleet.views)[:MAX_DISCOVERY_EXCHANGES]:
            label = fleet.label(exchange_id)
            yield DiscoveryHit(
                Content(f"Open {label}"),
                self._request(DetailRequested(exchange_id)),
                text=f"Open {label}",
            )

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, command, help_text in self._commands():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, safe_highlight(matcher, text), command, text=text, help=help_text)


class Palette(CommandPalette):
    """Textual's command palette, made safe for keys typed faster than it handles them
    (the app opens it for Ctrl+P and for the theme picker).

    - It acts on one submission only. Enter pressed twice quickly queues two
      submissions (or selections) before the palette handles the first. The
      first closes the palette and runs its command; a second one, handled by
      the closed palette, would run the command again and close the screen
      below it (the dashboard: a `ScreenStackError` that ends the app). So once
      the palette is no longer the screen on top, it ignores whatever is still
      queued for it: a letter typed just before Escape, too, would start a
      search in a palette whose list is gone (`NoMatches` from its worker).
    - Page Up and Page Down move only through a list that has room on screen:
      `OptionList` pages by the lines it has laid out, and lays none out while
      it has none (a `KeyError` that ends the app).
    """

    def on_mount(self) -> None:
        # Like the filter input: no blinking where animations are off (snapshots
        # would otherwise catch the cursor on or off by the time they are taken).
        self.query_one(CommandInput).cursor_blink = self.app.animation_level != "none"

    @on(Input.Changed)
    @on(Input.Submitted)
    @on(Button.Pressed)
    @on(OptionList.OptionSelected)
    def _closed_already(
        self,
        event: Input.Changed | Input.Submitted | Button.Pressed | OptionList.OptionSelected,
    ) -> None:
        if not self.is_active:
            event.stop()
            event.prevent_default()  # the palette's own handlers would act on it

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "command_list" and parameters in (("page_up",), ("page_down",)):
            return bool(self.query_one(CommandList).scrollable_content_region)
        return super().check_action(action, parameters)
