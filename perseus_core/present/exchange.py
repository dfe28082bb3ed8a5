"""The presenter of one exchange view: its badge, its status word, its tones."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from perseus_core.store.network import ExchangeView, ViewKind
from perseus_core.wire.models import ConnectionState
from perseus_core.wire.text import clean


class Tone(StrEnum):
    """A colour by meaning; each surface maps it to its own styles."""

    SUCCESS = "success"
    WARNING = "warning"
    ERROR = "error"
    PRIMARY = "primary"
    ACCENT = "accent"
    SECONDARY = "secondary"
    MUTED = "muted"


STATE_TONES: Mapping[str, Tone] = {
    ConnectionState.ACTIVE: Tone.SUCCESS,
    ConnectionState.STARTING: Tone.PRIMARY,
    ConnectionState.WARMING: Tone.ACCENT,
    ConnectionState.STOPPING: Tone.WARNING,
    ConnectionState.STOPPED: Tone.SECONDARY,
    ConnectionState.IDLE: Tone.MUTED,
}
"""The tone of each lifecycle state."""


def state_tone(state: str | None) -> Tone:
    """The tone of a state name; muted for anything unknown."""
    return STATE_TONES.get(state or "", Tone.MUTED)


@dataclass(frozen=True, slots=True)
class HeartbeatThresholds:
    """When a heartbeat's age turns from fresh (success) to late (warning) to
    overdue (error)."""

    fresh_s: float = 10.0
    """An age below this is fresh."""
    late_s: float = 30.0
    """An age below this (and not fresh) is late; from here on it is overdue."""

    def tone(self, age_s: float) -> Tone:
        """The tone of a heartbeat `age_s` seconds old."""
        if age_s < self.fresh_s:
            return Tone.SUCCESS
        if age_s < self.late_s:
            return Tone.WARNING
        return Tone.ERROR


@dataclass(frozen=True, slots=True)
class Badge:
    """The badge of an exchange: ` ● ACTIVE `, ` ◇ READY `, ` ○ OFFLINE `, ` ✖ BAD STATUS `.

    A filled badge means an instance is online; hollow ones (ready, offline)
    mean nothing runs, so they can never be mistaken for a state.
    """

    symbol: str
    label: str
    tone: Tone
    filled: bool

    @property
    def text(self) -> str:
        """The badge as plain text, padded: ` ● ACTIVE `."""
        return f" {self.symbol} {self.label} "


_KIND_BADGES: Mapping[ViewKind, Badge] = {
    ViewKind.UNREADABLE: Badge("✖", "BAD STATUS", Tone.ERROR, filled=True),
    ViewKind.READY: Badge("◇", "READY", Tone.PRIMARY, filled=False),
    ViewKind.OFFLINE: Badge("○", "OFFLINE", Tone.ERROR, filled=False),
}


def state_badge(state: str | None) -> Badge:
    """The filled badge of a live instance in `state`."""
    return Badge("●", clean(state or "unknown", 16).upper(), state_tone(state), filled=True)


def badge(view: ExchangeView) -> Badge:
    """The badge of `view`, by its kind (and state, when live)."""
    kind = view.kind
    if kind is ViewKind.LIVE and view.status is not None:
        return state_badge(view.status.connection_state)
    return _KIND_BADGES[kind]


def status_word(view: ExchangeView) -> str:
    """One word for a column: the state when live, else `unreadable`, `ready`, `offline`."""
    if view.kind is ViewKind.LIVE and view.status is not None:
        return str(view.status.connection_state)
    return str(view.kind)


def heartbeat_age_s(view: ExchangeView, now: datetime) -> float | None:
    """Seconds since the last heartbeat of a live view (never negative), else None."""
    if view.status is None:
        return None
    return max(0.0, (now - view.status.last_heartbeat).total_seconds())
