"""The top two lines: what this is, which Redis, whether it answers, and the fleet summary."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from textual.content import Content
from textual.widget import Widget

from perseus_tui import render


@dataclass(frozen=True)
class HeaderState:
    """Everything the header shows; the app builds one and hands it to every header."""

    target: str
    """The Redis target, credentials already redacted."""
    connected: bool | None = None
    """True: answering; False: unreachable; None: not known yet (connecting)."""
    read_only: bool = False
    summary: Content = field(default_factory=Content)
    now: datetime | None = None
    tz: tzinfo | None = None


class PerseusHeader(Widget):
    """Title, Redis target, connection indicator, read-only tag, clock; then the summary."""

    DEFAULT_CSS = """
    PerseusHeader {
        height: 2;
        padding: 0 1;
        background: $panel;
        color: $foreground;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def __init__(self, state: HeaderState, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._state = state

    @property
    def state(self) -> HeaderState:
        """What the header currently shows."""
        return self._state

    def show(self, state: HeaderState) -> None:
        """Show a new state (repaints only when it differs)."""
        if state != self._state:
            self._state = state
            self.refresh()

    def render(self) -> Content:
        state = self._state
        if state.connected is None:
            indicator = Content.styled("◌ connecting", "bold $text-warning")
        elif state.connected:
            indicator = Content.styled("● connected", "bold $text-success")
        else:
            indicator = Content.styled("● unreachable", "bold $text-error")
        left = Content.assemble(
            ("Perseus Network", "bold $text-primary"),
            ("  ", ""),
            (render.label(state.target, "?", 80), "$text-muted"),
            ("  ", ""),
            indicator,
        )
        if state.read_only:
            left += Content.assemble(("  ", ""), (" READ-ONLY ", "bold $background on $warning"))
        clock = ""
        if state.now is not None:
            local = state.now.astimezone(state.tz)
            clock = f"{local.strftime('%H:%M:%S')} {render.zone_name(state.tz, state.now)}"
        width = self.content_size.width
        gap = width - left.cell_length - len(clock)
        first = (
            left + Content(" " * gap) + Content.styled(clock, "$text-muted") if gap > 1 else left
        )
        return Content("\n").join([first, state.summary])
