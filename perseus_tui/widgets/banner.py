"""The connection banner: shown only while Redis cannot be reached."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from textual.content import Content
from textual.widget import Widget

from perseus_tui import render


@dataclass(frozen=True)
class Outage:
    """Redis cannot be reached: why, and when the next attempt is due."""

    target: str
    reason: str
    retry_at: datetime
    seen_at: datetime


class ConnectionBanner(Widget):
    """`Redis unreachable at <target> — retrying in 4s`, plus the reason.

    Hidden while connected. The countdown is computed from the app's clock, so
    it counts down in real use and stays fixed under a frozen test clock.
    """

    DEFAULT_CSS = """
    ConnectionBanner {
        display: none;
        height: auto;
        padding: 0 1;
        background: $error-muted;
        color: $text;
        text-wrap: wrap;
        &.-shown { display: block; }
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._target = ""
        self._reason = ""
        self._retry_at: datetime | None = None
        self._now: datetime | None = None

    def show_failure(self, target: str, reason: str, retry_at: datetime, now: datetime) -> None:
        """Show the banner for a failed attempt; the next one is due at `retry_at`."""
        self._target, self._reason, self._retry_at, self._now = target, reason, retry_at, now
        self.add_class("-shown")
        self.refresh(layout=True)

    def tick(self, now: datetime) -> None:
        """Advance the countdown."""
        if self.has_class("-shown"):
            self._now = now
            self.refresh()

    def hide(self) -> None:
        """Redis answers again."""
        self.remove_class("-shown")

    @property
    def text(self) -> str:
        """The banner as plain text (what a person reads)."""
        return self.render().plain

    def render(self) -> Content:
        seconds = 0
        if self._retry_at is not None and self._now is not None:
            seconds = max(0, math.ceil((self._retry_at - self._now).total_seconds()))
        retry = f"retrying in {seconds}s" if seconds else "retrying now"
        return Content.assemble(
            ("⚠ Redis unreachable at ", "bold $text-error"),
            (render.label(self._target, "?", 80), "bold"),
            (f" — {retry}", "bold $text-error"),
            ("  ·  cards show the last known data", "$text-muted"),
            ("\n", ""),
            (render.label(self._reason, "", 200), "$text-muted"),
        )
