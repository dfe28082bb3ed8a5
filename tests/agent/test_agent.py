"""`perseus agent` as a real process: lifecycle, child supervision, signals, fencing, outages.

Each test runs real agents (subprocesses) against a real redis-server and
checks what they wrote to Redis: the status key, the activity stream, the
catalog. Timings come from the fast heartbeat settings in conftest; every
wait polls for a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from perseus_cli.apps.redis_server import RedisServer
from perseus_core.plumbing.connection import connect
from perseus_core.present import EdgeKind, Timing, offline_edge, status_line
from perseus_core.present.exchange import card, crash_text, row
from perseus_core.store.activity import ActivityLog
from perseus_core.store.control.sender import ControlClient
from perseus_core.store.network import FleetReader
from perseus_core.wire import keys
from perseus_core.wire.models import (
    CatalogEntry,
    CommandEntry,
    ErrorEntry,
    HolderEntry,
    InstanceStatus,
    ReplyStatus,
    StateTransitionEntry,
    parse_entry,
)
from perseus_core.wire.settings import Settings
from perseus_tui.app import create_app
from tests.agent.conftest import (
    CHILD_IGNORE_TERM,
    CHILD_SLEEP,
    HEARTBEAT_INTERVAL_MS,
    HEARTBEAT_TTL_MS,
    AgentProcess,
    SpawnAgent,
    agent_env,
    pid_alive,
    trap_term_child,
    written_pid,
)
from tests.helpers import AGENT_ARGV, PERSEUS_ARGV, invoke, status_gone
from tests.waiting import eventually

FULL_ROUND_TRIP = [
    ("idle", "starting"),
    ("starting", "warming"),
    ("warming", "active"),
    ("active", "stopping"),
    ("stopping", "stopped"),
    ("stopped", "idle"),
]

FAST = ["--warmup", "0.2"]
NO_RESTART = ["--restart", "never"]


def sleeper(pidfile: Path) -> list[str]:
    return [sys.executable, "-c", CHILD_SLEEP, str(pidfile)]


async def _not(check: Any) -> bool:
    return not await check()


async def status(redis: Redis, exchange_id: int = 1) -> InstanceStatus | None:
    raw = await redis.get(keys.status_key(exchange_id))
    return None if raw is None else InstanceStatus.from_json(raw)


async def state_is(redis: Redis, state: str, exchange_id: int = 1) -> InstanceStatus | None:
    current = await status(redis, exchange_id)
    return current if current is not None and current.connection_state == state else None


async def entries(redis: Redis, settings: Settings, name: str = "coinbase") -> list[Any]:
    page = await ActivityLog(redis, settings).page(name, count=500)
    return list(reversed(page.entries))


async def transitions(
    redis: Redis, settings: Settings, name: str = "coinbase"
) -> list[tuple[str, str]]:
    return [
        (e.from_state, e.to_state)
        for e in await entries(redis, settings, name)
        if isinstance(e, StateTransitionEntry)
    ]


async def errors(redis: Redis, settings: Settings, name: str = "coinbase") -> list[ErrorEntry]:
    return [e for e in await entries(redis, settings, name) if isinstance(e, ErrorEntry)]


async def send(redis: Redis, settings: Settings, command: str, exchange_id: int = 1) -> Any:
    return await ControlClient(redis, settings).send(
        exchange_id, command, operator="tests", ack_timeout_ms=10_000, result_timeout_ms=15_000
    )


async def until_listening(agent: AgentProcess) -> None:
    await agent.wait_log("listening for commands")


# --- the lifecycle driven by commands -----------------------------------------


async def test_start_stop_round_trip(
    spawn_agent: SpawnAgent, redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    operator_entry = CatalogEntry(id=1, name="coinbase", display_name="Coinbase (ops)")
    await redis.hset(keys.CATALOG_KEY, "1", operator_entry.to_json())
    pidfile = tmp_path / "child.pid"
    agent = spawn_agent(
        args=[*FAST, "--symbols", "25", "--admin-email", "ops@example.com", "--admin-name", "Ops"],
        command=sleeper(pidfile),
        env={"PERSEUS_PUBLIC_IP": "203.0.113.7"},
    )
    await until_listening(agent)

    # Idle: listening, but the slot is not claimed.
    assert await status(redis) is None
    ping = await send(redis, settings, "ping")
    assert ping.status is ReplyStatus.SUCCESS and ping.data["state"] == "idle"
    # A stop while idle holds: recorded by the sender, it keeps every agent
    # from starting the exchange on its own until an operator's start.
    kept = await send(redis, settings, "stop")
    assert kept.status is ReplyStatus.SUCCESS, kept.message
    assert kept.message.startswith("coinbase is idle and stays stopped (stopped by ")

    started = await send(redis, settings, "start")
    assert started.status is ReplyStatus.SUCCESS, started.message
    active = await status(redis)
    assert active is not None and active.connection_state == "active"
    assert active.symbol_count == 25 and active.connected_at is not None
    assert active.admin_email == "ops@example.com" and active.admin_display_name == "Ops"
    assert active.ip_address == "203.0.113.7"
    child_pid = await written_pid(pidfile)
    assert pid_alive(child_pid)

    again = await send(redis, settings, "start")
    assert again.status is ReplyStatus.ERROR
    assert again.message == "cannot start coinbase: it is active"
    ping = await send(redis, settings, "ping")
    assert ping.data["state"] == "active"

    stopped = await send(redis, settings, "stop")
    assert stopped.status is ReplyStatus.SUCCESS, stopped.message
    assert await status(redis) is None
    assert not pid_alive(child_pid)
    assert await transitions(redis, settings) == FULL_ROUND_TRIP
    # The operator's catalog entry was left as it was.
    assert CatalogEntry.from_json(await redis.hget(keys.CATALOG_KEY, "1")) == operator_entry
    assert agent.running


async def perseus(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the `perseus` CLI (another process), off the event loop."""
    argv = [*PERSEUS_ARGV, *args]
    return await asyncio.to_thread(
        subprocess.run, argv, env=agent_env(redis_url), capture_output=True, text=True, timeout=30
    )


