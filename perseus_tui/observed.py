"""Going offline and coming back, as the dashboard observes them between two reads.

An instance that is killed writes nothing: its status key simply expires, so
the activity stream never says it went offline. The dashboard sees the key
go, and tells the operator in the feed and the exchange's history, marked as
its own observation. It never writes that into the exchange's activity
stream: another dashboard may see it at a different moment, and the stream
is shared with the TypeScript servers, whose admin shows every entry there.
Whether a vanished key was lost or released is decided by
`perseus_core.present.edges`, as it is for the notifier.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Mapping
from datetime import datetime

from perseus_core.present.edges import Edge, EdgeKind, offline_edge
from perseus_core.store.network import ExchangeView
from perseus_core.wire.models import OtherEntry
from perseus_core.wire.timeutil import format_ts

OBSERVED_OFFLINE = "observed_offline"
"""The event of an entry saying a status key vanished: while its instance ran
(an unexpected loss), or after the stream last said it stopped (as expected);
its `edge` field says which (`EdgeKind`)."""
OBSERVED_ONLINE = "observed_online"
"""The event of an entry saying an exchange seen going offline is back."""
OBSERVED_EVENTS = frozenset({OBSERVED_OFFLINE, OBSERVED_ONLINE})
KEPT = 500
"""Observations kept for detail screens opened later (they live as long as the dashboard)."""


class OfflineObserver:
    """Compares each read of the fleet with the previous one and reports the
    exchanges whose status key vanished, lost or released, and the return of the lost."""

    def __init__(self) -> None:
        self._gone: set[int] = set()
        """Exchanges found lost and not back yet."""
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
            edge = offline_edge(old, view, lost=exchange_id in self._gone)
            if edge.kind is EdgeKind.LOST:  # watch for its return
                self._gone.add(exchange_id)
                found.append(self._entry(OBSERVED_OFFLINE, old, now, edge))
            elif edge.kind is EdgeKind.RELEASED and (edge.crash or not edge.seen_stopping):
                # Stopped between two reads: the card went from running to
                # offline, so say why. Seen stopping, the stream has said it.
                found.append(self._entry(OBSERVED_OFFLINE, old, now, edge))
            elif edge.kind is EdgeKind.BACK:
                self._gone.discard(exchange_id)
                found.append(self._entry(OBSERVED_ONLINE, view, now, edge))
        self.recent.extend(found)
        return found

    def _entry(self, event: str, view: ExchangeView, now: datetime, edge: Edge) -> OtherEntry:
        """An observation of `edge` about `view`'s exchange, dated `now`."""
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
            "state": edge.state or "unreadable",
            "edge": str(edge.kind),
        }
        if edge.crash:
            fields["crash"] = edge.crash
        return OtherEntry.model_validate(fields)
