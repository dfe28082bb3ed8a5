"""One exchange as a card: a single widget that renders its own text.

A card made of nine child widgets costs ~16 ms to mount; one widget that
renders a `Content` costs ~1.4 ms, and re-renders only when what it would show
changes (its view, the stale flag, the clock's second, the width), so a
1,000-exchange fleet stays responsive. When the clock moves, usually one line
changes (the heartbeat age): only that line is repainted and sent to the
terminal, not the whole card.
"""

from __future__ import annotations

from datetime import datetime

from textual.content import Content
from textual.geometry import Region
from textual.reactive import reactive
from textual.widget import Widget

from perseus_core.present.exchange import STALE, Line, Part, Timing, card
from perseus_core.present.timeline import TimelineBook
from perseus_core.store.network import ExchangeView, ViewKind
from perseus_tui import render
from perseus_tui.widgets.timeline_strip import hour_strip

CARD_WIDTH = 38
"""Width a card needs (border included); the grid fits as many columns as this allows."""
CARD_HEIGHT = 8
"""Six lines of content plus the border."""
COMPACT_HEIGHT = 4
"""A compact card (short terminals): the title line and one summary line, plus the border."""
DEFAULT_TIMING = Timing()
"""The heartbeat timing of the default settings (what a card shows outside a dashboard)."""
SQUEEZED_MIN = 4
"""A part that gives way to the rest of its line keeps at least this many cells."""
CARD_LINES = CARD_HEIGHT - 3
"""Lines under a full card's title (its height less the border and the title);
the last hour's strip takes the last one when it is free."""
STRIP_LABEL = "1h "
CARD_STRIP_CELLS = (60, 30, 20, 12)
"""Slice counts of a card's strip (whole minutes each): the most that fit."""


def _strip_line(timelines: TimelineBook, view: ExchangeView, now: datetime, width: int) -> Content:
    room = width - len(STRIP_LABEL)
    cells = next((n for n in CARD_STRIP_CELLS if n <= room), CARD_STRIP_CELLS[-1])
    return Content.styled(STRIP_LABEL, render.MUTED) + hour_strip(timelines, view, now, cells)


def _fitted(line: Line, width: int) -> Content:
    """A line of the presenter, its squeezable part cut so the rest fits `width`."""
    if not any(isinstance(part, Part) and part.squeeze for part in line):
        return render.line_content(line)
    parts = [render.part_content(part) for part in line]
    for index, part in enumerate(line):
        if isinstance(part, Part) and part.squeeze:
            rest = sum(other.cell_length for other in parts) - parts[index].cell_length
            parts[index] = parts[index].truncate(max(SQUEEZED_MIN, width - rest), ellipsis=True)
    return Content.assemble(*parts)


def card_content(
    view: ExchangeView,
    now: datetime,
    *,
    width: int,
    stale: bool = False,
    timing: Timing = DEFAULT_TIMING,
) -> Content:
    """Everything a card shows, as one `Content` (see `card_lines`)."""
    return Content("\n").join(card_lines(view, now, width=width, stale=stale, timing=timing))


def card_lines(
    view: ExchangeView,
    now: datetime,
    *,
    width: int,
    stale: bool = False,
    timing: Timing = DEFAULT_TIMING,
    compact: bool = False,
    timelines: TimelineBook | None = None,
) -> list[Content]:
    """What the presenter says a card shows (`perseus_core.present.exchange.card`),
    laid out: the title on the left, the badge on the right, the lines below.

    Args:
        view: The exchange as the fleet reader last saw it.
        now: The current time, from the app's (injectable) clock.
        width: Content width, so the badge can sit on the right of the title.
        stale: Redis is unreachable: the data is the last known, not current.
        timing: this reader's heartbeat timing and when the fleet was read.
        compact: only the title and the line that matters most (the heartbeat
            of a live instance, the agent of a ready one, the last state of
            an offline one), for terminals too short for full cards.
        timelines: every exchange's entries: a full card with a line to
            spare ends with its last hour's state strip.
    """
    look = card(view, now, timing)
    badge = render.badge_content(look.badge)
    if stale:
        badge = render.part_content(STALE) + badge
    room = max(1, width - badge.cell_length - 1)
    title = Content.styled(look.title, "bold").truncate(room, ellipsis=True)
    gap = max(1, width - title.cell_length - badge.cell_length)
    head = title + Content(" " * gap) + badge
    body = (look.summary,) if compact else look.lines
    lines = [head, *(_fitted(line, width) for line in body)]
    if timelines is not None and not compact and len(body) < CARD_LINES:
        lines += [Content()] * (CARD_LINES - len(body) - 1)
        lines.append(_strip_line(timelines, view, now, width))
    return lines


