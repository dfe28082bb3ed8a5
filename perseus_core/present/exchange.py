"""The presenter of one exchange view: what a card, a table row, the detail
screen and a `perseus status` line show of it.

Everything here is a pure function of the view, the time it is shown at and
the reader's timing (`Timing`; a heartbeat is judged by its holder's own
interval, `Timing.thresholds`): its badge, its status word, and typed lines
(`Part`s with semantic tones, times already turned into ages and zoned clock
times).
A surface only lays the parts out and maps tones to its own styles, so every
surface says the same thing in the same colour.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from enum import StrEnum
from typing import NamedTuple

from perseus_core.store.network import ExchangeView, LastKnown, ViewKind
from perseus_core.store.network.views import CHILD_EXIT_PREFIX
from perseus_core.wire.models import AgentPresence, ConnectionState, InstanceStatus
from perseus_core.wire.models.catalog import FATAL_NOTE_PREFIX
from perseus_core.wire.settings import Settings
from perseus_core.wire.text import clean, clean_or
from perseus_core.wire.timeutil import format_duration, id_time


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
    """When one holder's heartbeat age turns from fresh (success) to late
    (warning) to overdue (error). `Timing.thresholds` decides them for each
    view from the holder's own timing (at Livermore's 15 s: green to 18 s,
    red from 30 s)."""

    fresh_s: float = 18.0
    """An age up to this is fresh: the interval plus a grace."""
    late_s: float = 30.0
    """An age up to this (and not fresh) is late; beyond it, overdue."""
    unseen_max_s: float = 0.0
    """The most time since the last read that is not held against an agent
    (a poller's refresh period; 0 for a one-off read)."""

    @classmethod
    def for_interval(
        cls,
        interval_s: float,
        *,
        fresh_s: float | None = None,
        overdue_s: float | None = None,
        unseen_max_s: float = 0.0,
    ) -> HeartbeatThresholds:
        """Fresh up to the interval plus a grace, late up to two intervals;
        `fresh_s` / `overdue_s`, when given, replace either."""
        fresh = fresh_s if fresh_s is not None else interval_s * (1 + GRACE_FRACTION)
        late = overdue_s if overdue_s is not None else 2 * interval_s
        return cls(fresh_s=fresh, late_s=max(fresh, late), unseen_max_s=unseen_max_s)

    def tone(self, age_s: float, unseen_s: float = 0.0) -> Tone:
        """The tone of a heartbeat `age_s` seconds old, read `unseen_s` seconds ago."""
        judged = age_s - min(max(0.0, unseen_s), self.unseen_max_s)
        if judged <= self.fresh_s:
            return Tone.SUCCESS
        if judged <= self.late_s:
            return Tone.WARNING
        return Tone.ERROR


class TimingSource(StrEnum):
    """Whose heartbeat timing a holder is judged by."""

    OWN = "own"
    """The holder's own, from its payload (`heartbeatIntervalMs`, `ttlMs`)."""
    LIVERMORE = "livermore"
    """Livermore's fixed 15 s / 45 s: a payload with no `instanceId`."""
    READER = "reader"
    """This reader's settings: an older Perseus payload says nothing of its timing."""


@dataclass(frozen=True, slots=True)
class Timing:
    """What heartbeat tones depend on besides the view: this reader's own
    interval (only for holders that do not say theirs), its explicit
    overrides, its refresh period, and when the fleet was last read (time
    since then is not held against an agent whose next heartbeat could not
    be seen yet).

    Every holder is judged by its own heartbeat timing (`thresholds`): a
    dashboard configured for 1 s must not call a healthy Livermore server
    (15 s) overdue, nor one at 15 s keep a dead 5 s agent green.
    """

    interval_s: float = 15.0
    """This reader's heartbeat interval (`PERSEUS_HEARTBEAT_INTERVAL_MS`):
    the timing of holders whose payload says nothing of theirs."""
    fresh_s: float | None = None
    """`PERSEUS_HEARTBEAT_FRESH_MS`: when set, fresh up to this for every holder."""
    overdue_s: float | None = None
    """`PERSEUS_HEARTBEAT_OVERDUE_MS`: when set, overdue past this for every holder."""
    unseen_max_s: float = 0.0
    """The refresh period of a poller (the dashboard); 0 for a one-off read."""
    read_at: datetime | None = None

    @classmethod
    def from_settings(cls, settings: Settings, *, polled: bool = False) -> Timing:
        """This reader's timing and overrides from its settings.

        Args:
            settings: `heartbeat_interval_ms` (for holders that do not say
                theirs), and `heartbeat_fresh_ms` / `heartbeat_overdue_ms`
                when set (they win over every holder's own timing).
            polled: the ages are shown between reads every `refresh_ms` (the
                dashboard): a heartbeat written since the last read cannot
                have been seen yet, so that time is not counted as late.
        """
        fresh_ms = settings.heartbeat_fresh_ms
        overdue_ms = settings.heartbeat_overdue_ms
        return cls(
            interval_s=settings.heartbeat_interval_ms / 1000,
            fresh_s=fresh_ms / 1000 if fresh_ms is not None else None,
            overdue_s=overdue_ms / 1000 if overdue_ms is not None else None,
            unseen_max_s=settings.refresh_ms / 1000 if polled else 0.0,
        )

    def interval(self, status: InstanceStatus | None) -> tuple[float, TimingSource]:
        """The heartbeat interval (s) the holder of `status` is judged by, and
        whose it is: its own (`InstanceStatus.writer_timing`: the payload's,
        or Livermore's fixed 15 s), this reader's only when the payload says
        nothing of it."""
        own = status.writer_timing() if status is not None else None
        if own is None:
            return self.interval_s, TimingSource.READER
        source = TimingSource.LIVERMORE if own.livermore else TimingSource.OWN
        return own.interval_ms / 1000, source

    def thresholds(self, status: InstanceStatus | None) -> HeartbeatThresholds:
        """The thresholds the holder of `status` is judged by: from the
        interval it is judged by (`interval`), with this reader's overrides
        over either threshold. Every surface asks this, so a holder looks the
        same everywhere."""
        return HeartbeatThresholds.for_interval(
            self.interval(status)[0],
            fresh_s=self.fresh_s,
            overdue_s=self.overdue_s,
            unseen_max_s=self.unseen_max_s,
        )


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
    def health(self) -> str:
        """`fresh`, `late` or `overdue`: the tone in a word, for scripts."""
        if self.tone is Tone.SUCCESS:
            return "fresh"
        return "late" if self.tone is Tone.WARNING else "overdue"

    @property
    def text(self) -> str:
        """`3s ago`, or `no heartbeat for 32s` once overdue."""
        age = format_duration(self.age_s)
        return f"no heartbeat for {age}" if self.overdue else f"{age} ago"


def _span(seconds: float) -> str:
    """`0.3s`, `2.4s`, `15s`, `5m 0s`: a timing setting, exact where it is short."""
    if seconds < 60:
        return f"{round(seconds, 1):g}s"
    return format_duration(seconds)


_SOURCE_NOTES: Mapping[TimingSource, str] = {
    TimingSource.OWN: "its own",
    TimingSource.LIVERMORE: "Livermore's",
    TimingSource.READER: "this reader's setting",
}


def timing_text(status: InstanceStatus, timing: Timing) -> tuple[str, str]:
    """The heartbeat timing a holder is judged by, and whose it is, for the
    detail screen: `every 5s, TTL 15s` and `its own`."""
    interval_s, source = timing.interval(status)
    said = f"every {_span(interval_s)}"
    own = status.writer_timing()
    if own is not None and own.ttl_ms is not None:
        said += f", TTL {_span(own.ttl_ms / 1000)}"
    return said, _SOURCE_NOTES[source]


def thresholds_text(status: InstanceStatus, timing: Timing) -> str:
    """`fresh to 6s, overdue after 10s`: the ages a holder's heartbeat turns
    late and overdue at (`Timing.thresholds`), for the detail screen."""
    limits = timing.thresholds(status)
    said = f"fresh to {_span(limits.fresh_s)}, overdue after {_span(limits.late_s)}"
    configured = timing.fresh_s is not None or timing.overdue_s is not None
    return said + " (configured)" if configured else said


def heartbeat(view: ExchangeView, now: datetime, timing: Timing) -> Heartbeat | None:
    """The heartbeat of a live view at `now` (None without a status), judged
    by its holder's own timing (`Timing.thresholds`).

    Args:
        view: the exchange.
        now: the current time.
        timing: this reader's timing, its overrides and when `view` was read
            (`read_at` None: just now).
    """
    age = heartbeat_age_s(view, now)
    if age is None:
        return None
    read_at = timing.read_at
    unseen = (now - read_at).total_seconds() if read_at is not None else 0.0
    tone = timing.thresholds(view.status).tone(age, unseen)
    return Heartbeat(age, tone, skew_warning(view))


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


STOPPED_BADGE = Badge("■", "STOPPED", Tone.WARNING, filled=False)
"""An exchange an operator stopped (`ExchangeView.stopped_by`): nothing runs
it, and no agent starts it on its own until a `start`."""


def badge(view: ExchangeView) -> Badge:
    """The badge of `view`, by its kind (and state, when live); hollow STOPPED
    while an operator's stop keeps it down."""
    kind = view.kind
    if kind is ViewKind.LIVE and view.status is not None:
        return state_badge(view.status.connection_state)
    if view.stopped_by is not None:
        return STOPPED_BADGE
    return _KIND_BADGES[kind]


def title(view: ExchangeView) -> str:
    """What an exchange is called everywhere: its display name (else its name)
    and its id, `Coinbase #1`, as one clean line."""
    return f"{clean_or(view.display_name or view.exchange_name, '?', 40)} #{view.exchange_id}"


def status_word(view: ExchangeView) -> str:
    """One word for a column: the state when live, else `unreadable`,
    `stopped` (by an operator, nothing runs), `ready`, `offline`."""
    if view.kind is ViewKind.LIVE and view.status is not None:
        return str(view.status.connection_state)
    if view.stopped_by is not None:
        return "stopped"
    return str(view.kind)


def stopped_text(view: ExchangeView, now: datetime) -> str | None:
    """`stopped by root@vm 3m 12s ago` while an operator's stop keeps the
    exchange down (`ExchangeView.stopped_by`), else None."""
    stopped = view.stopped_by
    return stopped.describe(now) if stopped is not None else None


_EXIT_CODE = re.compile(r"exited with code (-?\d+)")
_STDERR_MARK = "; last stderr: "


def crash_text(view: ExchangeView, now: datetime) -> tuple[str, str] | None:
    """`crashed: exit 3, 12s ago` and its reason (the child's last stderr
    lines, else the agent's whole error) when the last run of an exchange
    that is not online ended with its child exiting on its own
    (`LastKnown.crash`); None otherwise."""
    known = view.last_known
    if view.online or known is None or not known.crash:
        return None
    said = known.crash.removeprefix(CHILD_EXIT_PREFIX)
    head, _, stderr = said.partition(_STDERR_MARK)
    code = _EXIT_CODE.search(head)
    how = f"exit {code.group(1)}" if code else head.split(" while ", 1)[0]
    when = age_text(known.crash_time, now)
    return f"crashed: {clean(how, 60)}, {when}", clean(stderr or said, 200)


def standby_text(agent: AgentPresence) -> str:
    """`vm-b pid 29183`: one standby agent (present, not holding), where it runs."""
    pid = f" pid {agent.pid}" if agent.pid is not None else ""
    return f"{_clean(agent.hostname, '?', 40)}{pid}"


def last_seen_text(view: ExchangeView, now: datetime) -> str | None:
    """`last heartbeat 3m 2s ago` / `last entry 2d 4h ago` for an exchange not
    online, saying what dated it (`ExchangeView.last_seen`), so the cards, the
    table, the detail screen and `perseus status` read alike; None when it is
    online or was never seen. A moment ahead of `now` (clock skew) reads `just now`."""
    seen = None if view.online else view.last_seen
    if seen is None:
        return None
    seconds = (now - seen.at).total_seconds()
    age = "just now" if seconds < 0 else f"{format_duration(seconds)} ago"
    return f"last {seen.source} {age}"


def beat_at(view: ExchangeView) -> datetime | None:
    """When a live view's holder last heartbeat, else None.

    Dated by the status key's PTTL on Redis's clock when the read could
    (`ExchangeView.heartbeat_at`), so neither the writer's clock nor this
    host's can make a live instance look dead or a dead one fresh; from the
    payload's `lastHeartbeat` otherwise.
    """
    if view.status is None:
        return None
    return view.heartbeat_at if view.heartbeat_at is not None else view.status.last_heartbeat


def heartbeat_age_s(view: ExchangeView, now: datetime) -> float | None:
    """Seconds since the last heartbeat of a live view (never negative), else
    None (`beat_at`)."""
    beat = beat_at(view)
    return None if beat is None else max(0.0, (now - beat).total_seconds())


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
    (STOPPED_BADGE, "an operator stopped it: held down until `s`"),
    (_KIND_BADGES[ViewKind.OFFLINE], "no instance, no agent: nothing would answer"),
    (_KIND_BADGES[ViewKind.UNREADABLE], "alive, but its status cannot be read"),
)
"""Every badge and what it means, for the help screen."""

