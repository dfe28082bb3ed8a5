"""One exchange as a card: a single widget that renders its own text.

A card made of nine child widgets costs ~16 ms to mount; one widget that
renders a `Content` costs ~1.4 ms, and re-renders only when what it would show
changes (its view, the stale flag, the clock's second, the width), so a
1,000-exchange fleet stays responsive. When the clock moves, usually one line
changes (the heartbeat age): only that line is repainted and sent to the
terminal, not the whole card.
"""

from __future__ import annotations

from datetime import datetime, tzinfo

from textual.content import Content
from textual.geometry import Region
from textual.reactive import reactive
from textual.widget import Widget

from perseus_core.present import heartbeat, last_seen_text
from perseus_core.present.exchange import Timing
from perseus_core.store.network import ExchangeView, LastKnown, ViewKind
from perseus_tui import render

CARD_WIDTH = 38
"""Width a card needs (border included); the grid fits as many columns as this allows."""
CARD_HEIGHT = 8
"""Six lines of content plus the border."""
COMPACT_HEIGHT = 4
"""A compact card (short terminals): the title line and one summary line, plus the border."""
DEFAULT_TIMING = Timing()
"""The heartbeat timing of the default settings (what a card shows outside a dashboard)."""


def card_title(view: ExchangeView) -> str:
    """The card heading: display name (else name) and the exchange id."""
    name = render.label(view.display_name or view.exchange_name, "?", 40)
    return f"{name} #{view.exchange_id}"


def _line(*parts: str | tuple[str, str] | Content) -> Content:
    return Content.assemble(*parts)


def _field(name: str, value: str | Content) -> Content:
    return _line((f"{name:<6}", render.MUTED), value)


def card_content(
    view: ExchangeView,
    now: datetime,
    tz: tzinfo | None,
    *,
    width: int,
    stale: bool = False,
    timing: Timing = DEFAULT_TIMING,
) -> Content:
    """Everything a card shows, as one `Content` (see `card_lines`)."""
    return Content("\n").join(card_lines(view, now, tz, width=width, stale=stale, timing=timing))


def card_lines(
    view: ExchangeView,
    now: datetime,
    tz: tzinfo | None,
    *,
    width: int,
    stale: bool = False,
    timing: Timing = DEFAULT_TIMING,
    compact: bool = False,
) -> list[Content]:
    """Everything a card shows, as up to six lines of `Content` (two when compact).

    Args:
        view: The exchange as the network reader last saw it.
        now: The current time, from the app's (injectable) clock.
        tz: Zone for absolute times (None: the machine's local zone).
        width: Content width, so the badge can sit on the right of the title.
        stale: Redis is unreachable: the data is the last known, not current.
        timing: heartbeat thresholds and when the fleet was read.
        compact: only the title and the line that matters most (the heartbeat
            of a live instance, the agent of a ready one, the last state of
            an offline one), for terminals too short for full cards.
    """
    kind = view.kind
    badge = render.view_badge(view)
    if stale:
        badge = Content.styled(" STALE ", render.STALE_STYLE) + badge
    title = card_title(view)
    room = max(1, width - badge.cell_length - 1)
    title_content = Content.styled(title, "bold").truncate(room, ellipsis=True)
    gap = max(1, width - title_content.cell_length - badge.cell_length)
    lines = [title_content + Content(" " * gap) + badge]

    if kind is ViewKind.LIVE:
        body = _online_lines(view, now, width, timing)
        summary = 3  # the heartbeat and uptime
    elif kind is ViewKind.UNREADABLE:
        body = [
            _line(("status key unreadable:", render.OFFLINE_STYLE)),
            _line((render.label(view.error, "unknown problem", 200), render.ERROR)),
        ]
        summary = 0
    elif kind is ViewKind.READY:
        body = _ready_lines(view, now)
        summary = 0  # where a start would run
    else:
        body = _offline_lines(view, now)
        summary = -1  # the last known state, or "never seen online"
    if compact:
        return [*lines, body[summary]]
    lines += body
    if view.error and kind is not ViewKind.UNREADABLE:  # e.g. a key of the wrong type
        lines.append(_line(("! ", render.OFFLINE_STYLE), (render.label(view.error), render.ERROR)))
    return lines


def _online_lines(view: ExchangeView, now: datetime, width: int, timing: Timing) -> list[Content]:
    status = view.status
    assert status is not None
    ip = render.label(status.ip_address, "-", 45)
    if status.country_code:
        ip = f"{ip} ({render.label(status.country_code, '', 4)})"
    symbols = Content.styled(f" · {status.symbol_count} symbols", render.MUTED)
    admin = Content(render.label(status.admin_display_name or status.admin_email)).truncate(
        max(4, width - 6 - symbols.cell_length), ellipsis=True
    )
    beat = _line(("♥ ", render.MUTED), render.heartbeat(view, now, timing))
    look = heartbeat(view, now, timing.thresholds, timing.read_at)
    if look is None or not look.overdue:  # overdue: "no heartbeat for 32s" says it all
        if status.connection_state == "active":
            beat += Content.styled(" · ", render.MUTED) + Content.styled(
                render.uptime(view, now, timing), render.SUCCESS
            )
        else:
            state = status.connection_state.value
            since = render.in_state_for(state, status.last_state_change, now)
            beat += Content.styled(f" · {since}", render.MUTED)
    lines = [
        _field("host", render.label(status.hostname)),
        _field("ip", ip),
        _field("admin", admin + symbols),
        beat,
    ]
    if status.last_error:
        lines.append(
            _line(
                ("! ", render.OFFLINE_STYLE),
                (render.label(status.last_error, "", 120), render.ERROR),
                (f" · {render.age_text(status.last_error_at, now)}", render.MUTED),
            )
        )
    return lines


