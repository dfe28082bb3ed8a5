"""The fleet as `perseus status --json` prints it: one object per exchange.

The shape is part of what scripts read (README: `perseus status --json`), so
it is decided here, once, and the data classes of the fleet reader carry
none of it. Keys are camelCase like the wire format; the status object is
the payload exactly as docs/wire-format.md 1.1 writes it. Beside the raw
data it carries the presenter's verdict, the very one the table and the
dashboard show (`state` and its `tone`, the heartbeat's age, `health`,
`tone` and `text`, the uptime), so a script never has to judge a status
itself, nor judge it differently.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from perseus_core.present.exchange import (
    Heartbeat,
    Timing,
    badge,
    crash_text,
    heartbeat,
    status_word,
    stopped_text,
    uptime_s,
)
from perseus_core.store.network import ExchangeView, LastKnown, LastSeen
from perseus_core.store.wanted import Wanted
from perseus_core.wire.timeutil import format_duration, format_ts


def last_known_json(known: LastKnown) -> dict[str, str | None]:
    """The `lastKnown` object: the stream's raw strings, as read."""
    return {
        "hostname": known.hostname,
        "ip": known.ip,
        "state": known.state,
        "timestamp": known.timestamp,
        "event": known.event,
        "id": known.id,
        "crash": known.crash or None,
        "crashTimestamp": known.crash_timestamp or None,
    }


def last_seen_json(seen: LastSeen) -> dict[str, str]:
    """The `lastSeen` object: when, and what dated it (`heartbeat` or `entry`)."""
    return {"at": format_ts(seen.at), "source": seen.source}


def heartbeat_json(
    view: ExchangeView, beat: Heartbeat | None, timing: Timing
) -> dict[str, Any] | None:
    """The `heartbeat` object of a live exchange: when it last beat (dated as
    the dashboard dates it), how old that is (`beat`, `heartbeat`'s verdict),
    and how that age is judged, by the holder's own timing
    (`Timing.thresholds`): `health` is `fresh`, `late` or `overdue`, `tone`
    the colour the dashboard gives it (`success`, `warning`, `error`), `text`
    what the table says (`3s ago`, `no heartbeat for 32s`). None without a
    status."""
    status = view.status
    if beat is None or status is None:
        return None
    limits = timing.thresholds(status)
    interval_s, source = timing.interval(status)
    return {
        "at": format_ts(view.heartbeat_at or status.last_heartbeat),
        "ageMs": round(beat.age_s * 1000),
        "health": beat.health,
        "tone": str(beat.tone),
        "text": beat.text,
        "intervalMs": round(interval_s * 1000),
        "timing": str(source),
        "freshMs": round(limits.fresh_s * 1000),
        "overdueMs": round(limits.late_s * 1000),
    }


def wanted_json(wanted: Wanted) -> dict[str, Any]:
    """The `wanted` object: what the operators last asked (docs/wire-format.md 2.6)."""
    return {
        "want": wanted.want.value,
        "operator": wanted.operator,
        "at": format_ts(wanted.at) if wanted.at is not None else None,
    }


def exchange_json(view: ExchangeView, now: datetime, timing: Timing) -> dict[str, Any]:
    """The per-exchange object of `perseus status --json` (the `instances` list),
    read at `now`; `timing` is this reader's (`Timing.from_settings`).

    `state` is the status word the table shows (a live instance's state, or
    `ready`, `offline`, `unreadable`) and `tone` its colour; `uptimeMs` and
    `uptime` how long an active instance has run (stopped at its last
    heartbeat once that is overdue; null when it is not active).
    """
    beat = heartbeat(view, now, timing)
    running = uptime_s(view, now, beat)
    return {
        "exchangeId": view.exchange_id,
        "exchangeName": view.exchange_name,
        "displayName": view.display_name,
        "online": view.online,
        "state": status_word(view),
        "tone": str(badge(view).tone),
        "status": view.status.to_wire() if view.status is not None else None,
        "heartbeat": heartbeat_json(view, beat, timing),
        "uptimeMs": round(running * 1000) if running is not None else None,
        "uptime": format_duration(running) if running is not None else None,
        "lastKnown": last_known_json(view.last_known) if view.last_known is not None else None,
        "lastSeen": last_seen_json(seen) if not view.online and (seen := view.last_seen) else None,
        "agents": [agent.to_wire() for agent in view.agents],
        "standbys": [agent.to_wire() for agent in view.standbys],
        "wanted": wanted_json(view.wanted) if view.wanted is not None else None,
        "stoppedBy": stopped_text(view, now),
        "crashed": " ".join(crashed) if (crashed := crash_text(view, now)) else None,
        "error": view.error,
    }