HEARTBEAT_LEGEND: tuple[tuple[Tone, str], ...] = (
    (Tone.SUCCESS, "fresh: within its own interval plus a grace"),
    (Tone.WARNING, "late: up to two of its intervals"),
    (Tone.ERROR, "overdue: no heartbeat for longer; offline when the key expires"),
)
"""The heartbeat colours and what they mean, for the help screen."""


# --- what each surface shows, as typed lines -------------------------------------------
#
# The presenter decides every word, tone and time of a card, a table row, the
# detail screen and a `perseus status` line; a surface only lays the parts
# out and maps their tones to its own styles. Every string from Redis is
# cleaned here (`clean_or`), and every time is an aware datetime or an age.


class Part(NamedTuple):
    """A run of text in one tone: the unit every surface lays out (a named
    tuple: a card is thousands of them a second, and tuples build fastest)."""

    text: str
    tone: Tone | None = None
    """None: the surface's ordinary text colour."""
    bold: bool = False
    italic: bool = False
    squeeze: bool = False
    """This part gives way (cut, with an ellipsis) when its line is too wide,
    so what follows it stays visible."""


Line = tuple[Part | Badge, ...]
"""One line (or one cell): parts and badges, left to right; () is an empty line."""


def _muted(text: str) -> Part:
    return Part(text, Tone.MUTED)


