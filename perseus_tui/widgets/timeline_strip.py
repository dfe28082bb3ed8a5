"""State timelines drawn: a one-line strip (table column, card line) and the
detail screen's 24-hour strip with a cursor.

What each slice holds is decided by `perseus_core.present.timeline`; this
module only draws it. A slice is a block in its state's tone (theme
variables, through `render.TONE_TEXT`), a gap where no instance held the
slot, a dim dot where nothing tells, and in the one-line strip a cross where
an error was written. The detail strip adds a row of marks (errors, commands),
a time axis in the zone the app shows (`u`), and under the cursor (left and
right keys while the strip has the focus) the entries of its slice.
"""

from __future__ import annotations

from datetime import datetime, timedelta, tzinfo

from textual.binding import Binding
from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

from perseus_core.present.exchange import full_time, zone_name
from perseus_core.present.timeline import (
    DAY,
    HOUR,
    Presence,
    Slice,
    SliceKind,
    Timeline,
    TimelineBook,
)
from perseus_core.store.network import ExchangeView
from perseus_tui import render

BLOCK = "█"
GAP = " "
UNKNOWN = "·"
ERROR_MARK = "✖"
COMMAND_MARK = "⚑"
STRIP_CELLS = 12
"""Slices of the table's one-hour strip: five minutes each."""
DETAIL_CELLS = (144, 120, 96, 72, 48, 24)
"""Slice counts the detail strip picks from (the most that fit): each divides
a day into whole minutes, so the axis falls on slice edges."""
ENTRIES_SHOWN = 4
"""Entries of the cursor's slice listed under the strip (the rest are counted)."""


def _cell(piece: Slice, *, marks: bool) -> tuple[str, str]:
    """One slice's glyph and style in a one-line strip."""
    if marks and piece.errors:
        return ERROR_MARK, render.ERROR
    if piece.kind is SliceKind.STATE:
        return BLOCK, render.state_colour(piece.state)
    if piece.kind is SliceKind.OFFLINE:
        return GAP, ""
    return UNKNOWN, render.MUTED


def strip_content(timeline: Timeline, *, marks: bool = True) -> Content:
    """A timeline as one line, a character a slice (errors as crosses when `marks`)."""
    return render.runs(_cell(piece, marks=marks) for piece in timeline.slices)


