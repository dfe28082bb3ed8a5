"""Command palette entries: start, stop or open any exchange, and every dashboard-wide key.

Theme switching comes from Textual's own system commands, which stay enabled.
Exchange names come from Redis, so hits are built as `Content` (never markup)
and highlighted here rather than with `Matcher.highlight`, which parses markup.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, cast

from textual.command import DiscoveryHit, Hit, Hits, Matcher, Provider
from textual.content import Content

from perseus_core.wire.models import CommandType

if TYPE_CHECKING:
    from perseus_tui.app import PerseusApp

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
    """Start <exchange>, Stop <exchange>, Open <exchange>, and the view/time toggles."""

    @property
    def perseus(self) -> PerseusApp:
        """The app, typed."""
        return cast("PerseusApp", self.app)

    def _commands(self) -> list[tuple[str, Callable[[], object], str]]:
        app = self.perseus
        commands: list[tuple[str, Callable[[], object], str]] = []
        for exchange_id in sorted(app.views):
            label = app.exchange_label(exchange_id)
            commands.append(
                (
                    f"Open {label}",
                    partial(app.open_detail, exchange_id),
                    "Every field and the history",
                )
            )
            if not app.read_only:
                commands.append(
                    (
                        f"Start {label}",
                        partial(app.send_command, exchange_id, CommandType.START),
                        "Send start to its agent",
                    )
                )
                commands.append(
                    (
                        f"Stop {label}",
                        partial(app.request_stop, exchange_id),
                        "Send stop (asks first)",
                    )
                )
        return commands + self._app_commands()

    def _app_commands(self) -> list[tuple[str, Callable[[], object], str]]:
        """The keys a narrow footer may leave out, reachable from here too."""
        app = self.perseus
        return [
            ("Switch view: cards / table", app.action_toggle_view, "Toggle the fleet view"),
            ("Switch time zone: UTC / local", app.action_toggle_utc, "Toggle absolute times"),
            ("Refresh every status now", app.request_refresh, "Re-read the whole fleet"),
            (
                "Pause / resume the activity feed",
                app.dashboard.action_pause_feed,
                "Hold new entries (counted) or show them again",
            ),
            ("Help: every key, by screen", app.action_help, "The keys of every screen"),
        ]

    async def discover(self) -> Hits:
        app = self.perseus
        for text, command, help_text in self._app_commands():
            yield DiscoveryHit(text, command, help=help_text)
        for exchange_id in sorted(app.views)[:MAX_DISCOVERY_EXCHANGES]:
            label = app.exchange_label(exchange_id)
            yield DiscoveryHit(
                Content(f"Open {label}"),
                partial(app.open_detail, exchange_id),
                text=f"Open {label}",
            )

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, command, help_text in self._commands():
            score = matcher.match(text)
            if score > 0:
                yield Hit(score, safe_highlight(matcher, text), command, text=text, help=help_text)