def _error(text: str, *, bold: bool = False) -> Part:
    return Part(text, Tone.ERROR, bold=bold)


def _clean(value: object | None, default: str = "-", max_chars: int = 60) -> str:
    """An untrusted value as one clean printable line (never markup)."""
    return clean_or(value, default, max_chars)


def age_text(moment: datetime | None, now: datetime) -> str:
    """`3s ago`, `5m 12s ago`; `just now` for clock skew into the future; `-` if unknown."""
    if moment is None:
        return "-"
    seconds = (now - moment).total_seconds()
    if seconds < 0:
        return "just now"
    return f"{format_duration(seconds)} ago"


def in_state_for(state: str, since: datetime | None, now: datetime) -> str:
    """`Warming for 1m 0s`: how long something has been in a (non-active) state."""
    if since is None:
        return ""
    return f"{clean(state, 16).capitalize()} for {format_duration((now - since).total_seconds())}"


def zone_name(tz: tzinfo | None, sample: datetime | None = None) -> str:
    """`UTC`, or the local zone's abbreviation (`CET`), for labels."""
    if tz is UTC:
        return "UTC"
    moment = (sample or datetime.now(UTC)).astimezone(tz)
    return moment.tzname() or "local"


def clock_time(moment: datetime | None, tz: tzinfo | None, now: datetime) -> str:
    """A feed timestamp in `tz`: `14:03:22` today, `02-09 14:03` before.

    Both forms are padded to the same width so feed columns stay aligned.
    """
    if moment is None:
        return "--:--:--".ljust(11)
    local = moment.astimezone(tz)
    if local.date() == now.astimezone(tz).date():
        return local.strftime("%H:%M:%S").ljust(11)
    return local.strftime("%m-%d %H:%M")


