"""`perseus agent --config`: several exchange slots in one process, each on its own.

Real agents in one subprocess against a real redis-server: every slot holds
its own lease and child, what happens to one (a stop, a crashed child, a name
the catalog contradicts, a reload) leaves the others' children running with
the same pids.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis

from perseus_core.plumbing.processes import descendants
from perseus_core.runtime.agent import Agent, AgentOptions
from perseus_core.runtime.host import Host
from perseus_core.wire import keys
from perseus_core.wire.models import CatalogEntry
from perseus_core.wire.settings import Settings
from tests.agent.conftest import CHILD_SLEEP, SpawnHost, pid_alive, read_pid, written_pid
from tests.agent.test_agent import state_is, status, transitions
from tests.helpers import invoke, status_gone
from tests.waiting import eventually

DEFAULTS = "[defaults]\nwarmup_s = 0.2\nautostart = true\n"


def slot(exchange_id: int, name: str, pidfile: Path | None = None, extra: str = "") -> str:
    """One `[[slot]]` table; with `pidfile`, a child that records its pid there."""
    text = f'\n[[slot]]\nexchange_id = {exchange_id}\nexchange_name = "{name}"\n'
    if pidfile is not None:
        # A JSON array of strings is a TOML array of strings.
        text += f"command = {json.dumps([sys.executable, '-c', CHILD_SLEEP, str(pidfile)])}\n"
    return text + extra


async def all_active(redis: Redis, *exchange_ids: int) -> None:
    for exchange_id in exchange_ids:
        await eventually(lambda i=exchange_id: state_is(redis, "active", i), what=f"{exchange_id}")


async def test_each_slot_runs_apart_in_one_process(
    spawn_host: SpawnHost, redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    await redis.hset(keys.CATALOG_KEY, "9", CatalogEntry(id=9, name="gemini").to_json())
    pidfiles = {i: tmp_path / f"child-{i}.pid" for i in (1, 2, 3)}
    config = tmp_path / "host.toml"
    config.write_text(
        DEFAULTS
        + slot(1, "coinbase", pidfiles[1])
        + slot(2, "kraken", pidfiles[2])
        + slot(3, "binance", pidfiles[3])
        + slot(9, "bitstamp")  # the catalog says 9 is gemini: this slot alone fails
    )
    host = spawn_host(config)
    await all_active(redis, 1, 2, 3)
    children = {i: await written_pid(path) for i, path in pidfiles.items()}
    assert set(children.values()) <= set(descendants(host.pid))  # one process supervises all
    await host.wait_log("bitstamp: the catalog lists exchange 9 as 'gemini'")
    assert await status_gone(redis, 9)
    binance = await status(redis, 3)
    assert binance is not None

    # `perseus stop 2` stops kraken's child only.
    code, _, err = await asyncio.to_thread(invoke, settings, "stop", "2")
    assert code == 0, err
    assert await status_gone(redis, 2) and not pid_alive(children[2])

    # coinbase's child dies: coinbase is back to idle, binance never noticed.
    os.kill(children[1], signal.SIGKILL)
    await eventually(lambda: status_gone(redis, 1), what="coinbase released after its crash")
    assert pid_alive(children[3])
    now = await state_is(redis, "active", 3)
    assert now is not None and now.instance_id == binance.instance_id
    assert host.running

    host.signal(signal.SIGTERM)
    assert await host.wait_exit() == 0
    assert not pid_alive(children[3]) and await status_gone(redis, 3)
    for exchange_id in (1, 2, 3, 9):
        assert not await redis.exists(keys.agents_key(exchange_id))


async def test_a_host_whose_every_slot_fails_exits_with_their_code(
    spawn_host: SpawnHost, redis: Redis, tmp_path: Path
) -> None:
    await redis.hset(keys.CATALOG_KEY, "9", CatalogEntry(id=9, name="gemini").to_json())
    config = tmp_path / "host.toml"
    config.write_text(slot(9, "bitstamp"))
    host = spawn_host(config)
    assert await host.wait_exit() == 2
    assert "no slot left running: bitstamp: the catalog lists" in host.log().splitlines()[-1]


async def test_sighup_applies_the_file_again_and_a_bad_file_changes_nothing(
    spawn_host: SpawnHost, redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    pid = {name: tmp_path / f"{name}.pid" for name in ("kept", "removed", "old", "new", "added")}
    config = tmp_path / "host.toml"
    config.write_text(
        DEFAULTS
        + slot(1, "coinbase", pid["kept"])
        + slot(2, "kraken", pid["removed"])
        + slot(3, "binance", pid["old"])
    )
    host = spawn_host(config)
    await all_active(redis, 1, 2, 3)
    kept, removed, old = [await written_pid(pid[n]) for n in ("kept", "removed", "old")]
    coinbase = await status(redis, 1)
    assert coinbase is not None

    applied = (
        DEFAULTS
        + slot(1, "coinbase", pid["kept"])
        + slot(3, "binance", pid["new"], extra="symbol_count = 7\n")
        + slot(4, "bitstamp", pid["added"])
    )
    config.write_text(applied)
    host.signal(signal.SIGHUP)
    added = await written_pid(pid["added"])
    await all_active(redis, 4)
    await eventually(lambda: status_gone(redis, 2), what="the removed slot released")
    assert not pid_alive(removed) and not await redis.exists(keys.agents_key(2))
    new = await written_pid(pid["new"])
    await eventually(lambda: state_is(redis, "active", 3), what="the changed slot active again")
    binance = await status(redis, 3)
    assert binance is not None and binance.symbol_count == 7 and not pid_alive(old)
    # The unchanged slot: same child, same lease, no transition since its start.
    assert pid_alive(kept) and read_pid(pid["kept"]) == kept
    after = await state_is(redis, "active", 1)
    assert after is not None and after.instance_id == coinbase.instance_id
    assert await transitions(redis, settings, "coinbase") == [
        ("idle", "starting"),
        ("starting", "warming"),
        ("warming", "active"),
    ]

    # A file that fails its checks is refused in one line; everything runs on.
    config.write_text(applied + slot(5, "kraken") + "warmup_s = -1\n")
    host.signal(signal.SIGHUP)
    await host.wait_log("reload refused")
    [refused] = [line for line in host.log().splitlines() if "reload refused" in line]
    assert f"{config}:{applied.count(chr(10)) + 5}: slot 4 (kraken): warmup_s = -1" in refused
    assert all(pid_alive(p) for p in (kept, new, added))
    await all_active(redis, 1, 3, 4)
    assert await status_gone(redis, 5)

    host.signal(signal.SIGTERM)
    assert await host.wait_exit() == 0
    assert not any(pid_alive(p) for p in (kept, new, added))


async def test_an_agent_that_crashes_ends_alone(
    settings: Settings,
    redis: Redis,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """In process: a bug in one slot's agent is logged and leaves the others running."""
    real_run = Agent.run

    async def run(self: Agent, *, signals: bool = True) -> int:
        if self.name == "broken":
            raise RuntimeError("a bug")
        return await real_run(self, signals=signals)

    monkeypatch.setattr(Agent, "run", run)
    slots = [
        AgentOptions(1, "coinbase", autostart=True, warmup_s=0.1),
        AgentOptions(2, "broken", autostart=True),
    ]
    host = Host(settings, slots)
    running = asyncio.create_task(host.run())
    await eventually(lambda: state_is(redis, "active", 1), what="coinbase active")
    assert not running.done()
    assert "broken: agent failed; the other slots run on" in caplog.text
    host.request_stop()
    assert await asyncio.wait_for(running, 20) == 0
    assert await status_gone(redis, 1)
