"""What the activity streams add up to since the exporter started: transitions,
errors, automatic restarts and command outcomes per exchange, for Prometheus
counters.

The exporter tails every exchange's two streams (`ActivityTail`) from their
end at its start and feeds each entry to `StreamCounters.count`. Counting
only what is appended after the start is what keeps the counters honest
across restarts of the exporter:

- A new exporter process starts every counter at 0 and never reads an entry
  written before it started, so no entry is counted by two processes. The
  drop to 0 is a counter reset, which Prometheus' `rate()` and `increase()`
  detect and handle.
- What a restart loses: the entries written after the old process's last
  scrape and before the new one started. They are counted by neither.
- Within one process the tail resumes after the last ID it read when its
  connection comes back, so a reconnect neither skips nor repeats an entry.

Labels come from a closed vocabulary (the six states, the command types, the
outcomes; anything else is `other`), so a hostile entry cannot create series
without bound. Entries that name no exchange (no valid `exchangeId`, or the
`unknown` stream of a Livermore server whose start failed early) are counted
in `skipped` only: an exchange label must identify an exchange.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from perseus_core.wire.models import (
    ActivityEntry,
    CommandEntry,
    CommandType,
    ConnectionState,
    ErrorEntry,
    ReplyStatus,
    RestartEntry,
    StateTransitionEntry,
)
from perseus_core.wire.text import clean

OTHER = "other"
"""The label value of a state, command or outcome outside the known ones."""

STATES: frozenset[str] = frozenset(state.value for state in ConnectionState)
COMMANDS: frozenset[str] = frozenset(command.value for command in CommandType)

OUTCOMES: dict[str, str] = {
    ReplyStatus.SUCCESS.value: "success",
    ReplyStatus.ERROR.value: "error",
    "no result": "no_result",
}
"""Audit `status` -> outcome label. An `ack` entry is no outcome (the
command's result follows in its own entry) and is not counted."""

NAME_CHARS = 64
"""The longest exchange name kept for a label (names Perseus writes are shorter)."""


def _known(value: str, known: frozenset[str]) -> str:
    return value if value in known else OTHER


@dataclass(slots=True)
class StreamCounters:
    """Counts per exchange id since this object was made (see the module docstring).

    Attributes:
        transitions: (exchange id, to state) -> transitions into that state.
        errors: exchange id -> error entries.
        restarts: exchange id -> `restart` entries: automatic restarts an
            agent scheduled (docs/wire-format.md 2.8).
        commands: (exchange id, command, outcome) -> audited command outcomes.
        names: exchange id -> the name its latest entry carried, for
            exchanges the fleet read does not list.
        skipped: entries that name no exchange.
    """

    transitions: Counter[tuple[int, str]] = field(default_factory=Counter)
    errors: Counter[int] = field(default_factory=Counter)
    restarts: Counter[int] = field(default_factory=Counter)
    commands: Counter[tuple[int, str, str]] = field(default_factory=Counter)
    names: dict[int, str] = field(default_factory=dict)
    skipped: int = 0

    def count(self, entry: ActivityEntry) -> None:
        """Add one entry read from an activity stream (any kind: entries of
        other kinds, and `ack` audit entries, change nothing)."""
        exchange_id = entry.exchange_id_int
        if exchange_id is None or entry.names_no_exchange:
            if isinstance(entry, StateTransitionEntry | ErrorEntry | RestartEntry | CommandEntry):
                self.skipped += 1
            return
        if isinstance(entry, StateTransitionEntry):
            self.transitions[exchange_id, _known(entry.to_state, STATES)] += 1
        elif isinstance(entry, ErrorEntry):
            self.errors[exchange_id] += 1
        elif isinstance(entry, RestartEntry):
            self.restarts[exchange_id] += 1
        elif isinstance(entry, CommandEntry):
            if entry.status == ReplyStatus.ACK.value:
                return
            outcome = OUTCOMES.get(entry.status, OTHER)
            self.commands[exchange_id, _known(entry.command, COMMANDS), outcome] += 1
        else:
            return
        name = clean(entry.exchange_name or entry.stream, NAME_CHARS)
        if name:
            self.names[exchange_id] = name

    def copy(self) -> StreamCounters:
        """A copy to render from while the tail goes on counting."""
        return StreamCounters(
            transitions=Counter(self.transitions),
            errors=Counter(self.errors),
            restarts=Counter(self.restarts),
            commands=Counter(self.commands),
            names=dict(self.names),
            skipped=self.skipped,
        )
