"""The top two lines: what this is, which Redis, whether it answers, and the fleet summary."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, tzinfo

from textual.content import Content
from textual.geometry import Region
from textual.reactive import var
from textual.widget import Widget

from perseus_core.present.exchange import Tone, zone_name
from perseus_core.wire.models import ConnectionState
from perseus_tui import render

SUMMARY_SEPARATOR = "  "
"""Between the counts of the header summary."""


def summary_parts(
    online: Mapping[str, int], total: int, *, ready: int = 0, flapping: int = 0
) -> list[Content]:
    """`5 of 8 online`, `1 offline`, `1 ready`, `2 active`...: the header summary's counts,
    most urgent first, so a narrow header drops the least important ones.

    Args:
        online: how many online exchanges are in each state (`unreadable`:
            no valid status; `FleetCounts.online`).
        total: how many exchanges are listed.
        ready: how many of the offline ones have an agent that would start them;
            counted apart from the offline ones, which nothing would start.
        flapping: how many changed state more often in the last hour than
            `Settings.flap_transitions` allows.
    """
    online_count = sum(online.values())
    parts = [Content.styled(f"{online_count} of {total} online", "bold")]
    offline = total - online_count - ready
    if offline > 0:
        parts.append(Content.styled(f"{offline} offline", render.OFFLINE_STYLE))
    if online.get("unreadable"):
        parts.append(Content.styled(f"{online['unreadable']} unreadable", render.ERROR))
    if flapping:
        parts.append(
            Content.styled(f"{flapping} flapping", f"bold {render.TONE_TEXT[Tone.WARNING]}")
        )
    if ready:
        parts.append(Content.styled(f"{ready} ready", f"bold {render.PRIMARY}"))
    for state in (
        ConnectionState.ACTIVE,
        ConnectionState.WARMING,
        ConnectionState.STARTING,
        ConnectionState.STOPPING,
        ConnectionState.STOPPED,
        ConnectionState.IDLE,
    ):
        if online.get(state):
            parts.append(
                Content.styled(f"{online[state]} {state.value}", render.state_colour(state))
            )
    return parts


def fit_parts(parts: Sequence[Content], width: int, separator: str = SUMMARY_SEPARATOR) -> Content:
    """As many whole `parts` as fit in `width` cells, then `+N more` for the rest.

    A summary cut in the middle of a word (`1 start…`) says less than one
    that names what it left out.
    """
    joiner = Content(separator)
    line = joiner.join(parts)
    if line.cell_length <= width:
        return line
    for count in range(len(parts) - 1, 0, -1):
        more = Content.styled(f"+{len(parts) - count} more", render.MUTED)
        line = joiner.join([*parts[:count], more])
        if line.cell_length <= width:
            return line
    return parts[0].truncate(width, ellipsis=True) if parts else Content()


@dataclass(frozen=True)
class HeaderState:
    """Everything the header shows; the app builds one and hands it to every header."""

    target: str
    """The Redis target, credentials already redacted."""
    connected: bool | None = None
    """True: answering; False: unreachable; None: not known yet (connecting)."""
    read_only: bool = False
    summary_parts: tuple[Content, ...] = ()
    """The fleet counts, most urgent first (`summary_parts`)."""
    now: datetime | None = None
    tz: tzinfo | None = None

    @property
    def summary(self) -> Content:
        """The whole summary line, however wide."""
        return Content(SUMMARY_SEPARATOR).join(self.summary_parts)

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
            clock = f"{local.strftime('%H:%M:%S')} {zone_name(state.tz, state.now)}"
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
        summary = fit_parts(state.summary_parts, width)
        return Content("\n").join([first, summary])
