"""Offline and online, as only the status snapshot can tell.

No instance can report its own status key expiring without a stop (it went
offline) or reappearing afterwards (it came back): the notifier compares one
snapshot with the last to see those edges.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from redis.exceptions import ResponseError

from perseus_core.notify.discord import describe_error
from perseus_core.notify.events import FleetEvent, offline_event, online_event
from perseus_core.plumbing.connection import describe_redis_error
from perseus_core.plumbing.errors import TRANSIENT_ERRORS
from perseus_core.store.activity import ActivityLog
from perseus_core.store.network import ExchangeView, FleetReader
from perseus_core.wire.models import InstanceStatus, StateTransitionEntry
from perseus_core.wire.settings import Settings
from perseus_core.wire.text import clean
from perseus_core.wire.timeutil import Clock

log = logging.getLogger(__name__)

STOP_STATES = frozenset({"stopping", "stopped", "idle"})
"""States an instance passes through on its way out: a key that disappears
after one of them was released (or is being released), not lost."""


@dataclass(slots=True)
class SlotPresence:
    """What the notifier last knew about one exchange slot."""

    name: str
    online: bool
    status: InstanceStatus | None = None
    state: str | None = None
    state_at: datetime | None = None
    offline_notified: bool = False

    def note_state(self, state: str, at: datetime | None) -> None:
        """Keep the newest state seen, whichever source (poll or stream) saw it
        first: a snapshot taken before a stop must not undo the stop."""
        if at is None or self.state_at is None or at >= self.state_at:
            self.state = state
            self.state_at = at or self.state_at


class PresenceWatch:
    """Compares status snapshots and reports the offline and online edges.

    Args:
        reader: reads the snapshot and single slots.
        activity: reads an exchange's newest transition (was it a stop?).
        settings: the Redis target, for messages.
        wanted: whether an exchange name is watched.
        clock: the events' time.
        submit: where the events go.
    """

    def __init__(
        self,
        reader: FleetReader,
        activity: ActivityLog,
        settings: Settings,
        *,
        wanted: Callable[[str], bool],
        clock: Clock,
        submit: Callable[[FleetEvent], None],
    ) -> None:
        self._reader = reader
        self._activity = activity
        self._settings = settings
        self._wanted = wanted
        self._clock = clock
        self._submit = submit
        self._slots: dict[int, SlotPresence] = {}
        self._redis_down = False

    def counts(self) -> tuple[int, int]:
        """(slots known, slots online)."""
        return len(self._slots), sum(1 for p in self._slots.values() if p.online)

    def note_transition(self, entry: StateTransitionEntry) -> None:
        """A transition from the stream: it may be newer than the last snapshot."""
        if entry.exchange_id_int is None:
            return
        presence = self._slots.get(entry.exchange_id_int)
        if presence is not None:
            presence.note_state(entry.to_state, entry.time)

    async def poll(self) -> None:
        """Compare one snapshot with the last; Redis errors skip the round (an
        unreachable Redis says nothing about the instances).

        Raises:
            RedisError: an error reply (e.g. a key of the wrong type).
        """
        try:
            snapshot = await self._reader.snapshot(last_known=False)
            views: dict[int, ExchangeView] = {
                view.exchange_id: view
                for view in snapshot.exchanges
                if view.exchange_id >= 0 and self._wanted(view.exchange_name)
            }
            for exchange_id in sorted(self._slots.keys() - views.keys()):
                # Not listed: gone, or listed only by a SCAN that is not due
                # (online but not in the catalog). Only a direct read can tell,
                # and only matters for slots that were online or are awaited back.
                presence = self._slots[exchange_id]
                if presence.online or presence.offline_notified:
                    views[exchange_id] = await self._reader.exchange(exchange_id)
                else:
                    del self._slots[exchange_id]
            for exchange_id, view in sorted(views.items()):
                await self._observe(exchange_id, view)
        except TRANSIENT_ERRORS as exc:
            if not self._redis_down:
                log.warning("%s (still watching)", describe_redis_error(self._settings, exc))
                self._redis_down = True
            return
        if self._redis_down:
            log.info("Redis reachable again at %s", self._settings.redacted_redis_url)
            self._redis_down = False

    async def _observe(self, exchange_id: int, view: ExchangeView) -> None:
        """Move one slot's presence along and submit the edge it crossed, if any."""
        presence = self._slots.get(exchange_id)
        if presence is None:  # first sight: a baseline, not news
            presence = SlotPresence(name=view.exchange_name, online=view.online)
            self._slots[exchange_id] = presence
        if view.online:
            presence.name = view.exchange_name or presence.name
            if view.status is not None:
                presence.status = view.status
                presence.note_state(
                    view.status.connection_state.value, view.status.last_state_change
                )
            if not presence.online and presence.offline_notified:
                self._submit(
                    online_event(exchange_id, presence.name, view.status, now=self._clock())
                )
                presence.offline_notified = False
            presence.online = True
        elif presence.online:
            if not presence.offline_notified and not await self._stopped(presence):
                self._submit(
                    offline_event(exchange_id, presence.name, presence.status, now=self._clock())
                )
                presence.offline_notified = True
            presence.online = False

    async def _stopped(self, presence: SlotPresence) -> bool:
        """Whether a vanished key was released by a stop rather than lost.

        The tail may lag behind the poll (or be reconnecting), so the newest
        transition in the exchange's own stream is read too; whichever of it
        and the last seen state is newer decides.
        """
        try:
            page = await self._activity.page(presence.name, count=20)
        except ResponseError as exc:  # not a stream: only the state seen so far can tell
            log.warning(
                "cannot read the activity of %s: %s", clean(presence.name), describe_error(exc)
            )
            return presence.state in STOP_STATES
        for entry in page.entries:
            if isinstance(entry, StateTransitionEntry):
                presence.note_state(entry.to_state, entry.time)
                break
        return presence.state in STOP_STATES
