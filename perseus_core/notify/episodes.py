"""One message per thing that happened, not one per stream entry.

A crash is one event to a person, but seven entries in the stream: the error,
`active → stopping → stopped → idle`, and, once someone starts it again,
`idle → starting → warming → active`. Posted one by one they are seven
webhook messages for one crash. An `Episodes` holds each exchange's
transitions, errors and automatic restarts while they keep coming and tells
them as one `FleetEvent` (`fold`). An automatic restart is no message of
its own: it adds "and restarted automatically" to the crash it follows
(with `settle_s` 0, where every entry is told at once, it is told alone):

- an episode ends as soon as its exchange is at rest: `active`, or `idle`
  when nothing went wrong (a plain stop); after an error, `idle` is not rest
  (a restart usually follows, and belongs to the same story);
- otherwise once no entry came for `settle_s` (the story paused: a long
  warm-up, a crashed instance nobody starts again), or `longest_s` after it
  began (a crash loop is told every so often, never held for ever);
- every other kind (offline, back online, another writer's error) is told
  at once, after the episode its exchange has open, so the order holds.

Pure bookkeeping: the caller gives the time (monotonic seconds) and sends
what comes back.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from perseus_core.notify.events import EventKind, FleetEvent

FOLDED_KINDS = frozenset({EventKind.TRANSITION, EventKind.ERROR, EventKind.RESTART})
"""The kinds an episode gathers; the others are told at once."""

AT_REST = "active"
"""A state that ends an episode at once: the instance is up and running."""
AT_REST_UNLESS_FAILED = "idle"
"""A state that ends an episode at once unless the episode holds an error."""

GAP = "…"
"""Where two transitions of an episode do not meet (an entry was missed)."""


def walk(events: Sequence[FleetEvent]) -> tuple[str, ...]:
    """The states the transitions among `events` walked, oldest first:
    `(active, stopping, stopped, idle)` for three transitions that meet."""
    states: list[str] = []
    for event in events:
        if event.kind is not EventKind.TRANSITION or not event.states:
            continue
        if states and states[-1] == event.states[0]:
            states.extend(event.states[1:])
        else:
            if states:
                states.append(GAP)
            states.extend(event.states)
    return tuple(states)


def _restarted(restarts: Sequence[FleetEvent]) -> str:
    """` and restarted automatically 3 times`: what an episode's restarts add."""
    if not restarts:
        return ""
    return " and restarted automatically" + (f" {len(restarts)} times" if len(restarts) > 1 else "")


def fold(events: Sequence[FleetEvent]) -> FleetEvent:
    """The one event that tells an episode's `events` (one exchange's,
    oldest first): an error, with the states walked around it, when there
    was one; else the transition through every state walked; else (only
    restarts, their transitions not seen) the latest restart. Automatic
    restarts are named in the told event's `transition`."""
    if len(events) == 1:
        return events[0]
    states = walk(events)
    errors = [event for event in events if event.kind is EventKind.ERROR]
    restarts = [event for event in events if event.kind is EventKind.RESTART]
    note = _restarted(restarts)
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        return replace(
            first, transition=first.transition + more + note, states=states, count=len(events)
        )
    moves = [event for event in events if event.kind is EventKind.TRANSITION]
    if not moves:
        latest = restarts[-1]
        return replace(latest, transition=f"{len(restarts)} automatic restarts", count=len(events))
    return replace(
        moves[0],
        transition=" → ".join(states) + note,
        host=moves[-1].host,
        states=states,
        count=len(events),
    )


@dataclass(slots=True)
class _Episode:
    events: list[FleetEvent]
    began: float
    last: float
    failed: bool = False
    states: list[str] = field(default_factory=list)

    def add(self, event: FleetEvent, now: float) -> None:
        self.events.append(event)
        self.last = now
        if event.kind in (EventKind.ERROR, EventKind.RESTART):
            self.failed = True  # idle is no rest: a restart follows
        elif event.states:
            self.states.append(event.states[-1])

    @property
    def at_rest(self) -> bool:
        """The exchange's newest state ends the story (see the module docstring)."""
        if not self.states:
            return False
        newest = self.states[-1]
        return newest == AT_REST or (newest == AT_REST_UNLESS_FAILED and not self.failed)


class Episodes:
    """Each exchange's open episode, and when it is due to be told.

    Args:
        settle_s: an episode with no new entry for this long is told; 0 or
            less tells every event at once, on its own.
        longest_s: an episode is told at the latest this long after it began.
    """

    def __init__(self, settle_s: float, longest_s: float) -> None:
        self.settle_s = settle_s
        self.longest_s = max(settle_s, longest_s)
        self._open: dict[str, _Episode] = {}

    def __len__(self) -> int:
        return len(self._open)

    def add(self, event: FleetEvent, now: float) -> list[FleetEvent]:
        """Take `event` at time `now`; the events to tell now, in order."""
        # By name (what the stream is named after): an entry may lack its exchangeId.
        key = event.exchange_name.lower() or str(event.exchange_id)
        if self.settle_s <= 0 or event.kind not in FOLDED_KINDS:
            told = [fold(opened.events)] if (opened := self._open.pop(key, None)) else []
            return [*told, event]
        episode = self._open.get(key)
        if episode is None:
            episode = self._open[key] = _Episode([], now, now)
        episode.add(event, now)
        if episode.at_rest:
            del self._open[key]
            return [fold(episode.events)]
        return []

    def due(self, now: float) -> list[FleetEvent]:
        """The episodes due at `now` (quiet for `settle_s`, or open for
        `longest_s`), told, oldest first."""
        ripe = [
            key
            for key, episode in self._open.items()
            if now - episode.last >= self.settle_s or now - episode.began >= self.longest_s
        ]
        ripe.sort(key=lambda key: self._open[key].began)
        return [fold(self._open.pop(key).events) for key in ripe]

    def next_due(self) -> float | None:
        """When the next episode falls due (monotonic seconds), None if none is open."""
        return min(
            (min(e.last + self.settle_s, e.began + self.longest_s) for e in self._open.values()),
            default=None,
        )

    def close_all(self) -> list[FleetEvent]:
        """Every open episode, told now (the notifier is stopping), oldest first."""
        episodes = sorted(self._open.values(), key=lambda episode: episode.began)
        self._open.clear()
        return [fold(episode.events) for episode in episodes]
