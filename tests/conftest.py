"""Fixtures shared by the whole suite: real redis-server processes, fast settings.

No fake or mocked Redis anywhere: every behaviour Redis decides (TTL expiry,
NX, streams, blocking reads, Lua) is exercised on a real server started here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from redis.asyncio import Redis

from perseus_cli.apps.redis_server import RedisServer
from perseus_core.plumbing.connection import connect
from perseus_core.wire.settings import Settings


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One server for the session; `redis_url` flushes it before each test."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of a clean database on the shared server."""
    import redis as sync_redis

    if redis_server.pid is None:  # a previous test may have killed it
        redis_server.start()
    with sync_redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def fresh_redis() -> Iterator[RedisServer]:
    """A server of this test's own, for tests that stop, kill or pause it."""
    with RedisServer() as server:
        yield server


def fast_settings(redis_url: str, **overrides: object) -> Settings:
    """Settings for `redis_url` with the heartbeat and timeouts at test speed."""
    values: dict[str, object] = {
        "redis_url": redis_url,
        "heartbeat_interval_ms": 100,
        "heartbeat_ttl_ms": 400,
        "public_ip": "off",
        "block_ms": 200,
        "socket_timeout_ms": 1_000,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def make_settings(redis_url: str) -> Callable[..., Settings]:
    """Settings pointing at the test server, heartbeat at test speed."""

    def factory(**overrides: object) -> Settings:
        return fast_settings(str(overrides.pop("redis_url", redis_url)), **overrides)

    return factory


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """Default fast settings on a clean database."""
    return make_settings()


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    """An async client on the clean test database, closed after the test."""
    client = connect(settings)
    try:
        yield client
    finally:
        await client.aclose()
