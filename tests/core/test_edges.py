"""The one offline-edge classifier: lost, released, back, or nothing, from two reads."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from perseus_core.present.edges import EdgeKind, KnownState, newer_state, offline_edge
from perseus_core.store.network import ExchangeView, LastKnown
from perseus_core.wire.models import InstanceStatus

T0 = datetime(2026, 2, 10, 18, 0, tzinfo=UTC)


def status(state: str, changed: datetime = T0) -> InstanceStatus:
    stamp = changed.isoformat().replace("+00:00", "Z")
    return InstanceStatus.from_json(
        json.dumps(
            {
                "exchangeId": 1,
                "exchangeName": "coinbase",
                "hostname": "host-a",
                "ipAddress": None,
                "adminEmail": None,
                "adminDisplayName": None,
                "connectionState": state,
                "symbolCount": 0,
                "connectedAt": None,
                "lastHeartbeat": stamp,
                "lastStateChange": stamp,
                "registeredAt": stamp,
                "lastError": None,
                "lastErrorAt": None,
            }
        )
    )


def online(state: str | None) -> ExchangeView:
    """Online; `state` None: the key exists but its payload is unreadable."""
    payload = status(state) if state is not None else None
    return ExchangeView(1, "coinbase", "Coinbase", True, payload, key_exists=True)


def offline(stream_state: str = "", at: datetime = T0) -> ExchangeView:
    known = None
    if stream_state:
        stamp = at.isoformat().replace("+00:00", "Z")
        known = LastKnown("host-a", "", stream_state, stamp, "state_transition", "1-0")
    return ExchangeView(1, "coinbase", "Coinbase", True, last_known=known)


def test_a_first_read_is_a_baseline() -> None:
    assert offline_edge(None, offline(), lost=False).kind is EdgeKind.NONE
    assert offline_edge(None, online("active"), lost=True).kind is EdgeKind.NONE


def test_a_key_gone_while_running_is_lost() -> None:
    edge = offline_edge(online("active"), offline(), lost=False)
    assert (edge.kind, edge.state) == (EdgeKind.LOST, "active")
    unreadable = offline_edge(online(None), offline(), lost=False)
    assert (unreadable.kind, unreadable.state) == (EdgeKind.LOST, None)


def test_a_key_gone_after_a_stop_is_released() -> None:
    seen = offline_edge(online("stopping"), offline(), lost=False)
    assert (seen.kind, seen.state, seen.seen_stopping) == (EdgeKind.RELEASED, "stopping", True)
    # Stopped between two reads: only the stream says so.
    between = offline_edge(online("active"), offline("stopped", T0 + timedelta(5)), lost=False)
    assert (between.kind, between.state, between.seen_stopping) == (
        EdgeKind.RELEASED,
        "stopped",
        False,
    )


def test_a_stale_stop_does_not_hide_a_loss() -> None:
    edge = offline_edge(online("active"), offline("stopped", T0 - timedelta(days=1)), lost=False)
    assert edge.kind is EdgeKind.LOST
    told = KnownState("idle", T0 - timedelta(days=1))
    assert offline_edge(online("active"), offline(), lost=False, since=told).kind is EdgeKind.LOST
    newer = KnownState("stopped", T0 + timedelta(seconds=1))
    assert offline_edge(online("active"), offline(), lost=False, since=newer).kind is (
        EdgeKind.RELEASED
    )


def test_back_only_after_a_loss() -> None:
    back = offline_edge(offline(), online("warming"), lost=True)
    assert (back.kind, back.state) == (EdgeKind.BACK, "warming")
    assert offline_edge(offline(), online("idle"), lost=False).kind is EdgeKind.NONE
    assert offline_edge(online("active"), online("active"), lost=True).kind is EdgeKind.NONE


def test_an_undated_state_counts_as_newer_and_keeps_the_known_time() -> None:
    known = KnownState("active", T0)
    assert newer_state(known, KnownState("stopped", None)) == KnownState("stopped", T0)
    assert newer_state(known, KnownState("idle", T0 - timedelta(1))) == known
    assert newer_state(None, known) == known and newer_state(known, None) == known
