"""What the notifier tells people about: one `FleetEvent` per thing worth a message.

Events keep the raw (uncleaned) strings as read from Redis; `build_payload`
(`perseus_core.notify.discord`) makes them safe. They are built by pure
functions so their shape can be checked without Redis or HTTP.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from perseus_core.present.entries import holder_text, restart_text
from perseus_core.present.writers import OtherWriter
from perseus_core.wire.models import (
    ActivityEntry,
    ErrorEntry,
    HolderEntry,
    InstanceStatus,
    RestartEntry,
    StateTransitionEntry,
)
from perseus_core.wire.timeutil import format_ts


class EventKind(StrEnum):
    """What a notification is about; each kind has its own embed colour."""

    TRANSITION = "transition"
    ERROR = "error"
    OFFLINE = "offline"
    ONLINE = "online"
    OTHER_WRITER = "other_writer"
    """An error another host wrote while the exchange's holder is healthy
    (`perseus_core.present.writers`): not the exchange's error."""
    HOLDER = "holder"
    """Another process became the exchange's holder (docs/wire-format.md 2.7):
    information, so that a takeover by a standby leaves a trace."""
    RESTART = "restart"
    """An agent scheduled an automatic restart after a run ended on its own
    (docs/wire-format.md 2.8). It follows the crash's error, so it is told
    within that episode (`perseus_core.notify.episodes`), not on its own."""


COLOURS: dict[EventKind, int] = {
    EventKind.TRANSITION: 0x3498DB,  # blue
    EventKind.ERROR: 0xE74C3C,  # red
    EventKind.OFFLINE: 0xE67E22,  # orange
    EventKind.ONLINE: 0x2ECC71,  # green
    EventKind.OTHER_WRITER: 0x95A5A6,  # grey
    EventKind.HOLDER: 0x9B59B6,  # purple
    EventKind.RESTART: 0xF1C40F,  # yellow
}
"""Embed colour per kind, as the integer Discord expects."""

TITLES: dict[EventKind, str] = {
    EventKind.TRANSITION: "State change",
    EventKind.ERROR: "Error",
    EventKind.OFFLINE: "Offline",
    EventKind.ONLINE: "Back online",
    EventKind.OTHER_WRITER: "Not the holder",
    EventKind.HOLDER: "Holder changed",
    EventKind.RESTART: "Restarting",
}


@dataclass(frozen=True, slots=True)
class FleetEvent:
    """One thing worth telling people about, with the raw (uncleaned) strings
    as read from Redis; `build_payload` makes them safe."""

    kind: EventKind
    exchange_name: str
    exchange_id: int | None
    transition: str
    host: str
    time: datetime
    detail: str = ""
    holder: str = ""
    """For `OTHER_WRITER`: the host that holds the exchange (and is healthy)."""
    states: tuple[str, ...] = ()
    """The states walked, oldest first: a transition's two, or, for several
    entries told as one (`perseus_core.notify.episodes`), every state they
    walked (an error's message names the ones around it)."""
    count: int = 1
    """How many stream entries this event tells."""


def _host(hostname: str, ip: str | None) -> str:
    """`host (ip)`, or whichever of the two is known."""
    return f"{hostname or '?'} ({ip})" if ip else hostname


def event_from_entry(
    entry: ActivityEntry, *, now: datetime, other: OtherWriter | None = None
) -> FleetEvent | None:
    """The event an activity entry announces, or None for entries that are not
    worth a message (commands, unknown events, a first holder on record).

    Args:
        entry: the entry.
        now: stands in for a missing or unparseable entry timestamp.
        other: for an error another host wrote while the holder is healthy
            (`perseus_core.present.other_writer`): the message says so,
            naming the host, instead of posting the exchange's error.
    """
    # An entry of no exchange (exchangeId 0, `logs:network:unknown`) names none.
    of_none = entry.names_no_exchange
    name = "" if of_none else entry.exchange_name or entry.stream
    exchange_id = None if of_none else entry.exchange_id_int
    when = entry.time or now
    if isinstance(entry, ErrorEntry) and other is not None:
        return FleetEvent(
            kind=EventKind.OTHER_WRITER,
            exchange_name=name,
            exchange_id=exchange_id,
            transition=other.summary,
            host=_host(entry.hostname, entry.ip),
            time=when,
            detail=entry.error,
            holder=other.holder,
        )
    if isinstance(entry, StateTransitionEntry):
        return FleetEvent(
            kind=EventKind.TRANSITION,
            exchange_name=name,
            exchange_id=exchange_id,
            transition=f"{entry.from_state or '?'} → {entry.to_state or '?'}",
            host=_host(entry.hostname, entry.ip),
            time=when,
            states=(entry.from_state or "?", entry.to_state or "?"),
        )
    if isinstance(entry, ErrorEntry):
        return FleetEvent(
            kind=EventKind.ERROR,
            exchange_name=name,
            exchange_id=exchange_id,
            transition=f"error while {entry.state or 'unknown'}",
            host=_host(entry.hostname, entry.ip),
            time=when,
            detail=entry.error,
        )
    if isinstance(entry, HolderEntry) and entry.changed:
        return FleetEvent(
            kind=EventKind.HOLDER,
            exchange_name=name,
            exchange_id=exchange_id,
            transition="holder changed",
            host=_host(entry.hostname, entry.ip),
            time=when,
            detail=holder_text(entry),
        )
    if isinstance(entry, RestartEntry):
        return FleetEvent(
            kind=EventKind.RESTART,
            exchange_name=name,
            exchange_id=exchange_id,
            transition="automatic restart",
            host=_host(entry.hostname, entry.ip),
            time=when,
            detail=restart_text(entry),
        )
    return None


def offline_event(
    exchange_id: int,
    exchange_name: str,
    last_status: InstanceStatus | None,
    *,
    now: datetime,
) -> FleetEvent:
    """An instance whose key disappeared without a stop; `last_status` is the
    last payload seen while it was online (None if it was unreadable)."""
    state = last_status.connection_state.value if last_status else "unknown"
    host = ""
    detail = "Its status key expired without a stop."
    if last_status is not None:
        host = _host(last_status.hostname, last_status.ip_address)
        detail += f" Last heartbeat {format_ts(last_status.last_heartbeat)}."
    return FleetEvent(
        kind=EventKind.OFFLINE,
        exchange_name=exchange_name,
        exchange_id=exchange_id,
        transition=f"{state} → offline",
        host=host,
        time=now,
        detail=detail,
    )


def online_event(
    exchange_id: int, exchange_name: str, status: InstanceStatus | None, *, now: datetime
) -> FleetEvent:
    """An instance whose key is back after an offline notification."""
    state = status.connection_state.value if status else "unknown"
    host = _host(status.hostname, status.ip_address) if status else ""
    return FleetEvent(
        kind=EventKind.ONLINE,
        exchange_name=exchange_name,
        exchange_id=exchange_id,
        transition=f"offline → {state}",
        host=host,
        time=now,
        detail="Its status key is back.",
    )
