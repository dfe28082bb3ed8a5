"""The fleet as a table, for hundreds to thousands of exchanges.

Rows are keyed by exchange id and updated by diff: only cells whose content
changed are written, inside one `batch_update`, so a poll of a 1,000-row fleet
where three instances changed touches three rows.
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
from textual.message import Message
from textual.widgets import DataTable

from perseus_core.network import ExchangeView
from perseus_tui import render

COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "ID"),
    ("exchange", "Exchange"),
    ("state", "State"),
    ("host", "Host"),
    ("ip", "IP"),
    ("admin", "Admin"),
    ("symbols", "Symbols"),
    ("heartbeat", "Heartbeat"),
    ("uptime", "Uptime"),
    ("error", "Last error"),
)


def row_cells(view: ExchangeView, now: datetime, *, stale: bool = False) -> tuple[Content, ...]:
    """The table cells of one exchange, as safe styled content."""
    name = Content(render.label(view.display_name or view.exchange_name, "?", 40))
    status = view.status
    if status is not None:
        state = Content.styled(
            status.connection_state.value, f"bold {render.state_colour(status.connection_state)}"
        )
        ip = render.label(status.ip_address, "-", 45)
        if status.country_code:
            ip = f"{ip} ({render.label(status.country_code, '', 4)})"
        cells = (
            Content(render.label(status.hostname)),
            Content(ip),
            Content(render.label(status.admin_display_name or status.admin_email)),
            Content(str(status.symbol_count)),
            render.heartbeat(status.last_heartbeat, now),
            Content.styled(
                render.uptime(status.connected_at, now).removeprefix("Running for ")
                if status.connection_state == "active"
                else "",
                "$text-success",
            ),
            Content.styled(render.label(status.last_error, "", 80), "$text-error"),
        )
    elif view.online:
        state = Content.styled("unreadable", "bold $text-error")
        cells = (
            Content(),
            Content(),
            Content(),
            Content(),
            Content(),
            Content(),
            Content.styled(render.label(view.error, "unreadable status", 80), "$text-error"),
        )
    elif view.ready:
        state = Content.styled("ready", render.READY_STYLE)
        agent = view.agents[0]
        host = render.label(agent.hostname)
        if len(view.agents) > 1:
            host += f" +{len(view.agents) - 1}"
        cells = (
            Content(host),
            Content(),
            Content(),
            Content(),
            Content.styled(f"agent: {render.agent_state(agent, now)}", render.MUTED),
            Content(),
            Content(),
        )
    else:
        state = Content.styled("offline", render.OFFLINE_STYLE)
        known = view.last_known
        when = render.parse_time(known.timestamp) if known else None
        cells = (
            Content.styled(render.label(known.hostname if known else None), render.MUTED),
            Content.styled(render.label(known.ip if known else None), render.MUTED),
            Content(),
            Content(),
            Content.styled(
                f"last seen {render.age_text(when, now)}" if known else "never seen", render.MUTED
            ),
            Content(),
            Content(),
        )
    if stale:
        state = state + Content.styled(" (stale)", render.STALE_STYLE)
    return (Content(str(view.exchange_id)), name, state, *cells)


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

        exchange_id: int

    @dataclass
    class Opened(Message):
        """Enter was pressed on a row."""

        exchange_id: int

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self._cells: dict[str, tuple[Content, ...]] = {}
        self._views: list[ExchangeView] = []
        self._now: datetime | None = None
        self._stale = False

    def on_mount(self) -> None:
        for key, title in COLUMNS:
            self.add_column(title, key=key)
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._repaint_all())

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
        """Make the rows match `views`: add, remove, and rewrite only changed cells."""
        del tz  # the table shows ages, not absolute times
        self._views = list(views)
        self._now = now
        self._stale = stale
        wanted = {str(view.exchange_id): view for view in views}
        with self.app.batch_update():
            for key in [k for k in self._cells if k not in wanted]:
                del self._cells[key]
                self.remove_row(key)
            added = False
            for key, view in wanted.items():
                cells = row_cells(view, now, stale=stale)
                old = self._cells.get(key)
                if old is None:
                    self.add_row(*(self._to_text(c) for c in cells), key=key)
                    added = True
                else:
                    for (column, _title), before, after in zip(COLUMNS, old, cells, strict=True):
                        if not before.is_same(after):
                            self.update_cell(key, column, self._to_text(after), update_width=True)
                self._cells[key] = cells
            if added:
                self.sort("id", key=lambda cell: int(cell.plain))

    def _repaint_all(self) -> None:
        if self._now is None:
            return
        self._cells.clear()
        self.clear()
        self.update_views(self._views, self._now, stale=self._stale)

    @property
    def selected_id(self) -> int | None:
        """The exchange under the cursor, if any."""
        if not self.row_count:
            return None
        try:
            row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        except Exception:  # noqa: BLE001 - an empty or shrinking table has no cursor cell
            return None
        return int(row_key.value) if row_key.value is not None else None

    def select(self, exchange_id: int) -> None:
        """Move the cursor to an exchange's row."""
        key = str(exchange_id)
        if key in self._cells:
            self.move_cursor(row=self.get_row_index(key))

    @on(DataTable.RowHighlighted)
    def _row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self.post_message(self.Selected(int(event.row_key.value)))

    @on(DataTable.RowSelected)
    def _row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value is not None:
            self.post_message(self.Opened(int(event.row_key.value)))
