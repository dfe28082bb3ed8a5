"""One exchange in full: its last 24 hours as a state strip, its heartbeat
ages while watched, every status field and its activity history, paged backwards."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, tzinfo

from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll

from perseus_core.plumbing.connection import describe_redis_error
from perseus_core.plumbing.errors import REDIS_ERRORS
from perseus_core.store.network import ExchangeView
from perseus_core.wire.models import ActivityEntry
from perseus_core.wire.timeutil import Clock
from perseus_tui.fleet import FleetState
from perseus_tui.messages import HistoryPage, RefreshRequested
from perseus_tui.observed import OfflineObserver
from perseus_tui.screens import close
from perseus_tui.screens.base import ExchangeScreen
from perseus_tui.service import FleetService
from perseus_tui.widgets.activity_feed import ActivityFeed
from perseus_tui.widgets.age_sparkline import AgeSparkline
from perseus_tui.widgets.command_bar import CommandBar
from perseus_tui.widgets.footer import PerseusFooter
from perseus_tui.widgets.header import HeaderState, PerseusHeader
from perseus_tui.widgets.history_feed import HistoryFeed
from perseus_tui.widgets.status_panel import StatusPanel
from perseus_tui.widgets.timeline_strip import TimelineStrip

PAGE_SIZE = 50
"""History entries read per page."""
HISTORY_MAX_LINES = 10_000
"""How far back the detail history can be paged."""
NARROW_WIDTH = 110
"""Below this width the fields and the history stack vertically."""


class DetailScreen(ExchangeScreen):
    """The 24-hour strip across the top; the heartbeat sparkline and the status
    panel on the left (or top), the exchange's history on the right (or below)."""

    DEFAULT_CSS = """
    DetailScreen #detail-body { height: 1fr; }
    DetailScreen #fields { width: 64; height: 1fr; }
    DetailScreen #history { width: 1fr; }
    DetailScreen.-narrow #detail-body { layout: vertical; }
    DetailScreen.-narrow #fields { width: 1fr; height: 1fr; }
    DetailScreen.-narrow #history { height: 1fr; }
    """

    BINDINGS = [
        Binding("escape", "back", "Back", tooltip="Back to the dashboard", id="back"),
        Binding("m", "older", "Older", tooltip="Load the previous page of history", id="older"),
        Binding("r", "refresh", "Refresh", tooltip="Re-read every status now", id="detail-refresh"),
    ]

    def __init__(
        self,
        view: ExchangeView,
        header: HeaderState,
        fleet: FleetState,
        read_only_reason: str,
        *,
        service: FleetService,
        observer: OfflineObserver,
        clock: Clock,
        tz: tzinfo | None,
    ) -> None:
        """Args:
        view: the exchange to show, as last read.
        header: what the header shows first.
        fleet: the fleet as the app has it now (`view` is one of it).
        read_only_reason: why start and stop are disabled ("" if they are not).
        service: reads the history pages.
        observer: what this dashboard saw of the exchange itself (merged into
            the history).
        clock: "now" for ages and the history's times.
        tz: the zone absolute times are shown in first.
        """
        super().__init__(header, fleet, read_only_reason)
        self.exchange_id = view.exchange_id
        self.exchange_name = view.exchange_name
        self._opened_with = fleet
        self._service = service
        self._observer = observer
        self._clock = clock
        self._view = view
        self._now = clock()
        self._tz = tz
        self._cursor: str | None = None
        self._loaded_first = False
        self._exhausted = False

    def compose(self) -> ComposeResult:
        yield PerseusHeader(self.header, id="header").data_bind(state=DetailScreen.header)
        fleet = self.fleet
        yield TimelineStrip(fleet.timelines, self._view, self._now, self._tz, id="timeline")
        with Horizontal(id="detail-body"):
            with VerticalScroll(id="fields"):
                yield AgeSparkline(fleet.traces, self._view, self._now, fleet.timing, id="trend")
                yield StatusPanel(self._view, self._now, self._tz, fleet.timing, id="status")
            yield HistoryFeed(
                max_lines=HISTORY_MAX_LINES,
                clock=self._clock,
                tz=self._tz,
                title=f"History of {self.exchange_name or '?'}",
                empty_text="Loading history…",
                id="history",
            )
        yield CommandBar()
        yield PerseusFooter()

    def on_mount(self) -> None:
        feeds = self.query(ActivityFeed)
        if not feeds:
            # Closed (Esc typed ahead) before its widgets were mounted: Textual
            # mounts nothing on a screen being removed, so there is nothing to load.
            return
        feed = feeds.first()
        self.watch(feed, "scroll_y", self._history_scrolled, init=False)
        feed.focus()
        self._load_page(None)
        app = self.app
        self.watch(app, "clock_tick", self._clock_ticked, init=False)
        self.watch(app, "display_tz", self.set_timezone, init=False)
        self.watch(app, "live_entries", self.add_live, init=False)

    def on_resize(self, event: events.Resize) -> None:
        self.set_class(event.size.width < NARROW_WIDTH, "-narrow")

    def current_exchange_id(self) -> int | None:
        return self.exchange_id

    # --- data from the app's reactives ---------------------------------------------

    def fleet_changed(self, fleet: FleetState) -> None:
        if fleet is self._opened_with:
            return  # what the screen was opened with: already shown
        view = fleet.views.get(self.exchange_id)
        if view is not None and fleet.now is not None:
            self.show_view(view, fleet.now)

    def _clock_ticked(self, now: datetime | None) -> None:
        if now is not None:
            self.tick(now)

    def show_view(self, view: ExchangeView, now: datetime) -> None:
        """A fresher read of this exchange (or just a later time)."""
        self._view, self._now = view, now
        # `query`, not `query_one`: data keeps arriving while the screen is
        # being closed, when its widgets may already be gone.
        for panel in self.query(StatusPanel):
            panel.timing = self.fleet.timing
            panel.show(view, now, self._tz)
        for strip in self.query(TimelineStrip):
            strip.show(view, now, self._tz)
        for trend in self.query(AgeSparkline):
            trend.timing = self.fleet.timing
            trend.show(view, now)
        self.sync_bindings()

    def tick(self, now: datetime) -> None:
        """Advance ages to `now`."""
        self.show_view(self._view, now)

    def add_live(self, entries: Iterable[ActivityEntry]) -> None:
        """New entries of any exchange, oldest first; this exchange's go on top."""
        name = self.exchange_name.lower()
        mine = [e for e in entries if e.stream == name]
        for feed in self.query(ActivityFeed) if mine else ():
            feed.add_new(mine)

    def set_timezone(self, tz: tzinfo | None) -> None:
        """Show absolute times in `tz`."""
        self._tz = tz
        for feed in self.query(ActivityFeed):
            feed.set_timezone(tz)
        for panel in self.query(StatusPanel):
            panel.show(self._view, self._now, tz)
        for strip in self.query(TimelineStrip):
            strip.show(self._view, self._now, tz)

    # --- history paging ------------------------------------------------------------

    @work(exclusive=True, group="history", exit_on_error=False)
    async def _load_page(self, before: str | None) -> None:
        service = self._service
        try:
            page = await service.history_page(self.exchange_name, PAGE_SIZE, before)
        except REDIS_ERRORS as exc:
            self.notify(
                describe_redis_error(service.settings, exc),
                title="History not loaded",
                severity="error",
                markup=False,
            )
            return
        self.post_message(
            HistoryPage(self.exchange_name, page.entries, page.next_cursor, first=before is None)
        )

    @on(HistoryPage)
    def _history_page(self, message: HistoryPage) -> None:
        feed = self.query_one(ActivityFeed)
        entries = message.entries
        if message.first:
            self._loaded_first = True
            feed.empty_text = "No activity recorded for this exchange"
            # What this dashboard observed (never in the stream) joins the
            # history; the feed puts each at its time.
            entries = [*entries, *self._observer.about(self.exchange_name.lower())]
        feed.add_older(entries)
        self._cursor = message.next_cursor
        self._exhausted = message.next_cursor is None or feed.is_full
        self.refresh_bindings()

    def _history_scrolled(self, scroll_y: float) -> None:
        feed = self.query_one(ActivityFeed)
        if scroll_y >= feed.max_scroll_y - 1 and not self._exhausted and self._loaded_first:
            self.action_older()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "older":
            return True if self._cursor is not None and not self._exhausted else None
        return super().check_action(action, parameters)

    def action_older(self) -> None:
        """Load the page before the oldest entry shown."""
        if self._cursor is not None and not self._exhausted:
            self._load_page(self._cursor)

    def action_back(self) -> None:
        """Back to the dashboard."""
        close(self)

    def action_refresh(self) -> None:
        """Re-read every status now."""
        self.post_message(RefreshRequested())
