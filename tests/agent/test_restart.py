"""`perseus agent`'s restart policy, readiness and health probes, with real agents,
real children and a real Redis, at test speed (backoffs of a fraction of a second)."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from redis.asyncio import Redis

from perseus_cli.apps.redis_server import RedisServer, free_port
from perseus_core.plumbing.connection import connect
from perseus_core.store.wanted import Want, write_wanted
from perseus_core.wire import keys
from perseus_core.wire.models import ErrorEntry, RestartEntry, StateTransitionEntry
from perseus_core.wire.settings import Settings
from perseus_tui.app import create_app
from tests.agent.conftest import AgentProcess, SpawnAgent, pid_alive, read_pid, written_pid
from tests.agent.test_agent import entries, errors, send, sleeper, state_is, transitions
from tests.helpers import invoke
from tests.waiting import eventually

PROBE_FAST = ["--probe-interval", "0.05", "--probe-timeout", "2"]

# Exits 2 at once while the file argv[1] exists; otherwise records its pid in
# argv[2] and works until stopped.
FAILS_WHILE_MARKED = (
    "import os, sys, time\n"
    "if os.path.exists(sys.argv[1]): sys.exit(2)\n"
    "open(sys.argv[2], 'w').write(str(os.getpid())); time.sleep(120)\n"
)

# Waits argv[2] seconds, then records its pid in argv[3] and listens on port argv[1].
LISTENS_LATER = (
    "import os, socket, sys, time\n"
    "time.sleep(float(sys.argv[2]))\n"
    "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
    "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen()\n"
    "open(sys.argv[3], 'w').write(str(os.getpid())); time.sleep(120)\n"
)

# Creates the file argv[1] after argv[2] seconds, records its pid in argv[3], works on.
TOUCHES_LATER = (
    "import os, sys, time\n"
    "time.sleep(float(sys.argv[2])); open(sys.argv[1], 'w').close()\n"
    "open(sys.argv[3], 'w').write(str(os.getpid())); time.sleep(120)\n"
)


async def notes(redis: Redis, exchange_id: int = 1) -> list[str]:
    members = await redis.zrange(keys.agents_key(exchange_id), 0, -1)
    return [json.loads(m).get("note") or "" for m in members]


async def note_with(redis: Redis, text: str) -> str | None:
    return next((n for n in await notes(redis) if text in n), None)


def restart_delays(agent: AgentProcess) -> list[float]:
    pattern = r"restart after quick failure \d+ of \d+: .*; restarting in ([0-9.]+)s"
    return [float(d) for d in re.findall(pattern, agent.log())]


def failing_agent(
    spawn_agent: SpawnAgent, tmp_path: Path, *, backoff_max: str, start_retries: str
) -> tuple[AgentProcess, Path, Path]:
    """An autostarted agent whose child exits 2 at once while the returned
    marker file exists (remove it and the next start succeeds), restarted by
    the policy with these settings; also the child's pid file."""
    marker, pidfile = tmp_path / "fail", tmp_path / "child.pid"
    marker.touch()
    agent = spawn_agent(
        args=["--warmup", "0.3", "--autostart", "--backoff-max", backoff_max,
              "--start-retries", start_retries],
        command=[sys.executable, "-c", FAILS_WHILE_MARKED, str(marker), str(pidfile)],
    )  # fmt: skip
    return agent, marker, pidfile


