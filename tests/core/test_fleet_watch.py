"""Reading only what changed: `StatusWatcher` and `FleetReader.refresh` against real Redis.

Each test runs on a server of its own: keyspace notifications are a server
setting. `watched_changes` is shared with the cluster's test
(tests/cluster/test_cluster_watch.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from perseus_cli.apps.redis_server import RedisServer
from perseus_core.plumbing.connection import connect
from perseus_core.plumbing.topology import RedisClient
from perseus_core.store.network import FleetReader, StatusWatcher
from perseus_core.store.network.watch import WATCH_CLASSES, changed_exchange
from perseus_core.store.presence import AgentAnnouncer
from perseus_core.wire import keys
from perseus_core.wire.models import ConnectionState
from perseus_core.wire.settings import Settings
from tests.conftest import fast_settings
from tests.core.test_network import TTL_MS, catalog, online
from tests.core.test_network import status_json as wire_status
from tests.waiting import eventually

NOTIFY = f"K{WATCH_CLASSES}"


def status_json(exchange_id: int, name: str, state: str = "active") -> str:
    """A payload whose heartbeat the key's PTTL dates (it says its TTL)."""
    return wire_status(exchange_id, name, state, ttlMs=TTL_MS)


async def told(watcher: StatusWatcher, exchange_id: int, what: str) -> None:
    """Wait until the watcher was told of a change of `exchange_id` (other
    changes taken meanwhile are dropped: each step changes one exchange)."""
    await eventually(lambda: exchange_id in watcher.take()[0], what=what)


async def watched_changes(client: RedisClient, settings: Settings) -> None:
    """A set, a deletion and an expiry of status keys are told, and
    re-reading just those gives their new views (standbys included), while
    an unchanged exchange keeps its view of the full read."""
    for exchange_id, name in ((1, "alpha"), (2, "beta"), (3, "gamma"), (4, "delta")):
        await catalog(client, exchange_id, name)  # type: ignore[arg-type]
        await online(client, exchange_id, status_json(exchange_id, name))  # type: ignore[arg-type]
    await AgentAnnouncer(
        client,
        settings.model_copy(update={"heartbeat_ttl_ms": 60_000}),  # no expiry while read
        exchange_id=1,
        exchange_name="alpha",
        state=lambda: ConnectionState.IDLE,
        hostname="standby-host",
    ).publish()
    reader = FleetReader(client)
    watcher = StatusWatcher(client)
    try:
        assert await watcher.start() and watcher.watching
        snapshot = await reader.snapshot()
        unchanged = snapshot.get(4)
        assert unchanged is not None and unchanged.heartbeat_at is not None
        assert [agent.hostname for agent in snapshot.get(1).standbys] == ["standby-host"]  # type: ignore[union-attr]

        await online(client, 1, status_json(1, "alpha", "warming"))  # type: ignore[arg-type]
        await told(watcher, 1, "the set of exchange 1")
        (alpha,) = await reader.refresh([1]) or []
        assert alpha.status is not None and alpha.status.connection_state == "warming"
        assert [agent.hostname for agent in alpha.standbys] == ["standby-host"]

        await client.delete(keys.status_key(3))
        await told(watcher, 3, "the deletion of exchange 3")
        (gamma,) = await reader.refresh([3]) or []
        assert not gamma.key_exists and not gamma.online
        assert gamma.seen_at is not None  # its last heartbeat, from the full read

        await expiry_told(client, watcher, 2)
        (beta,) = await reader.refresh([2]) or []
        assert not beta.key_exists and not beta.online

        again = await reader.snapshot()
        assert again.get(4) is unchanged  # never re-read: its heartbeat moment stands
        assert again.get(1).status.connection_state == "warming"  # type: ignore[union-attr]
        assert not again.get(2).online and not again.get(3).online  # type: ignore[union-attr]
    finally:
        await watcher.aclose()


async def expiry_told(client: RedisClient, watcher: StatusWatcher, exchange_id: int) -> None:
    """Give the key a short TTL and wait until its expiry (not the EXPIRE
    that set the TTL) is told: the TTL is set again until the EXPIRE's own
    event has been taken while the key still existed."""
    key = keys.status_key(exchange_id)
    while True:
        await client.pexpire(key, 500)
        await told(watcher, exchange_id, "the new TTL")
        if await client.exists(key):  # taken before the expiry: only the expiry tells it again
            break
        await online(client, exchange_id, status_json(exchange_id, "beta"))  # type: ignore[arg-type]
        await told(watcher, exchange_id, "the key set again")
    await eventually(lambda: exchange_id in watcher.take()[0], what="the expiry")
    assert not await client.exists(key)


@pytest.fixture
async def own_redis(fresh_redis: RedisServer) -> AsyncIterator[Redis]:
    """A client of `fresh_redis`, made as every Perseus component makes it."""
    client = connect(fast_settings(fresh_redis.url))
    assert isinstance(client, Redis)
    try:
        yield client
    finally:
        await client.aclose()


