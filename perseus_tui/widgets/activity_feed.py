"""The activity feed: newest entry on top, bounded, pausable, filterable.

A RichLog can only append at the bottom, and a feed that shows the newest
first must insert at the top. This widget is a line-API `ScrollView` over a
deque it controls: inserting at the top is O(1), the bound drops the oldest
entry, and only the lines on screen are ever rendered (each one cached), so a
burst of thousands of entries a second costs a few deque operations per entry
and one repaint per batch.

The feed is in time order, whatever order entries arrive in: an exchange has
two streams, the live tail reads many streams per call (each stream's entries
together), and the dashboard's own observations (`perseus_tui.observed`) are
made between reads. Each entry is placed by its `moment` (its timestamp, else
its stream ID's time; the time of an observation is when it was observed),
newest on top; entries of one moment keep the order they arrived in. Almost
every entry is the newest and goes on top at once; a late one is walked down
to its place.
"""

from __future__ import annotations

import bisect
import heapq
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import tzinfo

from textual.cache import LRUCache
from textual.content import Content
from textual.geometry import Size
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from perseus_core.present.exchange import zone_name
from perseus_core.wire.models import ActivityEntry
from perseus_core.wire.timeutil import Clock, system_clock
from perseus_tui import render

EntryKey = tuple[str, str]
"""(stream key, stream ID): unique per entry, used to drop duplicates.

The key, not the exchange name: an exchange's shared and Perseus-only streams
number their entries independently, so both can hold the same ID."""

DEFAULT_MAX_LINES = 1000


def entry_key(entry: ActivityEntry) -> EntryKey:
    """The identity of an entry across reads (history, live tail, re-reads)."""
    return (entry.key or entry.stream, entry.id)


def _time(item: tuple[float, ActivityEntry]) -> float:
    return item[0]


def _arrival_in_time(item: tuple[float, int, ActivityEntry]) -> tuple[float, int]:
    return item[0], item[1]


def _newer_count(entries: deque[ActivityEntry], times: dict[EntryKey, float], at: float) -> int:
    """How many of `entries` (newest first) are newer than `at`: where an entry
    of that time goes, above the ones of its own time.

    A binary search (the feed is kept in time order): a flood read from
    many streams hands over entries older than hundreds already shown, and
    walking down to each one's place held the event loop for a tenth of a
    second when a paused feed resumed."""
    return bisect.bisect_left(entries, -at, key=lambda other: -times[entry_key(other)])


def _older_start(entries: deque[ActivityEntry], times: dict[EntryKey, float], at: float) -> int:
    """Where an older entry of time `at` goes: below every entry not older than
    it (where history pages land); a binary search, as `_newer_count`."""
    return bisect.bisect_right(entries, -at, key=lambda other: -times[entry_key(other)])


def _newest_unseen(
    fresh: list[tuple[float, ActivityEntry]],
    times: dict[EntryKey, float],
    room: int,
    floor: float | None,
) -> tuple[list[tuple[float, ActivityEntry]], int]:
    """The newest `room` entries of `fresh` (time order) not shown yet, still
    in time order, and how many unseen ones were left out that are new all
    the same: not older than `floor` (the oldest line of a full feed; None
    when it has room), as placing them one by one would have counted them
    before the newer ones pushed them out."""
    kept: list[tuple[float, ActivityEntry]] = []
    chosen: set[EntryKey] = set()
    left_out = 0
    for item in reversed(fresh):
        key = entry_key(item[1])
        if key in times or key in chosen:
            continue
        chosen.add(key)
        if len(kept) < room:
            kept.append(item)
        elif floor is None or item[0] >= floor:
            left_out += 1
    kept.reverse()
    return kept, left_out


