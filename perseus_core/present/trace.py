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
the work follows the heartbeats and the rows on screen, not a pass over the
whole fleet every second.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from datetime import datetime

from perseus_core.present.exchange import beat_at
from perseus_core.store.network import ExchangeView

TRACE_SLOTS = 120
"""Slots per trace: enough for the widest sparkline the detail screen draws."""
FIRST_STEP_S = 1.0
"""What one slot covers at first."""
SAME_BEAT_S = 0.25
"""How far apart two reads may date one heartbeat: a PTTL-dated moment moves
with each read's own timing (milliseconds, tens under load), and following
every such move would write each exchange's slots in at every full read."""
PENDING_MAX = 16
"""Heartbeats a trace keeps unwritten (`AgeTrace._pending`) before it writes them in."""
OFFLINE = -1.0
"""A slot in which the exchange was only seen without a status (no heartbeat to age)."""
_EMPTY = math.nan


class AgeTrace:
    """One exchange's heartbeat ages since `origin`, in `TRACE_SLOTS` slots.

    Slot values: the largest age (s) recorded in the slot; `OFFLINE` when the
    exchange had no status whenever it was recorded there; NaN when nothing
    was recorded (the reader was not watching, or the slot lies ahead).
    """

    __slots__ = (
        "_beat",
        "_followed_to",
        "_last",
        "_origin",
        "_origin_s",
        "_pending",
        "_step_s",
        "_values",
    )

    def __init__(self, origin: datetime, *, slots: int = TRACE_SLOTS) -> None:
        self._origin = origin
        self._origin_s = origin.timestamp()
        self._step_s = FIRST_STEP_S
        self._values = array("d", [_EMPTY]) * max(2, slots)
        self._last = -1
        """The newest slot recorded (-1: none)."""
        self._beat: float | None = None
        """The heartbeat followed, in seconds from the origin (None: the
        exchange had no status). Times are kept as such offsets, and taken
        as epoch seconds (`follow_s`): a fleet's full read follows every
        exchange, and datetime arithmetic cost several times as much."""
        self._followed_to: float | None = None
        """Up to when the followed heartbeats are accounted for, in seconds
        from the origin (None: none followed)."""
        self._pending: list[tuple[float, float, float | None]] = []
        """Stretches (from, to, heartbeat) of earlier heartbeats not yet
        written into the slots: a full read follows every exchange whose
        heartbeat moved, and writing each one's slots then would cost the
        read in proportion to the time since the last; they are written when
        the trace is drawn, or once `PENDING_MAX` pile up."""

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
        self._flush()
        offset = at.timestamp() - self._origin_s
        if offset >= 0:
            self._put(self._slot(offset), OFFLINE if age_s is None else max(0.0, age_s))

    def follows(self, beat: datetime | None) -> bool:
        """Whether `beat` is the heartbeat followed already (`SAME_BEAT_S`)."""
        return self.follows_s(None if beat is None else beat.timestamp())

    def follow(self, at: datetime, beat: datetime | None) -> None:
        """From `at` on, the exchange's last heartbeat was at `beat` (None: it
        has no status). The heartbeat followed until then counts up to the new
        one: its age stopped growing when the new one came, not when it was
        read."""
        self.follow_s(at.timestamp(), None if beat is None else beat.timestamp())

    def follows_s(self, beat_s: float | None) -> bool:
        """`follows`, the heartbeat in epoch seconds."""
        if self._followed_to is None:
            return False
        followed = self._beat
        if beat_s is None or followed is None:
            return beat_s is None and followed is None
        return abs(beat_s - self._origin_s - followed) < SAME_BEAT_S

    def follow_s(self, at_s: float, beat_s: float | None) -> None:
        """`follow`, the moments in epoch seconds."""
        now = at_s - self._origin_s
        new = None if beat_s is None else beat_s - self._origin_s
        since = self._followed_to
        if since is None:  # the first heartbeat followed
            if now >= 0:
                self._followed_to = now
                self._put(self._slot(now), OFFLINE if new is None else max(0.0, now - new))
            self._beat = new
            return
        cut = now if new is None else min(now, new)
        if cut > since:
            self._pending.append((since, cut, self._beat))
            self._followed_to = cut
            if len(self._pending) >= PENDING_MAX:
                self._flush()
        self._beat = new

    def catch_up(self, now: datetime) -> None:
        """Write the followed heartbeats' ages in up to `now`: each slot gets
        the age at its end (or at `now`), the worst it reached there."""
        self._flush()
        since = self._followed_to
        offset = now.timestamp() - self._origin_s
        if since is not None and offset > since:
            self._fill(since, offset, self._beat)
            self._followed_to = offset

    def values(self) -> list[float]:
        """The slots from the origin to the newest recorded (see the class docstring)."""
        self._flush()
        return list(self._values[: self._last + 1])

    def _flush(self) -> None:
        """Write the pending stretches in, oldest first."""
        pending, self._pending = self._pending, []
        for since, until, beat in pending:
            self._fill(since, until, beat)

    def _fill(self, since: float, now: float, beat: float | None) -> None:
        """Write in the ages of the heartbeat `beat` from `since` to `now`."""
        if now <= since or now < 0:
            return
        last = self._slot(now)  # merges first, when `now` is past the slots
        step, values = self._step_s, self._values
        first = max(0, int(since / step))
        if last > first and last * step >= now:
            last -= 1  # `now` only touches that slot's start: nothing of it has passed
        self._last = max(self._last, last)
        if first == last:  # the usual case (slots grow as the watch does): no lists
            age = OFFLINE if beat is None else max(0.0, now - beat)
            old = values[first]
            if old != old or age > old:  # NaN: nothing recorded there yet
                values[first] = age
            return
        if beat is None:
            ages = [OFFLINE] * (last - first + 1)
        else:  # each slot's worst: the age at its end, the last one's at `now`
            ages = [end * step - beat for end in range(first + 1, last + 1)]
            ages.append(now - beat)
            if beat > first * step:  # a heartbeat dated after a slot began (skewed clocks)
                ages = [max(0.0, age) for age in ages]
        # `max(age, old)` is the age where nothing was recorded (NaN compares false).
        values[first : last + 1] = array("d", map(max, ages, values[first : last + 1]))

    def _slot(self, offset: float) -> int:
        """The slot of `offset` (not negative), merging until it fits."""
        index = int(offset / self._step_s)
        while index >= len(self._values):
            self._merge()
            index = int(offset / self._step_s)
        return index

    def _put(self, index: int, value: float) -> None:
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
        now_s = now.timestamp()
        for view in views:
            beat = beat_at(view)
            beat_s = None if beat is None else beat.timestamp()
            trace = self._traces.get(view.exchange_id)
            if trace is None:
                trace = self._traces[view.exchange_id] = AgeTrace(now, slots=self._slots)
            elif trace.follows_s(beat_s):
                continue
            trace.follow_s(now_s, beat_s)

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
