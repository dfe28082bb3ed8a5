"""The grid of instance cards: reflows with the terminal width, moves the selection by keys.

The grid is virtual: whatever the size of the fleet, only the cards of the rows
in the viewport (and one row beyond) exist as widgets. A fixed pool of cards
is rebound to the exchanges of those rows between two spacers that stand for
the rows above and below, so mounting, styling and ticking cost what one
screenful costs; 1,000 mounted cards took over half a second to show and
10,000 would not be usable. The selection is therefore an exchange id, not a
focused card: the grid itself holds the keyboard.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Container
from textual.message import Message
from textual.reactive import reactive
from textual.widget import Widget

from perseus_core.present import status_word
from perseus_core.present.timeline import TimelineBook
from perseus_core.store.network import ExchangeView, ViewKind
from perseus_tui.widgets.instance_card import (
    CARD_HEIGHT,
    CARD_WIDTH,
    COMPACT_HEIGHT,
    DEFAULT_TIMING,
    InstanceCard,
)

ROWS_BEYOND = 1
"""Rows of cards kept bound below the last one in view, so a one-row scroll
finds its cards ready."""


def _haystack(view: ExchangeView) -> str:
    """What the filter searches in: name, display name, id, state and hosts,
    lower-cased, one per line (a typed filter never holds a newline)."""
    fields = [view.exchange_name, view.display_name, str(view.exchange_id), status_word(view)]
    kind = view.kind
    if kind is ViewKind.LIVE and view.status is not None:
        fields.append(view.status.hostname)
    elif kind is not ViewKind.UNREADABLE:
        fields += [agent.hostname for agent in view.agents]
        if view.last_known is not None:
            fields.append(view.last_known.hostname)
    return "\n".join(filter(None, fields)).lower()


class ViewFilter:
    """The dashboard's filter: case-insensitive, on name, display name, id, host
    and state; fast enough over 10,000 exchanges for every key typed.

    Each view's searchable text is built once and kept until the view
    changes (compared by identity: the app hands over the same object for
    an exchange that did not change), so a key typed in the filter costs
    one substring search per exchange.
    """

    def __init__(self) -> None:
        self._texts: dict[int, tuple[ExchangeView, str]] = {}

    def _text(self, view: ExchangeView) -> str:
        known = self._texts.get(view.exchange_id)
        if known is None or known[0] is not view:
            known = (view, _haystack(view))
            self._texts[view.exchange_id] = known
        return known[1]

    def forget_others(self, fleet: Sequence[ExchangeView]) -> None:
        """Drop what is kept for exchanges no longer in `fleet` (the whole fleet)."""
        if len(self._texts) > len(fleet):
            wanted = {view.exchange_id for view in fleet}
            self._texts = {k: v for k, v in self._texts.items() if k in wanted}

    def matching(self, views: Sequence[ExchangeView], query: str) -> list[ExchangeView]:
        """The views that pass `query`, in their order."""
        if not query:
            return list(views)
        needle = query.lower()
        return [view for view in views if needle in self._text(view)]


class _Spacer(Widget):
    """Stands for the rows of cards scrolled out of view above or below."""

    DEFAULT_CSS = """
    _Spacer { width: 1fr; height: 0; }
    """


class _CardWindow(Widget):
    """The rows of cards in view, laid out as a grid."""

    DEFAULT_CSS = """
    _CardWindow {
        layout: grid;
        grid-size: 3;
        grid-rows: 8;
        grid-gutter: 0 1;
        width: 1fr;
        height: auto;
        &.-compact { grid-rows: 4; }
    }
    """


class CardGrid(Container, can_focus=True):
    """Cards in as many columns as fit; one exchange is the selection.

    An update compares each exchange's view with the last one and repaints
    only the card on screen whose exchange changed.
    """

    DEFAULT_CSS = """
    CardGrid {
        layout: vertical;
        overflow-y: auto;
        height: auto;
        padding: 0 1;
    }
    """
    _MIN_COLUMN = CARD_WIDTH

    BINDINGS = [
        Binding(
            "up,k", "move(0, -1)", "Up", show=False, tooltip="Select the card above", id="card-up"
        ),
        Binding(
            "down,j",
            "move(0, 1)",
            "Down",
            show=False,
            tooltip="Select the card below",
            id="card-down",
        ),
        Binding(
            "left,h",
            "move(-1, 0)",
            "Left",
            show=False,
            tooltip="Select the card to the left",
            id="card-left",
        ),
        Binding(
            "right,l",
            "move(1, 0)",
            "Right",
            show=False,
            tooltip="Select the card to the right",
            id="card-right",
        ),
        Binding(
            "pagedown", "page(1)", "Page down", show=False,
            tooltip="Select the card a screenful below", id="card-page-down",
        ),
        Binding(
            "pageup", "page(-1)", "Page up", show=False,
            tooltip="Select the card a screenful above", id="card-page-up",
        ),
        Binding(
            "home", "first", "First", show=False, tooltip="Select the first card",
            id="card-first",
        ),
        Binding(
            "end", "last", "Last", show=False, tooltip="Select the last card", id="card-last"
        ),
    ]  # fmt: skip

    @dataclass
    class Selected(Message):
        """The selection moved to another exchange."""

        grid: CardGrid
        exchange_id: int

        @property
        def control(self) -> CardGrid:
            """The grid whose selection moved."""
            return self.grid

    @dataclass
    class Reflowed(Message):
        """The column count changed, so the rows the cards need did too: whoever
        gave the grid its room (`fit`) gives it again."""

        grid: CardGrid

        @property
        def control(self) -> CardGrid:
            """The grid whose columns changed."""
            return self.grid

    columns: reactive[int] = reactive(3, init=False)
    """How many cards fit side by side at the current width."""
    compact: reactive[bool] = reactive(False, init=False)
    """Two-line cards, for terminals too short to show every card in full."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._views: dict[int, ExchangeView] = {}
        """Every exchange, by id, in id order (the latest update)."""
        self._matching: list[int] = []
        """The exchanges that pass the filter, in grid order."""
        self._position: dict[int, int] = {}
        """Where each of `_matching` is in it."""
        self._bound: dict[int, InstanceCard] = {}
        """The cards in the window, by the exchange each shows."""
        self._pool: list[InstanceCard] = []
        self._top = _Spacer()
        self._window = _CardWindow()
        self._bottom = _Spacer()
        self._query = ""
        self._stale = False
        self._now: datetime | None = None
        self.filter = ViewFilter()
        """The filter's per-exchange text (the table's filter uses it too)."""
        self.selected_id: int | None = None
        self.timing = DEFAULT_TIMING
        """This reader's heartbeat timing and when the fleet was read (set by the screen)."""
        self.timelines: TimelineBook | None = None
        """Every exchange's entries, for the cards' strips (set by the screen)."""

    def compose(self) -> ComposeResult:
        yield self._top
        yield self._window
        yield self._bottom

    def on_mount(self) -> None:
        self._place()

    # --- data -----------------------------------------------------------------

    def update_views(self, views: Sequence[ExchangeView], now: datetime) -> None:
        """Show `views` (sorted by id); only the cards on screen whose view changed repaint."""
        self._now = now
        self._views = {view.exchange_id: view for view in views}
        self._refilter()
        if self.selected_id is None and views:
            self.selected_id = views[0].exchange_id
        self._place()

    def _refilter(self) -> None:
        shown = self.filter.matching(list(self._views.values()), self._query)
        self._matching = [view.exchange_id for view in shown]
        self._position = {exchange_id: n for n, exchange_id in enumerate(self._matching)}

    def tick(self, now: datetime) -> None:
        """Advance the clock (ages, uptime) of the cards on screen; changed lines repaint.

        Only the window's cards exist; a card bound to another exchange as
        the grid scrolls shows that exchange at the latest time.
        """
        self._now = now
        for card in self._bound.values():
            card.show(card.view, now)

    def set_stale(self, stale: bool) -> None:
        """Mark the cards as showing last-known data (Redis unreachable) or current data."""
        self._stale = stale
        for card in self._pool:
            card.stale = stale

    def apply_filter(self, query: str) -> None:
        """Show only the exchanges that match `query` (name, host, state).

        A hidden grid (the table shows) only keeps the query for its next
        update: its views are older than the table's, and searching them
        would replace the filter's text for the table's with theirs.
        """
        self._query = query
        if not self.display:
            return
        self._refilter()
        if self.is_mounted:
            self.scroll_to(y=0, animate=False, immediate=True)
        self._place()

    @property
    def matching_ids(self) -> list[int]:
        """Every exchange that passes the filter, in grid order (on screen or not)."""
        return list(self._matching)

    @property
    def visible_cards(self) -> list[InstanceCard]:
        """The cards in the window (on screen or just below it), in grid order."""
        return [card for card in self._pool if card.display and card.exchange_id in self._bound]

    def card(self, exchange_id: int) -> InstanceCard | None:
        """The card of one exchange, if it is in the window."""
        return self._bound.get(exchange_id)

    # --- the window -------------------------------------------------------------

    @property
    def row_height(self) -> int:
        """Lines one row of cards takes."""
        return COMPACT_HEIGHT if self.compact else CARD_HEIGHT

    def _place(self) -> None:
        """Bind the pool's cards to the rows in view and size the spacers around them."""
        if not self.is_mounted or self._now is None:
            return
        columns = max(1, self.columns)
        row_height = self.row_height
        total_rows = -(-len(self._matching) // columns)
        # Before the first layout there is no height yet: the spacers alone give
        # the grid its height, and the resize that follows binds the cards.
        height = self.scrollable_content_region.height
        in_view = -(-height // row_height) + 1 if height else 0  # a partly shown row each end
        capacity = (in_view + ROWS_BEYOND) * columns if height else 0
        window_rows = min(total_rows, capacity // columns)
        first = min(int(self.scroll_y) // row_height, total_rows - window_rows)
        self._top.styles.height = first * row_height
        self._bottom.styles.height = (total_rows - first - window_rows) * row_height
        start = first * columns
        ids = self._matching[start : start + window_rows * columns]
        self._size_pool(len(ids), capacity)
        self._bound = {}
        for card, exchange_id in zip(self._pool, ids, strict=False):
            card.timing = self.timing  # a card whose view is unchanged shows it on the next tick
            card.timelines = self.timelines
            card.bind(self._views[exchange_id], self._now)
            card.display = True
            self._bound[exchange_id] = card
        for card in self._pool[len(ids) :]:
            card.display = False
        self._mark_selection()

    def _size_pool(self, size: int, capacity: int) -> None:
        """Have at least `size` cards, and none beyond what fills the grid (`capacity`):
        hidden extras are kept while the filter shows fewer, dropped when the grid shrinks."""
        if len(self._pool) > capacity:
            extra, self._pool = self._pool[capacity:], self._pool[:capacity]
            self._window.remove_children(extra)
        if len(self._pool) >= size or self._now is None:
            return
        first = self._views[self._matching[0]]
        new = [InstanceCard(first, now=self._now) for _ in range(size - len(self._pool))]
        for card in new:
            card.timing = self.timing
            card.timelines = self.timelines
            card.stale = self._stale
            card.set_compact(self.compact)
        self._pool += new
        self._window.mount_all(new)

    def _mark_selection(self) -> None:
        cursor = self.has_focus
        for exchange_id, card in self._bound.items():
            selected = exchange_id == self.selected_id
            card.set_class(selected, "-selected")
            card.set_class(selected and cursor, "-cursor")

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        row_height = self.row_height
        if int(old_value) // row_height != int(new_value) // row_height:
            self._place()

    # --- selection ------------------------------------------------------------

    def select(self, exchange_id: int, *, focus: bool = True) -> None:
        """Make `exchange_id` the selection, scroll it into view (and take the keyboard)."""
        self.selected_id = exchange_id
        self._mark_selection()
        if focus and exchange_id in self._position:
            self.focus()
        self.show_selection()

    def focus_selection(self) -> None:
        """Take the keyboard, on the selection (or the first exchange the filter shows)."""
        if not self._matching:
            return
        if self.selected_id not in self._position:
            self._choose(self._matching[0])
        self.focus()
        self.show_selection()

    def _choose(self, exchange_id: int) -> None:
        if exchange_id != self.selected_id:
            self.selected_id = exchange_id
            self.post_message(self.Selected(self, exchange_id))
        self._mark_selection()

    def action_move(self, dx: int, dy: int) -> None:
        """Move the selection by columns (dx) or rows (dy) among the exchanges shown."""
        if not self._matching:
            return
        index = self._position.get(self.selected_id, 0) if self.selected_id is not None else 0
        target = index + dx + dy * max(1, self.columns)
        target = min(max(target, 0), len(self._matching) - 1)
        self._choose(self._matching[target])
        self.show_selection()

    def action_page(self, pages: int) -> None:
        """Move the selection by as many rows as are in view, down (1) or up (-1)."""
        rows = max(1, self.scrollable_content_region.height // self.row_height)
        self.action_move(0, pages * rows)

    def action_first(self) -> None:
        """Select the first card the filter shows."""
        if self._matching:
            self._choose(self._matching[0])
            self.show_selection()

    def action_last(self) -> None:
        """Select the last card the filter shows."""
        if self._matching:
            self._choose(self._matching[-1])
            self.show_selection()

    def watch_has_focus(self, has_focus: bool) -> None:
        super().watch_has_focus(has_focus)
        self._mark_selection()  # the selected card shows the keyboard is on it

    @on(events.Click)
    def _card_clicked(self, event: events.Click) -> None:
        widget = event.widget
        while widget is not None and not isinstance(widget, InstanceCard):
            widget = widget.parent if isinstance(widget.parent, Widget) else None
        if widget is not None and widget.exchange_id in self._bound:
            self._choose(widget.exchange_id)
            self.focus()

    # --- layout ---------------------------------------------------------------

    def on_resize(self, event: events.Resize) -> None:
        self.columns = max(1, (event.size.width - 2) // self._MIN_COLUMN)
        self._place()
        self.call_after_refresh(self.show_selection)

    def show_selection(self) -> None:
        """Scroll the selected exchange's row into view: after a move, a resize or a
        refit the rows move, and the selection must not be left off screen."""
        index = self._position.get(self.selected_id) if self.selected_id is not None else None
        if index is None or not self.is_mounted:
            return
        row_height = self.row_height
        top = index // max(1, self.columns) * row_height
        height = self.scrollable_content_region.height
        if not height:
            return
        if top < self.scroll_y:
            self.scroll_to(y=top, animate=False, immediate=True)
        elif top + row_height > self.scroll_y + height:
            self.scroll_to(y=top + row_height - height, animate=False, immediate=True)

    def watch_columns(self, columns: int) -> None:
        self._window.styles.grid_size_columns = columns
        self._place()
        self.post_message(self.Reflowed(self))

    def watch_compact(self, compact: bool) -> None:
        self._window.set_class(compact, "-compact")
        for card in self._pool:
            card.set_compact(compact)
        self._place()

    def fit(self, room: int) -> None:
        """Take the rows the matching cards need, at most `room` (whole cards only).

        When full cards would not all fit in `room`, they turn compact (two
        lines), so a short terminal still shows the whole fleet at once.
        """
        rows = -(-len(self._matching) // max(1, self.columns))
        room = max(COMPACT_HEIGHT, room)
        self.compact = rows * CARD_HEIGHT > room
        row = self.row_height
        self.styles.max_height = max(row, room // row * row)
        self.call_after_refresh(self.show_selection)
