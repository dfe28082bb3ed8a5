"""Every process of a child is the child's: `perseus agent` leaves none behind.

Real agents (subprocesses), real children and a real redis-server. The child
(`FAMILY_SCRIPT`) ignores SIGTERM and starts a helper in its group, one in a
session of its own and a double-forked daemon, all ignoring SIGTERM too.
Each test runs with the child in a cgroup of its own (where this host lets
the agent make one) and under its watchdog as subreaper (the cgroup turned
off), the two ways `perseus_core.runtime.containment` keeps a child together.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import struct
import sys
import termios
from pathlib import Path

import pytest
from redis.asyncio import Redis

from perseus_core.runtime.containment import CGROUP_PREFIX, cgroup_home
from perseus_core.wire import keys
from perseus_core.wire.models import ReplyStatus
from perseus_core.wire.settings import Settings
from tests.agent.conftest import (
    FAMILY_ROLES,
    AgentProcess,
    SpawnAgent,
    family_child,
    family_pids,
    pid_alive,
)
from tests.agent.test_agent import FAST, FULL_ROUND_TRIP, send, state_is, status, transitions
from tests.waiting import eventually

_HOME = cgroup_home()

CONTAINMENT = [
    pytest.param(
        "on",
        id="cgroup",
        marks=pytest.mark.skipif(
            isinstance(_HOME, str), reason=f"this host gives no cgroup v2 to write into: {_HOME}"
        ),
    ),
    pytest.param(
        "off",
        id="subreaper",
        marks=pytest.mark.skipif(
            not sys.platform.startswith("linux"), reason="PR_SET_CHILD_SUBREAPER is Linux's"
        ),
    ),
]

GRACE = ["--stop-grace", "0.3"]


def _cgroup_of(pid: int) -> str:
    """The cgroup v2 path of `pid`, from /proc."""
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        if line.startswith("0::"):
            return line[3:]
    raise AssertionError(f"process {pid} is in no cgroup v2")


def _ppid(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


async def _whole_family(tmp_path: Path, roles: frozenset[str] = FAMILY_ROLES) -> list[int]:
    """Wait until every role has recorded its pid; every pid recorded."""

    def recorded() -> dict[str, list[int]] | None:
        pids = family_pids(tmp_path)
        return pids if roles <= pids.keys() else None

    pids = await eventually(recorded, what=f"the child's family {sorted(roles)}")
    return [pid for role in roles for pid in pids[role]]


def _assert_contained(agent: AgentProcess, tmp_path: Path, containment: str) -> None:
    """The family is kept the way the agent was asked to: all in one cgroup of
    the agent's making, or the orphaned daemon handed to the watchdog."""
    pids = family_pids(tmp_path)
    [main], [daemon] = pids["main"], pids["daemon"]
    if containment == "on":
        assert "in cgroup" in agent.log()
        cgroup = _cgroup_of(main)
        assert Path(cgroup).name.startswith(f"{CGROUP_PREFIX}{agent.pid}-")
        assert all(_cgroup_of(pid) == cgroup for role in pids for pid in pids[role])
    else:
        assert "under its watchdog as subreaper" in agent.log()
        assert _cgroup_of(main) == _cgroup_of(agent.pid)
        watchdog = _ppid(main)
        assert watchdog != agent.pid and _ppid(watchdog) == agent.pid
        assert _ppid(daemon) == watchdog  # orphaned, and handed to the watchdog
        assert os.getsid(daemon) != os.getsid(main)


def _no_cgroup_left(agent: AgentProcess) -> bool:
    return isinstance(_HOME, str) or not list(_HOME.glob(f"{CGROUP_PREFIX}{agent.pid}-*"))


