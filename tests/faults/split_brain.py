"""SIGSTOP split-brain rounds: two agents for one slot, the holder frozen, the other claims.

Shared by the short form in the suite (`test_split_brain.py`, 3 rounds) and
the long form (`bench/split_brain.py`, 20 rounds, JSON): one definition of a
round and of an overlap.

Each child appends `time.monotonic()` to a file of its own every few
milliseconds (the same clock in every process of the host), so a child's
run is known from its first to its last tick, however it ended (a SIGKILL
leaves no chance to write a stop time). Two children overlap when the new
one ticked before the old one's last tick. Each round also records whether
the old child was still alive when the status key expired: the moment
another agent could claim the slot.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from redis.asyncio import Redis

from perseus_core.store.control.sender import ControlClient
from perseus_core.wire import keys
from perseus_core.wire.models import InstanceStatus, ReplyStatus
from perseus_core.wire.settings import Settings
from tests.helpers import AGENT_ARGV, status_gone
from tests.waiting import eventually

EXCHANGE_ID = 7
NAME = "splitbrain"
HEARTBEAT_INTERVAL_MS = 200
HEARTBEAT_TTL_MS = 600
TICKER = (
    "import os, sys, time\n"
    "path = os.path.join(sys.argv[1], f'{os.getpid()}.ticks')\n"
    "with open(path, 'a', buffering=1) as f:\n"
    "    while True:\n"
    "        f.write(f'{time.monotonic()}\\n')\n"
    "        time.sleep(0.002)\n"
)


@dataclass
class Agent:
    """One `perseus agent` subprocess whose children tick into `ticks`."""

    process: subprocess.Popen[bytes]
    ticks: Path
    log: Path

    def fenced_count(self) -> int:
        return self.log.read_text(errors="replace").count("fenced after losing the slot")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


@dataclass
class Report:
    """What the rounds measured."""

    rounds: int = 0
    overlaps: int = 0
    max_overlap_ms: float = 0.0
    alive_at_expiry: int = 0
    gaps_ms: list[float] = field(default_factory=list)
    """Per round: from the old child's last tick to the new child's first one."""


def spawn_agent(redis_url: str, workdir: Path, role: str, *, autostart: bool) -> Agent:
    """An agent for the test slot at test speed, its children ticking into `workdir/role`."""
    ticks = workdir / role
    ticks.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSEUS_")}
    env.update(
        PERSEUS_REDIS_URL=redis_url,
        PERSEUS_HEARTBEAT_INTERVAL_MS=str(HEARTBEAT_INTERVAL_MS),
        PERSEUS_HEARTBEAT_TTL_MS=str(HEARTBEAT_TTL_MS),
        PERSEUS_PUBLIC_IP="off",
        PERSEUS_BLOCK_MS="200",
        PERSEUS_SOCKET_TIMEOUT_MS="1000",
        PERSEUS_STOP_GRACE_MS="1000",
    )
    argv = [
        *AGENT_ARGV,
        "--exchange-id",
        str(EXCHANGE_ID),
        "--exchange-name",
        NAME,
        "--warmup",
        "0",
        *(["--autostart"] if autostart else []),
        "--",
        sys.executable,
        "-c",
        TICKER,
        str(ticks),
    ]
    log = workdir / f"{role}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    return Agent(process, ticks, log)


def _runs(ticks: Path) -> dict[str, tuple[float, float]]:
    """Each child's (first tick, last tick), by pid file name."""
    found: dict[str, tuple[float, float]] = {}
    for path in ticks.glob("*.ticks"):
        values = [float(line) for line in path.read_text().split() if line]
        if values:
            found[path.name] = (values[0], values[-1])
    return found


def _newest(ticks: Path) -> str:
    """The child that started last."""
    runs = _runs(ticks)
    return max(runs, key=lambda name: runs[name][0])


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


async def _active_pid(redis: Redis) -> int | None:
    """The pid of the agent holding the slot, once it is active."""
    raw = await redis.get(keys.status_key(EXCHANGE_ID))
    holder = None if raw is None else InstanceStatus.from_json(raw)
    if holder is None or holder.connection_state != "active":
        return None
    return holder.pid


async def run_rounds(rounds: int, redis_url: str, workdir: Path) -> Report:
    """Run `rounds` SIGSTOP rounds on a clean database; the agents are removed afterwards."""
    settings = Settings(redis_url=redis_url, public_ip="off", block_ms=200, socket_timeout_ms=1000)
    redis = Redis.from_url(redis_url, decode_responses=True)
    report = Report()
    agents = [spawn_agent(redis_url, workdir, "a", autostart=True)]
    try:
        await eventually(lambda: _active_pid(redis), 20, "the first agent to be active")
        agents.append(spawn_agent(redis_url, workdir, "b", autostart=False))
        await eventually(lambda: "listening for commands" in agents[1].log.read_text(), 20, "b")
        client = ControlClient(redis, settings)
        for _ in range(rounds):
            pid = await _active_pid(redis)
            holder = next(a for a in agents if a.process.pid == pid)
            standby = next(a for a in agents if a is not holder)
            gap_ms, alive = await _one_round(redis, client, holder, standby)
            report.rounds += 1
            report.alive_at_expiry += alive
            report.gaps_ms.append(round(gap_ms, 1))
            if gap_ms <= 0:
                report.overlaps += 1
                report.max_overlap_ms = max(report.max_overlap_ms, -gap_ms)
    finally:
        for agent in agents:
            agent.stop()
        await redis.aclose()
    return report


async def _one_round(
    redis: Redis, client: ControlClient, holder: Agent, standby: Agent
) -> tuple[float, bool]:
    """Freeze `holder`, let its key expire, start `standby`, resume `holder`.

    Returns the gap from the old child's last tick to the new child's first
    (negative: they overlapped) and whether the old child was alive at expiry.
    """
    old_child = _newest(holder.ticks)
    old_pid = int(old_child.split(".")[0])
    fenced = holder.fenced_count()
    before = set(_runs(standby.ticks))
    os.kill(holder.process.pid, signal.SIGSTOP)
    try:
        await eventually(lambda: status_gone(redis, EXCHANGE_ID), 10, "the key to expire")
        alive = _alive(old_pid)
        outcome = await client.send(EXCHANGE_ID, "start", operator="split-brain")
        # A standby fenced in an earlier round retries its claim on its own (the
        # restart policy) and may win the slot before the command reaches it: then
        # it answers "it is active", and the fleet shows the start all the same.
        if outcome.status is not ReplyStatus.SUCCESS:

            async def standby_active() -> bool:
                return await _active_pid(redis) == standby.process.pid

            await eventually(standby_active, 5, f"the standby to start ({outcome.message})")
    finally:
        os.kill(holder.process.pid, signal.SIGCONT)
    await eventually(lambda: holder.fenced_count() > fenced, 20, "the old holder to fence")
    await eventually(lambda: set(_runs(standby.ticks)) - before, 10, "the new child to tick")
    _, old_last = _runs(holder.ticks)[old_child]
    [new_child] = set(_runs(standby.ticks)) - before
    new_first, _ = _runs(standby.ticks)[new_child]
    return (new_first - old_last) * 1000, alive
