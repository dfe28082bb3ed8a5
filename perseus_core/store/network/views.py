"""What the fleet reader hands out: one `ExchangeView` per exchange, in a `FleetSnapshot`.

`ExchangeView.kind` is the one place that decides whether an exchange is live,
unreadable, ready or offline; every surface shows what it says. These are
data only: how they read on screen and in `perseus status --json` is decided
in `perseus_core.present`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum

from perseus_core.store.wanted import Wanted
from perseus_core.wire.models import (
    ActivityEntry,
    AgentPresence,
    CatalogEntry,
    ErrorEntry,
    InstanceStatus,
    OtherEntry,
    StateTransitionEntry,
)
from perseus_core.wire.timeutil import id_time, parse_ts_or_none, system_clock

NOT_AN_ID = -1
"""The `exchange_id` of a view made for a catalog field that is not a number."""


def same_writer(hostname: str, ip: str, other_hostname: str, other_ip: str) -> bool:
    """Whether two writes (entries, a status payload) come from the same host:
    the same hostname, and the same IP when both name one (a holder's entry
    may be written before its IP is known). Raw strings as stored; the one
    test every reader uses to tell the holder from a refused claimant."""
    same_ip = not (ip and other_ip) or ip == other_ip
    return hostname == other_hostname and same_ip


@dataclass(frozen=True, slots=True)
class LastKnown:
    """What the activity stream says about an exchange that is not online: the
    newest entry that names a state (see `pick`), else the newest entry.

    All values are the stream's raw strings (empty when the entry lacks them);
    show them as plain text.
    """

    hostname: str
    ip: str
    state: str
    timestamp: str
    event: str
    id: str
    crash: str = ""
    """The holder's own error entry that ended its last run, when its child
    exited on its own (`child command exited with code 3 while active; last
    stderr: ...`), found just below the transitions that walked it back to
    idle; empty for a run that was stopped."""
    crash_timestamp: str = ""
    """When that error was written (raw, as `timestamp`)."""

    @property
    def time(self) -> datetime | None:
        """`timestamp` parsed, or None if missing or unparseable."""
        return parse_ts_or_none(self.timestamp)

    @property
    def crash_time(self) -> datetime | None:
        """`crash_timestamp` parsed, or None."""
        return parse_ts_or_none(self.crash_timestamp)

    @classmethod
    def from_entry(cls, entry: ActivityEntry) -> LastKnown:
        """The last-known info carried by one entry.

        The state is the state the entry leaves the exchange in: `toState` of a
        transition, `state` of an error, and for other events whichever of
        those two fields they happen to carry.
        """
        if isinstance(entry, StateTransitionEntry):
            state = entry.to_state
        elif isinstance(entry, ErrorEntry):
            state = entry.state
        elif isinstance(entry, OtherEntry):
            extra = entry.extra_fields
            state = extra.get("toState") or extra.get("state") or ""
        else:
            state = ""
        return cls(
            hostname=entry.hostname,
            ip=entry.ip,
            state=state,
            timestamp=entry.timestamp,
            event=entry.event,
            id=entry.id,
        )

    @classmethod
    def pick(cls, entries: Iterable[ActivityEntry]) -> LastKnown | None:
        """The last-known info of the last holder, from entries given newest first.

        The newest `state_transition` names the holder; a newer `error` counts
        only when it comes from that holder (same hostname, and same IP when
        both name one: a holder's error may be written before its IP is
        known). An agent or a TypeScript server whose claim was refused
        writes an error of its own (its host, state idle) into the holder's
        stream, and must not take over the offline card. Without a transition among `entries`: the
        newest entry that carries a state, else the newest one (None if none).
        """
        items = [(entry, cls.from_entry(entry)) for entry in entries]
        for index, (entry, known) in enumerate(items):
            if isinstance(entry, StateTransitionEntry):
                for newer, info in items[:index]:
                    same_host = same_writer(newer.hostname, newer.ip, entry.hostname, entry.ip)
                    if isinstance(newer, ErrorEntry) and same_host and info.state:
                        return info
                crash = _crash_below(entry, [older for older, _ in items[index:]])
                if crash is not None:
                    return replace(known, crash=crash.error, crash_timestamp=crash.timestamp)
                return known
        stated = [known for _, known in items if known.state]
        if stated:
            return stated[0]
        return items[0][1] if items else None


CHILD_EXIT_PREFIX = "child command "
"""How a Perseus agent's error entry for a child that exited on its own begins
(`child command exited with code 3 while active`)."""

_WAY_OUT = frozenset({"stopping", "stopped", "idle"})


def _crash_below(newest: StateTransitionEntry, older: list[ActivityEntry]) -> ErrorEntry | None:
    """The holder's child-exit error that started its walk back to idle, when
    `newest` (a transition, then the entries below it, newest first) ends one:
    below the transitions into stopping, stopped and idle of the same host
    lies its error entry. A stop has a transition out of a running state
    there instead."""
    if newest.to_state not in _WAY_OUT:
        return None
    for entry in older:
        if not same_writer(entry.hostname, entry.ip, newest.hostname, newest.ip):
            continue
        if isinstance(entry, StateTransitionEntry) and entry.to_state in _WAY_OUT:
            continue
        if isinstance(entry, ErrorEntry) and entry.error.startswith(CHILD_EXIT_PREFIX):
            return entry
        return None
    return None


@dataclass(frozen=True, slots=True)
class LastSeen:
    """When an exchange that is not online was last seen, and by what: the
    newest heartbeat a reader saw while it was online (`heartbeat`), else
    the time of the last holder's newest entry in its stream (`entry`)."""

    at: datetime
    source: str
    """`heartbeat` or `entry`: what dated it (`present.last_seen_text` words it)."""