async def test_round_trip_through_the_cli(
    spawn_agent: SpawnAgent, redis: Redis, settings: Settings, redis_url: str
) -> None:
    agent = spawn_agent(args=FAST)
    await until_listening(agent)

    started = await perseus(redis_url, "start", "1", "--operator", "alice")
    assert started.returncode == 0, started.stderr
    assert "coinbase is active" in started.stdout
    assert await state_is(redis, "active")

    stopped = await perseus(redis_url, "stop", "1", "--operator", "alice")
    assert stopped.returncode == 0, stopped.stderr
    assert await status(redis) is None

    again = await perseus(redis_url, "stop", "1", "--operator", "alice")
    assert again.returncode == 1
    # Refused before sending: nothing runs, and the stop is on record already.
    assert "cannot stop exchange 1: an operator already stopped it" in again.stderr

    assert await transitions(redis, settings) == FULL_ROUND_TRIP
    audit = [e for e in await entries(redis, settings) if isinstance(e, CommandEntry)]
    finals = [(e.command, e.status) for e in audit if e.status != "ack"]
    assert finals == [("start", "success"), ("stop", "success")]  # the refused one never went
    assert {e.operator for e in audit} == {"alice"}


async def test_agent_adds_its_exchange_to_the_catalog(
    spawn_agent: SpawnAgent, redis: Redis
) -> None:
    listed = CatalogEntry(id=8, name="bitstamp", display_name="Bitstamp", is_active=False)
    await redis.hset(keys.CATALOG_KEY, "8", listed.to_json())
    agent = spawn_agent(exchange_id=7, name="kraken", args=["--display-name", "Kraken"])
    same_name = spawn_agent(exchange_id=8, name="Bitstamp")  # stream keys are lower-cased
    await until_listening(agent)
    entry = CatalogEntry.from_json(await redis.hget(keys.CATALOG_KEY, "7"))
    assert entry == CatalogEntry(id=7, name="kraken", display_name="Kraken", is_active=True)
    await until_listening(same_name)
    assert CatalogEntry.from_json(await redis.hget(keys.CATALOG_KEY, "8")) == listed


