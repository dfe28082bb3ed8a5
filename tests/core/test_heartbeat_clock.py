"""Heartbeat age that clocks cannot fool: every writer resets the status key's
TTL on each heartbeat, so the age is `TTL - PTTL` on Redis's clock; a writer
whose clock is off by more than 2 s gets a skew warning."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

from perseus_core.present import heartbeat_age_s, skew_warning
from perseus_core.store.network import ExchangeView, FleetReader
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


async def test_age_comes_from_the_ttl_and_skew_is_named(redis: Redis) -> None:
    await seed(redis)
    reader = FleetReader(redis)
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


async def test_an_unchanged_payload_keeps_its_view_and_its_date(redis: Redis) -> None:
    await seed(redis)
    reader = FleetReader(redis)
    first = {v.exchange_id: v for v in (await reader.snapshot()).exchanges}
    second = {v.exchange_id: v for v in (await reader.snapshot()).exchanges}
    assert second[2] is first[2]  # the view is reused: dating costs no rebuild
    # A heartbeat (new payload, TTL reset) is dated anew.
    await redis.set("exchange:2:status", payload(2, datetime.now(UTC)), px=TTL_MS)
    third = {v.exchange_id: v for v in (await reader.snapshot()).exchanges}
    assert close_to(heartbeat_age_s(third[2], datetime.now(UTC)), 0)


async def test_the_writers_ttl_dates_the_heartbeat_not_the_readers(
    redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    """A reader at the default 45 s watching writers with other TTLs: a Perseus
    writer says its TTL (`ttlMs`), a Livermore writer (no `instanceId`) always
    uses 45 s, and an older Perseus writer that says neither (or only its
    interval) is dated by its `lastHeartbeat`, never by the reader's own TTL."""
    now = datetime.now(UTC)
    fast = json.loads(payload(1, now - timedelta(seconds=60)))  # a slow writer clock
    fast.update(instanceId="agent-host:1:42:1", ttlMs=600)
    await redis.set("exchange:1:status", json.dumps(fast), px=500)  # beat 100 ms ago
    older = json.loads(payload(2, now - timedelta(seconds=3)))
    older.update(instanceId="agent-host:2:43:1")
    await redis.set("exchange:2:status", json.dumps(older), px=500)
    await redis.set("exchange:3:status", payload(3, now), px=TTL_MS - 10_000)  # Livermore
    interval_only = json.loads(payload(4, now - timedelta(seconds=3)))
    interval_only.update(instanceId="agent-host:4:44:1", heartbeatIntervalMs=200)
    await redis.set("exchange:4:status", json.dumps(interval_only), px=500)
    reader = FleetReader(redis)
    views = {v.exchange_id: v for v in (await reader.snapshot()).exchanges}
    now = datetime.now(UTC)
    assert close_to(heartbeat_age_s(views[1], now), 0.1, tolerance=1.0)
    assert close_to(views[1].clock_skew_s, -60)
    assert views[2].heartbeat_at is None and close_to(heartbeat_age_s(views[2], now), 3)
    assert close_to(heartbeat_age_s(views[3], now), 10)
    assert views[4].heartbeat_at is None and close_to(heartbeat_age_s(views[4], now), 3)


async def test_an_instance_writes_its_ttl_and_interval(
    redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    from perseus_core.instance import Instance

    settings = make_settings(heartbeat_interval_ms=100, heartbeat_ttl_ms=400)
    async with Instance(redis, settings, exchange_id=5, exchange_name="kucoin") as instance:
        await instance.claim()
        raw = await redis.get("exchange:5:status")
        assert raw is not None and json.loads(raw)["ttlMs"] == 400
        assert json.loads(raw)["heartbeatIntervalMs"] == 100  # judged by it (wire-format 2.2)
        reader = FleetReader(redis)
        view = (await reader.snapshot()).get(5)
        assert view is not None and view.heartbeat_at is not None
        assert close_to(heartbeat_age_s(view, datetime.now(UTC)), 0, tolerance=0.5)
