"""A broken shared key degrades what uses it; it never stops an agent from starting."""

from __future__ import annotations

import redis as sync_redis

from perseus_core.wire import keys
from tests.agent.conftest import SpawnAgent
from tests.waiting import eventually


async def test_an_agent_starts_beside_a_catalog_of_the_wrong_type(
    r: sync_redis.Redis, redis_url: str, spawn_agent: SpawnAgent
) -> None:
    """The catalog is shared by the fleet: one broken key costs the agent its
    listing (one warning), not its start."""
    r.set(keys.CATALOG_KEY, "x")
    agent = spawn_agent(exchange_id=2, name="kraken")
    await agent.wait_log("not added to the catalog")
    await eventually(lambda: r.zcard(keys.agents_key(2)) == 1)
    assert agent.running
    assert agent.log().count("not added to the catalog") == 1
    assert f"HSETNX {keys.CATALOG_KEY}" in agent.log()
