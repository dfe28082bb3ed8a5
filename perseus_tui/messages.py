"""What the Redis workers report back to the app: small dataclass messages.

Workers never touch widgets; they post one of these and the app applies it on
its own message loop, so every widget change happens in one place.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from textual.message import Message

from perseus_core.store.network import ExchangeView, NetworkSnapshot
from perseus_core.wire.models import ActivityEntry


@dataclass
class SnapshotLoaded(Message):
    """A full read of the fleet (catalog + every status)."""

    snapshot: NetworkSnapshot


@dataclass
class ExchangesRefreshed(Message):
    """A few exchanges re-read because their streams just had activity."""

    views: list[ExchangeView]


@dataclass
class ConnectionLost(Message):
    """A read failed: Redis is unreachable (or refused); the next attempt is in `retry_in` s."""

    reason: str
    retry_in: float


@dataclass
class FeedEntries(Message):
    """Activity entries, oldest first.

    The live feed worker keeps appending to `entries` until the app has
    handled the message (then it starts a new one), so a burst of thousands
    of entries costs one message and one repaint, not thousands.
    """

    entries: list[ActivityEntry] = field(default_factory=list)


@dataclass
class FeedHistory(Message):
    """The recent history loaded at start, newest first."""

    entries: list[ActivityEntry]


@dataclass
class FeedStatus(Message):
    """The live tail lost or regained its connection."""

    connected: bool
    error: str | None = None


CommandStage = Literal["sent", "acknowledged", "success", "error", "no-agent", "failed"]


@dataclass
class CommandProgress(Message):
    """One step of a start/stop command: sent -> acknowledged -> success or error."""

    exchange_id: int
    exchange_label: str
    command: str
    stage: CommandStage
    detail: str = ""


@dataclass
class ReadOnlyDetected(Message):
    """Redis refused a write from this user: switch to read-only and say why."""

    reason: str


@dataclass
class HistoryPage(Message):
    """One page of one exchange's history for the detail screen, newest first."""

    exchange_name: str
    entries: list[ActivityEntry]
    next_cursor: str | None
    first: bool = False
