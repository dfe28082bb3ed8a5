"""The fleet as a table, for hundreds to thousands of exchanges.

Rows are keyed by exchange id and updated by diff: only cells whose content
changed are written, inside one `batch_update`. Work is proportional to what is
on screen, not to the fleet: a poll or a clock tick rebuilds the cells of the
rows in the viewport only; the others keep what they showed and catch up when
they scroll into view (until then nobody can see them). Columns only ever
grow: a cell narrower than its column is written without re-measuring the
column, which would mean measuring every cell of it (for 1,000 changed rows,
a million measurements).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo

from rich.style import Style as RichStyle
from rich.text import Text
from textual import on
from textual.binding import Binding
from textual.content import Content
from textual.coordinate import Coordinate
from textual.message import Message
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, ColumnKey, RowKey

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
    trace = traces.trace(view.exchange_id) if traces is not None else None
    trend = Content()
    if trace is not None:
        trend = spark_line(trace.values(), timing.thresholds(view.status), TABLE_WIDTH)
    return (*cells[:HISTORY_AT], strip, trend, *cells[HISTORY_AT:])


class InstanceTable(DataTable[Text]):
    """One row per exchange; the cursor row is the selection."""

    DEFAULT_CSS = """
    InstanceTable {
        height: 1fr;
    }
    """

    BINDINGS = [
        Binding(
            "j", "cursor_down", "Down", show=False, tooltip="Select the next row", id="table-down"
        ),
        Binding(
            "k", "cursor_up", "Up", show=False, tooltip="Select the previous row", id="table-up"
        ),
    ]

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
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._views: dict[str, ExchangeView] = {}
        """The rows wanted, by row key, in id order (the latest read)."""
        self._cells: dict[str, tuple[Content, ...] | None] = {}
        """What each row holds now (possibly from an older read or second); None: styled
        for another theme, every cell is rewritten."""
        self._current: set[str] = set()
        """Rows whose cells match their view at `_now` (the others are off screen)."""
        self._now: datetime | None = None
        self._stale = False
        self.timing = present.Timing()
        """This reader's heartbeat timing and when the fleet was read (set by the screen)."""
        self.timelines: TimelineBook | None = None
        """Every exchange's entries, for the strip column (set by the screen)."""
        self.traces: TraceBook | None = None
        """Every exchange's heartbeat ages, for the trend column (set by the screen)."""

    def on_mount(self) -> None:
        for key, title in COLUMNS:
            self.add_column(title, key=key)
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._restyle())

    def on_unmount(self) -> None:
        """Leave the app's theme signal: its entry refers to the table, so it
        would keep the table alive (see `ActivityFeed.on_unmount`)."""
        self.app.theme_changed_signal.unsubscribe(self)

    def _to_text(self, content: Content) -> Text:
        """Resolve the theme variables of `content` into a Rich `Text` the table can measure.

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

    def update_views(
        self,
        views: Sequence[ExchangeView],
        now: datetime,
        tz: tzinfo | None = None,
        *,
        stale: bool = False,
    ) -> None:
        """Make the rows match `views`: add and remove rows, rewrite changed cells on screen."""
        del tz  # the table shows ages, not absolute times
        self._now = now
        self._stale = stale
        wanted = {str(view.exchange_id): view for view in views}
        with self.app.batch_update():
            for key in [k for k in self._cells if k not in wanted]:
                del self._cells[key]
                self.remove_row(key)
            self._views = wanted
            self._current.clear()
            added = False
            for key, view in wanted.items():
                if key not in self._cells:
                    cells = self._row(view, now)
                    self.add_row(*(self._to_text(c) for c in cells), key=key)
                    self._cells[key] = cells
                    self._current.add(key)
                    added = True
            if added:
                self.sort("id", key=lambda cell: int(cell.plain))
            self._update_visible()

    def tick(self, now: datetime) -> None:
        """Advance ages to `now` in the rows on screen."""
        if self._now is None:
            return
        self._now = now
        self._current.clear()
        with self.app.batch_update():
            self._update_visible()

    def _visible_keys(self) -> list[str]:
        """Row keys in the viewport (before it is laid out: as many as the terminal has lines)."""
        height = self.scrollable_content_region.height or self.app.size.height
        first = max(0, int(self.scroll_y))
        last = min(self.row_count, first + height + 1)
        keys: list[str] = []
        for row in range(first, last):
            row_key, _ = self.coordinate_to_cell_key(Coordinate(row, 0))
            if row_key.value is not None:
                keys.append(row_key.value)
        return keys

    def _update_visible(self) -> None:
        """Bring the rows on screen up to date with their view, `_now` and `_stale`."""
        now = self._now
        if now is None or not self._views:
            return
        for key in self._visible_keys():
            if key in self._current or key not in self._views:
                continue
            cells = self._row(self._views[key], now)
            old = self._cells[key]
            for index, (column, _title) in enumerate(COLUMNS):
                if old is None or not old[index].is_same(cells[index]):
                    self._write_cell(key, column, cells[index])
            self._cells[key] = cells
            self._current.add(key)

    def _row(self, view: ExchangeView, now: datetime) -> tuple[Content, ...]:
        return row_cells(
            view,
            now,
            self.timing,
            stale=self._stale,
            timelines=self.timelines,
            traces=self.traces,
        )

    def _write_cell(self, key: str, column: str, content: Content) -> None:
        text = self._to_text(content)
        # Growing a column costs one measurement; shrinking one re-measures the
        # whole column, so a column keeps the width of the widest cell it had.
        grow = text.cell_len > self.columns[ColumnKey(column)].content_width
        self.update_cell(key, column, text, update_width=grow)

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if int(old_value) != int(new_value):
            self._update_visible()

    def on_resize(self) -> None:
        self._update_visible()

    def _restyle(self) -> None:
        """Resolve every cell's colours again for a new theme (off-screen rows when shown)."""
        self._cells = dict.fromkeys(self._cells)
        self._current.clear()
        with self.app.batch_update():
            self._update_visible()

    @property
    def selected_id(self) -> int | None:
        """The exchange under the cursor, if any."""
        if not self.row_count:
            return None
        try:
            row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        except CellDoesNotExist:  # the table shrank under the cursor
            return None
        return int(row_key.value) if row_key.value is not None else None

    def select(self, exchange_id: int) -> None:
        """Move the cursor to an exchange's row."""
        key = str(exchange_id)
        if key in self._cells:
            self.move_cursor(row=self.get_row_index(key))

    @on(DataTable.RowHighlighted)
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        exchange_id = _exchange_id(event.row_key)
        if exchange_id is not None:
            self.post_message(self.Selected(self, exchange_id))

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        exchange_id = _exchange_id(event.row_key)
        if exchange_id is not None:
            self.post_message(self.Opened(self, exchange_id))


def _exchange_id(row_key: RowKey | None) -> int | None:
    """The exchange of a highlighted or selected row; None for no row.

    A table the filter emptied still highlights: `DataTable` clamps its cursor
    to row -1 and reports that row with no key at all (typed as a `RowKey`),
    on every cursor key and on the next rebuild.
    """
    if row_key is None or row_key.value is None:
        return None
    return int(row_key.value)
