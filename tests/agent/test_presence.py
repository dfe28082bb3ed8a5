"""`perseus agent` announces itself while it runs (docs/wire-format.md 2.4), idle or not.

Real agents (subprocesses) against a real redis-server; what they announce is
read back the way the dashboard and `perseus status` read it, through
`FleetReader`.
"""

from __future__ import annotations

import signal
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import cast

from redis.asyncio import Redis

from perseus_core.present.exchange import Timing
from perseus_core.present.fleet import exchange_json
from perseus_core.store.network import FleetReader
from perseus_core.wire import keys
from perseus_core.wire.models import AgentPresence, CatalogEntry, ReplyStatus
from perseus_core.wire.settings import Settings
from tests.agent.conftest import (
    HEARTBEAT_INTERVAL_MS,
    HEARTBEAT_TTL_MS,
    AgentProcess,
    SpawnAgent,
)
from tests.agent.test_agent import FAST, send, state_is
from tests.waiting import eventually


async def agents(redis: Redis, exchange_id: int = 1) -> list[AgentPresence]:
    """Every member of the presence set, whether or not the slot is held (the
    reader only looks at presence for exchanges without a status)."""
    members = cast(list[str], await redis.zrange(keys.agents_key(exchange_id), 0, -1))
    return [AgentPresence.from_json(member) for member in members]


def agents_are(redis: Redis, *expected: tuple[AgentProcess, str]) -> Callable[[], Awaitable[bool]]:
    """A condition: exactly these agents (by pid) are present, in these states."""

    async def check() -> bool:
        found = sorted((a.pid or 0, a.state) for a in await agents(redis))
        return found == sorted((agent.pid, state) for agent, state in expected)

    return check


async def test_an_idle_agent_is_present_and_its_exchange_ready(
    spawn_agent: SpawnAgent, redis: Redis, settings: Settings
) -> None:
    agent = spawn_agent(exchange_id=3, name="binance")
    await agent.wait_log("listening for commands")
    reader = FleetReader(redis)

    async def ready() -> object:
        view = (await reader.snapshot()).get(3)
        return view if view is not None and view.ready else None

    view = await eventually(ready, what="the idle agent's presence")
    assert not view.online and view.status is None  # idle: no slot claimed
    (presence,) = view.agents
    assert (presence.pid, presence.state, presence.exchange_name) == (agent.pid, "idle", "binance")
    assert presence.hostname and presence.agent_id.startswith(f"{presence.hostname}:{agent.pid}:")
    assert presence.since is not None and presence.version
    assert 0 < await redis.pttl(keys.agents_key(3)) <= HEARTBEAT_TTL_MS
    assert exchange_json(view, datetime.now(UTC), Timing())["agents"] == [presence.to_wire()]


async def test_a_standby_pair_shows_two_agents_and_follows_their_states(
    spawn_agent: SpawnAgent, redis: Redis, settings: Settings
) -> None:
    first = spawn_agent(args=FAST)
    second = spawn_agent(args=FAST)
    await eventually(agents_are(redis, (first, "idle"), (second, "idle")), what="two idle agents")
    started = await send(redis, settings, "start")
    assert started.status is ReplyStatus.SUCCESS, started.message
    holder = first if started.data["pid"] == first.pid else second
    standby = second if holder is first else first
    await eventually(
        agents_are(redis, (holder, "active"), (standby, "idle")),
        what="the holder's presence to say active",
    )
    stopped = await send(redis, settings, "stop")
    assert stopped.status is ReplyStatus.SUCCESS, stopped.message
    await eventually(
        agents_are(redis, (holder, "idle"), (standby, "idle")),
        what="both agents idle again",
    )
    view = await FleetReader(redis).exchange(1)
    assert view.ready and len(view.agents) == 2