def _last_state(known: LastKnown, now: datetime, name: str) -> Content:
    """`state  stopped  2h 3m ago`: the state the activity stream last named."""
    when = render.parse_time(known.timestamp)
    return _line(
        (f"{name:<6}", render.MUTED),
        (render.label(known.state, "unknown", 16), render.state_colour(known.state)),
        (f"  {render.age_text(when, now)}", render.MUTED),
    )


def _offline_lines(view: ExchangeView, now: datetime) -> list[Content]:
    known = view.last_known
    seen = last_seen_text(view, now)
    if known is None:
        return [_line((seen or "never seen online", render.MUTED))]
    return [
        _line((seen or "last seen", render.MUTED)),
        _field("host", render.label(known.hostname)),
        _field("ip", render.label(known.ip)),
        _last_state(known, now, "state"),
    ]


def _ready_lines(view: ExchangeView, now: datetime) -> list[Content]:
    """No instance, but an agent: where a start would run, and since when it waits."""
    agents = view.agents
    first = agents[0]
    lines = [
        render.agent_line(first),
        _line((render.agent_state(first, now), render.state_colour(first.state))),
    ]
    if len(agents) > 1:
        lines.append(render.standby_line(agents))
    if view.last_known is not None:
        lines.append(_last_state(view.last_known, now, "last"))
    return lines


class InstanceCard(Widget, can_focus=True):
    """A focusable card for one exchange; the grid moves focus between cards.

    `show()` rebuilds the card's text (cheap) and compares it with what is on
    screen; only a card whose text or styles changed is repainted.
    """

    DEFAULT_CSS = """
    InstanceCard {
        width: 1fr;
        height: 8;
        padding: 0 1;
        border: round $border-blurred;
        text-wrap: nowrap;
        text-overflow: ellipsis;
        &.-offline { border: round $error 40%; color: $text-muted; }
        &.-ready { border: round $primary 60%; }
        &.-unreadable { border: round $error; }
        &.-stale { text-opacity: 70%; }
        &.-selected { border: round $accent; }
        &.-compact { height: 4; }
        &:focus { border: heavy $accent; background-tint: $foreground 5%; }
    }
    """

    stale: reactive[bool] = reactive(False)
    """Redis is unreachable: the card shows the last known data, marked STALE."""

    def __init__(self, view: ExchangeView, *, now: datetime, tz: tzinfo | None) -> None:
        super().__init__(id=f"card-{view.exchange_id}")
        self._view = view
        self._now = now
        self._tz = tz
        self._lines: list[Content] | None = None
        """What is on screen, line by line (None: not rendered yet, or must be rebuilt)."""
        self._content: Content | None = None
        self._content_width = 0
        self.timing = DEFAULT_TIMING
        """Heartbeat thresholds and when the fleet was read (set by the grid)."""
        self._update_classes()

    @property
    def view(self) -> ExchangeView:
        """The exchange this card shows."""
        return self._view

    @property
    def exchange_id(self) -> int:
        """The exchange slot of this card."""
        return self._view.exchange_id

    def _update_classes(self) -> None:
        kind = self._view.kind
        self.set_class(kind is ViewKind.OFFLINE, "-offline")
        self.set_class(kind is ViewKind.READY, "-ready")
        self.set_class(kind is ViewKind.UNREADABLE, "-unreadable")

    def _build(self, width: int) -> list[Content]:
        return card_lines(
            self._view,
            self._now,
            self._tz,
            width=width,
            stale=self.stale,
            timing=self.timing,
            compact=self.has_class("-compact"),
        )

    def set_compact(self, compact: bool) -> None:
        """Show two lines (short terminals) or all six."""
        if compact != self.has_class("-compact"):
            self.set_class(compact, "-compact")
            self._lines = None
            self.refresh(layout=True)

    def show(self, view: ExchangeView, now: datetime, tz: tzinfo | None) -> None:
        """Show a newer view (or the same one at a later time); repaint only what changed."""
        self._view = view
        self._now = now
        self._tz = tz
        self._update_classes()
        if self._lines is None:
            return  # never rendered (not yet laid out): render() builds it
        lines = self._build(self._content_width)
        old = self._lines
        if len(lines) != len(old):
            self._set_lines(lines)
            self.refresh()
            return
        changed = [y for y, (a, b) in enumerate(zip(old, lines, strict=True)) if not a.is_same(b)]
        if changed:
            self._set_lines(lines)
            width = self.content_size.width
            self.refresh(*(Region(0, y, width, 1) for y in changed))

    def _set_lines(self, lines: list[Content]) -> Content:
        self._lines = lines
        self._content = Content("\n").join(lines)
        return self._content

    def watch_stale(self, stale: bool) -> None:
        self.set_class(stale, "-stale")
        self._lines = None
        self.refresh()

    def render(self) -> Content:
        width = self.content_size.width or CARD_WIDTH - 4
        if self._lines is None or self._content is None or width != self._content_width:
            self._content_width = width
            return self._set_lines(self._build(width))
        return self._content
