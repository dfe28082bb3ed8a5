"""The fleet as `perseus status --json` prints it: one object per exchange.

The shape is part of what scripts read (README: `perseus status --json`), so
it is decided here, once, and the data classes of the fleet reader carry
none of it. Keys are camelCase like the wire format; the status object is
the payload exactly as docs/wire-format.md 1.1 writes it.
"""

from __future__ import annotations

from typing import Any

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


def exchange_json(view: ExchangeView) -> dict[str, Any]:
    """The per-exchange object of `perseus status --json` (the `instances` list)."""
    return {
        "exchangeId": view.exchange_id,
        "exchangeName": view.exchange_name,
        "displayName": view.display_name,
        "online": view.online,
        "status": view.status.to_wire() if view.status is not None else None,
        "lastKnown": last_known_json(view.last_known) if view.last_known is not None else None,
        "lastSeen": last_seen_json(seen) if not view.online and (seen := view.last_seen) else None,
        "agents": [agent.to_wire() for agent in view.agents],
        "error": view.error,
    }
