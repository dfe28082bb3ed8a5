"""State timelines: which state an exchange was in, slice by slice, over a window.

The detail screen draws the last 24 hours of an exchange as a strip, the
table one hour per row, the cards one line; all of them ask this module what
each slice holds, so they can never disagree. The input is what the
exchange's two activity streams say (its shared stream's transitions and
errors, its Perseus stream's command audit) and what its status key says
now; no UI toolkit is imported.

How a moment's state is decided (docs/wire-format.md 1.2 and 1.3):

- A `state_transition` puts the exchange in its `toState` from the entry's
  time on. Errors and commands never change the state: they are marks (an
  error names the state its writer was in, and a refused claimant writes
  one into the holder's stream in its own state).
- **Offline.** A transition into `stopped` or `idle` ends a run: a Livermore
  server deletes its key right after `stopped`, a Perseus agent walks on to
  `idle` and releases its key there (`RELEASED_STATES` says the same of a
  vanished key). From then on the exchange counts as offline until a
  transition shows a holder again. Only the status key can say that a run
  goes on idle (an `Instance` that claims and holds its slot idle): while it
  is online, its `connectionState` since its `lastStateChange` is the state
  up to now, whatever the stream said last.
- **Lost.** A killed instance writes nothing; its key just expires. When the
  key is gone and the stream's last word is a running state, the exchange
  held that state until its last heartbeat this reader saw (the TTL only
  kept a dead holder listed) and is offline since; when no reader saw a
  heartbeat, nothing tells when it died, and the time since its last entry
  is unknown, not offline.
- **Left edge.** A state held across the window's start is known from the
  newest entry before the window (the window read returns it), else from the
  `fromState` of the first transition inside it, else from the status key
  when its `lastStateChange` is older than the window.
- **Unknown.** Before anything is known (a window read cut short by its
  page size, or a stream with no entries), a slice is unknown: drawn blank,
  never as offline.

Each slice shows the state that covered most of it (a later state wins a
tie), how many transitions it holds, and its errors and commands.
"""

from __future__ import annotations

import bisect
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from perseus_core.present.exchange import Tone, state_tone
from perseus_core.store.network import ExchangeView
from perseus_core.wire.models import (
    ActivityEntry,
    CommandEntry,
    ConnectionState,
    ErrorEntry,
    StateTransitionEntry,
)

ENDS_RUN: frozenset[str] = frozenset({ConnectionState.STOPPED.value, ConnectionState.IDLE.value})
"""Transitions into these states end a run: the key is deleted or released
right after (see the module docstring)."""

DAY = timedelta(hours=24)
"""The window of the detail screen's strip."""
HOUR = timedelta(hours=1)
"""The window of the table's and the cards' strips, and of the flapping count."""
EARLIEST = datetime.min.replace(tzinfo=UTC)
"""The start of a span known to have begun before anything read."""


class SliceKind(StrEnum):
    """What a slice of a timeline shows."""

    STATE = "state"
    """An instance held the slot, in `Slice.state`."""
    OFFLINE = "offline"
    """No instance held the slot (released, deleted, or lost)."""
    UNKNOWN = "unknown"
    """Nothing tells (before the first entry read, or since a silent loss)."""


@dataclass(frozen=True, slots=True)
class Span:
    """A stretch of time in one condition: `state` for `STATE` kinds."""

    start: datetime
    kind: SliceKind
    state: str | None = None


@dataclass(frozen=True, slots=True)
class Slice:
    """One cell of a strip: a stretch of the window and what it held."""

    start: datetime
    end: datetime
    kind: SliceKind
    state: str | None
    """The state that covered most of the slice (`STATE` only)."""
    transitions: int
    """Transitions that happened inside the slice."""
    entries: tuple[ActivityEntry, ...]
    """Every entry inside the slice, oldest first (what the cursor lists)."""

    @property
    def tone(self) -> Tone | None:
        """The state's tone (`state_tone`); None for offline and unknown slices."""
        return state_tone(self.state) if self.kind is SliceKind.STATE else None

    @property
    def errors(self) -> int:
        """Error entries inside the slice."""
        return sum(1 for entry in self.entries if isinstance(entry, ErrorEntry))

    @property
    def commands(self) -> int:
        """Command audit entries inside the slice."""
        return sum(1 for entry in self.entries if isinstance(entry, CommandEntry))


