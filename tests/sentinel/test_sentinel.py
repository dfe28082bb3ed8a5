"""`redis+sentinel://` on real sentinels: the master is found through them,
and a master switch is followed (the lease keeps heartbeating on the new
master, `perseus status` reads it)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
import redis as sync_redis
from click.testing import CliRunner

from perseus_cli.main import cli
from perseus_core.instance import Instance
from perseus_core.plumbing.connection import SentinelTarget, connect, ping_or_raise
from perseus_core.store.lease import HeartbeatResult
from perseus_core.wire.errors import PerseusError, RedisUnavailable
from perseus_core.wire.models import ConnectionState
from perseus_core.wire.settings import Settings
from tests.sentinel.conftest import SERVICE, SentinelSet
from tests.waiting import eventually


def test_the_url_names_sentinels_service_database_and_credentials() -> None:
    target = SentinelTarget("redis+sentinel://ops:s%40cret@a:26379,b,[::1]:26380/main/3")
    assert target.sentinels == [("a", 26379), ("b", 26379), ("::1", 26380)]
    assert (target.service, target.db) == ("main", 3)
    assert (target.username, target.password) == ("ops", "s@cret")
    for bad in ("redis+sentinel://a:1", "redis+sentinel://a:x/m", "redis+sentinel://a:1/m/zero"):
        with pytest.raises(PerseusError, match="bad"):
            SentinelTarget(bad)


async def test_a_master_switch_is_followed(
    sentinel_set: SentinelSet, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(redis_url=sentinel_set.url, heartbeat_ttl_ms=10_000)
    await eventually(sentinel_set.replica_ready, within=15, what="the sentinels to see the replica")
    redis = connect(settings)
    instance = Instance(redis, settings, exchange_id=4, exchange_name="kraken")
    try:
        await instance.claim(heartbeat=False)
        await instance.transition(ConnectionState.STARTING)
        result = await asyncio.to_thread(
            CliRunner().invoke,
            cli,
            ["status", "--json"],
            env={"PERSEUS_REDIS_URL": sentinel_set.url},
        )
        assert result.exit_code == 0, result.output
        assert "kraken" in result.output
        # Every write has reached the replica before the switch (asynchronous
        # replication could otherwise lose the newest, and that is not what
        # this test is about).
        assert await redis.execute_command("WAIT", 1, 2000) == 1

        sentinel_set.sentinels[0].client.execute_command("SENTINEL", "FAILOVER", SERVICE)
        await eventually(
            lambda: all(
                s.master_port() == sentinel_set.replica.port for s in sentinel_set.sentinels
            ),
            within=15,
            what="both sentinels to name the replica as master",
        )
        await eventually(lambda: _role(sentinel_set.replica.port) == "master", what="the promotion")
        assert (
            await eventually(
                lambda: _heartbeat_lands(instance), what="a heartbeat on the new master"
            )
            is HeartbeatResult.REFRESHED
        )
        with sync_redis.Redis(port=sentinel_set.replica.port, decode_responses=True) as new:
            assert json.loads(new.get("exchange:4:status") or "{}")["connectionState"] == "starting"
    finally:
        await instance.close()
        await redis.aclose()


async def _heartbeat_lands(instance: Instance) -> HeartbeatResult | None:
    try:
        return await instance.heartbeat.tick()
    except RedisUnavailable:
        return None  # the old master is read-only until the client re-asks the sentinels


def _role(port: int) -> str:
    with sync_redis.Redis(port=port, decode_responses=True) as client:
        return str(client.role()[0])


async def test_no_master_known_is_one_line(sentinel_set: SentinelSet) -> None:
    url = sentinel_set.url.replace(SERVICE, "nobody")
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["status"], env={"PERSEUS_REDIS_URL": url}
    )
    assert result.exit_code == 3, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "nobody" in result.output


async def test_ping_through_the_sentinels(
    sentinel_set: SentinelSet, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(redis_url=sentinel_set.url)
    redis = connect(settings)
    try:
        await ping_or_raise(redis, settings)
        await redis.set("through", "sentinel")
    finally:
        await redis.aclose()
    with sync_redis.Redis(port=sentinel_set.master.port, decode_responses=True) as master:
        assert master.get("through") == "sentinel"


async def test_doctor_names_the_primary(sentinel_set: SentinelSet) -> None:
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["doctor"], env={"PERSEUS_REDIS_URL": sentinel_set.url}
    )
    assert result.exit_code == 0, result.output
    assert f"sentinel: primary at 127.0.0.1:{sentinel_set.master.port}" in result.output
