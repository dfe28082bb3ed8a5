"""Heartbeat age that clocks cannot fool: every writer resets the status key's
TTL on each heartbeat, so the age is `TTL - PTTL` on Redis's clock; a writer
whose clock is off by more than 2 s gets a skew warning."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

from perseus_core.present import heartbeat_age_s, skew_warning
from perseus_core.store.network import ExchangeView, NetworkReader
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import format_ts

TTL_MS = 45_000


def payload(exchange_id: int, last_heartbeat: datetime) -> str:
    moment = format_ts(last_heartbeat)
    return json.dumps(
        {
            "exchangeId": exchange_id,
            "exchangeName": f"ex{exchange_id}",
            "hostname": "writer",
            "ipAddress": None,
            "adminEmail": None,
            "adminDisplayName": None,
            "connectionState": "active",
            "symbolCount": 1,
            "connectedAt": moment,
            "lastHeartbeat": moment,
            "lastStateChange": moment,
            "registeredAt": moment,
            "lastError": None,
            "lastErrorAt": None,
        }
    )


async def seed(redis: Redis) -> datetime:
    """1: heartbeat just now on Redis, but the writer's clock is a minute slow;
    2: heartbeat 20 s ago on Redis and on the writer; 3: a key with no expiry
    (nothing to date it by) whose lastHeartbeat is 7 s old."""
    now = datetime.now(UTC)
    await redis.set("exchange:1:status", payload(1, now - timedelta(seconds=60)), px=TTL_MS)
    await redis.set(
        "exchange:2:status", payload(2, now - timedelta(seconds=20)), px=TTL_MS - 20_000
    )
    await redis.set("exchange:3:status", payload(3, now - timedelta(seconds=7)))
    for exchange_id in (1, 2, 3):
        entry = {"id": exchange_id, "name": f"ex{exchange_id}", "displayName": "", "isActive": True}
        await redis.hset("perseus:exchanges", str(exchange_id), json.dumps(entry))
    return now


def close_to(value: float | None, expected: float, tolerance: float = 1.5) -> bool:
    return value is not None and abs(value - expected) <= tolerance


async def test_age_comes_from_the_ttl_and_skew_is_named(
    redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(heartbeat_interval_ms=15_000, heartbeat_ttl_ms=TTL_MS)
    await seed(redis)
    reader = NetworkReader(redis, settings)
    snapshot = await reader.snapshot()
    views: dict[int, ExchangeView] = {v.exchange_id: v for v in snapshot.exchanges}
    now = datetime.now(UTC)

    # The writer's slow clock does not make a fresh heartbeat look a minute old.
    assert close_to(heartbeat_age_s(views[1], now), 0)
    assert close_to(views[1].clock_skew_s, -60)
    assert (skew_warning(views[1]) or "").startswith("clock skew: the writer's clock is 60")
    assert "behind Redis" in (skew_warning(views[1]) or "")
    # Clocks that agree: the same age both ways, and no warning.
    assert close_to(heartbeat_age_s(views[2], now), 20)
    assert close_to(views[2].clock_skew_s, 0) and skew_warning(views[2]) is None
    # No TTL to date it by: lastHeartbeat it is.
    assert views[3].heartbeat_at is None and views[3].clock_skew_s is None
    assert close_to(heartbeat_age_s(views[3], now), 7)

    # The single-exchange read (detail screen) dates it the same way.
    single = await reader.exchange(1)
    assert close_to(heartbeat_age_s(single, now), 0) and skew_warning(single) is not None


async def test_an_unchanged_payload_keeps_its_view_and_its_date(
    redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(heartbeat_interval_ms=15_000, heartbeat_ttl_ms=TTL_MS)
    await seed(redis)
    reader = NetworkReader(redis, settings)
    first = {v.exchange_id: v for v in (await reader.snapshot()).exchanges}
    second = {v.exchange_id: v for v in (await reader.snapshot()).exchanges}
    assert second[2] is first[2]  # the view is reused: dating costs no rebuild
    # A heartbeat (new payload, TTL reset) is dated anew.
    await redis.set("exchange:2:status", payload(2, datetime.now(UTC)), px=TTL_MS)
    third = {v.exchange_id: v for v in (await reader.snapshot()).exchanges}
    assert close_to(heartbeat_age_s(third[2], datetime.now(UTC)), 0)