async def test_a_graceful_exit_removes_only_its_own_presence(
    spawn_agent: SpawnAgent, redis: Redis
) -> None:
    leaving = spawn_agent()
    staying = spawn_agent()
    await eventually(agents_are(redis, (leaving, "idle"), (staying, "idle")), what="two agents")
    leaving.signal(signal.SIGTERM)
    assert await leaving.wait_exit() == 0
    # Removed on exit, not left to expire: the very next read no longer has it.
    remaining = await agents(redis)
    assert [a.pid for a in remaining] == [staying.pid]

    staying.signal(signal.SIGTERM)
    assert await staying.wait_exit() == 0
    assert await redis.exists(keys.agents_key(1)) == 0


async def test_a_graceful_exit_while_active_leaves_nothing_behind(
    spawn_agent: SpawnAgent, redis: Redis
) -> None:
    agent = spawn_agent(args=[*FAST, "--autostart"])
    await eventually(lambda: state_is(redis, "active"), what="active")
    await eventually(agents_are(redis, (agent, "active")), what="presence says active")
    agent.signal(signal.SIGTERM)
    assert await agent.wait_exit() == 0
    assert await redis.exists(keys.status_key(1), keys.agents_key(1)) == 0


async def test_kill_9_presence_expires_by_itself(spawn_agent: SpawnAgent, redis: Redis) -> None:
    killed = spawn_agent()
    await eventually(agents_are(redis, (killed, "idle")), what="the agent's presence")
    killed.signal(signal.SIGKILL)
    await killed.wait_exit()
    await eventually(
        agents_are(redis),
        within=HEARTBEAT_TTL_MS / 1000 + 2,
        what="the killed agent's presence to expire",
    )
    assert await redis.exists(keys.agents_key(1)) == 0


async def test_kill_9_of_a_standby_is_pruned_while_the_other_agent_refreshes(
    spawn_agent: SpawnAgent, redis: Redis
) -> None:
    killed = spawn_agent()
    alive = spawn_agent()
    await eventually(agents_are(redis, (killed, "idle"), (alive, "idle")), what="a pair")
    killed.signal(signal.SIGKILL)
    await killed.wait_exit()
    # The survivor keeps the set alive; its refreshes drop the dead member once
    # that member's own expiry has passed (TTL, plus one refresh at most).
    await eventually(
        agents_are(redis, (alive, "idle")),
        within=(HEARTBEAT_TTL_MS + HEARTBEAT_INTERVAL_MS) / 1000 + 2,
        what="the dead standby to be pruned",
    )
    assert alive.running


async def test_kill_9_on_this_host_is_not_ready_a_moment_later(
    spawn_agent: SpawnAgent, redis: Redis, settings: Settings
) -> None:
    # A production TTL: the member itself outlives the agent by 30 s.
    killed = spawn_agent(exchange_id=3, name="binance", env={"PERSEUS_HEARTBEAT_TTL_MS": "30000"})
    reader = FleetReader(redis)

    async def kind() -> str:
        view = (await reader.snapshot()).get(3)
        return view.kind.value if view is not None else "missing"

    await eventually(lambda: _is(kind, "ready"), what="the idle agent's presence")
    killed.signal(signal.SIGKILL)
    await killed.wait_exit(within=5)
    await eventually(lambda: _is(kind, "offline"), within=2, what="the dead agent to stop counting")
    # Its member is still in Redis: the reader saw its process is gone.
    (member,) = await agents(redis, 3)
    assert member.pid == killed.pid and member.pid_scope is not None


async def test_an_agent_whose_pid_cannot_be_checked_here_stays_listed(
    redis: Redis, settings: Settings
) -> None:
    dead_pid = 2**22 + 1  # above Linux's pid limit: no such process here
    await redis.hset(keys.CATALOG_KEY, "4", CatalogEntry(id=4, name="kraken").to_json())
    for scope in (None, "another-boot/4026531836"):
        member = AgentPresence(
            agent_id=f"elsewhere:{dead_pid}:{scope}", exchange_id=4, pid=dead_pid, pid_scope=scope
        )
        await redis.zadd(keys.agents_key(4), {member.to_json(): 2**50})
    view = (await FleetReader(redis).snapshot()).get(4)
    assert view is not None and len(view.agents) == 2 and view.ready


async def _is(read: Callable[[], Awaitable[str]], wanted: str) -> bool:
    return await read() == wanted
