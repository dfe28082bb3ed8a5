"""Every field of one exchange's status (Perseus extras included), for the detail screen."""

from __future__ import annotations

from datetime import datetime, tzinfo

from textual.content import Content
from textual.widget import Widget

from perseus_core.present.exchange import Timing, detail
from perseus_core.store.network import ExchangeView
from perseus_tui import render


def status_lines(
    view: ExchangeView, now: datetime, tz: tzinfo | None, timing: Timing
) -> list[Content]:
    """The detail screen's field list as the presenter says it
    (`perseus_core.present.exchange.detail`), one `Content` a line."""
    return [render.line_content(line) for line in detail(view, now, tz, timing)]


class StatusPanel(Widget):
    """The field list of one exchange; repaints when the view or the clock's second changes."""

    DEFAULT_CSS = """
    StatusPanel {
        height: auto;
        padding: 0 1;
        border: round $border-blurred;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def __init__(
        self,
        view: ExchangeView,
        now: datetime,
        tz: tzinfo | None,
        timing: Timing,
        *,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self._view = view
        self._now = now
        self._tz = tz
        self.timing = timing
        """This reader's heartbeat timing and when the fleet was read (set by the screen)."""
        self._content = Content("\n").join(status_lines(view, now, tz, timing))

    @property
    def view(self) -> ExchangeView:
        """The exchange shown."""
        return self._view

    def show(self, view: ExchangeView, now: datetime, tz: tzinfo | None) -> None:
        """Show a newer view or time; repaint only if the text or styles changed."""
        self._view, self._now, self._tz = view, now, tz
        content = Content("\n").join(status_lines(view, now, tz, self.timing))
        if not content.is_same(self._content):
            self._content = content
            self.refresh(layout=True)

    def render(self) -> Content:
        return self._content
