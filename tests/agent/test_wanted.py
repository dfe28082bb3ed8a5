"""What the operators want holds fleet-wide (docs/wire-format.md 2.6): real agents, real Redis.

A stop sent to the holder must not be undone by another agent of the same
exchange started with `--autostart`; a start lifts it everywhere. Readers
list the standby beside the holder, and show the stopped exchange as
stopped by whom.
"""

from __future__ import annotations

import json
import signal
from datetime import UTC, datetime

from redis.asyncio import Redis

from perseus_core.present import Timing, exchange_json, status_line
from perseus_core.store.network import FleetReader
from perseus_core.store.wanted import may_start_on_its_own, read_wanted
from perseus_core.wire import keys
from perseus_core.wire.models import ReplyStatus
from perseus_core.wire.settings import Settings
from tests.agent.conftest import HEARTBEAT_TTL_MS, SpawnAgent
from tests.agent.test_agent import FAST, send, state_is, status
from tests.waiting import eventually


async def notes(redis: Redis) -> list[str]:
    members = await redis.zrange(keys.agents_key(1), 0, -1)
    return [json.loads(m).get("note") or "" for m in members]


async def test_a_stop_holds_against_an_autostart_standby_until_a_start(
    spawn_agent: SpawnAgent, redis: Redis, settings: Settings
) -> None:
    first = spawn_agent(args=[*FAST, "--autostart"])
    await eventually(lambda: state_is(redis, "active"), what="the first agent active")
    holder = await status(redis)
    assert holder is not None
    second = spawn_agent(args=[*FAST, "--autostart"])
    await second.wait_log("standby: coinbase is held by")

    # Readers list the standby beside the holder, with host, pid and note.
    reader = FleetReader(redis)

    async def standby_listed() -> bool:
        view = await reader.exchange(1)
        return len(view.standbys) == 1 and bool(view.standbys[0].note)

    await eventually(standby_listed, what="the standby listed")
    view = await reader.exchange(1)
    data = exchange_json(view, datetime.now(UTC), Timing())
    assert [a["pid"] for a in data["standbys"]] == [second.pid]
    assert data["standbys"][0]["note"].startswith("standby: coinbase is held by")
    line = status_line(view, datetime.now(UTC), Timing())
    assert any(note.startswith(f"standby {view.standbys[0].hostname} pid ") for note in line.info)

    stopped = await send(redis, settings, "stop")
    assert stopped.status is ReplyStatus.SUCCESS, stopped.message
    wanted = await may_start_on_its_own(redis, 1)
    assert wanted is not None and wanted.operator == "tests"

    # The standby does not take the freed slot, for several TTLs, and says why.
    async def not_starting() -> bool:
        return any(n.startswith("not starting: stopped by tests ") for n in await notes(redis))

    await eventually(not_starting, what="the standby's note")
    deadline = datetime.now(UTC).timestamp() + 5 * HEARTBEAT_TTL_MS / 1000
    while datetime.now(UTC).timestamp() < deadline:
        assert await status(redis) is None, "a stopped exchange was started on its own"
        await eventually(not_starting, what="the note kept")
    assert "not starting: stopped by tests" in second.log()

    # Shown as stopped by whom, not as a slot waiting for a start.
    view = await reader.exchange(1)
    now = datetime.now(UTC)
    data = exchange_json(view, now, Timing())
    assert data["state"] == "stopped" and data["stoppedBy"].startswith("stopped by tests ")
    assert data["wanted"]["want"] == "stop" and data["wanted"]["operator"] == "tests"
    assert status_line(view, now, Timing()).info[0].startswith("stopped by tests ")

    # A start lifts it: one agent runs the command, the other stands by again.
    started = await send(redis, settings, "start")
    assert started.status is ReplyStatus.SUCCESS, started.message
    lifted = await read_wanted(redis, 1)
    assert lifted is not None and not lifted.stopped
    await eventually(lambda: state_is(redis, "active"), what="active again")

    async def one_standby() -> bool:
        view = await reader.exchange(1)
        return view.stopped_by is None and len(view.standbys) == 1 and len(view.agents) == 2

    await eventually(one_standby, what="the other agent a standby again")
    assert first.running and second.running


async def test_an_autostart_agent_started_on_a_stopped_exchange_waits_for_a_start(
    spawn_agent: SpawnAgent, redis: Redis, settings: Settings
) -> None:
    first = spawn_agent(args=[*FAST])
    await first.wait_log("listening for commands")
    assert (await send(redis, settings, "start")).status is ReplyStatus.SUCCESS
    assert (await send(redis, settings, "stop")).status is ReplyStatus.SUCCESS
    first.signal(signal.SIGTERM)
    assert await first.wait_exit() == 0

    agent = spawn_agent(args=[*FAST, "--autostart"])
    await agent.wait_log("not starting: stopped by tests")
    assert await status(redis) is None
    # A start from any host lifts the stop: this agent answers it.
    assert (await send(redis, settings, "start")).status is ReplyStatus.SUCCESS
    await eventually(lambda: state_is(redis, "active"), what="started")
