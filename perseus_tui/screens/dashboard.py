"""The main screen: header, connection banner, the fleet (cards or table), the activity feed."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, tzinfo
from typing import Literal

from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.widgets import ContentSwitcher, Input

from perseus_core.store.network import ExchangeView
from perseus_core.wire.models import ActivityEntry
from perseus_core.wire.timeutil import Clock
from perseus_tui.fleet import FleetState
from perseus_tui.messages import (
    DetailRequested,
    IntroRequested,
    OutputRequested,
    RefreshRequested,
)
from perseus_tui.screens.base import ExchangeScreen
from perseus_tui.widgets.activity_feed import ActivityFeed
from perseus_tui.widgets.banner import ConnectionBanner, Outage
from perseus_tui.widgets.card_grid import CardGrid
from perseus_tui.widgets.command_bar import CommandBar, CommandLine
from perseus_tui.widgets.empty_fleet import EmptyFleet, RedisHint
from perseus_tui.widgets.footer import PerseusFooter
from perseus_tui.widgets.header import HeaderState, PerseusHeader
from perseus_tui.widgets.instance_table import InstanceTable

FEED_MIN_HEIGHT = 6
"""Rows the activity feed keeps whatever the cards need (its border and four entries)."""
TABLE_THRESHOLD = 60
"""Above this many exchanges the table is shown instead of cards (until `t` is pressed)."""

ViewMode = Literal["auto", "cards", "table"]


DASHBOARD_BINDINGS: list[BindingType] = [
    Binding(
        "enter",
        "open_detail",
        "Details",
        tooltip="Every field and the history of the selected exchange",
        id="open",
    ),
    Binding(
        "o",
        "open_output",
        "Output",
        tooltip="The last lines the selected exchange's child wrote, live",
        id="output",
    ),
    Binding(
        "slash",
        "filter",
        "Filter",
        tooltip="Filter cards by name/host/state and the feed by exchange/host/operator/admin",
        id="filter",
    ),
    Binding(
        "escape",
        "clear_filter",
        "Clear filter",
        tooltip="Show everything again",
        id="clear-filter",
    ),
    Binding(
        "p",
        "pause_feed",
        "Pause feed",
        tooltip="Hold new feed entries (counted) / show them again",
        id="pause-feed",
    ),
    Binding("r", "refresh", "Refresh", tooltip="Re-read every status now", id="refresh"),
    Binding(
        "i",
        "show_intro",
        "Intro",
        tooltip="Open the explanation of what is on screen again (the demo has one)",
        id="show-intro",
    ),
    Binding(
        "t",
        "toggle_view",
        "Table/Cards",
        tooltip="Switch between the card grid and the table",
        id="toggle-view",
    ),
]
"""The dashboard's own keys (start and stop come from `ExchangeScreen`)."""