@dataclass(frozen=True, slots=True)
class Timeline:
    """The window [start, end) cut into equal slices, oldest first."""

    start: datetime
    end: datetime
    slices: tuple[Slice, ...]

    @property
    def transitions(self) -> int:
        """Transitions inside the window."""
        return sum(piece.transitions for piece in self.slices)

    def index_at(self, moment: datetime) -> int:
        """The slice holding `moment`, clamped to the window."""
        if not self.slices:
            return 0
        width = (self.end - self.start) / len(self.slices)
        index = int((moment - self.start) / width) if width else 0
        return min(len(self.slices) - 1, max(0, index))


@dataclass(frozen=True, slots=True)
class Presence:
    """What the status key says at the end of the window.

    Attributes:
        online: the key exists.
        state: a valid payload's `connectionState` (None: no key, or unreadable).
        since: that payload's `lastStateChange`.
        last_beat: for a key that is gone, the last heartbeat a reader saw
            while it was there (None: none was seen).
    """

    online: bool
    state: str | None = None
    since: datetime | None = None
    last_beat: datetime | None = None

    @classmethod
    def of_view(cls, view: ExchangeView) -> Presence:
        """What `view` says: its live state, or when its last heartbeat was seen."""
        status = view.status
        if status is not None:
            return cls(True, status.connection_state.value, status.last_state_change)
        if view.online:
            return cls(True)
        return cls(False, last_beat=view.seen_at)


def _moment(entry: ActivityEntry) -> datetime | None:
    return entry.moment


def spans(
    entries: Iterable[ActivityEntry], presence: Presence, *, known_from: datetime | None = None
) -> list[Span]:
    """The conditions the exchange went through, oldest first: each from its
    start until the next span's (see the module docstring for the rules).

    Args:
        entries: the exchange's entries, in any order, from both streams;
            entries without a time are left out.
        presence: what its status key says now.
        known_from: the time before which nothing is known (the oldest entry
            a window read cut short returned): unknown before it, the first
            transition's `fromState` from it on; None: that `fromState` held
            since ever.
    """
    timed = sorted(
        ((moment, entry) for entry in entries if (moment := _moment(entry)) is not None),
        key=lambda pair: (pair[0], pair[1].id),
    )
    result: list[Span] = [Span(EARLIEST, SliceKind.UNKNOWN)] if known_from is not None else []
    first_transition = True
    for moment, entry in timed:
        if not isinstance(entry, StateTransitionEntry):
            continue
        if known_from is not None and moment < known_from:
            continue  # not contiguous with what follows: something between was not read
        if first_transition and entry.from_state:
            kind, state = _condition(entry.from_state)
            result.append(Span(known_from or EARLIEST, kind, state))
        first_transition = False
        kind, state = _condition(entry.to_state)
        result.append(Span(moment, kind, state))
    return _apply_presence(result, presence)


def _condition(state: str) -> tuple[SliceKind, str | None]:
    """The condition a transition into `state` leaves the exchange in."""
    if state in ENDS_RUN:
        return SliceKind.OFFLINE, None
    return SliceKind.STATE, state


def _apply_presence(result: list[Span], presence: Presence) -> list[Span]:
    """End the spans with what the status key says now."""
    last = result[-1] if result else None
    if presence.online:
        if presence.state is None:  # alive, unreadable: the stream's word stands if it ran
            if last is None or last.kind is not SliceKind.STATE:
                result.append(Span(_after(last, None) or EARLIEST, SliceKind.UNKNOWN))
            return result
        since = presence.since
        if last is not None and last.kind is SliceKind.STATE and last.state == presence.state:
            return result
        start = _after(last, since)
        result.append(Span(EARLIEST if start is None else start, SliceKind.STATE, presence.state))
        return result
    if last is not None and last.kind is SliceKind.STATE:
        beat = presence.last_beat
        if beat is not None and beat > last.start:
            result.append(Span(beat, SliceKind.OFFLINE))
        else:
            result.append(Span(last.start, SliceKind.UNKNOWN))
    return result


def _after(last: Span | None, since: datetime | None) -> datetime | None:
    """When the status key's word takes over: its `lastStateChange`, but not
    before the stream's last span began."""
    if last is None:
        return since
    if since is None:
        return last.start
    return max(since, last.start)


