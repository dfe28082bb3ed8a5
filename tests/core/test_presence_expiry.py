"""A reader lists only presence members whose expiry has not passed, on the server's clock."""

from __future__ import annotations

from collections.abc import Callable

from redis.asyncio import Redis

from perseus_core.store.network import FleetReader, ViewKind
from perseus_core.store.presence import AgentAnnouncer
from perseus_core.wire.models import CatalogEntry, ConnectionState
from perseus_core.wire.settings import Settings
from tests.waiting import eventually


def _announcer(redis: Redis, settings: Settings, hostname: str) -> AgentAnnouncer:
    return AgentAnnouncer(
        redis,
        settings,
        exchange_id=1,
        exchange_name="coinbase",
        state=lambda: ConnectionState.IDLE,
        hostname=hostname,
    )


async def test_an_expired_member_beside_a_live_one_is_not_listed(
    redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    """A member is pruned only on the set's next write; an agent killed with -9
    beside one that refreshes rarely must still vanish from the view at its expiry."""
    reader = FleetReader(redis)
    await reader.add_to_catalog(CatalogEntry(id=1, name="coinbase", display_name="Coinbase"))
    await _announcer(redis, make_settings(heartbeat_ttl_ms=60_000), "patient").publish()
    await _announcer(redis, make_settings(heartbeat_ttl_ms=300), "killed").publish()

    async def listed() -> list[str]:
        view = (await reader.snapshot()).get(1)
        assert view is not None and view.kind is ViewKind.READY
        return [agent.hostname for agent in view.agents]

    assert sorted(await listed()) == ["killed", "patient"]

    async def only_patient() -> bool:
        return await listed() == ["patient"]

    await eventually(only_patient, within=3)
    single = await reader.exchange(1)
    assert [agent.hostname for agent in single.agents] == ["patient"]
