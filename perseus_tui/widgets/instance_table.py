"""The fleet as a table, for hundreds to tens of thousands of exchanges.

A line-API widget rather than a `DataTable`: a `DataTable` keeps a row object
per exchange, removes a row in time proportional to the table (a filter that
hides 9,999 of 10,000 rows took over a minute) and measures every cell of every
row it is given (over a second to show 10,000 again). Here the rows are the
list of views the screen hands over; a line is built when it is drawn, from
that view, so a poll, a clock tick, a filter or a sort costs the rows on
screen plus one pass over a list, never a cell per exchange. Columns only
ever grow, to the widest cell drawn so far: measuring the cells nobody sees
would undo the point.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo

from rich.segment import Segment
from rich.style import Style as RichStyle
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.cache import LRUCache
from textual.content import Content
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from perseus_core.present import exchange as present
from perseus_core.present.timeline import TimelineBook
from perseus_core.present.trace import TraceBook
from perseus_core.store.network import ExchangeView
from perseus_tui import render
from perseus_tui.widgets.age_sparkline import TABLE_WIDTH, spark_line
from perseus_tui.widgets.timeline_strip import hour_strip

STRIP_COLUMN = ("timeline", "Last hour")
"""The one-hour state strip (`timeline_strip.hour_strip`)."""
TREND_COLUMN = ("trend", "Trend")
"""The heartbeat-age sparkline (`age_sparkline.spark_line`)."""
HISTORY_AT = 5
"""Where the strip and the trend go: after id, exchange, state, heartbeat and
uptime, which tell whether an exchange is alive and must stay whole at 80
columns; before where it runs."""
COLUMNS = (
    *present.TABLE_COLUMNS[:HISTORY_AT],
    STRIP_COLUMN,
    TREND_COLUMN,
    *present.TABLE_COLUMNS[HISTORY_AT:],
)
"""The columns, keyed: the presenter's (`TABLE_COLUMNS`, in the order it gives
a row's cells), with the strip and the trend at `HISTORY_AT`."""
CELL_PADDING = 1
"""Blank cells each side of a column's content."""
BUILT_ROWS = 2_000
"""Rows whose cells are kept once built (a few screenfuls; older ones are rebuilt)."""


def row_cells(
    view: ExchangeView,
    now: datetime,
    timing: present.Timing,
    *,
    stale: bool = False,
    timelines: TimelineBook | None = None,
    traces: TraceBook | None = None,
) -> tuple[Content, ...]:
    """The table cells of one exchange as the presenter says them
    (`perseus_core.present.exchange.row`), as safe styled content, with its
    last hour's strip and its heartbeat trend (empty without their books)."""
    cells = [render.line_content(cell) for cell in present.row(view, now, timing, stale=stale)]
    strip = hour_strip(timelines, view, now) if timelines is not None else Content()
    trace = traces.trace(view.exchange_id, now) if traces is not None else None
    trend = Content()
    if trace is not None:
        trend = spark_line(trace.values(), timing.thresholds(view.status), TABLE_WIDTH)
    return (*cells[:HISTORY_AT], strip, trend, *cells[HISTORY_AT:])


@dataclass(frozen=True)
class _Built:
    """One row's cells as last built, and what they were built from."""

    view: ExchangeView
    generation: int
    cells: tuple[Content, ...]
    texts: tuple[Text, ...]


