"""Where a live tail stands in each activity stream it follows."""

from __future__ import annotations

from collections.abc import Mapping

from perseus_core.store.activity.cursors import (
    id_order,
    label_key,
    parse_stream_id,
    stream_label,
    stream_name,
)
from perseus_core.wire.models import ActivityEntry


def parse_start(start: str | Mapping[str, str]) -> dict[str, str | None]:
    """A tail's `start` argument as stream key -> normalised ID (None: "new only").

    Raises:
        ValueError: `start` is neither "$" nor a mapping of valid IDs.
    """
    if isinstance(start, str):
        if start != "$":
            raise ValueError(f'start must be "$" or a mapping of stream IDs, got {start!r}')
        return {}
    ids: dict[str, str | None] = {}
    for name, entry_id in start.items():
        key = label_key(name)
        if entry_id == "$":
            ids[key] = None
        else:
            ms, seq = parse_stream_id(entry_id)
            ids[key] = f"{ms}-{seq}"
    return ids


class StreamPositions:
    """Per stream key: the ID the next XREAD reads after, where the stream
    started, the last entry handed to the consumer, and the keys set aside
    because they hold something other than a stream.

    The read position only moves when a read succeeded, so after a reconnect
    the tail reads on from exactly there: no gap, no duplicate. `floor` is the
    stream ID just before the moment the tail started, where streams noticed
    later begin.
    """

    def __init__(self, start_ids: dict[str, str | None]) -> None:
        self.start_ids = start_ids
        self.floor = "0-0"
        self.reading: dict[str, str] = {}
        self.excluded: dict[str, str] = {}
        self._started: dict[str, str] = {}
        self._delivered: dict[str, str] = {}

    def follow(self, key: str, position: str) -> None:
        """Read `key` from after `position` on."""
        self.reading[key] = position
        self._started[key] = position

    def follow_new(self, key: str) -> None:
        """Follow a stream noticed after the start, unless it is followed already:
        from its `start` ID if one was given, else from the floor."""
        if key not in self.reading:
            start = self.start_ids.get(key)
            self.follow(key, start if start is not None else self.floor)

    def readable(self) -> Mapping[str, str]:
        """The XREAD argument: every followed stream that is not set aside.

        Without keys set aside this is `reading` itself, not a copy: a tail of
        10,000 exchanges reads 20,000 streams, and copying them on every turn
        cost more than a turn that reads a handful of entries. Read-only.
        """
        if not self.excluded:
            return self.reading
        return {k: v for k, v in self.reading.items() if k not in self.excluded}

    def delivered(self, entry: ActivityEntry) -> None:
        """Note that `entry` reached the consumer."""
        self._delivered[entry.key] = entry.id

    def names(self) -> list[str]:
        """Exchange names (lower-cased) of every stream followed."""
        return sorted({stream_name(key) for key in self.reading})

    def resume_points(self) -> dict[str, str]:
        """Per stream label (see `cursors.stream_label`), the ID to resume
        after: the last entry delivered, or where the stream started if none was."""
        return {
            stream_label(key): self._delivered.get(key, self._started[key]) for key in self.reading
        }

    def settle_floor(self, server_floor: str) -> None:
        """Replace a floor guessed from this host's clock by the earlier of it
        and `server_floor`; streams still waiting at the old floor move too."""
        settled = min(self.floor, server_floor, key=id_order)
        old, self.floor = self.floor, settled
        for key, position in self.reading.items():
            if position == old:
                self.reading[key] = settled
                if self._started.get(key) == old:
                    self._started[key] = settled
