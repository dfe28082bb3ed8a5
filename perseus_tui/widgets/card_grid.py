"""The grid of instance cards: reflows with the terminal width, moves the selection by keys."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from textual import events, on
from textual.binding import Binding
from textual.containers import Container
from textual.message import Message
from textual.reactive import reactive

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


def view_matches(view: ExchangeView, query: str) -> bool:
    """Case-insensitive filter on name, display name, id, host and state."""
    if not query:
        return True
    needle = query.lower()
    fields = [view.exchange_name, view.display_name, str(view.exchange_id), status_word(view)]
    kind = view.kind
    if kind is ViewKind.LIVE and view.status is not None:
        fields.append(view.status.hostname)
    elif kind is not ViewKind.UNREADABLE:
        fields += [agent.hostname for agent in view.agents]
        if view.last_known is not None:
            fields.append(view.last_known.hostname)
    return any(needle in (value or "").lower() for value in fields)


class CardGrid(Container, can_focus=False):
    """Cards in as many columns as fit; the focused card is the selection.

    Cards are keyed by exchange id: an update adds, removes and repaints only
    what changed, and keeps the selection on the same exchange.
    """

    DEFAULT_CSS = """
    CardGrid {
        layout: grid;
        grid-size: 3;
        grid-rows: 8;
        grid-gutter: 0 1;
        overflow-y: auto;
        height: auto;
        padding: 0 1;
        &.-compact { grid-rows: 4; }
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
    ]

    @dataclass
    class Selected(Message):
        """The selection moved to another exchange."""

        grid: CardGrid
        exchange_id: int

        @property
        def control(self) -> CardGrid:
            """The grid whose selection moved."""
            return self.grid

    columns: reactive[int] = reactive(3, init=False)
    """How many cards fit side by side at the current width."""
    compact: reactive[bool] = reactive(False, init=False)
    """Two-line cards, for terminals too short to show every card in full."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._cards: dict[int, InstanceCard] = {}
        self._query = ""
        self._stale = False
        self.selected_id: int | None = None
        self.timing = DEFAULT_TIMING
        """This reader's heartbeat timing and when the fleet was read (set by the screen)."""
        self.timelines: TimelineBook | None = None
        """Every exchange's entries, for the cards' strips (set by the screen)."""

    # --- data -----------------------------------------------------------------

    def update_views(self, views: Sequence[ExchangeView], now: datetime) -> None:
        """Show `views` (sorted by id): add new cards, drop vanished ones, repaint changed ones."""
        wanted = {view.exchange_id for view in views}
        for exchange_id in [i for i in self._cards if i not in wanted]:
            self._cards.pop(exchange_id).remove()
        new_cards: list[tuple[InstanceCard, InstanceCard | None]] = []
        following: InstanceCard | None = None
        for view in reversed(views):
            card = self._cards.get(view.exchange_id)
            if card is None:
                card = InstanceCard(view, now=now)
                card.timing = self.timing
                card.timelines = self.timelines
                card.set_class(self.compact, "-compact")
                card.stale = self._stale
                card.display = view_matches(view, self._query)
                self._cards[view.exchange_id] = card
                new_cards.append((card, following))
            else:
                card.timing = self.timing  # unchanged cards show it on the next tick
                card.timelines = self.timelines
                if view != card.view:  # unchanged cards only need the clock (tick)
                    card.show(view, now)
                card.display = view_matches(view, self._query)
            following = card
        self._mount_new(new_cards)
        if self.selected_id is None and views:
            self.selected_id = views[0].exchange_id

    def _mount_new(self, new_cards: list[tuple[InstanceCard, InstanceCard | None]]) -> None:
        # Consecutive new cards ahead of the same existing card mount in one call.
        created = {id(card) for card, _ in new_cards}
        pending: list[InstanceCard] = []
        anchor: InstanceCard | None = None
        for card, following in new_cards:  # highest id first
            if following is not None and id(following) not in created:
                if pending:
                    self.mount_all(reversed(pending), before=anchor)
                pending, anchor = [card], following
            else:
                pending.append(card)
        if pending:
            if anchor is not None:
                self.mount_all(reversed(pending), before=anchor)
            else:
                self.mount_all(reversed(pending))

    def tick(self, now: datetime, *, everything: bool = False) -> None:
        """Advance the clock (ages, uptime) of the cards on screen; changed ones repaint.

        Cards scrolled out of view are skipped (a 1,000-card grid would spend
        most of each second rebuilding text nobody sees); they catch up on the
        next tick after they scroll in, or at once with `everything=True`.
        """
        for card in self._cards.values():
            if everything or card.region:
                card.show(card.view, now)

    def set_stale(self, stale: bool) -> None:
        """Mark every card as showing last-known data (Redis unreachable) or current data."""
        self._stale = stale
        for card in self._cards.values():
            card.stale = stale

    def apply_filter(self, query: str) -> None:
        """Hide the cards that do not match `query` (name, host, state)."""
        self._query = query
        for card in self._cards.values():
            card.display = view_matches(card.view, query)

    @property
    def visible_cards(self) -> list[InstanceCard]:
        """Cards that pass the filter, in grid order."""
        return [
            child for child in self.children if isinstance(child, InstanceCard) and child.display
        ]

    def card(self, exchange_id: int) -> InstanceCard | None:
        """The card of one exchange, if there is one."""
        return self._cards.get(exchange_id)

    # --- selection ------------------------------------------------------------

    def select(self, exchange_id: int, *, focus: bool = True) -> None:
        """Make `exchange_id` the selection (and focus its card)."""
        self.selected_id = exchange_id
        card = self._cards.get(exchange_id)
        for other in self._cards.values():
            other.set_class(other is card, "-selected")
        if card is not None and focus and card.display and card.is_mounted:
            card.focus()

    def focus_selection(self) -> None:
        """Give focus back to the selected card (or the first visible one)."""
        visible = self.visible_cards
        if not visible:
            return
        card = self._cards.get(self.selected_id) if self.selected_id is not None else None
        if card is None or not card.display:
            card = visible[0]
        card.focus()

    def action_move(self, dx: int, dy: int) -> None:
        """Move the selection by columns (dx) or rows (dy) among visible cards."""
        visible = self.visible_cards
        if not visible:
            return
        ids = [card.exchange_id for card in visible]
        index = ids.index(self.selected_id) if self.selected_id in ids else 0
        target = index + dx + dy * max(1, self.columns)
        target = min(max(target, 0), len(visible) - 1)
        visible[target].focus()

    @on(events.DescendantFocus)
    def _card_focused(self, event: events.DescendantFocus) -> None:
        if isinstance(event.widget, InstanceCard):
            exchange_id = event.widget.exchange_id
            if exchange_id != self.selected_id or not event.widget.has_class("-selected"):
                self.select(exchange_id, focus=False)
                self.post_message(self.Selected(self, exchange_id))

    # --- layout ---------------------------------------------------------------

    def on_resize(self, event: events.Resize) -> None:
        self.columns = max(1, (event.size.width - 2) // self._MIN_COLUMN)
        self.call_after_refresh(self.show_selection)

    def show_selection(self) -> None:
        """Scroll the selected card into view: after a resize or a refit the
        cards reflow, and the selection must not be left off screen."""
        card = self._cards.get(self.selected_id) if self.selected_id is not None else None
        if card is not None and card.display and card.is_mounted:
            self.scroll_to_widget(card, animate=False, immediate=True)

    def watch_columns(self, columns: int) -> None:
        self.styles.grid_size_columns = columns

    def watch_compact(self, compact: bool) -> None:
        self.set_class(compact, "-compact")
        for card in self._cards.values():
            card.set_compact(compact)

    def fit(self, room: int) -> None:
        """Take the rows the visible cards need, at most `room` (whole cards only).

        When full cards would not all fit in `room`, they turn compact (two
        lines), so a short terminal still shows the whole fleet at once.
        """
        rows = -(-len(self.visible_cards) // max(1, self.columns))
        room = max(COMPACT_HEIGHT, room)
        self.compact = rows * CARD_HEIGHT > room
        row = COMPACT_HEIGHT if self.compact else CARD_HEIGHT
        self.styles.max_height = max(row, room // row * row)
        self.call_after_refresh(self.show_selection)