async def test_quick_failures_back_off_then_fatal_until_an_operator_starts(
    spawn_agent: SpawnAgent, redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    agent, marker, pidfile = failing_agent(
        spawn_agent, tmp_path, backoff_max="0.2", start_retries="3"
    )
    fatal = await eventually(
        lambda: note_with(redis, "FATAL"), within=20, what="FATAL in the presence note"
    )
    assert fatal.startswith(
        "FATAL: gave up after 3 quick failures: child command exited with code 2"
    )
    assert fatal.endswith("`perseus start 1` tries again")
    # Each attempt went the valid way back to idle, with its exit in an error entry.
    assert await transitions(redis, settings) == 3 * [
        ("idle", "starting"),
        ("starting", "warming"),
        ("warming", "idle"),
    ]
    reported = await errors(redis, settings)
    assert len([e for e in reported if "exited with code 2" in e.error]) == 4  # 3 runs + FATAL
    [gave_up] = [e for e in reported if e.error.startswith("gave up")]
    assert gave_up.error.startswith("gave up after 3 quick failures") and gave_up.state == "idle"
    # Two waits, each within the cap, before attempts 2 and 3.
    delays = restart_delays(agent)
    assert len(delays) == 2 and all(0.05 <= d <= 0.2 for d in delays), delays
    # ...and the slot stayed idle that long (half the cap at least: the jitter's floor).
    moves = [e for e in await entries(redis, settings) if isinstance(e, StateTransitionEntry)]
    for back, again in zip(moves[2::3], moves[3::3], strict=False):
        gap = datetime.fromisoformat(again.timestamp) - datetime.fromisoformat(back.timestamp)
        assert gap.total_seconds() >= 0.09, (back, again)
    assert await redis.get(keys.status_key(1)) is None
    await restarts_are_recorded(redis, settings, delays)

    # An operator's start clears FATAL; the service works again.
    marker.unlink()
    outcome = await send(redis, settings, "start")
    assert outcome.status.value == "success", outcome.message
    await eventually(lambda: state_is(redis, "active"), what="active after the start")
    assert not await note_with(redis, "FATAL")


async def restarts_are_recorded(redis: Redis, settings: Settings, delays: list[float]) -> None:
    """Each restart the policy scheduled (3 retries: after quick failures 1
    and 2, not after the FATAL third) left one `restart` entry in Perseus's
    stream, between a run's way back to idle and the next start, with the
    delay the agent logged; it reads the same in `perseus log`, its --json
    and the dashboard's feed (docs/wire-format.md 2.8)."""
    listed = await entries(redis, settings)
    restarts = [e for e in listed if isinstance(e, RestartEntry)]
    assert [(e.attempt, e.start_retries) for e in restarts] == [("1", "3"), ("2", "3")]
    for entry, logged in zip(restarts, delays, strict=True):
        assert entry.key == keys.perseus_activity_key("coinbase")
        assert (entry.exchange_id, entry.exchange_name) == ("1", "coinbase") and entry.hostname
        assert entry.time is not None
        assert entry.reason.startswith("child command exited with code 2"), entry.reason
        assert entry.delay_s is not None and abs(entry.delay_s - logged) <= 0.051, entry
        moves = [e for e in listed if isinstance(e, StateTransitionEntry)]
        at = listed.index(entry)
        before = [m for m in moves if listed.index(m) < at][-1]
        after = next(m for m in moves if listed.index(m) > at)
        assert (before.from_state, before.to_state) == ("warming", "idle")
        assert (after.from_state, after.to_state) == ("idle", "starting")
    shared = await redis.xrange(keys.activity_key("coinbase"))
    assert all(fields.get("event") != "restart" for _, fields in shared)

    first = restarts[0].delay_s
    text = f"restarting in {first:.1f}s (quick failure 1 of 3): child command exited with code 2"
    code, out, _ = await asyncio.to_thread(invoke, settings, "log", "--exchange", "coinbase")
    assert code == 0 and sum(text in line for line in out.splitlines()) == 1, out
    code, out, _ = await asyncio.to_thread(
        invoke, settings, "log", "--exchange", "coinbase", "--json"
    )
    raw = [e for e in json.loads(out)["entries"] if e.get("event") == "restart"]
    assert [e["attempt"] for e in raw] == ["2", "1"]  # newest first
    assert raw[1]["delayMs"] == restarts[0].delay_ms and raw[1]["startRetries"] == "3"

    app = create_app(settings.model_copy(update={"refresh_ms": 60_000}))
    app.animation_level = "none"
    async with app.run_test(size=(160, 40)):
        await eventually(app.history_loaded.is_set)
        feed = app.dashboard.feed

        def shown() -> str | None:
            lines = (feed.render_line(y).text for y in range(feed.size.height))
            return next((line for line in lines if "(quick failure 1 of 3)" in line), None)

        line = await eventually(shown, what="the restart on the feed")
        assert f"↻ restarting in {first:.1f}s (quick failure 1 of 3)" in line


async def test_stop_calls_off_a_pending_restart(
    spawn_agent: SpawnAgent, redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    agent, marker, pidfile = failing_agent(
        spawn_agent, tmp_path, backoff_max="1", start_retries="100"
    )
    await eventually(lambda: len(restart_delays(agent)) >= 2, what="two restarts")
    stopped = await send(redis, settings, "stop")
    assert stopped.status.value == "success", stopped.message
    assert stopped.message == "coinbase stays idle: its automatic restart is called off"
    marker.unlink()  # a restart now would succeed: none must come
    claims = len(await transitions(redis, settings))
    await agent.wait_log("restart is called off")
    # Nothing can be waited for here: what must not happen is a restart, and
    # one still pending would have started within the longest backoff (1 s).
    await asyncio.sleep(2.0)
    assert len(await transitions(redis, settings)) == claims
    assert await redis.get(keys.status_key(1)) is None
    assert read_pid(pidfile) is None
    assert not [n for n in await notes(redis) if n]


async def test_a_stop_recorded_anywhere_calls_off_the_next_restart(
    spawn_agent: SpawnAgent, redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    """An operator's stop is recorded fleet-wide (docs/wire-format.md 2.6): an
    agent whose child keeps failing asks before each restart, and stops
    restarting once the record says stopped, whoever wrote it."""
    agent, marker, pidfile = failing_agent(
        spawn_agent, tmp_path, backoff_max="0.5", start_retries="100"
    )
    await eventually(lambda: len(restart_delays(agent)) >= 1, what="a restart")
    await write_wanted(redis, 1, Want.STOP, "ops@elsewhere")
    await agent.wait_log("not restarting: stopped by ops@elsewhere")
    marker.unlink()  # a restart now would succeed: none must come
    claims = len(await transitions(redis, settings))
    await asyncio.sleep(1.5)  # longer than the longest backoff
    assert len(await transitions(redis, settings)) == claims
    assert await redis.get(keys.status_key(1)) is None
    started = await send(redis, settings, "start")  # the operator's word lifts it
    assert started.status.value == "success", started.message
    await written_pid(pidfile)


@pytest.fixture
async def fresh_client(fresh_redis: RedisServer) -> AsyncIterator[Redis]:
    client = connect(Settings(redis_url=fresh_redis.url, socket_timeout_ms=1000))
    try:
        yield client
    finally:
        await client.aclose()


async def test_children_killed_in_an_outage_longer_than_the_ttl_restart_once_redis_is_back(
    spawn_agent: SpawnAgent, fresh_redis: RedisServer, fresh_client: Redis, tmp_path: Path
) -> None:
    redis = fresh_client
    agents, pidfiles = [], []
    for exchange_id, name in ((1, "coinbase"), (2, "kraken")):
        pidfile = tmp_path / f"{name}.pid"
        pidfiles.append(pidfile)
        agents.append(
            spawn_agent(
                exchange_id=exchange_id,
                name=name,
                args=["--warmup", "0.1", "--autostart", "--backoff-max", "0.3"],
                command=sleeper(pidfile),
                url=fresh_redis.url,
            )
        )
    for exchange_id in (1, 2):
        await eventually(lambda: state_is(redis, "active", exchange_id), what="active")  # noqa: B023
    # Active after its warm-up, which need not wait for the child's first line:
    # on a loaded machine the child may write its pid a moment later.
    first_pids = [await written_pid(pidfile) for pidfile in pidfiles]
    for pidfile in pidfiles:
        pidfile.unlink()

    fresh_redis.stop()
    for pid in first_pids:
        assert pid is not None
        await eventually(lambda: not pid_alive(pid), within=5, what="the watchdog's kill")  # noqa: B023
    fresh_redis.start()  # on the same port, empty
    await redis.connection_pool.disconnect()

    for exchange_id, pidfile in zip((1, 2), pidfiles, strict=True):
        await eventually(
            lambda: state_is(redis, "active", exchange_id),  # noqa: B023
            within=15,
            what=f"exchange {exchange_id} restarted",
        )
        assert await written_pid(pidfile) not in first_pids
    for agent in agents:
        assert "killed by its watchdog" in agent.log()
        assert agent.running


async def test_ready_tcp_waits_for_the_port_the_child_opens(
    spawn_agent: SpawnAgent, redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    port, pidfile = free_port(), tmp_path / "child.pid"
    agent = spawn_agent(
        args=["--ready-tcp", f"127.0.0.1:{port}", *PROBE_FAST, "--warmup", "0"],
        command=[sys.executable, "-c", LISTENS_LATER, str(port), "0.6", str(pidfile)],
    )
    await agent.wait_log("listening for commands")
    outcome = await send(redis, settings, "start")
    assert outcome.status.value == "success", outcome.message
    assert read_pid(pidfile) is not None  # it listened before the agent called it active
    assert await transitions(redis, settings) == [
        ("idle", "starting"),
        ("starting", "warming"),
        ("warming", "active"),
    ]
    assert "ready after" in agent.log()


async def test_ready_timeout_fails_the_start_with_the_probe_reason(
    spawn_agent: SpawnAgent, redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    port = free_port()  # nothing ever listens there
    agent = spawn_agent(
        args=["--ready-tcp", f"127.0.0.1:{port}", "--ready-timeout", "0.4", "--restart", "never"]
        + PROBE_FAST,
        command=sleeper(tmp_path / "child.pid"),
    )
    await agent.wait_log("listening for commands")
    outcome = await send(redis, settings, "start")
    assert outcome.status.value == "error"
    expected = f"not ready after 0.4s: tcp 127.0.0.1:{port}: connection refused"
    assert (outcome.message or "").startswith(expected), outcome.message
    assert await transitions(redis, settings) == [
        ("idle", "starting"),
        ("starting", "warming"),
        ("warming", "idle"),
    ]
    [error] = await errors(redis, settings)
    assert error.error.startswith(expected) and error.state == "warming"
    assert "\n" not in error.error
    assert await redis.get(keys.status_key(1)) is None


async def test_ready_cmd_runs_without_secrets_until_it_exits_0(
    spawn_agent: SpawnAgent, redis: Redis, settings: Settings, redis_url: str, tmp_path: Path
) -> None:
    ready, dump, pidfile = tmp_path / "ready", tmp_path / "env", tmp_path / "child.pid"
    agent = spawn_agent(
        args=["--autostart", "--ready-cmd", f"env > {dump}; test -e {ready}", *PROBE_FAST],
        command=[sys.executable, "-c", TOUCHES_LATER, str(ready), "0.4", str(pidfile)],
    )
    await eventually(lambda: state_is(redis, "active"), what="active once the command passes")
    assert ready.exists()
    environment = dump.read_text()
    assert "PERSEUS_HEARTBEAT_INTERVAL_MS" in environment  # the agent's environment...
    assert (
        "PERSEUS_REDIS_URL" not in environment and redis_url not in environment
    )  # ...less secrets
    assert agent.running


async def test_health_failures_make_an_error_entry_and_restart_the_child(
    spawn_agent: SpawnAgent, redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    healthy, pidfile = tmp_path / "healthy", tmp_path / "child.pid"
    spawn_agent(
        args=[
            "--autostart",
            "--ready-file",
            str(healthy),
            "--health-file",
            str(healthy),
            "--health-failures",
            "2",
            "--health-restart",
            "--backoff-max",
            "0.2",
            *PROBE_FAST,
        ],
        command=[sys.executable, "-c", TOUCHES_LATER, str(healthy), "0", str(pidfile)],
    )
    await eventually(lambda: state_is(redis, "active"), what="active")
    first = await written_pid(pidfile)
    healthy.unlink()  # the service stops answering

    async def restarted() -> bool:
        now = read_pid(pidfile)
        return now is not None and now != first and bool(await state_is(redis, "active"))

    await eventually(restarted, within=15, what="the restarted child, active")
    assert not pid_alive(first)
    unhealthy = [
        e
        for e in await entries(redis, settings)
        if isinstance(e, ErrorEntry) and e.error.startswith("health check failed 2 times")
    ]
    assert unhealthy and unhealthy[0].state == "active"
    assert f"file {healthy}: no such file" in unhealthy[0].error
    assert ("active", "stopping") in await transitions(redis, settings)