class ViewKind(StrEnum):
    """What an exchange is, as far as a reader can tell: decided once, in
    `ExchangeView.kind`, and shown the same way by every surface."""

    LIVE = "live"
    """Its status key exists and its payload is valid."""
    UNREADABLE = "unreadable"
    """Its status key exists (the instance is alive) but the payload is not valid."""
    READY = "ready"
    """No status key, but an agent runs for it and would answer a start."""
    OFFLINE = "offline"
    """No status key and no agent."""


@dataclass(slots=True)
class ExchangeView:
    """One exchange as the dashboard shows it (treat as read-only: a snapshot
    of 10,000 is built on every poll, and frozen dataclasses cost a third more
    to build).

    Attributes:
        exchange_id: the exchange id (`NOT_AN_ID` for a catalog field that is not
            a number).
        exchange_name: the catalog name, else the name in the status payload,
            else empty (unknown).
        display_name: what to show as its title; never empty.
        in_catalog: whether the catalog has an entry (valid or not) for it.
        status: the validated status payload, None if offline or corrupt.
        error: what is wrong with its catalog entry, status payload or stream,
            or None.
        last_known: what the activity stream last said, when there is no
            valid status.
        key_exists: the status key exists (the instance is alive), even if its
            payload could not be read.
        catalog_entry: the valid catalog entry, if any.
        agents: the agents running for it (docs/wire-format.md 2.4), sorted
            by hostname and pid: with a valid status, the holder's agent and
            its standbys (`standbys`). A tuple: views are shared between
            snapshots.
        wanted: what the operators last asked of it (docs/wire-format.md
            2.6), read only when there is no valid status; None when nothing
            readable is recorded.
        seen_at: for an exchange not online, its newest heartbeat this
            reader saw while it was online (see `last_seen`); else None.
        heartbeat_at: when the last heartbeat happened on this host's clock,
            dated by the key's PTTL on Redis's clock (the writer's TTL minus
            the PTTL before the read); None when the PTTL could not date it. Unlike
            `status.last_heartbeat` no writer's clock can skew it.
    """

    exchange_id: int
    exchange_name: str
    display_name: str
    in_catalog: bool
    status: InstanceStatus | None = None
    error: str | None = None
    last_known: LastKnown | None = None
    key_exists: bool = False
    catalog_entry: CatalogEntry | None = None
    agents: tuple[AgentPresence, ...] = ()
    heartbeat_at: datetime | None = None
    seen_at: datetime | None = None
    wanted: Wanted | None = None

    @property
    def standbys(self) -> tuple[AgentPresence, ...]:
        """The agents present that do not hold the slot (idle), while an
        instance holds it: each would take over if started once the slot is free."""
        if not self.online:
            return ()
        return tuple(agent for agent in self.agents if agent.state == "idle")

    @property
    def stopped_by(self) -> Wanted | None:
        """The operator's stop that keeps this exchange down, when nothing
        runs it: the record, else None (running, or not stopped)."""
        wanted = self.wanted
        if self.online or wanted is None or not wanted.stopped:
            return None
        return wanted

    @property
    def last_seen(self) -> LastSeen | None:
        """When it was last seen, labelled with the source (None: never)."""
        if self.seen_at is not None:
            return LastSeen(self.seen_at, "heartbeat")
        known = self.last_known
        moment = (known.time or id_time(known.id)) if known is not None else None
        return LastSeen(moment, "entry") if moment is not None else None

    @property
    def online(self) -> bool:
        """The status key exists: its TTL is the liveness signal, so an
        instance with a corrupt payload is still online."""
        return self.key_exists or self.status is not None

    @property
    def clock_skew_s(self) -> float | None:
        """How far the writer's clock is ahead of Redis's (negative: behind):
        its `lastHeartbeat` against the heartbeat dated by PTTL
        (`heartbeat_at`); None when either is unknown. This host's own
        offset cancels out: both times are on its clock."""
        if self.status is None or self.heartbeat_at is None:
            return None
        return (self.status.last_heartbeat - self.heartbeat_at).total_seconds()

    @property
    def ready(self) -> bool:
        """Offline, but an agent is running for it: a `start` would be answered."""
        return bool(self.agents) and not self.online

    @property
    def kind(self) -> ViewKind:
        """Live, unreadable, ready or offline: the one place this is decided."""
        if self.status is not None:
            return ViewKind.LIVE
        if self.key_exists:
            return ViewKind.UNREADABLE
        return ViewKind.READY if self.agents else ViewKind.OFFLINE

    @property
    def is_active(self) -> bool:
        """The catalog's `isActive` (True when there is no valid entry)."""
        return self.catalog_entry.is_active if self.catalog_entry is not None else True