class InstanceTable(ScrollView, can_focus=True):
    """One row per exchange under a fixed header; the cursor row is the selection."""

    COMPONENT_CLASSES = {
        "instance-table--header",
        "instance-table--cursor",
        "instance-table--even-row",
        "instance-table--odd-row",
    }

    DEFAULT_CSS = """
    InstanceTable {
        height: 1fr;
        background: $surface;
        color: $foreground;
        &:focus {
            background-tint: $foreground 5%;
            & > .instance-table--cursor {
                background: $block-cursor-background;
                color: $block-cursor-foreground;
                text-style: $block-cursor-text-style;
            }
            & > .instance-table--header {
                background-tint: $foreground 5%;
            }
        }
        &:dark > .instance-table--even-row {
            background: $surface-darken-1 40%;
        }
        & > .instance-table--header {
            text-style: bold;
            background: $panel;
            color: $foreground;
        }
        &:ansi > .instance-table--header {
            background: ansi_bright_blue;
            color: ansi_default;
        }
        & > .instance-table--even-row {
            background: $surface-lighten-1 50%;
        }
        & > .instance-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
            text-style: $block-cursor-blurred-text-style;
        }
    }
    """

    BINDINGS = [
        Binding(
            "enter", "open", "Details", show=False, tooltip="Open the selected exchange",
            id="table-open",
        ),
        Binding(
            "down,j", "cursor_down", "Down", show=False, tooltip="Select the next row",
            id="table-down",
        ),
        Binding(
            "up,k", "cursor_up", "Up", show=False, tooltip="Select the previous row",
            id="table-up",
        ),
        Binding(
            "pagedown", "page(1)", "Page down", show=False, tooltip="Select a screenful below",
            id="table-page-down",
        ),
        Binding(
            "pageup", "page(-1)", "Page up", show=False, tooltip="Select a screenful above",
            id="table-page-up",
        ),
        Binding(
            "ctrl+home", "first", "First", show=False, tooltip="Select the first row",
            id="table-first",
        ),
        Binding(
            "ctrl+end", "last", "Last", show=False, tooltip="Select the last row",
            id="table-last",
        ),
        Binding(
            "left", "scroll_left", "Left", show=False, tooltip="Scroll the columns left",
            id="table-left",
        ),
        Binding(
            "right", "scroll_right", "Right", show=False, tooltip="Scroll the columns right",
            id="table-right",
        ),
        Binding(
            "home", "scroll_home", "Home", show=False, tooltip="Scroll to the first column",
            id="table-home",
        ),
        Binding(
            "end", "scroll_end", "End", show=False, tooltip="Scroll to the last column",
            id="table-end",
        ),
    ]  # fmt: skip

    @dataclass
    class Selected(Message):
        """The cursor moved to another exchange."""

        table: InstanceTable
        exchange_id: int

        @property
        def control(self) -> InstanceTable:
            """The table whose cursor moved."""
            return self.table

    @dataclass
    class Opened(Message):
        """Enter was pressed on a row."""

        table: InstanceTable
        exchange_id: int

        @property
        def control(self) -> InstanceTable:
            """The table the row belongs to."""
            return self.table

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._views: list[ExchangeView] = []
        """The rows, in order (the latest update)."""
        self._index: dict[int, int] = {}
        """Where each exchange is in `_views`."""
        self._built: LRUCache[int, _Built] = LRUCache(BUILT_ROWS)
        self._titles = tuple(Text(title, end="") for _key, title in COLUMNS)
        self._widths = [title.cell_len for title in self._titles]
        """Each column's content width: the widest cell built so far."""
        self._cursor = 0
        self._cursor_id: int | None = None
        """The exchange under the cursor, as last announced."""
        self._now: datetime | None = None
        self._stale = False
        self._generation = 0
        """Bumped when every row must be built again (a tick, staleness): rows built
        in an older one are rebuilt when drawn."""
        self.timing = present.Timing()
        """This reader's heartbeat timing and when the fleet was read (set by the screen)."""
        self.timelines: TimelineBook | None = None
        """Every exchange's entries, for the strip column (set by the screen)."""
        self.traces: TraceBook | None = None
        """Every exchange's heartbeat ages, for the trend column (set by the screen)."""

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._restyle())
        self._resize_virtual()

    def on_unmount(self) -> None:
        """Leave the app's theme signal: its entry refers to the table, so it
        would keep the table alive (see `ActivityFeed.on_unmount`)."""
        self.app.theme_changed_signal.unsubscribe(self)

    # --- data ---------------------------------------------------------------------

    def update_views(
        self,
        views: Sequence[ExchangeView],
        now: datetime,
        tz: tzinfo | None = None,
        *,
        stale: bool = False,
    ) -> None:
        """Show `views` as the rows, in their order.

        When the rows are the same exchanges in the same order, only the
        lines on screen whose view changed are redrawn (an unchanged one
        advances its ages on the next tick); otherwise every line on screen.
        """
        del tz  # the table shows ages, not absolute times
        old = self._views
        self._now = now
        if stale != self._stale:
            self._stale = stale
            self._generation += 1
        self._views = list(views)
        same_rows = len(old) == len(self._views) and all(
            a.exchange_id == b.exchange_id for a, b in zip(old, self._views, strict=True)
        )
        if not same_rows:
            self._index = {view.exchange_id: n for n, view in enumerate(self._views)}
            keep = self._cursor_id
            if keep is not None and keep in self._index:
                self._cursor = self._index[keep]
            self._resize_virtual()
            self._move_cursor(self._cursor)
            self.refresh()
            return
        first = int(self.scroll_y)
        for index in range(first, min(len(old), first + self.size.height)):
            if old[index] is not self._views[index]:
                self.refresh_line(index + 1)  # virtual lines: the header is line 0

    def tick(self, now: datetime) -> None:
        """Advance ages to `now` in the rows on screen."""
        if self._now is None:
            return
        self._now = now
        self._generation += 1
        self.refresh()

    @property
    def row_count(self) -> int:
        """How many rows the table has (the exchanges the filter lets through)."""
        return len(self._views)

    @property
    def column_widths(self) -> dict[str, int]:
        """Each column's content width, by column key (cell padding not included)."""
        return {key: width for (key, _title), width in zip(COLUMNS, self._widths, strict=True)}

    def get_row(self, exchange_id: int) -> tuple[Content, ...]:
        """The cells an exchange's row shows (built now if it was not drawn yet)."""
        return self._build(self._index[exchange_id]).cells

    def _build(self, index: int) -> _Built:
        """The cells of row `index`, from the cache unless its view changed or a tick passed."""
        view = self._views[index]
        now = self._now
        assert now is not None  # rows exist only once a read was shown
        built = self._built.get(view.exchange_id)
        if built is None or built.view is not view or built.generation != self._generation:
            cells = row_cells(
                view, now, self.timing, stale=self._stale, timelines=self.timelines,
                traces=self.traces,
            )  # fmt: skip
            if built is None:
                texts = tuple(map(self._to_text, cells))
            else:  # a tick changes an age or two: the other cells keep their resolved text
                texts = tuple(
                    text if old.is_same(cell) else self._to_text(cell)
                    for old, cell, text in zip(built.cells, cells, built.texts, strict=True)
                )
            built = _Built(view, self._generation, cells, texts)
            # Textual's LRUCache keeps the first value set for a key: replace it.
            self._built.discard(view.exchange_id)
            self._built[view.exchange_id] = built
            self._grow(built.texts)
        return built

    def _grow(self, texts: tuple[Text, ...]) -> None:
        """Widen the columns a new cell does not fit in (they never shrink)."""
        grown = False
        for column, text in enumerate(texts):
            if text.cell_len > self._widths[column]:
                self._widths[column] = text.cell_len
                grown = True
        if grown:
            self._resize_virtual()
            self.refresh()  # the lines already drawn this frame used the old widths

    def _resize_virtual(self) -> None:
        width = sum(width + 2 * CELL_PADDING for width in self._widths)
        self.virtual_size = Size(width, len(self._views) + 1)  # the rows under the header

    def _to_text(self, content: Content) -> Text:
        """Resolve the theme variables of `content` into a Rich `Text`.

        Colours are blended against the table's own background (so translucent
        and `auto` colours come out right), then only the foreground is kept,
        so zebra stripes and the cursor row still show through.
        """
        text = Text(content.plain, end="", no_wrap=True, overflow="ellipsis")
        parse = self.app.stylesheet.parse_style
        base = self.visual_style
        for span in content.spans:
            style = parse(span.style) if isinstance(span.style, str) else span.style
            resolved = (base + style).rich_style
            text.stylize(
                RichStyle(
                    color=resolved.color if style.foreground is not None else None,
                    bold=resolved.bold,
                    dim=resolved.dim,
                    italic=resolved.italic,
                ),
                span.start,
                span.end,
            )
        return text

    def _restyle(self) -> None:
        """Resolve every cell's colours again for a new theme."""
        self._built.clear()
        self.refresh()

    # --- drawing ------------------------------------------------------------------

    def render_lines(self, crop: Region) -> list[Strip]:
        # Build the rows in view first: a cell wider than its column widens it
        # before any line of this frame is drawn.
        if self._now is not None and self._views:
            first = int(self.scroll_y)
            last = min(len(self._views), first + self.scrollable_content_region.height)
            for index in range(first, last):
                self._build(index)
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        base = self.rich_style
        if y == 0:
            line = self._line(self._titles, self.get_component_rich_style("instance-table--header"))
        else:
            index = int(self.scroll_y) + y - 1
            if index >= len(self._views) or self._now is None:
                return Strip.blank(width, base)
            parity = "odd" if index % 2 else "even"
            row_style = self.get_component_rich_style(f"instance-table--{parity}-row")
            post = RichStyle.null()
            if index == self._cursor:
                cursor = self.get_component_rich_style("instance-table--cursor")
                row_style += cursor
                post = RichStyle(color=cursor.color, bgcolor=cursor.bgcolor)
            line = self._line(self._build(index).texts, base + row_style, post)
        scroll_x = int(self.scroll_x)
        return line.crop(scroll_x, scroll_x + width).adjust_cell_length(width, base).simplify()

    def _line(
        self, texts: Sequence[Text], style: RichStyle, post: RichStyle | None = None
    ) -> Strip:
        """One row's cells, each padded to its column, in `style` (`post` over the cells' own)."""
        line = Text(end="", no_wrap=True)
        pad = " " * CELL_PADDING
        for text, width in zip(texts, self._widths, strict=True):
            cell = text.copy()
            cell.truncate(width, overflow="ellipsis", pad=True)
            line.append(pad)
            line.append_text(cell)
            line.append(pad)
        segments = Segment.apply_style(line.render(self.app.console), style, post)
        return Strip(segments)

    # --- the cursor ---------------------------------------------------------------

    @property
    def selected_id(self) -> int | None:
        """The exchange under the cursor, if any."""
        if not self._views:
            return None
        return self._views[self._cursor].exchange_id

    def select(self, exchange_id: int) -> None:
        """Move the cursor to an exchange's row."""
        index = self._index.get(exchange_id)
        if index is not None:
            self.move_cursor(index)

    def move_cursor(self, row: int) -> None:
        """Put the cursor on row `row` (clamped to the rows) and scroll it into view."""
        self._move_cursor(row)
        self._scroll_to_cursor()

    def _move_cursor(self, row: int) -> None:
        old = self._cursor
        self._cursor = min(max(row, 0), max(0, len(self._views) - 1))
        if old != self._cursor:
            self.refresh_line(old + 1)  # virtual lines: the header is line 0
            self.refresh_line(self._cursor + 1)
        exchange_id = self.selected_id
        if exchange_id is not None and exchange_id != self._cursor_id:
            self.post_message(self.Selected(self, exchange_id))
        if exchange_id is not None:
            self._cursor_id = exchange_id

    def _scroll_to_cursor(self) -> None:
        rows_in_view = max(1, self.scrollable_content_region.height - 1)
        top = int(self.scroll_y)
        if self._cursor < top:
            self.scroll_to(y=self._cursor, animate=False, immediate=True)
        elif self._cursor >= top + rows_in_view:
            self.scroll_to(y=self._cursor - rows_in_view + 1, animate=False, immediate=True)

    def action_cursor_down(self) -> None:
        """Select the next row."""
        self.move_cursor(self._cursor + 1)

    def action_cursor_up(self) -> None:
        """Select the previous row."""
        self.move_cursor(self._cursor - 1)

    def action_page(self, pages: int) -> None:
        """Select the row a screenful below (1) or above (-1)."""
        self.move_cursor(self._cursor + pages * max(1, self.scrollable_content_region.height - 1))

    def action_first(self) -> None:
        """Select the first row."""
        self.move_cursor(0)

    def action_last(self) -> None:
        """Select the last row."""
        self.move_cursor(len(self._views) - 1)

    def action_open(self) -> None:
        """Open the exchange under the cursor."""
        exchange_id = self.selected_id
        if exchange_id is not None:
            self.post_message(self.Opened(self, exchange_id))

    async def _on_click(self, event: events.Click) -> None:
        """A click selects its row; a click on the selected row opens it."""
        if event.y < 1:
            return
        index = int(self.scroll_y) + event.y - 1
        if index >= len(self._views):
            return
        if index == self._cursor:
            self.action_open()
        else:
            self.move_cursor(index)
