"""What travels between the fleet service, the app and the screens: small dataclass messages.

The fleet service never touches a widget: it posts a result message and the
app turns it into the state the screens watch. Screens never call into the
app either: they post a request (open, start, stop, refresh) that bubbles up
to it. Messages are values: nothing changes one once it is posted. Results
that arrive faster than they can be shown are dropped in the queue when a
newer one carries everything they do (`can_replace`), and the live feed
posts one batch at a time (`FeedEntries`), so a flood costs few repaints and
loses nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from textual.message import Message

from perseus_core.present.commands import CommandStage
from perseus_core.store.activity.windows import Window
from perseus_core.store.network import ExchangeView, FleetSnapshot
from perseus_core.store.output import OutputLine
from perseus_core.wire.models import ActivityEntry, CommandType

# --- results of the fleet service -------------------------------------------------


@dataclass
class SnapshotLoaded(Message):
    """A full read of the fleet (catalog + every status)."""

    snapshot: FleetSnapshot

    def can_replace(self, message: Message) -> bool:
        """A newer full read makes this one obsolete."""
        return isinstance(message, SnapshotLoaded)


@dataclass
class ExchangesRefreshed(Message):
    """A few exchanges re-read because their streams just had activity."""

    views: Sequence[ExchangeView]

    def can_replace(self, message: Message) -> bool:
        """A newer read supersedes this one when it re-read every exchange this
        one did: a full read always, a partial one of the same exchanges or more."""
        if isinstance(message, SnapshotLoaded):
            return True
        if isinstance(message, ExchangesRefreshed):
            newer = {view.exchange_id for view in message.views}
            return all(view.exchange_id in newer for view in self.views)
        return False


@dataclass
class ConnectionLost(Message):
    """A read failed: Redis is unreachable (or refused); the next attempt is in `retry_in` s."""

    reason: str
    retry_in: float

    def can_replace(self, message: Message) -> bool:
        """Only the latest failure is shown."""
        return isinstance(message, ConnectionLost)


@dataclass
class FeedEntries(Message):
    """Live activity entries, oldest first.

    The fleet service has at most one batch on its way at a time: entries
    that arrive meanwhile wait, and go together in the next batch once the
    app has shown this one (`FleetService.feed_batch_shown`), so a burst of
    thousands of entries costs a couple of messages and repaints, not thousands.
    """

    entries: Sequence[ActivityEntry]


@dataclass
class FeedHistory(Message):
    """The recent history loaded at start, newest first."""

    entries: list[ActivityEntry]


@dataclass
class TimelineWindows(Message):
    """The window reads of some exchanges' state timelines, by stream name."""

    windows: dict[str, Window]


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


# --- requests from the screens (they bubble up to the app) -----------------------------


@dataclass
class DetailRequested(Message):
    """Show every field and the history of one exchange."""

    exchange_id: int


@dataclass
class OutputRequested(Message):
    """Show the last lines of one exchange's child output, live."""

    exchange_id: int


@dataclass
class CommandRequested(Message):
    """Send start (at once) or stop (after a confirmation) to an exchange's agent."""

    exchange_id: int
    command: CommandType


class RefreshRequested(Message):
    """Re-read the whole fleet now."""


class IntroRequested(Message):
    """Open the intro panel (what is on screen, what to try first) again."""


# --- for one screen ---------------------------------------------------------------------


@dataclass
class OutputArrived(Message):
    """Lines of one exchange's child output for the output screen, oldest first."""

    lines: list[OutputLine]


@dataclass
class HistoryPage(Message):
    """One page of one exchange's history for the detail screen, newest first."""

    exchange_name: str
    entries: list[ActivityEntry]
    next_cursor: str | None
    first: bool = False