def build(
    entries: Iterable[ActivityEntry],
    presence: Presence,
    *,
    end: datetime,
    span: timedelta,
    cells: int,
    known_from: datetime | None = None,
) -> Timeline:
    """The timeline of the window [end - span, end) in `cells` equal slices.

    Args:
        entries: the exchange's entries (see `spans`), from before the window
            as well: the newest one before it tells the state at its start.
        presence: what the status key says at `end` (`Presence.of_view`).
        end: the window's end (the app's clock: now).
        span: the window's length.
        cells: how many slices (at least 1).
        known_from: see `spans`.
    """
    cells = max(1, cells)
    start = end - span
    listed = list(entries)
    changes = spans(listed, presence, known_from=known_from)
    width = span / cells
    bounds = [start + width * index for index in range(cells)] + [end]
    by_slice: list[list[ActivityEntry]] = [[] for _ in range(cells)]
    transitions = [0] * cells
    for entry in sorted(listed, key=lambda item: (_moment(item) or start, item.id)):
        moment = _moment(entry)
        if moment is None or moment < start or moment >= end:
            continue
        index = min(cells - 1, int((moment - start) / width))
        by_slice[index].append(entry)
        if isinstance(entry, StateTransitionEntry):
            transitions[index] += 1
    starts = [change.start for change in changes]
    slices = []
    for index in range(cells):
        low, high = bounds[index], bounds[index + 1]
        kind, state = _dominant(changes, starts, low, high)
        slices.append(Slice(low, high, kind, state, transitions[index], tuple(by_slice[index])))
    return Timeline(start, end, tuple(slices))


def _dominant(
    changes: Sequence[Span], starts: Sequence[datetime], low: datetime, high: datetime
) -> tuple[SliceKind, str | None]:
    """The condition that covered most of [low, high); a later one wins a tie."""
    first = bisect.bisect_right(starts, low) - 1
    best: tuple[timedelta, int] | None = None
    choice: tuple[SliceKind, str | None] = (SliceKind.UNKNOWN, None)
    index = max(first, 0)
    if first < 0:  # before the first span: unknown, for as long as it lasts
        upto = starts[0] if starts else high
        covered = min(upto, high) - low
        best = (covered, -1)
    while index < len(changes) and changes[index].start < high:
        change = changes[index]
        begin = max(change.start, low)
        until = changes[index + 1].start if index + 1 < len(changes) else high
        covered = min(until, high) - begin
        if covered > timedelta(0) and (best is None or (covered, index) >= best):
            best = (covered, index)
            choice = (change.kind, change.state)
        index += 1
    return choice


def transitions_since(entries: Iterable[ActivityEntry], moment: datetime) -> int:
    """How many transitions happened at or after `moment` (the flapping count)."""
    return sum(
        1
        for entry in entries
        if isinstance(entry, StateTransitionEntry)
        and (at := _moment(entry)) is not None
        and at >= moment
    )


KEPT_PER_EXCHANGE = 2_000
"""Entries kept per exchange at most: past this the oldest go, and the time
before the oldest kept becomes unknown (memory stays bounded whatever an
exchange writes)."""

KEPT_IN_FLEET = 20_000
"""Entries kept across the whole fleet, about 1.6 KB each with their model
and their place in the book: a `TimelineBook` of many exchanges shares this
out (`TimelineBook.limit`), so the dashboard of a 10,000-exchange flood holds
about 30 MB of history, not gigabytes. An exchange past its share shows the time before
its oldest kept entry as unknown, as it does past `KEPT_PER_EXCHANGE`."""

KEPT_AT_LEAST = 3
"""The smallest share: enough for the newest transition and what followed it."""