def full_time(moment: datetime | None, tz: tzinfo | None) -> str:
    """A complete timestamp with its zone, for the detail screen."""
    if moment is None:
        return "-"
    local = moment.astimezone(tz)
    return (
        local.strftime("%Y-%m-%d %H:%M:%S.")
        + f"{local.microsecond // 1000:03d} {zone_name(tz, local)}"
    )


def heartbeat_part(view: ExchangeView, now: datetime, timing: Timing) -> Part:
    """The heartbeat age of a live exchange in its tone, bold once overdue
    (`no heartbeat for 32s`); `no heartbeat` without a status."""
    return _beat_part(heartbeat(view, now, timing))


def _beat_part(beat: Heartbeat | None) -> Part:
    if beat is None:
        return _error("no heartbeat", bold=True)
    return Part(beat.text, beat.tone, bold=beat.overdue)


def uptime_text(view: ExchangeView, now: datetime, timing: Timing) -> str:
    """`4h 23m` while active (from connectedAt), else empty; it stops counting
    once the heartbeat is overdue."""
    return _uptime(view, now, heartbeat(view, now, timing))


def _uptime(view: ExchangeView, now: datetime, beat: Heartbeat | None) -> str:
    running = uptime_s(view, now, beat)
    return "" if running is None else format_duration(running)


def word_part(view: ExchangeView) -> Part:
    """The one-word status (`active`, `ready`...), bold in its badge's tone."""
    return Part(status_word(view), badge(view).tone, bold=True)


def _ip(status: InstanceStatus) -> str:
    ip = _clean(status.ip_address, "-", 45)
    if status.country_code:
        ip = f"{ip} ({_clean(status.country_code, '', 4)})"
    return ip


STALE = Part(" STALE ", Tone.WARNING, bold=True)
"""The mark of a card whose data is the last known (Redis unreachable)."""


@dataclass(frozen=True, slots=True)
class Card:
    """What a card shows under its title line (`title` ... `badge`)."""

    title: str
    badge: Badge
    lines: tuple[Line, ...]
    """Up to six lines under the title."""
    summary: Line
    """The one line a compact card keeps: the heartbeat of a live instance,
    the agent of a ready one, the last state of an offline one."""


def _card_field(name: str, *value: Part) -> Line:
    return (_muted(f"{name:<6}"), *value)


def _last_state(known: LastKnown, now: datetime, name: str) -> Line:
    """`state  stopped  2h 3m ago`: the state the activity stream last named."""
    return (
        _muted(f"{name:<6}"),
        Part(_clean(known.state, "unknown", 16), state_tone(known.state)),
        _muted(f"  {age_text(known.time, now)}"),
    )


def _live_card(view: ExchangeView, status: InstanceStatus, now: datetime, timing: Timing) -> Line:
    """The heartbeat line of a live card, then what follows it (see `card`)."""
    look = heartbeat(view, now, timing)
    beat: list[Part] = [_muted("♥ "), _beat_part(look)]
    if look is None or not look.overdue:  # overdue: "no heartbeat for 32s" says it all
        if status.connection_state == ConnectionState.ACTIVE:
            running = _uptime(view, now, look)
            beat += [_muted(" · "), Part(f"Running for {running}" if running else "", Tone.SUCCESS)]
        else:
            since = in_state_for(status.connection_state.value, status.last_state_change, now)
            beat.append(_muted(f" · {since}"))
    return tuple(beat)


