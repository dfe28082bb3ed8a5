"""Going offline and coming back, as the dashboard observes them between two reads.

An instance that is killed writes nothing: its status key simply expires, so
the activity stream never says it went offline. The dashboard sees the key
go, and tells the operator in the feed and the exchange's history, marked as
its own observation. It never writes that into the exchange's activity
stream: another dashboard may see it at a different moment, and the stream
is shared with the TypeScript servers, whose admin shows every entry there.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Mapping
from datetime import datetime

from perseus_core.store.network import ExchangeView
from perseus_core.wire.models import ConnectionState, OtherEntry
from perseus_core.wire.timeutil import format_ts

OBSERVED_OFFLINE = "observed_offline"
"""The event of an entry saying a status key vanished: while its instance ran
(an unexpected loss), or after the stream last said it stopped (as expected)."""
OBSERVED_ONLINE = "observed_online"
"""The event of an entry saying an exchange seen going offline is back."""
OBSERVED_EVENTS = frozenset({OBSERVED_OFFLINE, OBSERVED_ONLINE})
KEPT = 500
"""Observations kept for detail screens opened later (they live as long as the dashboard)."""

RELEASED_STATES = frozenset(
    {ConnectionState.STOPPING, ConnectionState.STOPPED, ConnectionState.IDLE}
)
"""States after which a missing key is a release (the stream says so), not a loss."""


class OfflineObserver:
    """Compares each read of the fleet with the previous one and reports the
    exchanges whose instance vanished without releasing its slot, and their return."""

    def __init__(self) -> None:
        self._gone: set[int] = set()
        """Exchanges seen going offline and not back yet."""
        self._serial = itertools.count(1)
        self.recent: deque[OtherEntry] = deque(maxlen=KEPT)
        """The latest observations, oldest first (a detail screen opened later shows them)."""

    def about(self, stream: str) -> list[OtherEntry]:
        """The kept observations of one exchange (by stream name), newest first."""
        return [entry for entry in reversed(self.recent) if entry.stream == stream]

    def compare(
        self,
        before: Mapping[int, ExchangeView],
        after: Mapping[int, ExchangeView],
        now: datetime,
    ) -> list[OtherEntry]:
        """The observations between two reads, oldest first (empty on the first read)."""
        found: list[OtherEntry] = []
        for exchange_id, view in after.items():
            old = before.get(exchange_id)
            if old is None:
                continue
            if old.online and not view.online:
                state = old.status.connection_state if old.status is not None else None
                if state in RELEASED_STATES:
                    continue  # seen stopping: the stream says it released the slot
                last = _stopped_since(old, view) or state
                if last not in RELEASED_STATES:  # lost while running: watch for its return
                    self._gone.add(exchange_id)
                found.append(self._entry(OBSERVED_OFFLINE, old, now, last or "unreadable"))
            elif view.online and exchange_id in self._gone:
                self._gone.discard(exchange_id)
                state = view.status.connection_state if view.status is not None else None
                found.append(self._entry(OBSERVED_ONLINE, view, now, state or "unreadable"))
        self.recent.extend(found)
        return found

    def _entry(self, event: str, view: ExchangeView, now: datetime, state: str) -> OtherEntry:
        """An observation about `view`'s exchange in `state`, dated `now`."""
        status = view.status
        name = view.exchange_name or (status.exchange_name if status is not None else "")
        fields = {
            "id": f"observed-{next(self._serial)}",
            "stream": name.lower(),
            "event": event,
            "timestamp": format_ts(now),
            "exchangeId": str(view.exchange_id),
            "exchangeName": name,
            "hostname": status.hostname if status is not None else "",
            "state": str(state),
        }
        return OtherEntry.model_validate(fields)


def _stopped_since(old: ExchangeView, new: ExchangeView) -> str | None:
    """The released state the stream last named, when it is newer than the
    running state the previous read showed: the instance stopped between two
    reads (a Livermore server deletes its key right after `stopped`), so its
    key went as expected. None when the stream says nothing newer."""
    known = new.last_known
    if known is None or known.state not in RELEASED_STATES:
        return None
    when = known.time
    since = old.status.last_state_change if old.status is not None else None
    return known.state if when is None or since is None or when >= since else None