def window_end(now: datetime, span: timedelta, cells: int) -> datetime:
    """The end of a window of `cells` slices that holds `now` in its last slice,
    on a whole multiple of the slice width: the slices stay put while the
    clock moves (the cursor stays on its slice, the axis on slice edges)."""
    width = span / cells
    epoch = datetime(1970, 1, 1, tzinfo=now.tzinfo)
    return epoch + width * (((now - epoch) // width) + 1)


def hour_strip(
    book: TimelineBook, view: ExchangeView, now: datetime, cells: int = STRIP_CELLS
) -> Content:
    """The last hour of one exchange as one line (the table's column, a card's line)."""
    timeline = book.timeline(
        view.exchange_name,
        Presence.of_view(view),
        end=window_end(now, HOUR, cells),
        span=HOUR,
        cells=cells,
    )
    return strip_content(timeline)


def _marks_line(timeline: Timeline) -> Content:
    pieces: list[tuple[str, str]] = []
    for piece in timeline.slices:
        if piece.errors:
            pieces.append((ERROR_MARK, render.ERROR))
        elif piece.commands:
            pieces.append((COMMAND_MARK, render.PRIMARY))
        else:
            pieces.append((" ", ""))
    return Content.assemble(*pieces)


def _axis_line(timeline: Timeline, tz: tzinfo | None) -> Content:
    """Clock times under the slices that begin on a whole hour, as many as fit."""
    slices = timeline.slices
    width = len(slices)
    line = [" "] * width
    step_hours = 6 if width < 72 else 3
    for index, piece in enumerate(slices):
        local = piece.start.astimezone(tz)
        if local.minute or local.second or local.hour % step_hours:
            continue
        label = f"|{local.strftime('%H:%M')}"
        if index + len(label) > width or any(c != " " for c in line[max(0, index - 1) : index]):
            continue
        line[index : index + len(label)] = list(label)
    return Content.styled("".join(line), render.MUTED)


def _slice_words(piece: Slice) -> Content:
    """`active`, `offline`, `unknown`: what a slice held, in its tone."""
    if piece.kind is SliceKind.STATE:
        return Content.styled(
            render.label(piece.state, "?", 16), f"bold {render.state_colour(piece.state)}"
        )
    if piece.kind is SliceKind.OFFLINE:
        return Content.styled("offline", render.OFFLINE_STYLE)
    return Content.styled("unknown (nothing read tells)", render.MUTED)


def detail_lines(
    timeline: Timeline, cursor: int, tz: tzinfo | None, now: datetime, width: int
) -> list[Content]:
    """The detail strip: marks, states (the cursor's slice reversed), axis, then
    the cursor's slice and its entries."""
    cursor = min(max(0, cursor), len(timeline.slices) - 1)
    states = strip_content(timeline, marks=False)
    states = states.stylize("reverse", cursor, cursor + 1)
    piece = timeline.slices[cursor]
    span = f"{full_time(piece.start, tz)[11:16]}–{piece.end.astimezone(tz).strftime('%H:%M')}"
    said = Content.assemble(
        ("▲ ", render.PRIMARY),
        (f"{piece.start.astimezone(tz).strftime('%m-%d')} {span} {zone_name(tz, now)}  ", "bold"),
        _slice_words(piece),
    )
    counts = [
        f"{n} {word}{'s' if n != 1 else ''}"
        for n, word in (
            (piece.transitions, "transition"),
            (piece.errors, "error"),
            (piece.commands, "command"),
        )
        if n
    ]
    if counts:
        said += Content.styled("  " + ", ".join(counts), render.MUTED)
    if cursor + said.cell_length <= width:  # the arrow under the cursor, words after it
        pointer = Content(" " * cursor) + said
    else:  # words before it, the arrow under the cursor
        said = said[2:] + Content.styled(" ▲", render.PRIMARY)
        pointer = Content(" " * max(0, cursor + 1 - said.cell_length)) + said
    lines = [_marks_line(timeline), states, _axis_line(timeline, tz), pointer]
    entries = list(reversed(piece.entries))  # newest first, as the history lists them
    for entry in entries[:ENTRIES_SHOWN]:
        lines.append(render.entry_line(entry, tz, now).truncate(width, ellipsis=True))
    if len(entries) > ENTRIES_SHOWN:
        more = len(entries) - ENTRIES_SHOWN
        lines.append(Content.styled(f"… {more} more in this slice (see the history)", render.MUTED))
    return lines


def detail_cells(width: int) -> int:
    """How many slices the detail strip draws in `width` cells."""
    return next((cells for cells in DETAIL_CELLS if cells <= width), DETAIL_CELLS[-1])


class TimelineStrip(Widget, can_focus=True):
    """The last 24 hours of one exchange; left and right move the cursor along it."""

    DEFAULT_CSS = """
    TimelineStrip {
        height: auto;
        padding: 0 1;
        border: round $border-blurred;
        text-wrap: nowrap;
        text-overflow: ellipsis;
        &:focus { border: round $accent; }
    }
    """

    BINDINGS = [
        Binding(
            "left", "move(-1)", "Earlier", tooltip="Cursor to the previous slice", id="strip-left"
        ),
        Binding("right", "move(1)", "Later", tooltip="Cursor to the next slice", id="strip-right"),
        Binding(
            "home", "edge(0)", show=False, tooltip="Cursor to the oldest slice", id="strip-home"
        ),
        Binding("end", "edge(1)", show=False, tooltip="Cursor to the newest slice", id="strip-end"),
    ]

    cursor: reactive[int | None] = reactive(None, init=False)
    """The slice under the cursor (None: the newest, following the clock)."""

    def __init__(
        self,
        book: TimelineBook,
        view: ExchangeView,
        now: datetime,
        tz: tzinfo | None,
        *,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self._book = book
        self._view = view
        self._now = now
        self._tz = tz
        self._version: tuple[object, ...] | None = None
        self._timeline: Timeline | None = None
        self.border_title = "Last 24 hours"

    @property
    def timeline(self) -> Timeline:
        """The timeline drawn (built for the current width, view and time)."""
        cells = detail_cells(max(1, (self.content_size.width or 96)))
        key = (self._book.version, self._view, self._now, cells)
        if self._timeline is None or key != self._version:
            presence = Presence.of_view(self._view)
            end = window_end(self._now, DAY, cells)
            self._timeline = self._book.timeline(
                self._view.exchange_name, presence, end=end, span=DAY, cells=cells
            )
            self._version = key
        return self._timeline

    def show(self, view: ExchangeView, now: datetime, tz: tzinfo | None) -> None:
        """A newer view, a later time or another zone."""
        self._view, self._now, self._tz = view, now, tz
        self.refresh(layout=True)

    def _cursor_index(self) -> int:
        count = len(self.timeline.slices)
        return count - 1 if self.cursor is None else min(max(0, self.cursor), count - 1)

    def action_move(self, step: int) -> None:
        """Move the cursor a slice earlier (-1) or later (1); at the newest it follows the clock."""
        last = len(self.timeline.slices) - 1
        index = min(max(0, self._cursor_index() + step), last)
        self.cursor = None if index == last else index

    def action_edge(self, newest: int) -> None:
        """The cursor to the oldest (0) or the newest (1) slice."""
        self.cursor = None if newest else 0

    def watch_cursor(self) -> None:
        self.refresh(layout=True)

    def render(self) -> Content:
        width = self.content_size.width or 96
        return Content("\n").join(
            detail_lines(self.timeline, self._cursor_index(), self._tz, self._now, width)
        )
