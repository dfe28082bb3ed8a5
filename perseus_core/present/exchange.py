"""The presenter of one exchange view: its badge, its status word, its tones."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from perseus_core.store.network import ExchangeView, ViewKind
from perseus_core.wire.models import ConnectionState
from perseus_core.wire.settings import Settings
from perseus_core.wire.text import clean, clean_or
from perseus_core.wire.timeutil import format_duration


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


GRACE_FRACTION = 0.2
"""Default grace past the interval before a heartbeat counts as late: a fifth
of the interval covers a busy event loop and the write's round trip."""


@dataclass(frozen=True, slots=True)
class HeartbeatThresholds:
    """When a heartbeat's age turns from fresh (success) to late (warning) to
    overdue (error); build it with `from_settings` so the colours follow the
    configured timing (at the 15 s default: green to 18 s, red from 30 s)."""

    fresh_s: float = 18.0
    """An age up to this is fresh: the interval plus a grace."""
    late_s: float = 30.0
    """An age up to this (and not fresh) is late; beyond it, overdue."""
    unseen_max_s: float = 0.0
    """The most time since the last read that is not held against an agent
    (a poller's refresh period; 0 for a one-off read)."""

    @classmethod
    def from_settings(cls, settings: Settings, *, polled: bool = False) -> HeartbeatThresholds:
        """The thresholds for `settings`' heartbeat interval, or their overrides.

        Args:
            settings: `heartbeat_interval_ms`, and `heartbeat_fresh_ms` /
                `heartbeat_overdue_ms` when set.
            polled: the ages are shown between reads every `refresh_ms` (the
                dashboard): a heartbeat written since the last read cannot
                have been seen yet, so that time is not counted as late.
        """
        interval_s = settings.heartbeat_interval_ms / 1000
        fresh_ms = settings.heartbeat_fresh_ms
        overdue_ms = settings.heartbeat_overdue_ms
        fresh = fresh_ms / 1000 if fresh_ms is not None else interval_s * (1 + GRACE_FRACTION)
        late = overdue_ms / 1000 if overdue_ms is not None else 2 * interval_s
        unseen = settings.refresh_ms / 1000 if polled else 0.0
        return cls(fresh_s=fresh, late_s=max(fresh, late), unseen_max_s=unseen)

    def tone(self, age_s: float, unseen_s: float = 0.0) -> Tone:
        """The tone of a heartbeat `age_s` seconds old, read `unseen_s` seconds ago."""
        judged = age_s - min(max(0.0, unseen_s), self.unseen_max_s)
        if judged <= self.fresh_s:
            return Tone.SUCCESS
        if judged <= self.late_s:
            return Tone.WARNING
        return Tone.ERROR


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """How a live instance's heartbeat looks: its age, its tone, and whether it
    is overdue (then it no longer proves the instance runs)."""

    age_s: float
    tone: Tone
    skew: str | None = None
    """A clock-skew warning (`skew_warning`) when the writer's clock is off."""

    @property
    def overdue(self) -> bool:
        """Past the late threshold: the instance may be dead until its key expires."""
        return self.tone is Tone.ERROR

    @property
    def text(self) -> str:
        """`3s ago`, or `no heartbeat for 32s` once overdue."""
        age = format_duration(self.age_s)
        return f"no heartbeat for {age}" if self.overdue else f"{age} ago"


@dataclass(frozen=True, slots=True)
class Timing:
    """What heartbeat tones depend on besides the view: the thresholds of the
    configured timing, and when the fleet was last read (time since then is
    not held against an agent whose next heartbeat could not be seen yet)."""

    thresholds: HeartbeatThresholds = HeartbeatThresholds()
    read_at: datetime | None = None


def heartbeat(
    view: ExchangeView,
    now: datetime,
    thresholds: HeartbeatThresholds,
    read_at: datetime | None = None,
) -> Heartbeat | None:
    """The heartbeat of a live view at `now` (None without a status).

    Args:
        view: the exchange.
        now: the current time.
        thresholds: from `HeartbeatThresholds.from_settings`.
        read_at: when `view` was read (None: just now).
    """
    age = heartbeat_age_s(view, now)
    if age is None:
        return None
    unseen = (now - read_at).total_seconds() if read_at is not None else 0.0
    return Heartbeat(age, thresholds.tone(age, unseen), skew_warning(view))