@dataclass(frozen=True, slots=True)
class FleetSnapshot:
    """Every listed exchange at one moment, sorted by id."""

    exchanges: list[ExchangeView] = field(default_factory=list)
    taken_at: datetime = field(default_factory=system_clock)
    problems: tuple[str, ...] = ()
    """What kept part of the fleet from being read, beyond any one exchange's
    view (a catalog key of the wrong type): show it, the rest is still valid."""

    def get(self, exchange_id: int) -> ExchangeView | None:
        """The view of one exchange, if the snapshot lists it."""
        for view in self.exchanges:
            if view.exchange_id == exchange_id:
                return view
        return None

    @property
    def online_count(self) -> int:
        """How many listed exchanges are online."""
        return sum(1 for view in self.exchanges if view.online)


def assemble(
    exchange_id: int,
    field_name: str | None,
    entry: CatalogEntry | None,
    catalog_problem: str | None,
    raw: str | None,
    status: InstanceStatus | None,
    problem: str | None,
) -> ExchangeView:
    """A view from its parts; `field_name` is None outside the catalog.

    Args:
        exchange_id: the id (`NOT_AN_ID` for a field that is no number).
        field_name: the catalog field, None for an exchange outside the catalog.
        entry: the valid catalog entry, if any.
        catalog_problem: what is wrong with the catalog field, if anything.
        raw: the status payload as read (None: no status key).
        status: the validated status, if valid.
        problem: what is wrong with the status payload, if anything.
    """
    if entry is not None:
        return ExchangeView(
            exchange_id,
            entry.name,
            entry.display_name or entry.name,
            True,
            status,
            problem,
            None,
            raw is not None,
            entry,
        )
    errors = [e for e in (catalog_problem, problem) if e]
    name = status.exchange_name if status is not None else ""
    if field_name is not None and exchange_id == NOT_AN_ID:
        display = field_name
    else:
        display = name or f"exchange {exchange_id}"
    return ExchangeView(
        exchange_id=exchange_id,
        exchange_name=name,
        display_name=display,
        in_catalog=field_name is not None,
        status=status,
        error="; ".join(errors) if errors else None,
        key_exists=raw is not None,
    )
