"""The top two lines: what this is, which Redis, whether it answers, and the fleet summary."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, tzinfo

from textual.content import Content
from textual.geometry import Region
from textual.reactive import var
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
    summary_parts: tuple[Content, ...] = ()
    """The fleet counts, most urgent first (`render.summary_parts`)."""
    now: datetime | None = None
    tz: tzinfo | None = None

    @property
    def summary(self) -> Content:
        """The whole summary line, however wide."""
        return Content(render.SUMMARY_SEPARATOR).join(self.summary_parts)

    def same_summary(self, other: HeaderState) -> bool:
        """Whether both summaries are identical, styles included (`==` on Content
        compares the text only)."""
        return len(self.summary_parts) == len(other.summary_parts) and all(
            a.is_same(b) for a, b in zip(self.summary_parts, other.summary_parts, strict=True)
        )


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

    state: var[HeaderState] = var(HeaderState(target=""), init=False, always_update=True)
    """What the header shows (bound to its screen's `header`)."""

    def __init__(self, state: HeaderState, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.set_reactive(PerseusHeader.state, state)

    def watch_state(self, old: HeaderState, state: HeaderState) -> None:
        """Repaint only what differs (usually just the clock's line)."""
        same_summary = old.same_summary(state)
        if same_summary and old == state:
            return
        if same_summary and replace(old, now=state.now) == state:
            self.refresh(Region(0, 0, self.content_size.width, 1))
        else:
            self.refresh()

    def render(self) -> Content:
        state = self.state
        if state.connected is None:
            indicator = Content.styled("◌ connecting", "bold $text-warning")
        elif state.connected:
            indicator = Content.styled("● connected", "bold $text-success")
        else:
            indicator = Content.styled("● unreachable", "bold $text-error")
        clock = ""
        if state.now is not None:
            local = state.now.astimezone(state.tz)
            clock = f"{local.strftime('%H:%M:%S')} {render.zone_name(state.tz, state.now)}"
        width = self.content_size.width
        for title in ("Perseus Network", "Perseus"):  # the short title on a narrow terminal
            left = Content.assemble(
                (title, "bold $text-primary"),
                ("  ", ""),
                (render.label(state.target, "?", 80), "$text-muted"),
                ("  ", ""),
                indicator,
            )
            if state.read_only:
                left += Content.assemble(
                    ("  ", ""), (" READ-ONLY ", "bold $background on $warning")
                )
            gap = width - left.cell_length - len(clock)
            if gap > 1:
                break
        first = (
            left + Content(" " * gap) + Content.styled(clock, "$text-muted") if gap > 1 else left
        )
        summary = render.fit_parts(state.summary_parts, width)
        return Content("\n").join([first, summary])
