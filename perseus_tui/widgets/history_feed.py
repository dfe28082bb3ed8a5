"""The detail screen's history: the activity feed with long entries wrapped, not cut.

The dashboard's feed gives each entry one line, so a burst of thousands costs
one row each. The history of one exchange is read page by page, and there
the whole reason of an error matters more: an entry wraps under itself, past
the time and exchange columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import tzinfo
from typing import Any

from textual.cache import LRUCache
from textual.strip import Strip

from perseus_core.wire.models import ActivityEntry
from perseus_tui import render
from perseus_tui.widgets.activity_feed import ActivityFeed, EntryKey, entry_key


class HistoryFeed(ActivityFeed):
    """An `ActivityFeed` whose entries wrap to the width."""

    def __init__(self, **kwargs: Any) -> None:
        """Take the same options as `ActivityFeed`."""
        super().__init__(**kwargs)
        self._wrapped: LRUCache[tuple[EntryKey, int], list[Strip]] = LRUCache(4096)
        self._rows: list[tuple[ActivityEntry, int]] = []
        """(entry, line of it) for each screen row, for `_rows_width`."""
        self._rows_width = 0
        self._rows_stale = True

    def _strips(self, entry: ActivityEntry, width: int) -> list[Strip]:
        key = (entry_key(entry), width)
        strips = self._wrapped.get(key)
        if strips is None:
            style = self.visual_style
            strips = []
            for line in render.entry_lines(entry, self._tz, self._clock(), width):
                strip = Strip(line.render_segments(style), line.cell_length)
                strips.append(strip.extend_cell_length(width, style.rich_style))
            self._wrapped[key] = strips
        return strips

    def _layout(self) -> list[tuple[ActivityEntry, int]]:
        width = self.scrollable_content_region.width
        if self._rows_stale or width != self._rows_width:
            self._rows = [
                (entry, index)
                for entry in self._visible
                for index in range(len(self._strips(entry, width)))
            ]
            self._rows_width = width
            self._rows_stale = False
        return self._rows

    def row_count(self) -> int:
        self._rows_stale = True
        return len(self._layout())

    def rows_of(self, entries: Sequence[ActivityEntry]) -> int:
        width = self.scrollable_content_region.width
        return sum(len(self._strips(entry, width)) for entry in entries)

    def entry_index_at_row(self, row: int) -> int:
        rows = self._layout()
        if not rows:
            return 0
        entry = rows[min(row, len(rows) - 1)][0]
        return next(index for index, shown in enumerate(self._visible) if shown is entry)

    def on_resize(self) -> None:
        self._content_changed(shift=())

    def _restyle(self) -> None:
        self._wrapped.clear()
        super()._restyle()

    def notify_style_update(self) -> None:
        self._wrapped.clear()
        super().notify_style_update()

    def set_timezone(self, tz: tzinfo | None) -> None:
        self._wrapped.clear()
        super().set_timezone(tz)

    def render_line(self, y: int) -> Strip:
        rows = self._layout()
        index = self.scroll_offset.y + y
        if index >= len(rows):
            return super().render_line(y) if not rows else Strip.blank(self._rows_width)
        entry, line = rows[index]
        return self._strips(entry, self._rows_width)[line]
