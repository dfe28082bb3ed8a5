"""Heartbeat-age traces: how old each exchange's heartbeat was, over the time a
reader has been watching, in bounded memory.

The dashboard records every exchange's heartbeat age each second and draws
it as a sparkline beside the thresholds it is judged by. A trace holds a
fixed number of slots; each slot keeps the worst (largest) age seen in its
stretch of time. When the watch outgrows the slots, pairs of slots are
merged and each then covers twice the time: a trace costs the same after a
minute as after a month, and a late heartbeat is never averaged away.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterable
from datetime import datetime

from perseus_core.present.exchange import heartbeat_age_s
from perseus_core.store.network import ExchangeView

TRACE_SLOTS = 120
"""Slots per trace: enough for the widest sparkline the detail screen draws."""
FIRST_STEP_S = 1.0
"""What one slot covers at first (the dashboard records once a second)."""
OFFLINE = -1.0
"""A slot in which the exchange was only seen without a status (no heartbeat to age)."""
_EMPTY = math.nan


class AgeTrace:
    """One exchange's heartbeat ages since `origin`, in `TRACE_SLOTS` slots.

    Slot values: the largest age (s) recorded in the slot; `OFFLINE` when the
    exchange had no status whenever it was recorded there; NaN when nothing
    was recorded (the reader was not watching, or the slot lies ahead).
    """

    __slots__ = ("_last", "_origin", "_step_s", "_values")

    def __init__(self, origin: datetime, *, slots: int = TRACE_SLOTS) -> None:
        self._origin = origin
        self._step_s = FIRST_STEP_S
        self._values = array("d", [_EMPTY]) * max(2, slots)
        self._last = -1
        """The newest slot recorded (-1: none)."""

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
        offset = (at - self._origin).total_seconds()
        if offset < 0:
            return
        index = int(offset / self._step_s)
        while index >= len(self._values):
            self._merge()
            index = int(offset / self._step_s)
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

    def trace(self, exchange_id: int) -> AgeTrace | None:
        """The trace of one exchange, once it was recorded."""
        return self._traces.get(exchange_id)

    def record(self, views: Iterable[ExchangeView], now: datetime) -> None:
        """Note every view's heartbeat age at `now`."""
        for view in views:
            self.note(view.exchange_id, now, heartbeat_age_s(view, now))

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
