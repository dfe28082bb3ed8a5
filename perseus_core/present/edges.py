"""Offline edges: an exchange's status key vanished, or came back, and what that means.

An instance that is killed writes nothing: its status key simply expires, so
no entry ever says it went offline, and none says it came back. Only a
reader comparing two reads sees those edges, and every surface that reports
them (the notifier's messages, the dashboard's observations) asks this
module what it saw, so they can never disagree:

- **lost**: the key vanished while the instance ran;
- **released**: the key vanished on the instance's way out (the newest
  state known is `stopping`, `stopped` or `idle`);
- **back**: the key of an exchange found lost is there again.

The newest state known is the newer of what the previous read's status said
(dated by its `lastStateChange`), what the activity stream said since (a
Livermore server deletes its key right after `stopped`, often between two
reads) and whatever else the caller learnt (the notifier's live tail). No UI
toolkit here, and no wording: the surfaces word each edge themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from perseus_core.store.network import ExchangeView, LastKnown
from perseus_core.wire.models import InstanceStatus

RELEASED_STATES: frozenset[str] = frozenset({"stopping", "stopped", "idle"})
"""States an instance passes through on its way out: a key that disappears
after one of them was released (or is being released), not lost."""


class EdgeKind(StrEnum):
    """What happened to an exchange's status key between two reads."""

    NONE = "none"
    """Nothing worth telling: no edge, a first read, or a return nobody awaited."""
    LOST = "lost"
    """The key vanished while its instance ran: an unexpected loss."""
    RELEASED = "released"
    """The key vanished on the instance's way out, as expected."""
    BACK = "back"
    """The key of an exchange found lost is there again."""


@dataclass(frozen=True, slots=True)
class KnownState:
    """A connection state an exchange was known to be in, and since when
    (None: the source did not say)."""

    state: str
    at: datetime | None

    @classmethod
    def of_status(cls, status: InstanceStatus | None) -> KnownState | None:
        """The state a status payload names, dated by its `lastStateChange`."""
        if status is None:
            return None
        return cls(status.connection_state.value, status.last_state_change)

    @classmethod
    def of_last_known(cls, known: LastKnown | None) -> KnownState | None:
        """The state the activity stream last named, if it named one."""
        if known is None or not known.state:
            return None
        return cls(known.state, known.time)


def newer_state(known: KnownState | None, candidate: KnownState | None) -> KnownState | None:
    """The newer of two known states. A candidate whose time (or the known
    one's) is missing counts as newer, and keeps the known time: a read taken
    before a stop must not undo the stop, whichever source saw it first."""
    if candidate is None:
        return known
    if known is None:
        return candidate
    if candidate.at is None or known.at is None or candidate.at >= known.at:
        return KnownState(candidate.state, candidate.at or known.at)
    return known


@dataclass(frozen=True, slots=True)
class Edge:
    """What an exchange's key did between two reads.

    Attributes:
        kind: lost, released, back, or none.
        state: for lost and released, the newest state known before the key
            went (None when no read could tell: its payload was unreadable);
            for back, the state it is back in (None: unreadable).
        seen_stopping: for released, whether the previous read's own status
            already showed the instance on its way out (its stop's stream
            entries have said it all); False when only the stream told.
    """

    kind: EdgeKind
    state: str | None = None
    seen_stopping: bool = False
    crash: str = ""
    """For released: the child-exit error that started the way out
    (`LastKnown.crash`), when its child crashed: never an expected exit."""


NO_EDGE = Edge(EdgeKind.NONE)


def offline_edge(
    before: ExchangeView | None,
    after: ExchangeView,
    *,
    lost: bool,
    since: KnownState | None = None,
) -> Edge:
    """The edge an exchange crossed between two reads.

    Args:
        before: the previous read of the exchange; None on the first read,
            which is a baseline, never news.
        after: this read. Its `last_known` (the stream's newest state, when
            the reader read it) is taken into account.
        lost: whether the exchange was found lost and not seen back since:
            the caller remembers it from the LOST and BACK edges it was given.
        since: the newest state the caller learnt from elsewhere (a live
            tail, a read of the stream), if any.
    """
    if before is None:
        return NO_EDGE
    if before.online and not after.online:
        newest = newer_state(KnownState.of_status(before.status), since)
        newest = newer_state(newest, KnownState.of_last_known(after.last_known))
        state = newest.state if newest is not None else None
        if state in RELEASED_STATES:
            status = before.status
            shown = status is not None and status.connection_state in RELEASED_STATES
            known = after.last_known
            crash = known.crash if known is not None else ""
            return Edge(EdgeKind.RELEASED, state, seen_stopping=shown, crash=crash)
        return Edge(EdgeKind.LOST, state)
    if after.online and not before.online and lost:
        status = after.status
        return Edge(EdgeKind.BACK, status.connection_state.value if status is not None else None)
    return NO_EDGE
