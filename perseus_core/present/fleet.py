"""The fleet as `perseus status --json` prints it: one object per exchange.

The shape is part of what scripts read (README: `perseus status --json`), so
it is decided here, once, and the data classes of the fleet reader carry
none of it. Keys are camelCase like the wire format; the status object is
the payload exactly as docs/wire-format.md 1.1 writes it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from perseus_core.present.exchange import Timing, heartbeat
from perseus_core.store.network import ExchangeView, LastKnown, LastSeen
from perseus_core.wire.timeutil import format_ts


def last_known_json(known: LastKnown) -> dict[str, str]:
    """The `lastKnown` object: the stream's raw strings, as read."""
    return {
        "hostname": known.hostname,
        "ip": known.ip,
        "state": known.state,
        "timestamp": known.timestamp,
        "event": known.event,
        "id": known.id,
    }


def last_seen_json(seen: LastSeen) -> dict[str, str]:
    """The `lastSeen` object: when, and what dated it (`heartbeat` or `entry`)."""
    return {"at": format_ts(seen.at), "source": seen.source}


def heartbeat_json(view: ExchangeView, now: datetime, timing: Timing) -> dict[str, Any] | None:
    """The `heartbeat` object of a live exchange: when it last beat (dated as
    the dashboard dates it), how old that is, and how that age is judged, by
    the holder's own timing (`Timing.thresholds`): `health` is `fresh`,
    `late` or `overdue`, as the dashboard colours it. None without a status."""
    status = view.status
    beat = heartbeat(view, now, timing)
    if beat is None or status is None:
        return None
    limits = timing.thresholds(status)
    interval_s, source = timing.interval(status)
    return {
        "at": format_ts(view.heartbeat_at or status.last_heartbeat),
        "ageMs": round(beat.age_s * 1000),
        "health": beat.health,
        "intervalMs": round(interval_s * 1000),
        "timing": str(source),
        "freshMs": round(limits.fresh_s * 1000),
        "overdueMs": round(limits.late_s * 1000),
    }


def exchange_json(view: ExchangeView, now: datetime, timing: Timing) -> dict[str, Any]:
    """The per-exchange object of `perseus status --json` (the `instances` list),
    read at `now`; `timing` is this reader's (`Timing.from_settings`)."""
    return {
        "exchangeId": view.exchange_id,
        "exchangeName": view.exchange_name,
        "displayName": view.display_name,
        "online": view.online,
        "status": view.status.to_wire() if view.status is not None else None,
        "heartbeat": heartbeat_json(view, now, timing),
        "lastKnown": last_known_json(view.last_known) if view.last_known is not None else None,
        "lastSeen": last_seen_json(seen) if not view.online and (seen := view.last_seen) else None,
        "agents": [agent.to_wire() for agent in view.agents],
        "error": view.error,
    }
