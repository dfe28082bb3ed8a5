"""The fleet as the dashboard last showed it: the one value its screens watch.

The app replaces it on every read (or marks it stale when Redis is lost);
each screen watches it and hands what it shows to its own widgets.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from perseus_core.present.exchange import Timing, title
from perseus_core.present.timeline import TimelineBook
from perseus_core.present.trace import TraceBook
from perseus_core.store.network import ExchangeView, ViewKind


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


def _counted_as(view: ExchangeView) -> str:
    """What a view adds to the header's counts: its state when it is live,
    else its kind (`unreadable`, `ready`, `offline`; no state is named so)."""
    status = view.status
    if status is not None:
        return status.connection_state.value
    return view.kind.value


class FleetCounts:
    """What the header counts in the fleet: the state of each online exchange,
    how many offline ones an agent would start, and every stream name (for
    the flapping count).

    Kept up to date one exchange at a time (`update`): a partial re-read of a
    few exchanges of 10,000 recounts those few, where counting the fleet
    again cost tens of milliseconds on every event.
    """

    __slots__ = ("_of", "_tally", "names", "views")

    def __init__(self, views: Mapping[int, ExchangeView]) -> None:
        self.views = views
        """The views counted (the app's current mapping)."""
        self._of: dict[int, tuple[str, str]] = {
            exchange_id: (_counted_as(view), view.exchange_name.lower())
            for exchange_id, view in views.items()
        }
        """What each exchange adds: (`_counted_as`, its stream name)."""
        parts = self._of.values()
        self._tally: Counter[str] = Counter(counted for counted, _name in parts)
        self.names: Counter[str] = Counter(name for _counted, name in parts)
        """Every stream name (lower case), with how many views have it."""

    @property
    def online(self) -> dict[str, int]:
        """How many online exchanges are in each state (`unreadable`: no valid status)."""
        return {
            key: count
            for key, count in self._tally.items()
            if count and key not in (ViewKind.READY.value, ViewKind.OFFLINE.value)
        }

    @property
    def ready(self) -> int:
        """Offline exchanges an agent would start."""
        return self._tally[ViewKind.READY.value]

    def update(
        self, views: Mapping[int, ExchangeView], changed: Mapping[int, ExchangeView]
    ) -> None:
        """`views` replace the views counted, differing only in `changed` (ids of both)."""
        for exchange_id, view in changed.items():
            self._remove(exchange_id)
            self._add(exchange_id, view)
        self.views = views

    def _add(self, exchange_id: int, view: ExchangeView) -> None:
        part = (_counted_as(view), view.exchange_name.lower())
        self._of[exchange_id] = part
        self._tally[part[0]] += 1
        self.names[part[1]] += 1

    def _remove(self, exchange_id: int) -> None:
        if exchange_id not in self._of:
            return
        counted, name = self._of.pop(exchange_id)
        self._tally[counted] -= 1
        self.names[name] -= 1
        if not self.names[name]:
            del self.names[name]