async def test_a_name_the_catalog_contradicts_is_refused_with_exit_2(
    spawn_agent: SpawnAgent, redis: Redis
) -> None:
    listed = CatalogEntry(id=1, name="coinbase", display_name="Coinbase")
    await redis.hset(keys.CATALOG_KEY, "1", listed.to_json())
    misnamed = spawn_agent(exchange_id=1, name="kraken", args=["--autostart"])
    assert await misnamed.wait_exit() == 2
    last = misnamed.log().splitlines()[-1]
    assert last == (
        "perseus: the catalog lists exchange 1 as 'coinbase', not 'kraken': run it as "
        "--exchange-name coinbase, or add --rename to rename it in the catalog"
    )
    assert CatalogEntry.from_json(await redis.hget(keys.CATALOG_KEY, "1")) == listed
    assert await status_gone(redis, 1)
    assert not await redis.exists(keys.agents_key(1))


async def test_rename_updates_the_catalog_entry_and_says_so(
    spawn_agent: SpawnAgent, redis: Redis
) -> None:
    raw = '{"id":8,"name":"bitstamp","displayName":"Bitstamp","isActive":false,"livermoreSub":"s"}'
    await redis.hset(keys.CATALOG_KEY, "8", raw)
    renamed = spawn_agent(exchange_id=8, name="gemini", args=["--rename"])
    await until_listening(renamed)
    entry = CatalogEntry.from_json(await redis.hget(keys.CATALOG_KEY, "8"))
    assert entry == CatalogEntry(
        id=8, name="gemini", display_name="gemini", is_active=False, livermore_sub="s"
    )
    said = [line for line in renamed.log().splitlines() if "catalog" in line]
    assert len(said) == 1 and said[0].endswith(
        "gemini: renamed exchange 8 in the catalog from 'bitstamp' to 'gemini' (--rename)"
    )


async def test_a_second_autostart_agent_waits_as_a_standby_and_takes_over(
    spawn_agent: SpawnAgent, redis: Redis, settings: Settings
) -> None:
    first = spawn_agent(args=[*FAST, "--autostart"])
    await eventually(lambda: state_is(redis, "active"), what="the first agent to be active")
    holder = await status(redis)
    assert holder is not None

    second = spawn_agent(args=[*FAST, "--autostart"])
    await second.wait_log("standby: coinbase is held by")
    said = [line for line in second.log().splitlines() if "standby:" in line]
    assert len(said) == 1 and f"held by {holder.hostname} pid {holder.pid}" in said[0]
    assert await errors(redis, settings) == []  # it never tried a claim it would lose
    assert second.running
    after = await status(redis)
    assert after is not None and after.instance_id == holder.instance_id  # untouched

    # It says so where dashboards read it: its presence note.
    async def standby_noted() -> bool:
        members = await redis.zrange(keys.agents_key(1), 0, -1)
        notes = [json.loads(m).get("note") or "" for m in members]
        return any(note.startswith("standby: ") and holder.hostname in note for note in notes)

    await eventually(standby_noted, what="the standby in the presence note")

    # Once the first agent is gone, the standby takes the slot, and its note is cleared.
    first.signal(signal.SIGTERM)
    assert await first.wait_exit() == 0
    await eventually(lambda: state_is(redis, "active"), what="the standby's start", within=15)
    now = await status(redis)
    assert now is not None and now.instance_id != holder.instance_id
    await eventually(lambda: _not(standby_noted), what="the note cleared after the start", within=5)

    # The change of holder left a trace, once, naming both (docs/wire-format.md 2.7).
    await holder_change_is_shown(redis, settings, old=holder, new=now)


