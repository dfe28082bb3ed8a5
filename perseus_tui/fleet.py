"""The fleet as the dashboard last showed it: the one value its screens watch.

The app replaces it on every read (or marks it stale when Redis is lost);
each screen watches it and hands what it shows to its own widgets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from perseus_core.present.exchange import Timing, title
from perseus_core.present.timeline import TimelineBook
from perseus_core.present.trace import TraceBook
from perseus_core.store.network import ExchangeView


@dataclass(frozen=True, eq=False)
class FleetState:
    """The fleet as last shown: a new object on every change (compared by identity,
    since comparing 10,000 views would cost more than showing them)."""

    views: Mapping[int, ExchangeView] = field(default_factory=dict)
    """Every listed exchange, by id."""
    ordered: Sequence[ExchangeView] = ()
    """The same views sorted by id, as the cards and the table list them."""
    now: datetime | None = None
    """When they were read (by the app's clock)."""
    stale: bool = False
    """Redis is unreachable: these are the last known views."""
    loaded: bool = False
    """Redis answered at least once (an empty fleet is then really empty)."""
    timing: Timing = Timing()
    """This dashboard's heartbeat timing (each holder is judged by its own:
    `Timing.thresholds`) and when the whole fleet was last read (a
    partial re-read keeps it: a view read since then is only fresher than
    this says)."""
    timelines: TimelineBook = field(default_factory=TimelineBook)
    """Every exchange's entries for its state timelines (one object for the
    dashboard's life: the app keeps it up to date, surfaces only read it)."""
    traces: TraceBook = field(default_factory=TraceBook)
    """Every exchange's heartbeat ages since the dashboard began watching (the same way)."""

    def label(self, exchange_id: int) -> str:
        """A safe, human name for an exchange: `Coinbase #1` (`exchange #7` if unlisted)."""
        view = self.views.get(exchange_id)
        return title(view) if view is not None else f"exchange #{exchange_id}"
