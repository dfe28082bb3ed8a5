"""Agent presence (docs/wire-format.md 2.4) against real Redis: the announcer's writes and
the reader's view of them, with several agents, expiry, outages and garbage."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import cast

import pytest
from redis.asyncio import Redis

from perseus_cli.apps.redis_server import RedisServer
from perseus_core.plumbing.connection import connect
from perseus_core.present.exchange import Timing
from perseus_core.present.fleet import exchange_json
from perseus_core.store.network import FleetReader
from perseus_core.store.presence import AgentAnnouncer
from perseus_core.wire import keys
from perseus_core.wire.models import AgentPresence, CatalogEntry, ConnectionState
from perseus_core.wire.settings import Settings
from tests.waiting import eventually


def announcer(
    redis: Redis,
    settings: Settings,
    hostname: str,
    state: Callable[[], ConnectionState] = lambda: ConnectionState.IDLE,
    exchange_id: int = 1,
) -> AgentAnnouncer:
    return AgentAnnouncer(
        redis,
        settings,
        exchange_id=exchange_id,
        exchange_name="coinbase",
        state=state,
        hostname=hostname,
    )


async def members(redis: Redis, exchange_id: int = 1) -> list[AgentPresence]:
    raw = cast(list[str], await redis.zrange(keys.agents_key(exchange_id), 0, -1))
    return [AgentPresence.from_json(member) for member in raw]


async def test_one_member_per_agent_replaced_on_state_change(
    redis: Redis, settings: Settings
) -> None:
    state = ConnectionState.IDLE
    one = announcer(redis, settings, "host-a", lambda: state)
    two = announcer(redis, settings, "host-b")
    await one.publish()
    await two.publish()
    await one.publish()  # a refresh of the same presence: same member, later expiry
    found = await members(redis)
    assert sorted((m.hostname, m.state) for m in found) == [("host-a", "idle"), ("host-b", "idle")]
    first_since = next(m.since for m in found if m.hostname == "host-a")

    state = ConnectionState.STARTING
    await one.publish()
    found = await members(redis)
    assert sorted((m.hostname, m.state) for m in found) == [
        ("host-a", "starting"),
        ("host-b", "idle"),
    ]
    mine = next(m for m in found if m.hostname == "host-a")
    assert mine.agent_id == one.agent_id and mine.since is not None and first_since is not None
    assert mine.since >= first_since
    assert 0 < await redis.pttl(keys.agents_key(1)) <= settings.heartbeat_ttl_ms


async def test_withdraw_is_owner_checked(redis: Redis, settings: Settings) -> None:
    one = announcer(redis, settings, "host-a")
    two = announcer(redis, settings, "host-b")
    await one.publish()
    await two.publish()
    assert await one.withdraw()
    assert not await one.withdraw()  # nothing of ours left
    assert [m.hostname for m in await members(redis)] == ["host-b"]
    assert await two.withdraw()
    assert await redis.exists(keys.agents_key(1)) == 0


async def test_a_silent_agent_expires_and_a_refreshing_one_prunes_it(
    redis: Redis, settings: Settings
) -> None:
    alone = announcer(redis, settings, "host-a")
    await alone.publish()
    await eventually(lambda: _absent(redis), within=settings.heartbeat_ttl_ms / 1000 + 2)

    dead = announcer(redis, settings, "dead")
    alive = announcer(redis, settings, "alive")
    await dead.publish()
    task = asyncio.create_task(alive.run())
    try:

        async def only_alive() -> bool:
            return [m.hostname for m in await members(redis)] == ["alive"]

        await eventually(only_alive, within=settings.heartbeat_ttl_ms / 1000 + 2)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def _absent(redis: Redis) -> bool:
    return await redis.exists(keys.agents_key(1)) == 0


async def test_a_longer_ttl_of_another_agent_is_never_shortened(
    redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    patient = announcer(redis, make_settings(heartbeat_ttl_ms=60_000), "patient")
    hasty = announcer(redis, make_settings(heartbeat_ttl_ms=400), "hasty")
    await patient.publish()
    await hasty.publish()
    assert await redis.pttl(keys.agents_key(1)) > 30_000


@pytest.fixture
async def fresh_client(fresh_redis: RedisServer) -> AsyncIterator[tuple[Redis, Settings]]:
    settings = Settings(
        redis_url=fresh_redis.url,
        heartbeat_interval_ms=100,
        heartbeat_ttl_ms=400,
        public_ip="off",
        socket_timeout_ms=500,
    )
    client = connect(settings)
    try:
        yield client, settings
    finally:
        await client.aclose()


async def test_run_survives_a_redis_outage_and_restart(
    fresh_redis: RedisServer,
    fresh_client: tuple[Redis, Settings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    redis, settings = fresh_client
    agent = announcer(redis, settings, "host-a")
    task = asyncio.create_task(agent.run())
    try:
        await eventually(lambda: redis.exists(keys.agents_key(1)))
        fresh_redis.stop()
        await eventually(
            lambda: "agent presence not written" in caplog.text, what="a failed refresh"
        )
        assert not task.done()
        fresh_redis.start()  # empty: the set and the script cache are gone
        await eventually(lambda: redis.exists(keys.agents_key(1)), within=10)
        assert [m.agent_id for m in await members(redis)] == [agent.agent_id]
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_nudge_publishes_a_state_change_at_once(
    redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    # A refresh interval far longer than the test: only the nudge can publish.
    settings = make_settings(heartbeat_interval_ms=60_000, heartbeat_ttl_ms=120_000)
    state = ConnectionState.IDLE
    agent = announcer(redis, settings, "host-a", lambda: state)
    task = asyncio.create_task(agent.run())
    try:
        await eventually(lambda: redis.exists(keys.agents_key(1)))
        state = ConnectionState.STARTING
        agent.nudge()

        async def starting() -> bool:
            return [m.state for m in await members(redis)] == ["starting"]

        await eventually(starting)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


# --- what readers make of it ----------------------------------------------------


async def test_the_reader_lists_agents_of_an_exchange_without_status(
    redis: Redis, settings: Settings
) -> None:
    reader = FleetReader(redis)
    await reader.add_to_catalog(CatalogEntry(id=1, name="coinbase"))
    await reader.add_to_catalog(CatalogEntry(id=2, name="kraken"))
    b = announcer(redis, settings, "host-b")
    a = announcer(redis, settings, "host-a")
    await b.publish()
    await a.publish()
    view = (await reader.snapshot()).get(1)
    assert view is not None and view.ready and not view.online
    assert [agent.hostname for agent in view.agents] == ["host-a", "host-b"]  # sorted
    shown = exchange_json(view, datetime.now(UTC), Timing())
    assert shown["agents"] == [agent.to_wire() for agent in view.agents]
    assert shown["heartbeat"] is None  # no status, nothing to judge
    other = (await reader.snapshot()).get(2)
    assert other is not None and other.agents == () and not other.ready
    assert (await reader.exchange(1)).agents == view.agents
    # Opting out: neither last-known info nor agents, or agents only on request.
    assert (await reader.snapshot(last_known=False)).get(1).agents == ()  # type: ignore[union-attr]
    opted_in = (await reader.snapshot(last_known=False, agents=True)).get(1)
    assert opted_in is not None and len(opted_in.agents) == 2 and opted_in.last_known is None


async def test_garbage_in_the_presence_set_is_reported_not_raised(
    redis: Redis, settings: Settings
) -> None:
    reader = FleetReader(redis)
    await reader.add_to_catalog(CatalogEntry(id=1, name="coinbase"))
    await reader.add_to_catalog(CatalogEntry(id=2, name="kraken"))
    good = announcer(redis, settings, "host-a")
    await good.publish()
    elsewhere = AgentPresence(agent_id="x:1:1", exchange_id=9, hostname="elsewhere").to_json()
    await redis.zadd(keys.agents_key(1), {"{not json": 1e15, "[1,2]": 1e15, elsewhere: 1e15})
    await redis.set(keys.agents_key(2), "not a sorted set")
    views = (await reader.snapshot()).exchanges
    one, two = views
    assert [agent.hostname for agent in one.agents] == ["host-a"]
    assert one.error is not None and "perseus:agents:1" in one.error and "2 more" in one.error
    assert two.agents == () and two.error is not None and "perseus:agents:2" in two.error
