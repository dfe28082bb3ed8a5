"""Lost and back, as only the status snapshot can tell.

No instance can report its own status key expiring without a stop (it was
lost) or reappearing afterwards (it is back): the notifier compares one
snapshot with the last, and `perseus_core.present.edges` says which edge
each exchange crossed, as it says for the dashboard.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from redis.exceptions import ResponseError

from perseus_core.notify.discord import describe_error
from perseus_core.notify.events import FleetEvent, offline_event, online_event
from perseus_core.plumbing.connection import describe_redis_error
from perseus_core.plumbing.errors import TRANSIENT_ERRORS
from perseus_core.present.edges import EdgeKind, KnownState, newer_state, offline_edge
from perseus_core.store.activity import ActivityLog
from perseus_core.store.network import ExchangeView, FleetReader
from perseus_core.wire.errors import AccessDenied, RedisRefused
from perseus_core.wire.models import ActivityEntry, InstanceStatus, StateTransitionEntry
from perseus_core.wire.settings import Settings
from perseus_core.wire.text import clean
from perseus_core.wire.timeutil import Clock

log = logging.getLogger(__name__)

_UNREADABLE: tuple[type[BaseException], ...] = (
    *TRANSIENT_ERRORS,
    ResponseError,
    RedisRefused,
    AccessDenied,
)
"""Why one exchange could not be read now: an outage, or a refused key."""


@dataclass(slots=True)
class ExchangePresence:
    """What the notifier last knew about one exchange.

    Attributes:
        name: its name, kept from the reads that knew it.
        view: the latest read of it.
        status: the last valid status seen while it was online (what a loss
            is worded from, even if the last read found the payload unreadable).
        known: the newest state seen, whichever source (poll, tail, stream) saw it first.
        lost: reported lost and not seen back since.
    """

    name: str
    view: ExchangeView
    status: InstanceStatus | None = None
    known: KnownState | None = None
    lost: bool = False

    def note(self, state: KnownState | None) -> None:
        """Keep the newer of the state known and `state` (`newer_state`)."""
        self.known = newer_state(self.known, state)


class PresenceWatch:
    """Compares status snapshots and reports the lost and back edges.

    Args:
        reader: reads the snapshot and single exchanges.
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
        self._exchanges: dict[int, ExchangePresence] = {}
        self._redis_down = False
        # A poll and a re-read of one exchange may interleave at their awaits:
        # each moves presences along whole, so no edge is reported twice.
        self._lock = asyncio.Lock()

    def counts(self) -> tuple[int, int]:
        """(exchanges known, exchanges online)."""
        known = self._exchanges.values()
        return len(known), sum(1 for p in known if p.view.online)

    def view_of(self, entry: ActivityEntry) -> ExchangeView | None:
        """The latest read of the exchange an entry belongs to (by its
        `exchangeId`, else its stream's name), or None if none is known."""
        exchange_id = entry.exchange_id_int
        presence = self._exchanges.get(exchange_id) if exchange_id is not None else None
        if presence is None:
            stream = (entry.stream or entry.exchange_name).lower()
            for candidate in self._exchanges.values():
                if candidate.name.lower() == stream:
                    presence = candidate
                    break
        return presence.view if presence is not None else None

    async def recheck(self, entry: ActivityEntry) -> None:
        """Read the exchange an entry belongs to now, and move its presence
        along: an error is judged against the holder as it is when the error
        arrives, not as the last poll saw it (a new holder may have claimed
        since). Failures leave the last read in place (logged)."""
        if entry.names_no_exchange:
            return
        exchange_id = entry.exchange_id_int
        if exchange_id is None:
            view = self.view_of(entry)
            if view is None:
                return
            exchange_id = view.exchange_id
        try:
            async with self._lock:
                view = await self._reader.exchange(exchange_id)
                if self._wanted(view.exchange_name or entry.stream):
                    await self._observe(exchange_id, view)
        except _UNREADABLE as exc:
            log.debug("cannot read exchange %s now: %s", exchange_id, describe_error(exc))

    def note_transition(self, entry: StateTransitionEntry) -> None:
        """A transition from the stream: it may be newer than the last snapshot."""
        if entry.exchange_id_int is None:
            return
        presence = self._exchanges.get(entry.exchange_id_int)
        if presence is not None:
            presence.note(KnownState(entry.to_state, entry.time))

    async def poll(self) -> None:
        """Compare one snapshot with the last; Redis errors skip the round (an
        unreachable Redis says nothing about the instances).

        Raises:
            RedisError: an error reply (e.g. a key of the wrong type).
        """
        async with self._lock:
            await self._poll()

    async def _poll(self) -> None:
        try:
            snapshot = await self._reader.snapshot(last_known=False)
            views: dict[int, ExchangeView] = {
                view.exchange_id: view
                for view in snapshot.exchanges
                if view.exchange_id >= 0 and self._wanted(view.exchange_name)
            }
            for exchange_id in sorted(self._exchanges.keys() - views.keys()):
                # Not listed: gone, or listed only by a SCAN that is not due
                # (online but not in the catalog). Only a direct read can tell,
                # and only matters for exchanges that were online or are awaited back.
                presence = self._exchanges[exchange_id]
                if presence.view.online or presence.lost:
                    views[exchange_id] = await self._reader.exchange(exchange_id)
                else:
                    del self._exchanges[exchange_id]
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
        """Move one exchange's presence along and submit the edge it crossed, if any."""
        presence = self._exchanges.get(exchange_id)
        before = presence.view if presence is not None else None
        if presence is None:  # first sight: a baseline, not news
            presence = self._exchanges[exchange_id] = ExchangePresence(view.exchange_name, view)
        if view.online:
            presence.name = view.exchange_name or presence.name
            if view.status is not None:
                presence.status = view.status
                presence.note(KnownState.of_status(view.status))
        edge = offline_edge(before, view, lost=presence.lost, since=presence.known)
        if edge.kind in (EdgeKind.LOST, EdgeKind.RELEASED):
            # The tail may lag behind the poll (or be reconnecting): the
            # stream's own newest transition may say it stopped, or started again.
            await self._read_newest_transition(presence)
            edge = offline_edge(before, view, lost=presence.lost, since=presence.known)
        presence.view = view
        if edge.kind is EdgeKind.LOST:
            now = self._clock()
            self._submit(offline_event(exchange_id, presence.name, presence.status, now=now))
            presence.lost = True
        elif edge.kind is EdgeKind.BACK:
            self._submit(online_event(exchange_id, presence.name, view.status, now=self._clock()))
            presence.lost = False

    async def _read_newest_transition(self, presence: ExchangePresence) -> None:
        """Note the newest transition in the exchange's own stream, if it can
        be read (a key of another type leaves only the states seen so far)."""
        try:
            page = await self._activity.page(presence.name, count=20)
        except (ResponseError, RedisRefused, AccessDenied) as exc:
            log.warning(
                "cannot read the activity of %s: %s", clean(presence.name), describe_error(exc)
            )
            return
        for entry in page.entries:
            if isinstance(entry, StateTransitionEntry):
                presence.note(KnownState(entry.to_state, entry.time))
                break