def agent_state(agent: AgentPresence, now: datetime) -> str:
    """`Idle for 5m 12s` (or just `idle` when the agent did not say since when)."""
    state = _clean(agent.state, "?", 16)
    return in_state_for(state, agent.since, now) or state


def _agent_doing(view: ExchangeView, agent: AgentPresence, now: datetime) -> Line:
    """A ready card's line about its agent: what its restart policy does (a
    restart waiting out its backoff) when its note says, else its state and
    since when (`Idle for 12s`). FATAL and an operator's stop head the card
    already (`_down_lines`): their notes are not said twice."""
    if agent.note and not agent.fatal and view.stopped_by is None:
        return (Part(_clean(agent.note, "", 200), Tone.WARNING),)
    return (Part(agent_state(agent, now), state_tone(agent.state)),)


def _down_lines(view: ExchangeView, now: datetime) -> list[Line]:
    """What keeps an exchange down, for the top of its card: the operator's
    stop (`stopped by root@vm 3m ago`), then how its last run ended when its
    child crashed (`crashed: exit 3, 12s ago` and the reason)."""
    lines: list[Line] = []
    stopped = stopped_text(view, now)
    if stopped is not None:
        lines.append((Part(stopped, Tone.WARNING, bold=True),))
    fatal = fatal_text(view)
    if fatal is not None:
        # The restart policy gave up: that says more than the last crash it names.
        lines += [(_error(fatal[0], bold=True),), (_error(fatal[1]),)]
        return lines
    crashed = crash_text(view, now)
    if crashed is not None:
        lines += [(_error(crashed[0], bold=True),), (_error(crashed[1]),)]
    return lines


def fatal_text(view: ExchangeView) -> tuple[str, str] | None:
    """`FATAL: gave up` and `after 5 quick failures`, from the note of an
    agent of an exchange that is not online whose restart policy gave up
    (two short lines: a card is narrow; the whole note, reason included, is
    on the detail screen); None otherwise."""
    if view.online:
        return None
    for agent in view.agents:
        if agent.fatal and agent.note is not None:
            head, _, reason = agent.note.removeprefix(FATAL_NOTE_PREFIX).partition(": ")
            what, after, count = head.partition(" after ")
            more = f"{after.strip()} {count}" if after else reason
            return clean(f"{FATAL_NOTE_PREFIX}{what}", 80), clean(more, 200)
    return None


def card(view: ExchangeView, now: datetime, timing: Timing) -> Card:
    """Everything a card shows of `view` at `now`.

    Args:
        view: the exchange as the fleet reader last saw it.
        now: the current time.
        timing: this reader's heartbeat timing and overrides, and when the
            fleet was read.
    """
    kind = view.kind
    status = view.status
    lines: list[Line]
    if kind is ViewKind.LIVE and status is not None:
        symbols = _muted(f" · {status.symbol_count} symbols")
        admin = Part(_clean(status.admin_display_name or status.admin_email), squeeze=True)
        lines = [
            _card_field("host", Part(_clean(status.hostname))),
            _card_field("ip", Part(_ip(status))),
            _card_field("admin", admin, symbols),
            _live_card(view, status, now, timing),
        ]
        summary = 3  # the heartbeat and uptime
        standbys = view.standbys
        if standbys:
            more = f" +{len(standbys) - 1}" if len(standbys) > 1 else ""
            lines.append(
                (_muted("standby "), Part(standby_text(standbys[0]), squeeze=True), _muted(more))
            )
        if status.last_error:
            lines.append(
                (
                    _error("! ", bold=True),
                    _error(_clean(status.last_error, "", 120)),
                    _muted(f" · {age_text(status.last_error_at, now)}"),
                )
            )
    elif kind is ViewKind.UNREADABLE:
        lines = [
            (_error("status key unreadable:", bold=True),),
            (_error(_clean(view.error, "unknown problem", 200)),),
        ]
        summary = 0
    elif kind is ViewKind.READY:
        agents = view.agents
        first = agents[0]
        agent: list[Part] = [_muted("agent on "), Part(_clean(first.hostname, "?", 40))]
        if first.pid is not None:
            agent.append(_muted(f" · pid {first.pid}"))
        lines = [tuple(agent), _agent_doing(view, first, now)]
        if len(agents) > 1:
            others = ", ".join(_clean(other.hostname, "?", 30) for other in agents[1:])
            lines.append(
                (
                    Part(f"{len(agents)} agents ready", Tone.PRIMARY, bold=True),
                    _muted(f" · also {others}"),
                )
            )
        if view.last_known is not None:
            lines.append(_last_state(view.last_known, now, "last"))
        summary = 0  # where a start would run
    else:
        known = view.last_known
        seen = last_seen_text(view, now)
        if known is None:
            lines = [(_muted(seen or "never seen online"),)]
        else:
            lines = [
                (_muted(seen or "last seen"),),
                _card_field("host", Part(_clean(known.hostname))),
                _card_field("ip", Part(_clean(known.ip))),
                _last_state(known, now, "state"),
            ]
        summary = len(lines) - 1  # the last known state, or "never seen online"
    down = _down_lines(view, now)
    if down:
        lines[0:0] = down
        summary = 0
    summary_line = lines[summary]
    if view.error and kind is not ViewKind.UNREADABLE:  # e.g. a key of the wrong type
        lines.append((_error("! ", bold=True), _error(_clean(view.error))))
    return Card(title(view), badge(view), tuple(lines), summary_line)