def uptime_s(view: ExchangeView, now: datetime, beat: Heartbeat | None) -> float | None:
    """How long an active instance has been running, None when it is not active.

    Once its heartbeat is overdue the uptime stops at the last heartbeat: a
    killed instance must not keep counting until its key expires.
    """
    status = view.status
    if status is None or status.connection_state != ConnectionState.ACTIVE:
        return None
    if status.connected_at is None:
        return None
    end = status.last_heartbeat if beat is not None and beat.overdue else now
    return max(0.0, (end - status.connected_at).total_seconds())


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


def title(view: ExchangeView) -> str:
    """What an exchange is called everywhere: its display name (else its name)
    and its id, `Coinbase #1`, as one clean line."""
    return f"{clean_or(view.display_name or view.exchange_name, '?', 40)} #{view.exchange_id}"


def status_word(view: ExchangeView) -> str:
    """One word for a column: the state when live, else `unreadable`, `ready`, `offline`."""
    if view.kind is ViewKind.LIVE and view.status is not None:
        return str(view.status.connection_state)
    return str(view.kind)


def last_seen_text(view: ExchangeView, now: datetime) -> str | None:
    """`last heartbeat 3m 2s ago` / `last entry 2d 4h ago` for an exchange not
    online, saying what dated it (`ExchangeView.last_seen`), so the cards, the
    table, the detail screen and `perseus status` read alike; None when it is
    online or was never seen. A moment ahead of `now` (clock skew) reads `just now`."""
    seen = None if view.online else view.last_seen
    if seen is None:
        return None
    seconds = (now - seen.at).total_seconds()
    return seen.label("just now" if seconds < 0 else f"{format_duration(seconds)} ago")


def heartbeat_age_s(view: ExchangeView, now: datetime) -> float | None:
    """Seconds since the last heartbeat of a live view (never negative), else None.

    Dated by the status key's PTTL on Redis's clock when the read could
    (`ExchangeView.heartbeat_at`), so neither the writer's clock nor this
    host's can make a live instance look dead or a dead one fresh; from the
    payload's `lastHeartbeat` otherwise.
    """
    if view.status is None:
        return None
    beat = view.heartbeat_at if view.heartbeat_at is not None else view.status.last_heartbeat
    return max(0.0, (now - beat).total_seconds())


SKEW_WARNING_S = 2.0
"""How far a writer's `lastHeartbeat` may differ from the PTTL-dated heartbeat
before a clock skew is reported."""


def skew_warning(view: ExchangeView) -> str | None:
    """`clock skew: the writer's clock is 5.2 s ahead of Redis` when the skew
    exceeds `SKEW_WARNING_S`, else None."""
    skew = view.clock_skew_s
    if skew is None or abs(skew) <= SKEW_WARNING_S:
        return None
    side = "ahead of" if skew > 0 else "behind"
    return (
        f"clock skew: the writer's clock is {abs(skew):.1f} s {side} Redis (age from the key's TTL)"
    )


LEGEND: tuple[tuple[Badge, str], ...] = (
    (state_badge(ConnectionState.ACTIVE), "running and streaming"),
    (state_badge(ConnectionState.STARTING), "claimed its slot, connecting"),
    (state_badge(ConnectionState.WARMING), "loading data before going active"),
    (state_badge(ConnectionState.STOPPING), "asked to stop, winding down"),
    (state_badge(ConnectionState.STOPPED), "stopped, about to release its slot"),
    (state_badge(ConnectionState.IDLE), "holds its slot, not running"),
    (_KIND_BADGES[ViewKind.READY], "no instance; an agent waits: `s` starts it"),
    (_KIND_BADGES[ViewKind.OFFLINE], "no instance, no agent: nothing would answer"),
    (_KIND_BADGES[ViewKind.UNREADABLE], "alive, but its status cannot be read"),
)
"""Every badge and what it means, for the help screen."""

HEARTBEAT_LEGEND: tuple[tuple[Tone, str], ...] = (
    (Tone.SUCCESS, "fresh: within the interval plus a grace"),
    (Tone.WARNING, "late: up to two intervals"),
    (Tone.ERROR, "overdue: no heartbeat for longer; offline when the key expires"),
)
"""The heartbeat colours and what they mean, for the help screen."""
