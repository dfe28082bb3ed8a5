"""Heartbeat-age traces: how old each exchange's heartbeat was, over the time a
reader has been watching, in bounded memory.

The dashboard follows every exchange's heartbeat and draws its age as a
sparkline beside the thresholds it is judged by. A trace holds a fixed
number of slots; each slot keeps the worst (largest) age seen in its stretch
of time. When the watch outgrows the slots, pairs of slots are merged and
each then covers twice the time: a trace costs the same after a minute as
after a month, and a late heartbeat is never averaged away.

Between two reads of an exchange its heartbeat age only grows, by the
second, so a trace is told the heartbeat moment when a read brings a new one
(`AgeTrace.follow`) and writes the ages in when it is drawn (`catch_up`):
the work follows the reads and the rows on screen, not the fleet once a
second (at 10,000 exchanges that was 30 to 50 ms of every second).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from datetime import datetime, timedelta

from perseus_core.present.exchange import beat_at
from perseus_core.store.network import ExchangeView

TRACE_SLOTS = 120
"""Slots per trace: enough for the widest sparkline the detail screen draws."""
FIRST_STEP_S = 1.0
"""What one slot covers at first (the dashboard records once a second)."""
SAME_BEAT_S = 0.25
"""How far apart two reads may date one heartbeat: a PTTL-dated moment moves
with each read's own timing (milliseconds, tens under load), and following
every such move would write each exchange's slots in at every full read."""
OFFLINE = -1.0
"""A slot in which the exchange was only seen without a status (no heartbeat to age)."""
_EMPTY = math.nan