def row(
    view: ExchangeView, now: datetime, timing: Timing, *, stale: bool = False
) -> tuple[Line, ...]:
    """The cells of a table row, most telling first (`TABLE_COLUMNS`): id,
    exchange, state, heartbeat, uptime, host, ip, admin, symbols, last error
    (() for an empty cell). On a narrow terminal the columns past its edge are
    cut: what tells whether an exchange is alive comes before where it runs."""
    name = Part(_clean(view.display_name or view.exchange_name, "?", 40))
    state: Line = (word_part(view), STALE_NOTE) if stale else (word_part(view),)
    kind = view.kind
    status = view.status
    cells: tuple[Line, ...]
    if kind is ViewKind.LIVE and status is not None:
        cells = (
            (heartbeat_part(view, now, timing),),
            (Part(uptime_text(view, now, timing), Tone.SUCCESS),),
            (Part(_clean(status.hostname)),),
            (Part(_ip(status)),),
            (Part(_clean(status.admin_display_name or status.admin_email)),),
            (Part(str(status.symbol_count)),),
            (_error(_clean(status.last_error, "", 80)),),
        )
    elif kind is ViewKind.UNREADABLE:
        cells = ((), (), (), (), (), (), (_error(_clean(view.error, "unreadable status", 80)),))
    elif kind is ViewKind.READY:
        agent = view.agents[0]
        host = _clean(agent.hostname)
        if len(view.agents) > 1:
            host += f" +{len(view.agents) - 1}"
        cells = ((_muted(f"agent: {agent_state(agent, now)}"),), (), (Part(host),), (), (), (), ())
    else:
        known = view.last_known
        cells = (
            (_muted(last_seen_text(view, now) or "never seen"),),
            (),
            (_muted(_clean(known.hostname if known else None)),),
            (_muted(_clean(known.ip if known else None)),),
            (),
            (),
            (),
        )
    stopped = stopped_text(view, now)
    if stopped is not None:  # in the heartbeat column: what keeps it down
        cells = ((Part(stopped, Tone.WARNING),), *cells[1:])
    crashed = crash_text(view, now)
    if crashed is not None:  # the last-error column
        cells = (*cells[:-1], (_error(f"{crashed[0]}: {crashed[1]}"),))
    return ((Part(str(view.exchange_id)),), (name,), state, *cells)


TABLE_COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "ID"),
    ("exchange", "Exchange"),
    ("state", "State"),
    ("heartbeat", "Heartbeat"),
    ("uptime", "Uptime"),
    ("host", "Host"),
    ("ip", "IP"),
    ("admin", "Admin"),
    ("symbols", "Symbols"),
    ("error", "Last error"),
)
"""The table's columns (key, title), in the order `row` gives its cells."""


STALE_NOTE = Part(" (stale)", Tone.WARNING, bold=True)
"""What a table row's state says while its data is the last known."""


def _detail_row(name: str, value: str | Line, note: str | Line = "") -> Line:
    """`name              value  note`: one field of the detail screen."""
    values: Line = (Part(value),) if isinstance(value, str) else value
    notes: Line = ((_muted(note),) if note else ()) if isinstance(note, str) else note
    line: Line = (_muted(f"{name:<18}"), *values)
    if any(isinstance(part, Badge) or part.text for part in notes):
        line += (Part("  "), *notes)
    return line


def _time_row(name: str, moment: datetime | None, now: datetime, tz: tzinfo | None) -> Line:
    if moment is None:
        return _detail_row(name, "-")
    return _detail_row(name, full_time(moment, tz), age_text(moment, now))