class History:
    """The entries one exchange's timelines are built from: those of the
    window, and the newest transition before it (the state across its start).

    Loaded once from a window read (`load`), then kept up to date with the
    live tail's entries (`add`); entries that arrive before the read lands
    are kept and merged with it, each entry once.

    Every entry's place in time is worked out once, when it is kept (its
    timestamp parsed), and the last timeline built for each window shape is
    kept until the entries, the status or the window change: the dashboard
    asks for every row's strip on each poll and each clock tick, and a strip
    only changes when one of those does.
    """

    __slots__ = ("_built", "_changes", "_entries", "_orders", "_seen", "known_from", "loaded")

    def __init__(self) -> None:
        self._entries: list[ActivityEntry] = []
        self._orders: list[tuple[datetime, str, str]] = []
        """Each entry's (time, stream ID, stream key), in the same positions: what
        the entries are ordered by, bisected without a key function."""
        self._seen: set[tuple[str, str]] = set()
        self._changes = 0
        """Moves whenever the entries kept change (the built timelines are then stale)."""
        self._built: dict[tuple[timedelta, int], tuple[tuple[object, ...], Timeline]] = {}
        """The last timeline built per (span, cells), with what it was built from."""
        self.loaded = False
        """A window read has filled it (entries added before are the tail's only)."""
        self.known_from: datetime | None = None
        """Nothing before this is known for sure: the window read was cut
        short by its page size, or old entries were dropped (`KEPT_PER_EXCHANGE`)."""

    @property
    def entries(self) -> Sequence[ActivityEntry]:
        """The entries kept, oldest first."""
        return self._entries

    def add(self, entry: ActivityEntry, limit: int = KEPT_PER_EXCHANGE) -> bool:
        """Keep one entry (once; an entry without a time is left out), and
        at most `limit` in all, the newest. Returns whether it was new."""
        mark = (entry.key, entry.id)
        moment = _moment(entry)
        if moment is None or (entry.id and mark in self._seen):
            return False
        if entry.id:
            self._seen.add(mark)
        order = (moment, entry.id, entry.key)
        if not self._orders or self._orders[-1] <= order:
            self._entries.append(entry)  # the tail's usual case
            self._orders.append(order)
        else:
            index = bisect.bisect_right(self._orders, order)
            self._entries.insert(index, entry)
            self._orders.insert(index, order)
        if len(self._entries) > limit:
            self._drop(len(self._entries) - limit)
            self.known_from = self._orders[0][0]
        self._changes += 1
        return True

    def _drop(self, count: int) -> None:
        """Forget the `count` oldest entries."""
        dropped = self._entries[:count]
        del self._entries[:count]
        del self._orders[:count]
        self._seen.difference_update((old.key, old.id) for old in dropped)
        self._changes += 1

    def load(
        self,
        entries: Iterable[ActivityEntry],
        *,
        known_from: datetime | None,
        limit: int = KEPT_PER_EXCHANGE,
    ) -> None:
        """Merge a window read's entries with what the tail added meanwhile."""
        for entry in entries:
            self.add(entry, limit)
        if known_from is not None and (self.known_from is None or known_from > self.known_from):
            self.known_from = known_from
        self.loaded = True

    def _newest_transition_before(self, cut: int) -> int:
        """The index of the newest transition before index `cut` (`cut` if none)."""
        entries = self._entries
        return next(
            (
                index
                for index in range(cut - 1, -1, -1)
                if isinstance(entries[index], StateTransitionEntry)
            ),
            cut,
        )

    def trim(self, start: datetime) -> None:
        """Forget entries before `start`, except the newest transition among them."""
        if not self._orders or self._orders[0][0] >= start:
            return  # the usual case: nothing is that old (the app trims on every read)
        cut = bisect.bisect_left(self._orders, (start, "", ""))
        keep = self._newest_transition_before(cut)
        if keep:
            self._drop(keep)

    def since(self, moment: datetime) -> Sequence[ActivityEntry]:
        """The entries at or after `moment`, oldest first."""
        return self._entries[bisect.bisect_left(self._orders, (moment, "", "")) :]

    def timeline(
        self, presence: Presence, *, end: datetime, span: timedelta, cells: int
    ) -> Timeline:
        """This exchange's timeline over [end - span, end) (see `build`); the
        same object again while nothing it is built from changed."""
        basis = (self._changes, self.known_from, presence, end)
        shape = (span, cells)
        built = self._built.get(shape)
        if built is not None and built[0] == basis:
            return built[1]
        start = end - span
        edge = self._newest_transition_before(bisect.bisect_left(self._orders, (start, "", "")))
        timeline = build(
            self._entries[edge:],
            presence,
            end=end,
            span=span,
            cells=cells,
            known_from=self.known_from,
        )
        self._built[shape] = (basis, timeline)
        return timeline

    def transitions_since(self, moment: datetime) -> int:
        """How many transitions happened at or after `moment`."""
        return sum(1 for entry in self.since(moment) if isinstance(entry, StateTransitionEntry))