class AgeTrace:
    """One exchange's heartbeat ages since `origin`, in `TRACE_SLOTS` slots.

    Slot values: the largest age (s) recorded in the slot; `OFFLINE` when the
    exchange had no status whenever it was recorded there; NaN when nothing
    was recorded (the reader was not watching, or the slot lies ahead).
    """

    __slots__ = ("_beat", "_followed_to", "_last", "_origin", "_step_s", "_values")

    def __init__(self, origin: datetime, *, slots: int = TRACE_SLOTS) -> None:
        self._origin = origin
        self._step_s = FIRST_STEP_S
        self._values = array("d", [_EMPTY]) * max(2, slots)
        self._last = -1
        """The newest slot recorded (-1: none)."""
        self._beat: datetime | None = None
        """The heartbeat followed (None: the exchange had no status)."""
        self._followed_to: datetime | None = None
        """Up to when the followed heartbeat's ages are written in (None: none followed)."""

    @property
    def step_s(self) -> float:
        """What one slot covers now (doubles each time the trace is merged)."""
        return self._step_s

    @property
    def origin(self) -> datetime:
        """When the trace began."""
        return self._origin

    def record(self, at: datetime, age_s: float | None) -> None:
        """Note the heartbeat age at `at` (None: no status, offline). A moment
        before the origin is ignored (a clock that stepped back)."""
        index = self._index(at)
        if index is not None:
            self._put(index, age_s)

    def follows(self, beat: datetime | None) -> bool:
        """Whether `beat` is the heartbeat followed already (`SAME_BEAT_S`)."""
        followed = self._beat
        if self._followed_to is None:
            return False
        if beat is None or followed is None:
            return beat is None and followed is None
        return abs((beat - followed).total_seconds()) < SAME_BEAT_S

    def follow(self, at: datetime, beat: datetime | None) -> None:
        """From `at` on, the exchange's last heartbeat was at `beat` (None: it
        has no status). The time since the previous `follow` is written in
        first, with the heartbeat followed then, up to the new heartbeat: the
        old one's age stopped growing when the new one came, not when it was
        read."""
        self.catch_up(at if beat is None else min(at, beat))
        self._beat = beat
        if self._followed_to is None:  # the first heartbeat followed
            self._followed_to = at
        self.record(at, _age_s(at, beat))
        self.catch_up(at)

    def catch_up(self, now: datetime) -> None:
        """Write the followed heartbeat's ages in up to `now`: each slot gets
        the age at its end (or at `now`), the worst it reached there."""
        since = self._followed_to
        if since is None or now <= since:
            return
        last = self._index(now)  # merges first, when `now` is past the slots
        if last is None:
            return
        step = timedelta(seconds=self._step_s)
        first = max(0, int((since - self._origin) / step))
        for index in range(first, last + 1):
            if index > first and self._origin + index * step >= now:
                break  # `now` only touches this slot's start: nothing of it has passed
            end = self._origin + (index + 1) * step
            self._put(index, _age_s(min(end, now), self._beat))
        self._followed_to = now

    def _index(self, at: datetime) -> int | None:
        """The slot of `at`, merging until it fits; None before the origin."""
        offset = (at - self._origin).total_seconds()
        if offset < 0:
            return None
        index = int(offset / self._step_s)
        while index >= len(self._values):
            self._merge()
            index = int(offset / self._step_s)
        return index

    def _put(self, index: int, age_s: float | None) -> None:
        value = OFFLINE if age_s is None else max(0.0, age_s)
        old = self._values[index]
        if math.isnan(old) or value > old:
            self._values[index] = value
        self._last = max(self._last, index)

    def _merge(self) -> None:
        """Halve the resolution: slot i takes the worst of slots 2i and 2i+1."""
        values = self._values
        size = len(values)
        merged = array("d", [_EMPTY]) * size
        for index in range(size // 2):
            merged[index] = _worst(values[2 * index], values[2 * index + 1])
        self._values = merged
        self._step_s *= 2
        self._last = self._last // 2

    def values(self) -> list[float]:
        """The slots from the origin to the newest recorded (see the class docstring)."""
        return list(self._values[: self._last + 1])


def _age_s(at: datetime, beat: datetime | None) -> float | None:
    return None if beat is None else max(0.0, (at - beat).total_seconds())


def _worst(a: float, b: float) -> float:
    if math.isnan(a):
        return b
    if math.isnan(b):
        return a
    return max(a, b)


def resample(values: list[float], width: int) -> list[float]:
    """`values` in at most `width` columns, each the worst of the slots it covers
    (the newest slots stay at the right edge)."""
    if width < 1:
        return []
    if len(values) <= width:
        return values
    size = len(values)
    columns = []
    for column in range(width):
        low = column * size // width
        high = max(low + 1, (column + 1) * size // width)
        worst = _EMPTY
        for value in values[low:high]:
            worst = _worst(worst, value)
        columns.append(worst)
    return columns


class TraceBook:
    """Every exchange's `AgeTrace`, by exchange id."""

    def __init__(self, *, slots: int = TRACE_SLOTS) -> None:
        self._traces: dict[int, AgeTrace] = {}
        self._slots = slots

    def trace(self, exchange_id: int, now: datetime | None = None) -> AgeTrace | None:
        """The trace of one exchange, once it was recorded; with `now`, its
        followed heartbeat written in up to then (`AgeTrace.catch_up`)."""
        trace = self._traces.get(exchange_id)
        if trace is not None and now is not None:
            trace.catch_up(now)
        return trace

    def record(self, views: Iterable[ExchangeView], now: datetime) -> None:
        """Follow each view's heartbeat from `now` on (the views just read);
        a heartbeat followed already goes on (its ages are written in when drawn)."""
        for view in views:
            beat = beat_at(view)
            trace = self._traces.get(view.exchange_id)
            if trace is None:
                trace = self._traces[view.exchange_id] = AgeTrace(now, slots=self._slots)
            elif trace.follows(beat):
                continue
            trace.follow(now, beat)

    def note(self, exchange_id: int, at: datetime, age_s: float | None) -> None:
        """Note one exchange's heartbeat age at `at` (None: it had no status);
        its trace begins at the first moment noted."""
        trace = self._traces.get(exchange_id)
        if trace is None:
            trace = self._traces[exchange_id] = AgeTrace(at, slots=self._slots)
        trace.record(at, age_s)

    def forget(self, keep: Iterable[int]) -> None:
        """Drop the traces of exchanges no longer listed."""
        wanted = set(keep)
        for exchange_id in [i for i in self._traces if i not in wanted]:
            del self._traces[exchange_id]
