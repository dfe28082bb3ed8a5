"""Heartbeat-age sparklines: how old an exchange's heartbeat was while the
dashboard watched, against the ages it turns late and overdue at.

The ages come from `perseus_core.present.trace` (bounded, worst age per
slot); the thresholds from the holder's own timing (`Timing.thresholds`),
so a bar is coloured as the heartbeat column was at that moment. Textual's
`Sparkline` scales each line to its own minimum and maximum and colours by
that gradient, which can neither keep the thresholds at a fixed height nor
colour a bar by what its age means; these bars are drawn here instead: the
scale always reaches past the overdue age, and on the detail screen the two
thresholds are dotted lines behind the bars.
"""

from __future__ import annotations

import math
from datetime import datetime

from textual.content import Content
from textual.widget import Widget

from perseus_core.present.exchange import HeartbeatThresholds, Timing, Tone
from perseus_core.present.trace import OFFLINE, AgeTrace, TraceBook, resample
from perseus_core.store.network import ExchangeView
from perseus_core.wire.timeutil import format_duration
from perseus_tui import render

BARS = " ▁▂▃▄▅▆▇█"
"""A column's fill in eighths of a row."""
THRESHOLD_LINE = "┄"
OFFLINE_MARK = "·"
TABLE_WIDTH = 10
"""Columns of the table's sparkline."""
DETAIL_HEIGHT = 4
"""Rows of the detail screen's sparkline."""
HEADROOM = 1.25
"""The scale reaches this far past the overdue age, so its line is never the top edge."""


def _scale(values: list[float], limits: HeartbeatThresholds) -> float:
    worst = max((v for v in values if not math.isnan(v)), default=0.0)
    return max(limits.late_s * HEADROOM, worst, 1e-9)


def _tone_style(value: float, limits: HeartbeatThresholds) -> str:
    return render.TONE_TEXT[limits.tone(value)]


def spark_line(values: list[float], limits: HeartbeatThresholds, width: int) -> Content:
    """One row of bars, `width` columns, the newest at the right edge (the table's column)."""
    columns = resample(values, width)
    columns = [math.nan] * (width - len(columns)) + columns
    top = _scale(columns, limits)
    pieces: list[tuple[str, str]] = []
    for value in columns:
        if math.isnan(value):
            pieces.append((" ", ""))
        elif value == OFFLINE:
            pieces.append((OFFLINE_MARK, render.MUTED))
        else:
            eighths = max(1, min(8, round(value / top * 8)))
            pieces.append((BARS[eighths], _tone_style(value, limits)))
    return render.runs(pieces)


def spark_rows(
    values: list[float], limits: HeartbeatThresholds, width: int, height: int = DETAIL_HEIGHT
) -> list[Content]:
    """`height` rows of bars, top row first, with the fresh and overdue ages as
    dotted lines (warning and error tones) where no bar covers them. The
    newest column is at the right edge; the lines run the whole width."""
    columns = resample(values, width)
    columns = [math.nan] * (width - len(columns)) + columns
    top = _scale(columns, limits)
    lines_at = {
        min(height - 1, int(limits.fresh_s / top * height)): render.TONE_TEXT[Tone.WARNING],
        min(height - 1, int(limits.late_s / top * height)): render.ERROR,
    }
    rows: list[Content] = []
    for row in range(height - 1, -1, -1):
        pieces: list[tuple[str, str]] = []
        for value in columns:
            if math.isnan(value) or value == OFFLINE:
                fill = 0
            else:
                fill = max(1 if row == 0 else 0, min(8, round((value / top * height - row) * 8)))
            if fill:
                pieces.append((BARS[fill], _tone_style(value, limits)))
            elif row in lines_at:
                pieces.append((THRESHOLD_LINE, lines_at[row]))
            elif row == 0 and value == OFFLINE:
                pieces.append((OFFLINE_MARK, render.MUTED))
            else:
                pieces.append((" ", ""))
        rows.append(Content.assemble(*pieces))
    return rows


def _span(seconds: float) -> str:
    return f"{round(seconds, 1):g}s" if seconds < 60 else format_duration(seconds)


class AgeSparkline(Widget):
    """The detail screen's heartbeat-age sparkline of one exchange."""

    DEFAULT_CSS = """
    AgeSparkline {
        height: auto;
        padding: 0 1;
        border: round $border-blurred;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def __init__(
        self,
        traces: TraceBook,
        view: ExchangeView,
        now: datetime,
        timing: Timing,
        *,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self._traces = traces
        self._view = view
        self._now = now
        self.timing = timing
        """This reader's heartbeat timing (set by the screen)."""

    def show(self, view: ExchangeView, now: datetime) -> None:
        """A newer view or a later time (the trace has grown)."""
        self._view, self._now = view, now
        self.refresh(layout=True)

    def render(self) -> Content:
        trace: AgeTrace | None = self._traces.trace(self._view.exchange_id, self._now)
        limits = self.timing.thresholds(self._view.status)
        width = max(8, self.content_size.width or 60)
        values = trace.values() if trace is not None else []
        watched = (self._now - trace.origin).total_seconds() if trace is not None else 0.0
        self.border_title = f"Heartbeat age, the last {format_duration(watched)} watched"
        legend = Content.assemble(
            (
                f"{THRESHOLD_LINE * 2} late from {_span(limits.fresh_s)}",
                render.TONE_TEXT[Tone.WARNING],
            ),
            ("  ", ""),
            (f"{THRESHOLD_LINE * 2} overdue from {_span(limits.late_s)}", render.ERROR),
        )
        seen = [v for v in values if not math.isnan(v) and v != OFFLINE]
        if seen:
            legend += Content.styled(f"  worst {_span(max(seen))}", render.MUTED)
        if not values:
            return Content("\n").join(
                [Content.styled("nothing recorded yet", render.MUTED), legend]
            )
        return Content("\n").join([*spark_rows(values, limits, width), legend])