def detail(
    view: ExchangeView, now: datetime, tz: tzinfo | None, timing: Timing
) -> tuple[Line, ...]:
    """The detail screen's field list: identity, then every status field, then problems.

    Args:
        view: the exchange.
        now: the current time.
        tz: the zone absolute times are shown in (None: the machine's local zone).
        timing: this reader's heartbeat timing and overrides, and when the
            fleet was read.
    """
    name = Part(_clean(view.display_name or view.exchange_name, "?", 80), Tone.PRIMARY, bold=True)
    kind = view.kind
    status = view.status
    lines: list[Line] = [
        (name, Part(f"  #{view.exchange_id}  "), badge(view)),
        (),
        _detail_row("exchangeName", _clean(view.exchange_name)),
        _detail_row("in catalog", "yes" if view.in_catalog else "no (found online)"),
    ]
    if kind is ViewKind.LIVE and status is not None:
        lines += [
            _detail_row("hostname", _clean(status.hostname, max_chars=120)),
            _detail_row("ipAddress", _clean(status.ip_address)),
            _detail_row("countryCode", _clean(status.country_code)),
            _detail_row("adminDisplayName", _clean(status.admin_display_name)),
            _detail_row("adminEmail", _clean(status.admin_email)),
            _detail_row("connectionState", (word_part(view),)),
            _detail_row("symbolCount", str(status.symbol_count)),
            _time_row("connectedAt", status.connected_at, now, tz),
            _detail_row(
                "lastHeartbeat",
                full_time(status.last_heartbeat, tz),
                (heartbeat_part(view, now, timing),),
            ),
            _detail_row("heartbeat timing", *timing_text(status, timing)),
            _detail_row("thresholds", thresholds_text(status, timing)),
            _time_row("lastStateChange", status.last_state_change, now, tz),
            _time_row("registeredAt", status.registered_at, now, tz),
            _detail_row(
                "lastError",
                (_error(_clean(status.last_error, "-", 200)),) if status.last_error else "-",
            ),
            _time_row("lastErrorAt", status.last_error_at, now, tz),
            _detail_row("instanceId", _clean(status.instance_id, "-", 120)),
            _detail_row("epoch", "-" if status.epoch is None else str(status.epoch)),
            _detail_row("pid", "-" if status.pid is None else str(status.pid)),
            _detail_row("version", _clean(status.version)),
        ]
        running = uptime_text(view, now, timing)
        if running:
            lines.append(_detail_row("uptime", (Part(f"Running for {running}", Tone.SUCCESS),)))
        lines += _agent_rows(view.standbys, now, tz, "Standby")
    elif kind is ViewKind.UNREADABLE:
        lines.append(_detail_row("status", (word_part(view),)))
    else:
        stopped = stopped_text(view, now)
        if stopped is not None:
            said = Part(f"no instance; {stopped}", Tone.WARNING, bold=True)
        elif kind is ViewKind.READY:
            said = Part("no instance; an agent is ready", Tone.PRIMARY, bold=True)
        else:
            said = _error("offline (no status key)", bold=True)
        lines.append(_detail_row("status", (said,)))
        crashed = crash_text(view, now)
        if crashed is not None:
            lines.append(_detail_row("last run", (_error(crashed[0], bold=True),)))
            lines.append(_detail_row("reason", (_error(crashed[1]),)))
        seen = view.last_seen
        if seen is not None:
            lines.append(
                _detail_row("last seen", last_seen_text(view, now) or "", full_time(seen.at, tz))
            )
        lines += _agent_rows(view.agents, now, tz, "Agent")
        known = view.last_known
        if known is not None:
            lines += [
                (),
                (Part("Last known, from the activity stream", bold=True),),
                _detail_row("hostname", _clean(known.hostname)),
                _detail_row("ip", _clean(known.ip)),
                _detail_row("state", (Part(_clean(known.state), state_tone(known.state)),)),
                _detail_row("event", _clean(known.event)),
                _time_row("at", known.time, now, tz),
            ]
    if view.error:
        lines += [(), _detail_row("problem", (_error(_clean(view.error, "", 300)),))]
    return tuple(lines)


def _agent_rows(
    agents: tuple[AgentPresence, ...], now: datetime, tz: tzinfo | None, label: str
) -> list[Line]:
    """One block per agent (docs/wire-format.md 2.4): where a start would run,
    or (`label` `Standby`) who would take over the slot once it is free."""
    lines: list[Line] = []
    for number, agent in enumerate(agents, start=1):
        heading = label if len(agents) == 1 else f"{label} {number} of {len(agents)}"
        lines += [
            (),
            (Part(heading, bold=True),),
            _detail_row("hostname", _clean(agent.hostname, max_chars=120)),
            _detail_row("pid", "-" if agent.pid is None else str(agent.pid)),
            _detail_row("state", (Part(_clean(agent.state, "?", 16), state_tone(agent.state)),)),
            _time_row("since", agent.since, now, tz),
        ]
        if agent.note:
            lines.append(_detail_row("note", (Part(_clean(agent.note, "", 200), Tone.WARNING),)))
        lines += [
            _detail_row("agentId", _clean(agent.agent_id, "-", 120)),
            _detail_row("version", _clean(agent.version)),
        ]
    return lines


@dataclass(frozen=True, slots=True)
class StatusLine:
    """One line of `perseus status`: each column as a `Part`, the notes as text."""

    exchange_id: int
    name: str
    state: Part
    host: str = "-"
    ip: str = "-"
    heartbeat: Part = Part("-")
    uptime: str = "-"
    info: tuple[str, ...] = ()