class DashboardScreen(ExchangeScreen):
    """The fleet and its activity. The selection is the grid's or the table's, whichever shows.

    `/` opens a filter input that keeps every key typed after it; Enter keeps
    the filter, Escape clears it. It narrows the cards (or the table) and the
    feed alike.
    """

    AUTO_FOCUS = ""  # the fleet takes the focus once it is loaded

    BINDINGS = DASHBOARD_BINDINGS
    GATED_ACTIONS = (*ExchangeScreen.GATED_ACTIONS, "open_detail", "open_output", "clear_filter")

    def __init__(
        self,
        header: HeaderState,
        fleet: FleetState,
        read_only_reason: str,
        *,
        clock: Clock,
        feed_max_lines: int,
        tz: tzinfo | None,
        redis_hint: RedisHint,
        expecting: str | None,
        intro: bool,
        initial_selection: int | None,
    ) -> None:
        """Args:
        header: what the header shows first.
        fleet: the fleet as the app has it now.
        read_only_reason: why start and stop are disabled ("" if they are not).
        clock: "now" for the feed's times.
        feed_max_lines: how many entries the activity feed keeps.
        tz: the zone absolute times are shown in first.
        redis_hint: how the commands an empty fleet suggests reach this Redis.
        expecting: what an empty fleet says while exchanges are on their way.
        intro: the app has an intro panel (`i` opens it again).
        initial_selection: the exchange to select first, once it is listed.
        """
        super().__init__(header, fleet, read_only_reason, id="dashboard")
        self._clock = clock
        self._feed_max_lines = feed_max_lines
        self._tz = tz
        self._redis_hint = redis_hint
        self._expecting = expecting
        self._intro = intro
        self._initial_selection = initial_selection
        self._views: list[ExchangeView] = []
        self._loaded = False
        self._now: datetime | None = None
        self._stale = False
        self.view_mode: ViewMode = "auto"
        self.selected_id: int | None = None
        self.query_text = ""
        """The filter in force (stripped)."""
        self._typing_filter = False
        """`/` was pressed and the filter input has not taken the keyboard yet."""

    def compose(self) -> ComposeResult:
        yield PerseusHeader(self.header, id="header").data_bind(state=DashboardScreen.header)
        yield ConnectionBanner(id="banner")
        filter_input = Input(
            placeholder="Filter: name, host or state (Enter keeps it, Esc clears it)",
            id="filter-input",
        )
        filter_input.display = False
        yield filter_input
        with ContentSwitcher(initial="cards", id="views"):
            yield CardGrid(id="cards")
            yield InstanceTable(id="table")
            yield EmptyFleet(self._redis_hint, expecting=self._expecting, id="empty")
        yield ActivityFeed(
            max_lines=self._feed_max_lines,
            clock=self._clock,
            tz=self._tz,
            id="feed",
        )
        yield CommandBar()
        yield PerseusFooter()

    def on_mount(self) -> None:
        filter_input = self.filter_input
        filter_input.cursor_blink = self.app.animation_level != "none"
        app = self.app
        self.watch(app, "clock_tick", self._clock_ticked, init=False)
        self.watch(app, "outage", self._outage_changed, init=False)
        self.watch(app, "display_tz", self.set_timezone, init=False)
        self.watch(app, "live_entries", self._entries_arrived, init=False)
        self.watch(app, "feed_history", self.add_feed_history)

    # --- data from the app's reactives -------------------------------------------

    def fleet_changed(self, fleet: FleetState) -> None:
        if fleet.loaded and fleet.now is not None:
            self.show_views(fleet.ordered, fleet.now, stale=fleet.stale)

    def _clock_ticked(self, now: datetime | None) -> None:
        if now is not None:
            self.tick(now)

    def _entries_arrived(self, entries: Sequence[ActivityEntry]) -> None:
        self.add_feed_entries(entries)

    def _outage_changed(self, outage: Outage | None) -> None:
        if outage is None:
            self.banner.hide()
        else:
            self.banner.show_failure(outage.target, outage.reason, outage.retry_at, outage.seen_at)
        self.call_after_refresh(self.fit_cards)

    # --- queries ---------------------------------------------------------------

    @property
    def grid(self) -> CardGrid:
        """The card view."""
        return self.query_one(CardGrid)

    @property
    def table(self) -> InstanceTable:
        """The table view."""
        return self.query_one(InstanceTable)

    @property
    def feed(self) -> ActivityFeed:
        """The activity feed."""
        return self.query_one(ActivityFeed)

    @property
    def banner(self) -> ConnectionBanner:
        """The connection banner."""
        return self.query_one(ConnectionBanner)

    @property
    def filter_input(self) -> Input:
        """The filter's input."""
        return self.query_one("#filter-input", Input)

    @property
    def showing_table(self) -> bool:
        """Whether the table (not the cards) is the current view."""
        if self.view_mode == "auto":
            return len(self._views) > TABLE_THRESHOLD
        return self.view_mode == "table"

    def current_exchange_id(self) -> int | None:
        if self.selected_id in self.fleet.views:
            return self.selected_id
        return None

    # --- showing it ---------------------------------------------------------------

    def show_views(
        self, views: Sequence[ExchangeView], now: datetime, *, stale: bool = False
    ) -> None:
        """Show the fleet as last read."""
        self._loaded = True
        self._views = list(views)
        self.grid.filter.forget_others(self._views)
        self._now = now
        self._stale = stale
        self._sync_view_mode()
        self._refresh_views()
        self.call_after_refresh(self.fit_cards)  # once new cards are counted in
        if self.selected_id is None and views:
            # The first selection: the one asked for (the demo's "try this first"),
            # once it is listed, else the first exchange.
            wanted = self._initial_selection
            if wanted is None or any(view.exchange_id == wanted for view in views):
                self.selected_id = wanted if wanted is not None else views[0].exchange_id
                if self.focused is None or isinstance(self.focused, CardGrid):
                    self.call_after_refresh(self.focus_view)  # once the cards are mounted
        self.sync_bindings()

    def _refresh_views(self) -> None:
        if self._now is None:
            return
        fleet = self.fleet
        self.grid.timing = self.table.timing = fleet.timing
        self.grid.timelines = self.table.timelines = fleet.timelines
        self.table.traces = fleet.traces
        if self.showing_table:
            shown = self.grid.filter.matching(self._views, self.query_text)
            self.table.update_views(shown, self._now, self._tz, stale=self._stale)
        else:
            self.grid.update_views(self._views, self._now)
            self.grid.set_stale(self._stale)

    def tick(self, now: datetime) -> None:
        """Advance ages and countdowns to `now`."""
        self._now = now
        if self.showing_table:
            self.table.tick(now)
        else:
            self.grid.tick(now)
        self.banner.tick(now)

    def add_feed_entries(self, entries: Iterable[ActivityEntry]) -> None:
        """New activity, oldest first."""
        self.feed.add_new(entries)

    def add_feed_history(self, entries: Iterable[ActivityEntry]) -> None:
        """History loaded at start, newest first."""
        self.feed.add_older(entries)

    def set_timezone(self, tz: tzinfo | None) -> None:
        """Show absolute times in `tz`."""
        self._tz = tz
        self.feed.set_timezone(tz)
        if self._now is not None:
            self._refresh_views()

    # --- view switching and selection ------------------------------------------

    def _sync_view_mode(self) -> None:
        switcher = self.query_one(ContentSwitcher)
        if self._loaded and not self._views:
            wanted = "empty"  # Redis answered and knows no exchange: say how to add one
        else:
            wanted = "table" if self.showing_table else "cards"
        self.set_class(wanted != "cards", "-fill")
        if switcher.current != wanted:
            # Keep the keyboard on the fleet if it was there (the cards or the table).
            had_focus = isinstance(self.focused, CardGrid | InstanceTable)
            switcher.current = wanted
            self._refresh_views()
            if had_focus:
                self.focus_view()

    def on_screen_resume(self) -> None:
        """Back from a panel (the intro, help, the detail screen): the keyboard
        goes to the fleet when nothing here holds it. The first read may have
        come while the intro was open, before the cards could take it."""
        if self.focused is None and self._views:
            self.call_after_refresh(self.focus_view)
        self.call_after_refresh(self.fit_cards)

    def focus_view(self) -> None:
        """Give the keyboard to the fleet: the cards or the table, on the selection."""
        if self.showing_table:
            if self.selected_id is not None:
                self.table.select(self.selected_id)
            self.table.focus()
        else:
            if self.selected_id is not None:
                self.grid.select(self.selected_id, focus=False)
            self.grid.focus_selection()  # the first visible card if the filter hides it

    @on(CardGrid.Selected)
    @on(InstanceTable.Selected)
    def _selected(self, event: CardGrid.Selected | InstanceTable.Selected) -> None:
        self.selected_id = event.exchange_id
        self.sync_bindings()

    @on(InstanceTable.Opened)
    def _opened(self, event: InstanceTable.Opened) -> None:
        self.post_message(DetailRequested(event.exchange_id))

    # --- actions ----------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "show_intro":
            return self._intro
        if action in ("open_detail", "open_output"):
            return True if self.current_exchange_id() is not None else None
        if action == "clear_filter":
            return bool(self.query_text) or self.filter_input.display
        return super().check_action(action, parameters)

    def action_open_detail(self) -> None:
        """Open the detail screen of the selected exchange."""
        exchange_id = self.current_exchange_id()
        if exchange_id is not None:
            self.post_message(DetailRequested(exchange_id))

    def action_open_output(self) -> None:
        """Open the child output of the selected exchange."""
        exchange_id = self.current_exchange_id()
        if exchange_id is not None:
            self.post_message(OutputRequested(exchange_id))

    # --- the filter -------------------------------------------------------------

    def action_filter(self) -> None:
        """Show the filter input and type into it.

        The input takes the keyboard only once the keys typed before `/` have been
        handled: their bindings are resolved when they reach the app, against
        whatever has focus then, and a focused input would swallow them (`t/ok⏎`
        typed fast would lose its `t`). Until then `on_key` types the keys that
        follow `/` into the input.
        """
        self.filter_input.display = True
        self.call_after_refresh(self.fit_cards)
        self._typing_filter = True
        self.app.call_later(self._filter_takes_keyboard)
        self.sync_bindings()

    def _filter_takes_keyboard(self) -> None:
        if self._typing_filter:  # not submitted or cleared meanwhile
            self.set_focus(self.filter_input)
            self._typing_filter = False  # from now on, the focus says where keys go

    def action_clear_filter(self) -> None:
        """Drop the filter and hide its input."""
        filter_input = self.filter_input
        filter_input.value = ""
        filter_input.display = False
        self._typing_filter = False
        self._apply_filter("")
        self.focus_view()
        self.sync_bindings()

    async def on_key(self, event: events.Key) -> None:
        """Hand the filter the keys typed right after `/`.

        A terminal delivers a burst of keys at once, and the app forwards each
        to the widget focused when it arrives: the selected card, for every key
        of `/off⏎`. Bindings run only when a key has bubbled back up to the
        app, after the whole burst was forwarded; so `/` opens the filter here,
        on the way up, and the keys behind it are typed into the filter instead
        of moving the selection or opening a detail screen.
        """
        filter_input = self.filter_input
        if not self._typing_filter and self.focused is not filter_input:
            if event.key == "slash":
                self.action_filter()
            else:
                return
        elif event.is_printable and event.character is not None:
            filter_input.insert_text_at_cursor(event.character)  # the input's own never bubble
        elif event.key == "enter":
            await filter_input.action_submit()
        else:
            return
        event.stop()
        event.prevent_default()

    @on(Input.Changed, "#filter-input")
    def _filter_typed(self, event: Input.Changed) -> None:
        self._apply_filter(event.value)

    @on(Input.Submitted, "#filter-input")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        self._typing_filter = False
        event.input.display = bool(event.value)
        self.call_after_refresh(self.fit_cards)
        self.focus_view()
        self.sync_bindings()

    def _apply_filter(self, query: str) -> None:
        """Show what matches `query`: cards (or table rows) and feed entries."""
        self.query_text = query = query.strip()
        self.grid.apply_filter(query)
        self.feed.set_filter(query)
        if self.showing_table:
            self._refresh_views()
        self.call_after_refresh(self.fit_cards)

    # --- layout -------------------------------------------------------------------

    def on_resize(self) -> None:
        self.call_after_refresh(self.fit_cards)

    def on_card_grid_reflowed(self) -> None:
        self.call_after_refresh(self.fit_cards)

    def _commands_changed(self, lines: tuple[CommandLine, ...]) -> None:
        super()._commands_changed(lines)
        self.call_after_refresh(self.fit_cards)

    def fit_cards(self) -> None:
        """Give the cards the rows they need, leaving the feed the rest.

        The cards never take more than leaves the feed `FEED_MIN_HEIGHT` rows
        (`CardGrid.fit`). Called again whenever what it depends on changes: the
        screen's size, the rows the banner, the filter or the command bar take,
        how many cards match, the grid's column count (the grid learns it from
        its own size, which may come after the screen's refit), and on coming
        back from a panel (laid out under it, maybe before the rows were known).
        """
        if not self.is_attached or not self.size.height:
            return
        parts = (PerseusHeader, ConnectionBanner, Input, CommandBar, PerseusFooter)
        others = sum(
            widget.outer_size.height
            for widget in self.query("*")
            if isinstance(widget, parts) and widget.display and widget.parent is self
        )
        self.grid.fit(self.size.height - others - FEED_MIN_HEIGHT)

    def action_pause_feed(self) -> None:
        """Pause or resume the feed."""
        self.feed.paused = not self.feed.paused

    def action_refresh(self) -> None:
        """Re-read every status now."""
        self.post_message(RefreshRequested())

    def action_show_intro(self) -> None:
        """Open the explanation of what is on screen again."""
        self.post_message(IntroRequested())

    def action_toggle_view(self) -> None:
        """Switch between cards and table (overrides the automatic choice)."""
        self.view_mode = "cards" if self.showing_table else "table"
        self._sync_view_mode()
        self.focus_view()
        self.call_after_refresh(self.fit_cards)  # full or compact, before the next key