async def holder_change_is_shown(
    redis: Redis, settings: Settings, *, old: InstanceStatus, new: InstanceStatus
) -> None:
    """One `holder` entry in Perseus's stream says `new` followed `old`, and
    reads the same in `perseus log` and on the dashboard's feed."""
    rows = await redis.xrange(keys.perseus_activity_key("coinbase"))
    holders = [parse_entry(i, f) for i, f in rows if f.get("event") == "holder"]
    assert all(isinstance(e, HolderEntry) for e in holders)
    changes = [e for e in holders if isinstance(e, HolderEntry) and e.changed]
    assert len(changes) == 1, holders
    [change] = changes
    assert change.instance_id == new.instance_id and change.pid == str(new.pid)
    assert change.previous_instance_id == old.instance_id
    assert change.previous_hostname == old.hostname and change.previous_pid == str(old.pid)
    assert change.epoch == str(new.epoch) and change.via == "claim"
    shared = await redis.xrange(keys.activity_key("coinbase"))
    assert all(f.get("event") != "holder" for _, f in shared)

    text = (
        f"holder changed: {new.hostname} pid {new.pid} took over from {old.hostname} pid {old.pid}"
    )
    code, out, _ = await asyncio.to_thread(invoke, settings, "log", "--exchange", "coinbase")
    assert code == 0 and sum(text in line for line in out.splitlines()) == 1
    code, out, _ = await asyncio.to_thread(
        invoke, settings, "log", "--exchange", "coinbase", "--json"
    )
    entries = json.loads(out)["entries"]
    [listed] = [e for e in entries if e.get("event") == "holder" and e.get("previousPid")]
    assert listed["pid"] == str(new.pid) and listed["previousPid"] == str(old.pid)

    app = create_app(settings.model_copy(update={"refresh_ms": 60_000}))
    app.animation_level = "none"
    async with app.run_test(size=(120, 40)):
        await eventually(app.history_loaded.is_set)
        feed = app.dashboard.feed

        def shown() -> str | None:
            for y in range(feed.size.height):
                line = feed.render_line(y).text
                if "holder changed" in line:
                    return line
            return None

        line = await eventually(shown, what="the change of holder on the feed")
        assert text in line


# --- the child process --------------------------------------------------------


async def test_child_crash_while_active_returns_to_idle_and_can_start_again(
    spawn_agent: SpawnAgent, redis: Redis, settings: Settings
) -> None:
    crash = [sys.executable, "-c", "import sys, time; time.sleep(0.6); sys.exit(3)"]
    agent = spawn_agent(args=[*FAST, *NO_RESTART, "--autostart"], command=crash)
    holder = await eventually(lambda: state_is(redis, "active"), what="active")
    await agent.wait_log("released the slot")
    assert await status(redis) is None
    assert await transitions(redis, settings) == FULL_ROUND_TRIP
    [error] = await errors(redis, settings)
    assert "exited with code 3" in error.error and error.state == "active"
    assert agent.running

    # Never a ready slot in silence: the card, the table's last-error column,
    # `perseus status` and the dashboard's feed line all say it crashed.
    before = await FleetReader(redis).exchange(1)
    view = await FleetReader(redis).exchange(1)
    now = datetime.now(UTC)
    crashed = crash_text(view, now)
    assert crashed is not None and crashed[0].startswith("crashed: exit 3, ")
    assert card(view, now, Timing()).lines[0][0].text == crashed[0]
    last_error = row(view, now, Timing())[-1]
    assert last_error and last_error[0].text.startswith("crashed: exit 3, ")
    assert status_line(view, now, Timing()).info[0].startswith("crashed: exit 3, ")
    running = replace(before, status=holder, key_exists=True, last_known=None)
    edge = offline_edge(running, view, lost=False)
    assert edge.kind is EdgeKind.RELEASED and "exited with code 3" in edge.crash

    restarted = await send(redis, settings, "start")
    assert restarted.status is ReplyStatus.SUCCESS, restarted.message