async def test_changed_exchanges_are_read_on_their_own(
    fresh_redis: RedisServer, own_redis: Redis
) -> None:
    await own_redis.config_set("notify-keyspace-events", NOTIFY)
    await watched_changes(own_redis, fast_settings(fresh_redis.url))


async def test_all_keyspace_events_are_enough(own_redis: Redis) -> None:
    await own_redis.config_set("notify-keyspace-events", "KA")
    watcher = StatusWatcher(own_redis)
    try:
        assert await watcher.start()
    finally:
        await watcher.aclose()
    assert not watcher.watching


@pytest.mark.parametrize("flags", ["", "Kt", "E$gxzh", "K$gx"])
async def test_a_server_without_the_notifications_gets_no_subscription(
    own_redis: Redis, flags: str
) -> None:
    await own_redis.config_set("notify-keyspace-events", flags)
    watcher = StatusWatcher(own_redis)
    assert not await watcher.start()
    assert not watcher.watching and not watcher.lost
    reader = FleetReader(own_redis)  # the caller reads everything, as before
    await catalog(own_redis, 1, "alpha")
    assert (await reader.snapshot()).get(1) is not None


def _user(server: RedisServer, rules: str) -> str:
    with sync_redis.Redis.from_url(server.url) as admin:
        admin.execute_command("ACL", "SETUSER", "watcher", "on", ">pw", *rules.split())
    return server.url.replace("redis://", "redis://watcher:pw@")


@pytest.mark.parametrize(
    "rules",
    [
        "~* &* +@all -config",  # may not ask whether notifications are on
        "~* resetchannels +@all",  # may ask, may not subscribe
    ],
)
async def test_a_user_refused_config_get_or_psubscribe_gets_no_subscription(
    fresh_redis: RedisServer, own_redis: Redis, rules: str
) -> None:
    await own_redis.config_set("notify-keyspace-events", NOTIFY)
    client = connect(fast_settings(_user(fresh_redis, rules)))
    watcher = StatusWatcher(client)
    try:
        assert not await watcher.start()
        assert not watcher.watching
    finally:
        await watcher.aclose()
        await client.aclose()


async def test_a_lost_subscription_is_noticed(own_redis: Redis) -> None:
    await own_redis.config_set("notify-keyspace-events", NOTIFY)
    woken: list[bool] = []
    watcher = StatusWatcher(own_redis, on_change=lambda: woken.append(True))
    try:
        assert await watcher.start()
        await own_redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        await eventually(lambda: watcher.lost, what="the subscription's end")
        assert not watcher.watching
        assert woken == [True]  # the poll loop hears of it at once, not at its next read
        woken.clear()
        assert await watcher.start() and watcher.watching and not watcher.lost
        await own_redis.set(keys.status_key(7), "{}")
        await own_redis.set(keys.status_key(8), "{}")
        seen: set[int] = set()
        await eventually(lambda: seen.update(watcher.take()[0]) or seen == {7, 8}, what="both")
        assert woken  # once per batch: the loop takes the rest with the first
    finally:
        await watcher.aclose()


async def test_a_catalog_change_asks_for_a_full_read(own_redis: Redis) -> None:
    await own_redis.config_set("notify-keyspace-events", NOTIFY)
    watcher = StatusWatcher(own_redis)
    try:
        assert await watcher.start()
        await catalog(own_redis, 5, "epsilon")
        await eventually(lambda: watcher.pending, what="the catalog's event")
        assert watcher.take() == (set(), True)
    finally:
        await watcher.aclose()


async def test_refresh_leaves_unlisted_or_online_only_exchanges_to_a_full_read(
    own_redis: Redis,
) -> None:
    await catalog(own_redis, 1, "alpha")
    await catalog(own_redis, 2, "beta", active=False)
    await online(own_redis, 2, status_json(2, "beta"))
    await online(own_redis, 3, status_json(3, "gamma"))  # outside the catalog
    reader = FleetReader(own_redis)
    assert await reader.refresh([1]) is None  # nothing read yet
    snapshot = await reader.snapshot()
    assert {view.exchange_id for view in snapshot.exchanges} == {1, 2, 3}
    assert await reader.refresh([]) == []
    for exchange_id in (2, 3, 9):  # listed while online only, or not listed
        assert await reader.refresh([1, exchange_id]) is None
    (alpha,) = await reader.refresh([1]) or []
    assert alpha.exchange_id == 1 and not alpha.online


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("exchange:12:status", 12),
        ("perseus:agents:12", 12),
        ("perseus:wanted:12", 12),
        ("perseus:agents:x", None),
        ("exchange:12:other", None),
        ("logs:network:coinbase", None),
    ],
)
def test_which_exchange_a_key_belongs_to(key: str, expected: int | None) -> None:
    assert changed_exchange(key) == expected
