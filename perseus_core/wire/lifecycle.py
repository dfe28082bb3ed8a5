"""The lifecycle of an instance: which state may follow which (docs/wire-format.md 1.2).

The table is fixed by the existing TypeScript implementation; a Python
instance that allowed anything else would show operators a history the other
implementation's readers consider impossible. This module is pure (no Redis):
`Instance` applies a transition here first and only then publishes it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

from perseus_core.wire.errors import InvalidTransition
from perseus_core.wire.models import ConnectionState

_S = ConnectionState

TRANSITIONS: Mapping[ConnectionState, frozenset[ConnectionState]] = MappingProxyType(
    {
        _S.IDLE: frozenset({_S.STARTING}),
        _S.STARTING: frozenset({_S.WARMING, _S.STOPPING, _S.IDLE}),
        _S.WARMING: frozenset({_S.ACTIVE, _S.STOPPING, _S.IDLE}),
        _S.ACTIVE: frozenset({_S.STOPPING}),
        _S.STOPPING: frozenset({_S.STOPPED}),
        _S.STOPPED: frozenset({_S.IDLE}),
    }
)
"""Allowed next states per state. `starting`/`warming` -> `idle` is error recovery."""

# The order states are listed in messages: the lifecycle order, not set order,
# so the same mistake always produces the same text.
_ORDER = tuple(ConnectionState)

DEFAULT_HISTORY_SIZE = 100
"""How many transitions a `Lifecycle` remembers; older ones are dropped."""


def allowed_from(state: ConnectionState) -> tuple[ConnectionState, ...]:
    """The states `state` may move to, in lifecycle order."""
    targets = TRANSITIONS[state]
    return tuple(s for s in _ORDER if s in targets)


def can_transition(from_state: ConnectionState, to_state: ConnectionState) -> bool:
    """Whether docs/wire-format.md 1.2 allows `from_state -> to_state`."""
    return to_state in TRANSITIONS[from_state]


def _join(states: tuple[ConnectionState, ...]) -> str:
    names = [s.value for s in states]
    if len(names) <= 1:
        return "".join(names)
    return ", ".join(names[:-1]) + " or " + names[-1]


def check_transition(from_state: ConnectionState, to_state: ConnectionState) -> None:
    """Raise InvalidTransition unless `from_state -> to_state` is allowed.

    The message names what *is* allowed, because the person reading it usually
    needs the next valid step, not just a refusal:
    `cannot go from active to idle: active allows stopping`.
    """
    if not can_transition(from_state, to_state):
        raise InvalidTransition(
            f"cannot go from {from_state.value} to {to_state.value}: "
            f"{from_state.value} allows {_join(allowed_from(from_state))}"
        )


@dataclass(frozen=True, slots=True)
class TransitionRecord:
    """One transition that happened: from, to, and when (from the injected clock)."""

    from_state: ConnectionState
    to_state: ConnectionState
    at: datetime


class Lifecycle:
    """The current state plus a capped history of how it got there.

    Validation and the in-memory change happen together and synchronously, so
    two concurrent callers in one event loop can never both validate against
    the same old state.
    """

    def __init__(
        self,
        state: ConnectionState = ConnectionState.IDLE,
        *,
        history_size: int = DEFAULT_HISTORY_SIZE,
    ) -> None:
        if history_size < 1:
            raise ValueError(f"history_size must be at least 1, got {history_size}")
        self._state = state
        self._history: deque[TransitionRecord] = deque(maxlen=history_size)

    @property
    def state(self) -> ConnectionState:
        """The current state."""
        return self._state

    @property
    def history(self) -> list[TransitionRecord]:
        """Recent transitions, oldest first (a copy: callers may keep it)."""
        return list(self._history)

    def advance(self, to_state: ConnectionState, at: datetime) -> TransitionRecord:
        """Move to `to_state` (raising InvalidTransition, unchanged, if not allowed)."""
        check_transition(self._state, to_state)
        record = TransitionRecord(self._state, to_state, at)
        self._state = to_state
        self._history.append(record)
        return record