async def test_child_crash_during_warmup_goes_straight_back_to_idle(
    spawn_agent: SpawnAgent, redis: Redis, settings: Settings
) -> None:
    crash = [sys.executable, "-c", "import sys; sys.exit(4)"]
    agent = spawn_agent(args=["--warmup", "5", *NO_RESTART], command=crash)
    await until_listening(agent)
    outcome = await send(redis, settings, "start")
    assert outcome.status is ReplyStatus.ERROR
    assert "exited with code 4" in (outcome.message or "")
    assert await transitions(redis, settings) == [
        ("idle", "starting"),
        ("starting", "warming"),
        ("warming", "idle"),
    ]
    [error] = await errors(redis, settings)
    assert error.state == "warming"
    assert await status(redis) is None
    assert agent.running


async def test_a_command_that_cannot_run_is_reported(
    spawn_agent: SpawnAgent, redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    # The agent refuses a missing program at start (exit 2), so this one
    # disappears after the agent has checked it.
    program = tmp_path / "vanishing-program"
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    agent = spawn_agent(args=[*FAST, *NO_RESTART], command=[str(program)])
    await until_listening(agent)
    program.unlink()
    outcome = await send(redis, settings, "start")
    assert outcome.status is ReplyStatus.ERROR and "cannot run" in (outcome.message or "")
    assert await transitions(redis, settings) == [("idle", "starting"), ("starting", "idle")]
    assert await status(redis) is None
    assert agent.running


async def test_stop_sends_sigterm_to_the_whole_process_group(
    spawn_agent: SpawnAgent, redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    pidfile = tmp_path / "child.pid"
    agent = spawn_agent(args=[*FAST, "--autostart"], command=trap_term_child(tmp_path, pidfile))
    await eventually(lambda: state_is(redis, "active"), what="active")
    await written_pid(Path(f"{pidfile}.grandchild"))
    agent.remember_descendants()
    outcome = await send(redis, settings, "stop")
    assert outcome.status is ReplyStatus.SUCCESS, outcome.message
    assert (tmp_path / "child.term").exists()
    assert (tmp_path / "grandchild.term").exists()


async def test_stop_kills_a_child_that_ignores_sigterm_after_the_grace(
    spawn_agent: SpawnAgent, redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    pidfile = tmp_path / "child.pid"
    agent = spawn_agent(
        args=[*FAST, "--autostart", "--stop-grace", "0.3"],
        command=[sys.executable, "-c", CHILD_IGNORE_TERM, str(pidfile)],
    )
    await eventually(lambda: state_is(redis, "active"), what="active")
    child_pid = await written_pid(pidfile)
    outcome = await send(redis, settings, "stop")
    assert outcome.status is ReplyStatus.SUCCESS, outcome.message
    assert "SIGKILL" in (outcome.message or "")
    assert not pid_alive(child_pid)
    assert "sending SIGKILL" in agent.log()
    assert await transitions(redis, settings) == FULL_ROUND_TRIP


# --- signals and death --------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
async def test_signal_stops_gracefully(
    sig: signal.Signals,
    spawn_agent: SpawnAgent,
    redis: Redis,
    settings: Settings,
    tmp_path: Path,
) -> None:
    pidfile = tmp_path / "child.pid"
    agent = spawn_agent(args=[*FAST, "--autostart"], command=sleeper(pidfile))
    await eventually(lambda: state_is(redis, "active"), what="active")
    child_pid = await written_pid(pidfile)
    agent.signal(sig)
    assert await agent.wait_exit() == 0
    assert await status(redis) is None
    assert not pid_alive(child_pid)
    assert await transitions(redis, settings) == FULL_ROUND_TRIP


async def test_signal_while_idle_exits_at_once(spawn_agent: SpawnAgent, redis: Redis) -> None:
    agent = spawn_agent()
    await until_listening(agent)
    agent.signal(signal.SIGTERM)
    assert await agent.wait_exit() == 0


async def test_second_sigint_forces_exit(
    spawn_agent: SpawnAgent, redis: Redis, tmp_path: Path
) -> None:
    pidfile = tmp_path / "child.pid"
    agent = spawn_agent(
        args=[*FAST, "--autostart", "--stop-grace", "30"],
        command=[sys.executable, "-c", CHILD_IGNORE_TERM, str(pidfile)],
    )
    await eventually(lambda: state_is(redis, "active"), what="active")
    child_pid = await written_pid(pidfile)
    agent.signal(signal.SIGINT)
    await eventually(lambda: state_is(redis, "stopping"), what="stopping")
    agent.signal(signal.SIGINT)
    assert await agent.wait_exit() == 130
    await eventually(lambda: not pid_alive(child_pid), what="the child to be killed")


async def test_kill_9_lets_the_key_expire_and_takes_the_child_along(
    spawn_agent: SpawnAgent, redis: Redis, tmp_path: Path
) -> None:
    pidfile = tmp_path / "child.pid"
    agent = spawn_agent(args=[*FAST, "--autostart"], command=sleeper(pidfile))
    await eventually(lambda: state_is(redis, "active"), what="active")
    child_pid = await written_pid(pidfile)
    agent.signal(signal.SIGKILL)
    await agent.wait_exit()
    ttl_s = HEARTBEAT_TTL_MS / 1000
    await eventually(
        lambda: status_gone(redis),
        within=ttl_s + 2,
        what="the status key to expire",
    )
    await eventually(lambda: not pid_alive(child_pid), what="the orphaned child to die")


# --- fencing and outages --------------------------------------------------------


async def test_paused_agent_fences_itself_without_touching_the_new_holder(
    spawn_agent: SpawnAgent, redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    first_pidfile = tmp_path / "first.pid"
    first = spawn_agent(args=[*FAST, "--autostart"], command=sleeper(first_pidfile))
    await eventually(lambda: state_is(redis, "active"), what="the first agent active")
    first_child = await written_pid(first_pidfile)
    first_holder = await status(redis)
    assert first_holder is not None

    first.signal(signal.SIGSTOP)
    try:
        await eventually(
            lambda: status_gone(redis), within=5, what="the paused agent's key to expire"
        )
        # The frozen agent could not stop its child: its watchdog did, before the key expired.
        assert not pid_alive(first_child)
        second = spawn_agent(args=[*FAST, "--autostart"], command=sleeper(tmp_path / "second.pid"))
        new_holder = await eventually(lambda: state_is(redis, "active"), what="the second agent")
        assert new_holder.instance_id != first_holder.instance_id
        assert (new_holder.epoch or 0) > (first_holder.epoch or 0)
    finally:
        first.signal(signal.SIGCONT)

    await first.wait_log("fenced")
    await eventually(lambda: not pid_alive(first_child), what="the first agent's child to stop")
    # Its restart policy tries again only where the slot is free: the claim is
    # refused, and the new holder is left alone (below).
    await first.wait_log("claim refused")
    # Let a few of the first agent's heartbeat periods pass (the new holder's
    # heartbeats measure them): it must stay off the key.
    before = await status(redis)
    assert before is not None

    async def three_more_heartbeats() -> bool:
        now = await status(redis)
        periods = 3 * HEARTBEAT_INTERVAL_MS / 1000
        return (
            now is not None
            and (now.last_heartbeat - before.last_heartbeat).total_seconds() >= periods
        )

    await eventually(three_more_heartbeats, what="three more heartbeat periods")
    current = await status(redis)
    assert current is not None
    assert current.instance_id == new_holder.instance_id
    assert current.epoch == new_holder.epoch
    assert current.connection_state == "active" and current.last_error is None
    assert first.running and second.running
    reported = await errors(redis, settings)
    assert len([e for e in reported if e.error.startswith("lease on exchange 1 lost")]) == 1
    [fenced] = [e for e in reported if e.error.startswith("fenced")]
    assert fenced.state == "active"
    await first.wait_log("perseus watchdog: the agent did not renew its lease deadline in time")
    # The standby steps aside: the holder answers.
    ping = await send(redis, settings, "ping")
    assert ping.status is ReplyStatus.SUCCESS
    assert ping.data["state"] == "active" and ping.data["pid"] == second.pid


async def test_command_sent_while_the_agent_was_cut_off_still_runs(
    spawn_agent: SpawnAgent, redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    pidfile = tmp_path / "child.pid"
    agent = spawn_agent(args=[*FAST, *NO_RESTART, "--autostart"], command=sleeper(pidfile))
    await eventually(lambda: state_is(redis, "active"), what="active")
    child_pid = await written_pid(pidfile)

    agent.signal(signal.SIGSTOP)
    try:
        command = await ControlClient(redis, settings).submit(1, "stop", operator="tests")
        # Out of touch past the TTL: the key expires, nobody else takes the slot.
        await eventually(lambda: status_gone(redis), within=5, what="the key to expire")
    finally:
        agent.signal(signal.SIGCONT)

    outcome = await ControlClient(redis, settings).wait(
        1, command.correlation_id, ack_timeout_ms=10_000, result_timeout_ms=15_000
    )
    # Frozen past the TTL, the agent's child was killed by its watchdog; the stop
    # is answered either by stopping the run or, when the dead child was dealt
    # with first, by saying the exchange is idle already.
    assert outcome.message in (
        "coinbase stopped (child killed by its watchdog: the lease was not renewed in time)",
        "cannot stop coinbase: it is idle",
    ), outcome.message
    assert not pid_alive(child_pid)
    await eventually(lambda: status_gone(redis), what="the key released")
    assert agent.running


@pytest.fixture
async def fresh_client(fresh_redis: RedisServer) -> AsyncIterator[tuple[Redis, Settings]]:
    settings = Settings(
        redis_url=fresh_redis.url, public_ip="off", block_ms=200, socket_timeout_ms=1000
    )
    client = connect(settings)
    try:
        yield client, settings
    finally:
        await client.aclose()


async def test_redis_restart_the_agent_reclaims_and_heartbeats_again(
    spawn_agent: SpawnAgent,
    fresh_redis: RedisServer,
    fresh_client: tuple[Redis, Settings],
    tmp_path: Path,
) -> None:
    redis, settings = fresh_client
    pidfile = tmp_path / "child.pid"
    # A TTL that outlasts the restart: the lease, and so the child, survive it.
    agent = spawn_agent(
        args=[*FAST, "--autostart"],
        command=sleeper(pidfile),
        url=fresh_redis.url,
        env={"PERSEUS_HEARTBEAT_TTL_MS": "5000"},
    )
    standby = spawn_agent(exchange_id=2, name="kraken", url=fresh_redis.url)
    await eventually(lambda: state_is(redis, "active"), what="active")
    await standby.wait_log("listening for commands")
    child_pid = await written_pid(pidfile)

    fresh_redis.restart()  # all data lost, as after a crash without persistence
    await redis.connection_pool.disconnect()
    reclaimed = await eventually(lambda: state_is(redis, "active"), within=10, what="a re-claim")
    beat = reclaimed.last_heartbeat
    later = await eventually(
        lambda: _heartbeat_after(redis, beat), within=5, what="heartbeats to resume"
    )
    assert later.connection_state == "active"
    assert pid_alive(child_pid)  # the run survived the outage
    assert agent.running
    # Presence is written again as well: both agents, the busy one and the idle one.
    for exchange_id in (1, 2):
        await eventually(
            lambda: redis.exists(keys.agents_key(exchange_id)),  # noqa: B023 - awaited at once
            within=20,  # on a loaded machine the idle agent's reconnect can lag behind
            what=f"exchange {exchange_id}'s agent presence after the restart",
        )
    # The catalog was lost with everything else: both agents put their exchange back,
    # so a dashboard lists the idle one too.
    await eventually(
        lambda: _catalog_ids(redis, {"1", "2"}), within=10, what="the catalog to be restored"
    )

    # Commands sent after the restart are executed, by the busy agent and the idle one.
    outcome = await send(redis, settings, "stop")
    assert outcome.status is ReplyStatus.SUCCESS, outcome.message
    assert await status(redis) is None
    ping = await send(redis, settings, "ping", exchange_id=2)
    assert ping.status is ReplyStatus.SUCCESS and ping.data["state"] == "idle"
    assert standby.running


async def _catalog_ids(redis: Redis, wanted: set[str]) -> bool:
    return set(await redis.hkeys(keys.CATALOG_KEY)) >= wanted


async def _heartbeat_after(redis: Redis, beat: Any) -> InstanceStatus | None:
    current = await status(redis)
    return current if current is not None and current.last_heartbeat > beat else None


# --- the command line -----------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["--exchange-id", "1", "--exchange-name", "bad name!"],
        ["--exchange-name", "coinbase"],
        ["--exchange-id", "1", "--exchange-name", "coinbase", "--warmup", "-1"],
    ],
)
def test_bad_arguments_exit_2(args: list[str], redis_url: str) -> None:
    result = subprocess.run(
        [*AGENT_ARGV, *args], env=agent_env(redis_url), capture_output=True, timeout=30
    )
    assert result.returncode == 2, result.stderr


async def test_unreachable_redis_is_retried_then_given_up_with_exit_3(
    spawn_agent: SpawnAgent,
) -> None:
    from perseus_cli.apps.redis_server import free_port

    url = f"redis://127.0.0.1:{free_port()}/0"
    agent = spawn_agent(args=["--startup-timeout", "0.5"], url=url)
    assert await agent.wait_exit() == 3
    log = agent.log()
    assert "waiting for Redis" in log and "connection refused" in log


async def test_sigterm_while_waiting_for_redis_exits_0(spawn_agent: SpawnAgent) -> None:
    from perseus_cli.apps.redis_server import free_port

    agent = spawn_agent(url=f"redis://127.0.0.1:{free_port()}/0")
    await agent.wait_log("waiting for Redis")
    agent.signal(signal.SIGTERM)
    assert await agent.wait_exit() == 0


# --- the child's environment ------------------------------------------------------

CHILD_ENV_DUMP = (
    "import json, os, sys, time; "
    "json.dump(dict(os.environ), open(sys.argv[1] + '.tmp', 'w')); "
    "os.rename(sys.argv[1] + '.tmp', sys.argv[1]); time.sleep(120)"
)


@pytest.mark.parametrize("pass_env", [False, True], ids=["default", "pass-env"])
async def test_the_child_gets_perseus_secrets_only_when_asked(
    pass_env: bool, spawn_agent: SpawnAgent, redis: Redis, redis_url: str, tmp_path: Path
) -> None:
    dump = tmp_path / "env.json"
    spawn_agent(
        args=[*FAST, "--autostart", *(["--pass-env"] if pass_env else [])],
        command=[sys.executable, "-c", CHILD_ENV_DUMP, str(dump)],
        env={"PERSEUS_NOTIFY_WEBHOOK": "https://hooks.example/secret-token", "MY_APP": "kept"},
    )
    await eventually(dump.exists, what="the child's environment dump")
    env = json.loads(dump.read_text())
    assert env["MY_APP"] == "kept"
    assert env["PERSEUS_HEARTBEAT_INTERVAL_MS"] == str(HEARTBEAT_INTERVAL_MS)  # not a secret
    if pass_env:
        assert env["PERSEUS_REDIS_URL"] == redis_url
        assert env["PERSEUS_NOTIFY_WEBHOOK"] == "https://hooks.example/secret-token"
    else:
        assert "PERSEUS_REDIS_URL" not in env and "PERSEUS_NOTIFY_WEBHOOK" not in env
        assert not any(redis_url in value for value in env.values())


async def test_an_unparseable_payload_from_another_writer_fences_the_agent(
    spawn_agent: SpawnAgent, redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    pidfile = tmp_path / "child.pid"
    agent = spawn_agent(args=[*FAST, "--autostart"], command=sleeper(pidfile))
    await eventually(lambda: state_is(redis, "active"), what="active")
    child_pid = await written_pid(pidfile)

    await redis.execute_command("SET", keys.status_key(1), "not json", "KEEPTTL")
    await agent.wait_log("fenced")
    await eventually(lambda: not pid_alive(child_pid), what="the child to stop")
    assert await redis.get(keys.status_key(1)) == "not json"  # never overwritten
    ping = await send(redis, settings, "ping")
    assert ping.status is ReplyStatus.SUCCESS and ping.data["state"] == "idle"
