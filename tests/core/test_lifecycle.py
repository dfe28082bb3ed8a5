"""The transition table of docs/wire-format.md 1.2, all 36 pairs, and the pure state machine."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest

from perseus_core.wire.errors import InvalidTransition
from perseus_core.wire.lifecycle import (
    TRANSITIONS,
    Lifecycle,
    TransitionRecord,
    allowed_from,
    can_transition,
    check_transition,
)
from perseus_core.wire.models import ConnectionState as S

# Written out from docs/wire-format.md 1.2 on purpose, not derived from TRANSITIONS.
ALLOWED = {
    (S.IDLE, S.STARTING),
    (S.STARTING, S.WARMING),
    (S.STARTING, S.STOPPING),
    (S.STARTING, S.IDLE),
    (S.WARMING, S.ACTIVE),
    (S.WARMING, S.STOPPING),
    (S.WARMING, S.IDLE),
    (S.ACTIVE, S.STOPPING),
    (S.STOPPING, S.STOPPED),
    (S.STOPPED, S.IDLE),
}

ALL_PAIRS = list(itertools.product(S, S))
T0 = datetime(2026, 2, 10, 18, 0, tzinfo=UTC)


def test_there_are_36_pairs_and_10_allowed() -> None:
    assert len(ALL_PAIRS) == 36
    assert sum(can_transition(a, b) for a, b in ALL_PAIRS) == len(ALLOWED) == 10


@pytest.mark.parametrize(("a", "b"), ALL_PAIRS, ids=[f"{a}->{b}" for a, b in ALL_PAIRS])
def test_every_pair(a: S, b: S) -> None:
    if (a, b) in ALLOWED:
        assert can_transition(a, b)
        check_transition(a, b)
    else:
        assert not can_transition(a, b)
        with pytest.raises(InvalidTransition) as info:
            check_transition(a, b)
        assert str(info.value).startswith(f"cannot go from {a.value} to {b.value}: ")


def test_table_covers_every_state() -> None:
    assert set(TRANSITIONS) == set(S)


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (S.ACTIVE, S.IDLE, "cannot go from active to idle: active allows stopping"),
        (S.IDLE, S.ACTIVE, "cannot go from idle to active: idle allows starting"),
        (
            S.STARTING,
            S.ACTIVE,
            "cannot go from starting to active: starting allows idle, warming or stopping",
        ),
        (S.STOPPED, S.STOPPED, "cannot go from stopped to stopped: stopped allows idle"),
    ],
)
def test_message_names_what_is_allowed(a: S, b: S, message: str) -> None:
    with pytest.raises(InvalidTransition, match=f"^{message}$"):
        check_transition(a, b)


def test_allowed_from_is_in_lifecycle_order() -> None:
    assert allowed_from(S.WARMING) == (S.IDLE, S.ACTIVE, S.STOPPING)


def test_table_is_read_only() -> None:
    with pytest.raises(TypeError):
        TRANSITIONS[S.ACTIVE] = frozenset({S.IDLE})  # type: ignore[index]


def test_lifecycle_records_and_caps_history() -> None:
    machine = Lifecycle(history_size=3)
    path = [S.STARTING, S.WARMING, S.ACTIVE, S.STOPPING, S.STOPPED]
    for minute, state in enumerate(path):
        machine.advance(state, T0.replace(minute=minute))
    assert machine.state is S.STOPPED
    assert machine.history == [
        TransitionRecord(S.WARMING, S.ACTIVE, T0.replace(minute=2)),
        TransitionRecord(S.ACTIVE, S.STOPPING, T0.replace(minute=3)),
        TransitionRecord(S.STOPPING, S.STOPPED, T0.replace(minute=4)),
    ]


def test_lifecycle_rejects_without_changing_anything() -> None:
    machine = Lifecycle()
    machine.advance(S.STARTING, T0)
    with pytest.raises(InvalidTransition):
        machine.advance(S.ACTIVE, T0)
    assert machine.state is S.STARTING
    assert len(machine.history) == 1


def test_history_is_a_copy() -> None:
    machine = Lifecycle()
    machine.advance(S.STARTING, T0)
    machine.history.clear()
    assert len(machine.history) == 1


def test_history_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        Lifecycle(history_size=0)