def _cli_ago(moment: datetime | None, now: datetime) -> str:
    """`5m 3s ago`, or `-` for an unknown moment (the CLI's wording: no `just now`)."""
    if moment is None:
        return "-"
    return f"{format_duration((now - moment).total_seconds())} ago"


class _Where(NamedTuple):
    """The columns of a status line that depend on its kind, and its notes."""

    host: str = "-"
    ip: str = "-"
    heartbeat: Part = Part("-")
    uptime: str = "-"
    notes: tuple[str, ...] = ()


def _live_where(
    view: ExchangeView, status: InstanceStatus, now: datetime, timing: Timing
) -> _Where:
    """An instance that reports: its own host, heartbeat, uptime and last error."""
    notes: list[str] = []
    beat = heartbeat(view, now, timing)
    beat_part = Part("-")
    if beat is not None:
        beat_part = Part(beat.text, beat.tone)
        if beat.skew:
            notes.append(beat.skew)
    seconds = uptime_s(view, now, beat)
    if status.last_error:
        when = _cli_ago(status.last_error_at, now) if status.last_error_at else "earlier"
        notes.append(f"last error {when}: {clean(status.last_error, 80)}")
    for agent in view.standbys:
        note = f" ({clean(agent.note, 120)})" if agent.note else ""
        notes.append(f"standby {standby_text(agent)}{note}")
    return _Where(
        clean_or(status.hostname, "-", 40),
        clean_or(status.ip_address, "-", 45),
        beat_part,
        "-" if seconds is None else format_duration(seconds),
        tuple(notes),
    )


def _ready_where(view: ExchangeView, now: datetime) -> _Where:
    """No instance, but an agent that would answer a start: where it waits, since when."""
    agent = view.agents[0]
    pid = f" pid {agent.pid}" if agent.pid is not None else ""
    since = agent.since
    waiting = f" for {format_duration((now - since).total_seconds())}" if since else ""
    # An idle agent is what READY means: one vocabulary with the dashboard.
    state = "ready" if agent.state == ConnectionState.IDLE else clean_or(agent.state, "?", 16)
    notes = [f"agent{pid} {state}{waiting}"]
    if agent.note:
        notes.append(clean(agent.note, 200))
    if len(view.agents) > 1:
        others = ", ".join(clean_or(a.hostname, "?", 40) for a in view.agents[1:])
        notes.append(f"{len(view.agents)} agents ready (also {others})")
    known = view.last_known
    if known is not None:
        seen = _cli_ago(known.time or id_time(known.id), now)
        notes.append(f"last {clean_or(known.state, 'unknown state', 20)} {seen}")
    return _Where(clean_or(agent.hostname, "-", 40), notes=tuple(notes))


def _absent_where(view: ExchangeView, now: datetime) -> _Where:
    """Unreadable (alive, payload bad) or offline: the host the stream last named."""
    last = view.last_known
    notes: tuple[str, ...] = ()
    if view.kind is ViewKind.OFFLINE:
        said = last_seen_text(view, now)
        if said is None:
            notes = ("never seen",)
        else:
            state = f" ({clean_or(last.state, 'unknown state', 20)})" if last else ""
            notes = (said + state,)
    return _Where(
        clean_or(last.hostname if last else None, "-", 40),
        clean_or(last.ip if last else None, "-", 45),
        notes=notes,
    )


def _catalog_note(view: ExchangeView) -> tuple[str, ...]:
    """What the catalog says of an exchange, when it is not simply listed and active."""
    if not view.in_catalog:
        return ("not in catalog",)
    if not view.is_active:
        return ("inactive in catalog",)
    return ()


def status_line(view: ExchangeView, now: datetime, timing: Timing) -> StatusLine:
    """What `perseus status` prints for `view`, read at `now`; every string from
    Redis cleaned. A one-off read: no time since a poll is discounted.

    Args:
        view: the exchange.
        now: when it was read.
        timing: this reader's timing and overrides (`Timing.from_settings`);
            the heartbeat is judged by its holder's own timing.
    """
    kind = view.kind
    if kind is ViewKind.LIVE and view.status is not None:
        where = _live_where(view, view.status, now, timing)
    elif kind is ViewKind.READY:
        where = _ready_where(view, now)
    else:
        where = _absent_where(view, now)
    crashed = crash_text(view, now)
    if crashed is not None:
        where = where._replace(notes=(f"{crashed[0]}: {crashed[1]}", *where.notes))
    stopped = stopped_text(view, now)
    if stopped is not None:  # what keeps it down comes first
        where = where._replace(notes=(stopped, *where.notes))
    problem = (f"error: {clean(view.error, 120)}",) if view.error else ()
    return StatusLine(
        view.exchange_id,
        clean_or(view.exchange_name or view.display_name, "?", 32),
        Part(status_word(view), badge(view).tone),
        where.host,
        where.ip,
        where.heartbeat,
        where.uptime,
        (*where.notes, *_catalog_note(view), *problem),
    )