@pytest.mark.parametrize("containment", CONTAINMENT)
async def test_stop_leaves_no_process_behind(
    containment: str, spawn_agent: SpawnAgent, redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    agent = spawn_agent(
        args=[*FAST, "--autostart", *GRACE],
        command=family_child(tmp_path),
        env={"PERSEUS_CHILD_CGROUP": containment},
    )
    await eventually(lambda: state_is(redis, "active"), what="active")
    family = await _whole_family(tmp_path)
    assert all(pid_alive(pid) for pid in family)
    _assert_contained(agent, tmp_path, containment)

    outcome = await send(redis, settings, "stop")
    assert outcome.status is ReplyStatus.SUCCESS, outcome.message
    assert "killed by SIGKILL" in (outcome.message or "")
    # Answered once every process was gone: none is left, none a zombie.
    assert [pid for pid in family if pid_alive(pid)] == []
    assert _no_cgroup_left(agent)
    assert await transitions(redis, settings) == FULL_ROUND_TRIP

    # Started again: one family, the new one.
    restarted = await send(redis, settings, "start")
    assert restarted.status is ReplyStatus.SUCCESS, restarted.message
    await eventually(lambda: len(family_pids(tmp_path).get("main", [])) == 2, what="a new child")
    again = await _whole_family(tmp_path)
    assert [pid for pid in again if pid_alive(pid)] == [pid for pid in again if pid not in family]


@pytest.mark.parametrize("containment", CONTAINMENT)
async def test_a_daemonising_child_leaves_no_copy_behind_across_retried_starts(
    containment: str, spawn_agent: SpawnAgent, redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    # The launcher forks its daemon and exits 0 during the warm-up: the start
    # fails, and an operator tries again. Each try must take its daemon along.
    agent = spawn_agent(
        args=["--warmup", "5", *GRACE],
        command=family_child(tmp_path, "leave"),
        env={"PERSEUS_CHILD_CGROUP": containment},
    )
    await agent.wait_log("listening for commands")
    for attempt in (1, 2):
        outcome = await send(redis, settings, "start")
        assert outcome.status is ReplyStatus.ERROR
        assert "exited with code 0 while warming" in (outcome.message or "")
        daemons = family_pids(tmp_path)["daemon"]
        assert len(daemons) == attempt
        assert [pid for pid in daemons if pid_alive(pid)] == []
        assert _no_cgroup_left(agent)
    assert await status(redis) is None
    assert agent.running


@pytest.mark.parametrize("containment", CONTAINMENT)
async def test_an_agent_killed_with_9_leaves_no_process_behind(
    containment: str, spawn_agent: SpawnAgent, redis: Redis, tmp_path: Path
) -> None:
    agent = spawn_agent(
        args=[*FAST, "--autostart"],
        command=family_child(tmp_path),
        env={"PERSEUS_CHILD_CGROUP": containment},
    )
    await eventually(lambda: state_is(redis, "active"), what="active")
    family = await _whole_family(tmp_path)
    os.kill(agent.pid, signal.SIGKILL)  # not agent.signal: teardown must not do the work
    await agent.wait_exit()
    # The watchdog hears its agent go and kills every process of the child.
    await eventually(
        lambda: not any(pid_alive(pid) for pid in family), what="the whole family killed"
    )
    await eventually(lambda: _no_cgroup_left(agent), what="the child's cgroup removed")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda sig: sig.name)
async def test_a_signalled_agent_stops_everything_and_deregisters_at_once(
    sig: signal.Signals, spawn_agent: SpawnAgent, redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    # A TTL far longer than the test: a key that is gone was deleted, not expired.
    agent = spawn_agent(
        args=[*FAST, "--autostart", *GRACE],
        command=family_child(tmp_path),
        env={"PERSEUS_HEARTBEAT_TTL_MS": "60000"},
    )
    await eventually(lambda: state_is(redis, "active"), what="active")
    family = await _whole_family(tmp_path)
    assert await redis.zcard(keys.agents_key(1)) == 1

    agent.signal(sig)
    assert await agent.wait_exit() == 0
    assert f"received {sig.name}" in agent.log()
    assert await status(redis) is None
    assert await redis.zcard(keys.agents_key(1)) == 0
    assert [pid for pid in family if pid_alive(pid)] == []
    assert _no_cgroup_left(agent)
    assert await transitions(redis, settings) == FULL_ROUND_TRIP


def _terminal_of(pid: int) -> int:
    """The controlling terminal of `pid` (tty_nr in /proc/PID/stat; 0: none)."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[4])


def _open_files(pid: int) -> set[str]:
    """What the descriptors of `pid` point at (`/dev/pts/3`, `pipe:[1234]`...)."""
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            found.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return found


async def test_a_dropped_terminal_stops_the_agent_that_never_shared_it(
    spawn_agent: SpawnAgent, redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    # As in an SSH session: the agent's terminal is its controlling terminal
    # and its stdin, stdout and stderr; closing it sends the agent SIGHUP.
    agent = spawn_agent(
        args=[*FAST, "--autostart", *GRACE],
        command=family_child(tmp_path),
        env={"PERSEUS_HEARTBEAT_TTL_MS": "60000"},
        terminal=True,
    )
    await eventually(lambda: state_is(redis, "active"), what="active")
    family = await _whole_family(tmp_path)
    agents_own = {os.readlink(f"/proc/{agent.pid}/fd/{fd}") for fd in (0, 1, 2)}
    assert _terminal_of(agent.pid) != 0 and agents_own
    for pid in family:
        assert _terminal_of(pid) == 0, f"process {pid} has a controlling terminal"
        assert not _open_files(pid) & agents_own, f"process {pid} shares the agent's files"

    agent.hang_up()
    assert await agent.wait_exit() == 0
    assert await status(redis) is None
    assert await redis.zcard(keys.agents_key(1)) == 0
    assert [pid for pid in family if pid_alive(pid)] == []
    assert await transitions(redis, settings) == FULL_ROUND_TRIP


async def test_sighup_while_idle_exits_gracefully(spawn_agent: SpawnAgent, redis: Redis) -> None:
    agent = spawn_agent(env={"PERSEUS_HEARTBEAT_TTL_MS": "60000"})
    await agent.wait_log("listening for commands")
    assert await redis.zcard(keys.agents_key(1)) == 1
    agent.signal(signal.SIGHUP)
    assert await agent.wait_exit() == 0
    assert await redis.zcard(keys.agents_key(1)) == 0


# --- the child's output -------------------------------------------------------

FLOOD_MIB = 100
# 100 MiB of 100-byte lines on stdout, then a mark, then work until stopped.
FLOOD = (
    "import sys, time; chunk = (b'x' * 99 + b'\\n') * 10486; out = sys.stdout.buffer\n"
    f"for _ in range({FLOOD_MIB}): out.write(chunk)\n"
    "out.flush(); open(sys.argv[1], 'w').close(); time.sleep(120)"
)


def _memory_kib(pid: int, field: str) -> int:
    """`VmRSS` (resident now) or `VmHWM` (the most it ever was) of `pid`, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for process {pid}")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/PID/status")
async def test_a_child_flooding_its_stdout_neither_freezes_nor_bloats_the_agent(
    spawn_agent: SpawnAgent, redis: Redis, tmp_path: Path
) -> None:
    # The agent's own stdout is a pipe nobody reads: a child that wrote into
    # it would block after 64 KiB and never reach its mark.
    ttl_ms = 2000
    mark = tmp_path / "flooded"
    agent = spawn_agent(
        args=[*FAST, "--autostart"],
        command=[sys.executable, "-c", FLOOD, str(mark)],
        env={"PERSEUS_HEARTBEAT_INTERVAL_MS": "200", "PERSEUS_HEARTBEAT_TTL_MS": str(ttl_ms)},
        stdout_pipe=True,
    )
    await eventually(lambda: state_is(redis, "active"), what="active")
    resident_before = _memory_kib(agent.pid, "VmRSS")

    async def flooded_with_the_key_kept() -> bool:
        assert await status(redis) is not None, "the status key expired during the flood"
        return mark.exists()

    await eventually(flooded_with_the_key_kept, within=300, what=f"{FLOOD_MIB} MiB drained")
    drained = await status(redis)
    assert drained is not None

    async def heartbeats_a_ttl_later() -> bool:
        now = await status(redis)
        assert now is not None, "the status key expired after the flood"
        return (now.last_heartbeat - drained.last_heartbeat).total_seconds() * 1000 > ttl_ms

    await eventually(heartbeats_a_ttl_later, what="heartbeats for a TTL after the flood")
    grown_mib = (_memory_kib(agent.pid, "VmHWM") - resident_before) / 1024
    assert grown_mib < FLOOD_MIB / 4, f"the agent grew by {grown_mib:.0f} MiB"

    # Nothing reached the agent's stdout; its log got a bounded share, and says so.
    assert agent.process.stdout is not None
    os.set_blocking(agent.process.stdout.fileno(), False)
    assert agent.process.stdout.read() is None  # nothing to read, and still open
    log = agent.log()
    logged = log.count("coinbase: child stdout: xxxx")
    assert 0 < logged < FLOOD_MIB * 10486 // 100, logged
    assert "lines of the child's output not logged" in log
    assert agent.running


# A child that talks all the time: a line every millisecond or so.
CHATTER = "import time\nwhile True:\n    print('chatter ' * 10, flush=True)\n    time.sleep(0.001)"


def _bytes_waiting(fd: int) -> int:
    """How many bytes the pipe `fd` (its read end) holds, unread."""
    return int(struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sizes the pipe with fcntl")
async def test_a_log_nobody_reads_does_not_freeze_the_agent(
    spawn_agent: SpawnAgent, redis: Redis, settings: Settings
) -> None:
    # stdout and stderr are one pipe that nobody reads (`2>&1 | a-stalled-reader`):
    # the agent's log, the child's lines in it, fills it, and then stays full.
    ttl_ms = 2000
    agent = spawn_agent(
        args=[*FAST, "--autostart"],
        command=[sys.executable, "-c", CHATTER],
        env={"PERSEUS_HEARTBEAT_INTERVAL_MS": "200", "PERSEUS_HEARTBEAT_TTL_MS": str(ttl_ms)},
        stdout_pipe=True,
        log_into_pipe=True,
    )
    assert agent.process.stdout is not None
    fd = agent.process.stdout.fileno()
    with contextlib.suppress(OSError):  # EBUSY: more than that is in it already
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 4096)  # fills sooner
    capacity = fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
    await eventually(lambda: state_is(redis, "active"), what="active")
    await eventually(
        lambda: _bytes_waiting(fd) > capacity - 1024,
        within=60,
        what="the agent's log to fill the pipe",
    )
    full = await status(redis)
    assert full is not None

    async def heartbeats_a_ttl_later() -> bool:
        now = await status(redis)
        assert now is not None, "the status key expired while the log was full"
        return (now.last_heartbeat - full.last_heartbeat).total_seconds() * 1000 > ttl_ms

    await eventually(heartbeats_a_ttl_later, what="heartbeats for a TTL with the log full")
    assert _bytes_waiting(fd) > capacity - 1024  # still full: nobody read it
    ping = await send(redis, settings, "ping")
    assert ping.status is ReplyStatus.SUCCESS and ping.data["state"] == "active"
    stopped = await send(redis, settings, "stop")
    assert stopped.status is ReplyStatus.SUCCESS, stopped.message

    # Read at last, the log has kept everything since, in order.
    os.set_blocking(fd, False)
    read: list[bytes] = []

    def caught_up() -> bool:
        read.append(agent.process.stdout.read() or b"")  # type: ignore[union-attr]
        return b"released the slot; idle" in b"".join(read)

    await eventually(caught_up, what="the agent's log to catch up")
    log = b"".join(read).decode(errors="replace")
    assert log.index("active -> stopping") < log.index("stopped -> idle")
    assert agent.running
