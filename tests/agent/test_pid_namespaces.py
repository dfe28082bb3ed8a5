"""Takeover only with proof: two real agents on one host, one of them in a pid
namespace of its own (`unshare --pid`), at the default timing (15 s / 45 s).

Both agents have the host's name. The agent in the namespace cannot see the
holder's pid, which proves nothing: it must not take the live holder's slot,
so no two children of the exchange ever run together. A holder whose pid is
gone in the same namespace and boot is still replaced at once.

Each child appends `time.monotonic()` to a file of its own (the same clock in
every pid namespace of the host), so how long two children ran together is
measured from their ticks, not inferred.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from redis.asyncio import Redis

from perseus_core.wire.models import ConnectionState
from tests.agent.conftest import AgentProcess, SpawnAgent
from tests.faults.split_brain import TICKER, _runs
from tests.helpers import stored
from tests.waiting import eventually

UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"]
DEFAULT_TIMING = {"PERSEUS_HEARTBEAT_INTERVAL_MS": "15000", "PERSEUS_HEARTBEAT_TTL_MS": "45000"}


def _unshare_problem() -> str | None:
    """Why this host cannot run an agent in a pid namespace of its own, or None."""
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return "no unshare(1) on this host"
    try:
        done = subprocess.run([*UNSHARE, "true"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unshare failed: {exc}"
    if done.returncode != 0:
        return f"unshare --pid is not permitted here: {done.stderr.strip()[:200]}"
    return None


@pytest.fixture
def unshare() -> list[str]:
    problem = _unshare_problem()
    if problem is not None:
        pytest.skip(
            f"NOT TESTED: takeover across pid namespaces needs unshare --pid (root or user "
            f"namespaces): {problem}"
        )
    return UNSHARE


def ticking_agent(
    spawn_agent: SpawnAgent, ticks: Path, *, wrapper: list[str] | None = None
) -> AgentProcess:
    """An agent with --autostart at the default timing whose children tick into `ticks`."""
    ticks.mkdir()
    return spawn_agent(
        exchange_id=7,
        name="splitbrain",
        args=["--autostart", "--warmup", "0"],
        command=[sys.executable, "-c", TICKER, str(ticks)],
        env=DEFAULT_TIMING,
        wrapper=wrapper,
    )


def overlap_s(first: Path, second: Path) -> float:
    """How long, in seconds, children of the two agents ran at the same time."""
    total = 0.0
    for start_a, end_a in _runs(first).values():
        for start_b, end_b in _runs(second).values():
            total += max(0.0, min(end_a, end_b) - max(start_a, start_b))
    return total


async def active_holder_pid(redis: Redis) -> int | None:
    raw = await redis.get("exchange:7:status")
    if raw is None:
        return None
    holder = await stored(redis, 7)
    return holder.pid if holder.connection_state is ConnectionState.ACTIVE else None


async def until_active(redis: Redis, agent: AgentProcess) -> None:
    """Wait until `agent` holds exchange 7 as active (its child ticks while warming)."""

    async def holds() -> bool:
        return await active_holder_pid(redis) == agent.pid

    await eventually(holds, 20, f"agent {agent.pid} to hold the exchange, active:\n{agent.log()}")


async def test_an_agent_in_another_pid_namespace_never_takes_a_live_holders_slot(
    spawn_agent: SpawnAgent, redis: Redis, tmp_path: Path, unshare: list[str]
) -> None:
    holder = ticking_agent(spawn_agent, tmp_path / "holder")
    await eventually(lambda: _runs(tmp_path / "holder"), 20, "the holder's child to tick")
    await until_active(redis, holder)

    contender = ticking_agent(spawn_agent, tmp_path / "contender", wrapper=unshare)

    def standing_by_or_running() -> bool:
        return "standby: " in contender.log() or bool(_runs(tmp_path / "contender"))

    await eventually(standing_by_or_running, 30, f"the contender to decide:\n{contender.log()}")
    # It must stay a standby: give it a few of its autostart rounds to be wrong.
    await asyncio.sleep(2.0)
    if _runs(tmp_path / "contender"):
        # It took the slot: the holder finds out at its next heartbeat (up to
        # 15 s) and fences itself; measure how long both children ran.
        await eventually(
            lambda: "fenced after losing the slot" in holder.log(), 30, "the holder to fence"
        )
        pytest.fail(
            f"the agent in another pid namespace took a live holder's slot: two children "
            f"ran together for {overlap_s(tmp_path / 'holder', tmp_path / 'contender'):.1f}s"
        )
    assert not _runs(tmp_path / "contender")
    assert await active_holder_pid(redis) == holder.pid
    assert holder.running and "fenced" not in holder.log()
    assert overlap_s(tmp_path / "holder", tmp_path / "contender") == 0.0


async def test_a_dead_holder_in_the_same_namespace_is_replaced_at_once(
    spawn_agent: SpawnAgent, redis: Redis, tmp_path: Path
) -> None:
    """kill -9 of the holder: its key would live 45 s more, but an agent in the
    same pid namespace and boot sees the pid gone and takes the slot now."""
    old = ticking_agent(spawn_agent, tmp_path / "old")
    await eventually(lambda: _runs(tmp_path / "old"), 20, "the first child to tick")
    await until_active(redis, old)
    old.signal(signal.SIGKILL)
    await old.wait_exit()

    new = ticking_agent(spawn_agent, tmp_path / "new")
    await eventually(lambda: _runs(tmp_path / "new"), 20, f"the new child:\n{new.log()}")
    await until_active(redis, new)
    assert "took over from" in new.log()
    assert 0 < await redis.pttl("exchange:7:status") <= 45_000
    assert overlap_s(tmp_path / "old", tmp_path / "new") == 0.0