class ActivityFeed(ScrollView, can_focus=True):
    """Activity entries, newest first, at most `max_lines` of them.

    New entries go on top (`add_new`); older pages go at the bottom
    (`add_older`). While paused, new entries are held and counted, then shown
    on resume. A filter hides entries without dropping them.
    """

    DEFAULT_CSS = """
    ActivityFeed {
        height: 1fr;
        border: round $border-blurred;
        border-title-color: $text-muted;
        border-subtitle-color: $warning;
        padding: 0 1;
        overflow-x: hidden;
        overflow-y: auto;
        &:focus { border: round $border; }
    }
    """

    paused: reactive[bool] = reactive(False, init=False)
    """Hold new entries instead of showing them."""

    def __init__(
        self,
        *,
        max_lines: int = DEFAULT_MAX_LINES,
        clock: Clock = system_clock,
        tz: tzinfo | None = None,
        title: str = "Activity",
        empty_text: str = "No activity yet",
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.max_lines = max(1, max_lines)
        self._clock = clock
        self._tz = tz
        self._title = title
        self._empty_text = empty_text
        self._entries: deque[ActivityEntry] = deque(maxlen=self.max_lines)
        self._visible: deque[ActivityEntry] = self._entries
        self._times: dict[EntryKey, float] = {}
        """The time each kept entry is ordered by (`ActivityEntry.moment`, POSIX seconds)."""
        self._held: list[tuple[float, int, ActivityEntry]] = []
        """Entries that arrived while paused: a heap of the newest `max_lines`
        in time (not in arrival: a read of many streams hands them over out of
        time order, and the newest of a stream must not give way to an older
        entry of another that arrived later)."""
        self._held_count = 0
        self._query = ""
        self._cache: LRUCache[tuple[EntryKey, int], Strip] = LRUCache(512)
        self._today = clock().date()

    # --- data -----------------------------------------------------------------

    @property
    def entries(self) -> list[ActivityEntry]:
        """Every kept entry, newest first (filter not applied)."""
        return list(self._entries)

    @property
    def visible_entries(self) -> list[ActivityEntry]:
        """The entries the filter lets through, newest first."""
        return list(self._visible)

    @property
    def empty_text(self) -> str:
        """What an empty feed says (e.g. "Loading history…", then "No activity")."""
        return self._empty_text

    @empty_text.setter
    def empty_text(self, text: str) -> None:
        self._empty_text = text
        self.refresh()

    @property
    def held_count(self) -> int:
        """Entries that arrived while paused (shown on resume)."""
        return self._held_count

    def add_new(self, entries: Iterable[ActivityEntry]) -> int:
        """Insert entries that just happened, given oldest first; returns how many were new.

        Each goes to its place in time (normally the top). Duplicates (same
        stream and ID) are ignored, so a re-read after a reconnect can never
        show an entry twice. While the reader looks at older lines, the lines
        on screen stay where they are. Of a batch larger than the feed only
        the newest `max_lines` are placed (the others would be pushed out by
        them at once), so a flood costs the feed no more than a full screen.
        """
        if self.paused:
            return self._hold(entries)
        added = 0
        changed = False
        filtered = self._visible is not self._entries
        anchor = self.entry_index_at_row(round(self.scroll_y)) if self.scroll_y > 0 else None
        above: list[ActivityEntry] = []
        """Visible entries put above the first one on screen (the view keeps its lines)."""
        times = self._times
        # In time order first (stable: arrival order among equal times): a
        # read of many streams hands each stream's entries together, and
        # sorted, each new entry is again the newest, placed at the top at once.
        fresh = [(self._time_of(entry), entry) for entry in entries]
        fresh.sort(key=_time)
        if len(fresh) > self.max_lines:
            full = len(self._entries) == self.max_lines
            floor = times[entry_key(self._entries[-1])] if full else None
            fresh, added = _newest_unseen(fresh, times, self.max_lines, floor)
        for at, entry in fresh:
            key = entry_key(entry)
            if key in times:
                continue
            index = _newer_count(self._entries, times, at)
            if len(self._entries) == self.max_lines:
                if index == len(self._entries):
                    continue  # older than everything kept in a full feed
                dropped = self._entries.pop()
                del times[entry_key(dropped)]
                if filtered and self._visible and self._visible[-1] is dropped:
                    self._visible.pop()
                changed = True
            times[key] = at
            self._entries.insert(index, entry)
            added += 1
            if filtered:
                if not render.entry_matches(entry, self._query):
                    continue
                index = _newer_count(self._visible, times, at)
                self._visible.insert(index, entry)
            changed = True
            if anchor is not None and index <= anchor:
                anchor += 1
                above.append(entry)
        if changed:
            self._content_changed(shift=above)
        return added

    def _hold(self, entries: Iterable[ActivityEntry]) -> int:
        """Keep entries that arrive while paused (the newest `max_lines`), counted."""
        count = 0
        held = self._held
        for entry in entries:
            item = (self._time_of(entry), self._held_count + count, entry)
            if len(held) < self.max_lines:
                heapq.heappush(held, item)
            elif item[:2] > held[0][:2]:
                heapq.heapreplace(held, item)
            count += 1
        self._held_count += count
        self._update_titles()
        return count

    def add_older(self, entries: Iterable[ActivityEntry]) -> int:
        """Add older entries (a history page, newest first), below the others
        unless their time places them higher.

        Older entries never push newer ones out: once the feed is full, the
        rest of the page is dropped. Returns how many were added.
        """
        added = 0
        filtered = self._visible is not self._entries
        times = self._times
        for entry in entries:
            if len(self._entries) >= self.max_lines:
                break
            key = entry_key(entry)
            if key in times:
                continue
            at = self._time_of(entry)
            times[key] = at
            self._entries.insert(_older_start(self._entries, times, at), entry)
            added += 1
            if filtered and render.entry_matches(entry, self._query):
                self._visible.insert(_older_start(self._visible, times, at), entry)
        if added:
            self._content_changed(shift=())
        return added

    def _time_of(self, entry: ActivityEntry) -> float:
        """What `entry` is ordered by: its moment, else when it arrived."""
        moment = entry.moment or self._clock()
        return moment.timestamp()

    def clear(self) -> None:
        """Forget every entry (held ones too)."""
        self._entries.clear()
        self._times.clear()
        self._held.clear()
        self._held_count = 0
        self._visible = self._entries
        if self._query:
            self._visible = deque(maxlen=self.max_lines)
        self._content_changed(shift=())

    @property
    def is_full(self) -> bool:
        """No room for older entries."""
        return len(self._entries) >= self.max_lines

    # --- presentation ---------------------------------------------------------

    def set_filter(self, query: str) -> None:
        """Show only entries whose exchange, host, operator or admin contains `query`."""
        self._query = query.strip()
        if self._query:
            self._visible = deque(
                (e for e in self._entries if render.entry_matches(e, self._query)),
                maxlen=self.max_lines,
            )
        else:
            self._visible = self._entries
        self.scroll_to(y=0, animate=False)
        self._content_changed(shift=())

    def set_timezone(self, tz: tzinfo | None) -> None:
        """Show times in `tz` (None: the machine's local zone)."""
        self._tz = tz
        self._cache.clear()
        self._update_titles()
        self.refresh()

    def watch_paused(self, paused: bool) -> None:
        if not paused:
            held = [entry for _, _, entry in sorted(self._held, key=_arrival_in_time)]
            self._held.clear()
            self._held_count = 0
            self.add_new(held)
        self._update_titles()

    def on_mount(self) -> None:
        self._update_titles()
        self._content_changed(shift=())
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._restyle())

    def on_unmount(self) -> None:
        """Leave the app's theme signal, which would otherwise keep this widget alive.

        The signal holds its subscribers in a weak-key dictionary, but each
        entry's callback refers to the widget itself, so the entry never
        goes: without this every closed screen's feed, with all its lines,
        would stay in memory for the rest of the session.
        """
        self.app.theme_changed_signal.unsubscribe(self)

    def _restyle(self) -> None:
        self._cache.clear()
        self.refresh()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._cache.clear()

    def _update_titles(self) -> None:
        zone = zone_name(self._tz, self._clock())
        title = Content.assemble(
            (self._title, "bold"), (f" · {len(self._visible)} · {zone}", "$text-muted")
        )
        if self._query:
            title += Content.styled(
                f" · filter: {render.label(self._query, '', 30)}", "$text-accent"
            )
        self.border_title = title
        if self.paused:
            self.border_subtitle = Content.styled(
                f"paused · {self._held_count:,} new", "bold $text-warning"
            )
        else:
            self.border_subtitle = None

    def row_count(self) -> int:
        """Screen rows the visible entries take (one each here; more when wrapped)."""
        return len(self._visible)

    def rows_of(self, entries: Sequence[ActivityEntry]) -> int:
        """Screen rows these visible entries take (one each here; more when wrapped)."""
        return len(entries)

    def entry_index_at_row(self, row: int) -> int:
        """The index among the visible entries of the one shown on screen row `row`."""
        return row

    def _content_changed(self, *, shift: Sequence[ActivityEntry]) -> None:
        """Re-measure after entries came or went; `shift`: the entries that
        went in above the lines on screen, which move down by their rows."""
        self.virtual_size = Size(self.scrollable_content_region.width, self.row_count())
        if shift and self.scroll_y > 0:
            # Keep the lines the reader is looking at in place while newer ones arrive above.
            rows = self.rows_of(shift)
            self.scroll_to(y=self.scroll_y + rows, animate=False, immediate=True)
        self._update_titles()
        self.refresh()

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width
        style = self.visual_style
        index = self.scroll_offset.y + y
        if index >= len(self._visible):
            if index == 0:
                empty = self._empty_text if not self._query else "Nothing matches the filter"
                text = Content.styled(empty, "italic $text-muted").truncate(width)
                return Strip(text.render_segments(style), text.cell_length).extend_cell_length(
                    width, style.rich_style
                )
            return Strip.blank(width, style.rich_style)
        now = self._clock()
        if now.date() != self._today:
            self._today = now.date()
            self._cache.clear()
        entry = self._visible[index]
        cache_key = (entry_key(entry), width)
        strip = self._cache.get(cache_key)
        if strip is None:
            content = render.entry_line(entry, self._tz, now).truncate(width, ellipsis=True)
            strip = Strip(content.render_segments(style), content.cell_length)
            strip = strip.extend_cell_length(width, style.rich_style)
            self._cache[cache_key] = strip
        return strip