class InstanceCard(Widget):
    """One exchange as a card; the grid rebinds its cards to the exchanges in view.

    `show()` rebuilds the card's text (cheap) and compares it with what is on
    screen; only a card whose text or styles changed is repainted.
    """

    DEFAULT_CSS = """
    InstanceCard {
        width: 1fr;
        height: 8;
        padding: 0 1;
        border: round $border-blurred;
        text-wrap: nowrap;
        text-overflow: ellipsis;
        &.-offline { border: round $error 40%; color: $text-muted; }
        &.-ready { border: round $primary 60%; }
        &.-unreadable { border: round $error; }
        &.-stale { text-opacity: 70%; }
        &.-selected { border: round $accent; }
        &.-compact { height: 4; }
        &.-cursor { border: heavy $accent; background-tint: $foreground 5%; }
    }
    """

    stale: reactive[bool] = reactive(False)
    """Redis is unreachable: the card shows the last known data, marked STALE."""

    def __init__(self, view: ExchangeView, *, now: datetime) -> None:
        super().__init__()
        self._view = view
        self._now = now
        self._lines: list[Content] | None = None
        """What is on screen, line by line (None: not rendered yet, or must be rebuilt)."""
        self._content: Content | None = None
        self._content_width = 0
        self.timing = DEFAULT_TIMING
        """This reader's heartbeat timing and when the fleet was read (set by the grid)."""
        self.timelines: TimelineBook | None = None
        """Every exchange's entries, for the strip line (set by the grid)."""
        self._update_classes()

    @property
    def view(self) -> ExchangeView:
        """The exchange this card shows."""
        return self._view

    @property
    def exchange_id(self) -> int:
        """The exchange this card shows, by id."""
        return self._view.exchange_id

    def _update_classes(self) -> None:
        kind = self._view.kind
        self.set_class(kind is ViewKind.OFFLINE, "-offline")
        self.set_class(kind is ViewKind.READY, "-ready")
        self.set_class(kind is ViewKind.UNREADABLE, "-unreadable")

    def _build(self, width: int) -> list[Content]:
        return card_lines(
            self._view,
            self._now,
            width=width,
            stale=self.stale,
            timing=self.timing,
            compact=self.has_class("-compact"),
            timelines=self.timelines,
        )

    def set_compact(self, compact: bool) -> None:
        """Show two lines (short terminals) or all six."""
        if compact != self.has_class("-compact"):
            self.set_class(compact, "-compact")
            self._lines = None
            self.refresh(layout=True)

    def bind(self, view: ExchangeView, now: datetime) -> None:
        """Show `view`, of this card's exchange or of another one (the grid scrolled).

        The same view object as before is left alone: its card only needs the
        clock, which `show` advances on the next tick.
        """
        if view is self._view:
            return
        if view.exchange_id == self._view.exchange_id:
            self.show(view, now)
            return
        self._view = view
        self._now = now
        self._update_classes()
        self._lines = None
        self.refresh()

    def show(self, view: ExchangeView, now: datetime) -> None:
        """Show a newer view (or the same one at a later time); repaint only what changed."""
        self._view = view
        self._now = now
        self._update_classes()
        if self._lines is None:
            return  # never rendered (not yet laid out): render() builds it
        lines = self._build(self._content_width)
        old = self._lines
        if len(lines) != len(old):
            self._set_lines(lines)
            self.refresh()
            return
        changed = [y for y, (a, b) in enumerate(zip(old, lines, strict=True)) if not a.is_same(b)]
        if changed:
            self._set_lines(lines)
            width = self.content_size.width
            self.refresh(*(Region(0, y, width, 1) for y in changed))

    def _set_lines(self, lines: list[Content]) -> Content:
        self._lines = lines
        self._content = Content("\n").join(lines)
        return self._content

    def watch_stale(self, stale: bool) -> None:
        self.set_class(stale, "-stale")
        self._lines = None
        self.refresh()

    def render(self) -> Content:
        width = self.content_size.width or CARD_WIDTH - 4
        if self._lines is None or self._content is None or width != self._content_width:
            self._content_width = width
            return self._set_lines(self._build(width))
        return self._content