class TimelineBook:
    """Every exchange's `History`, by stream name (the lower-cased exchange name)."""

    def __init__(self) -> None:
        self._histories: dict[str, History] = {}
        self.version = 0
        """Moves on every change: a surface caches what it built from the book until it does."""
        self._longer: dict[str, History] = {}
        """The histories of more than `_longer_than` entries (the last flapping
        threshold asked): only they can be flapping, and the header asks after
        every feed batch, so they are kept as entries come and go instead of
        looked for among every exchange's."""
        self._longer_than: int | None = None

    def history(self, name: str) -> History | None:
        """The history of one exchange, if any entry or read was kept for it."""
        return self._histories.get(name.lower())

    def _of(self, name: str) -> History:
        key = name.lower()
        found = self._histories.get(key)
        if found is None:
            found = self._histories[key] = History()
        return found

    @property
    def limit(self) -> int:
        """Entries each exchange may keep: its share of `KEPT_IN_FLEET`. A
        history over a share that shrank (more exchanges came) sheds its
        oldest at its next entry."""
        share = KEPT_IN_FLEET // max(1, len(self._histories))
        return max(KEPT_AT_LEAST, min(KEPT_PER_EXCHANGE, share))

    def add(self, entries: Iterable[ActivityEntry]) -> None:
        """Live entries (any exchanges, oldest first)."""
        changed = False
        limit = self.limit
        touched: set[str] = set()
        for entry in entries:
            if entry.stream:
                touched.add(entry.stream)
                changed = self._of(entry.stream).add(entry, limit) or changed
        if changed:
            self.version += 1
            for name in touched:
                self._sized(name.lower())

    def load(
        self, name: str, entries: Iterable[ActivityEntry], *, known_from: datetime | None
    ) -> None:
        """The result of one exchange's window read."""
        history = self._of(name)
        history.load(entries, known_from=known_from, limit=self.limit)
        self.version += 1
        self._sized(name.lower())

    def _sized(self, key: str) -> None:
        """Keep `_longer` right after the history of `key` changed."""
        if self._longer_than is None:
            return
        history = self._histories[key]
        if len(history.entries) > self._longer_than:
            self._longer[key] = history
        else:
            self._longer.pop(key, None)

    def unloaded(self, names: Iterable[str]) -> list[str]:
        """The names whose history no window read has filled yet."""
        return [name for name in names if (found := self.history(name)) is None or not found.loaded]

    def reload_all(self) -> None:
        """Every history must be read again (the tail restarted: it may have missed entries)."""
        for history in self._histories.values():
            history.loaded = False

    def trim(self, start: datetime) -> None:
        """Forget what is older than every window (`History.trim`)."""
        for history in self._histories.values():
            history.trim(start)
        longer_than = self._longer_than
        if longer_than is not None:  # trimmed histories only shrink
            self._longer = {k: h for k, h in self._longer.items() if len(h.entries) > longer_than}

    def timeline(
        self, name: str, presence: Presence, *, end: datetime, span: timedelta, cells: int
    ) -> Timeline:
        """One exchange's timeline; all unknown when nothing was kept for it."""
        found = self.history(name)
        if found is None:
            found = History()
            found.known_from = end  # nothing is known
        return found.timeline(presence, end=end, span=span, cells=cells)

    def flapping(self, names: Collection[str], now: datetime, threshold: int) -> int:
        """How many of the exchanges `names` (stream names, lower case) had
        more than `threshold` transitions in the hour before `now`.

        Only histories of more than `threshold` entries can, and those are
        kept apart as they change (`_longer`): the header asks after every
        feed batch, and a walk of a 10,000-exchange fleet's histories cost
        several milliseconds each time.
        """
        if self._longer_than != threshold:
            self._longer_than = threshold
            self._longer = {
                key: found
                for key, found in self._histories.items()
                if len(found.entries) > threshold
            }
        since = now - HOUR
        return sum(
            1
            for key, found in self._longer.items()
            if key in names and found.transitions_since(since) > threshold
        )
