"""The child's output in Redis (`perseus:output:{id}`): real agents, real
children, a real redis-server, paused while the child writes."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from redis.asyncio import Redis

from perseus_cli.apps.redis_server import RedisServer
from perseus_core.plumbing.connection import connect
from perseus_core.store.output import LINE_CHARS, OutputLine, recent_output
from perseus_core.wire import keys
from perseus_core.wire.settings import Settings
from tests.agent.conftest import SpawnAgent, pid_alive, written_pid
from tests.agent.test_agent import FAST, errors, state_is, status
from tests.waiting import eventually

WRITER = r"""
import os, sys, time
go, done, pidfile, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
open(pidfile, "w").write(str(os.getpid()))
while go != "-" and not os.path.exists(go):
    time.sleep(0.01)
for n in range(count):
    print(f"out {n}", flush=n % 50 == 0)
sys.stdout.flush()
print("\x1b[31mred\x1b[0m [bold]not bold[/bold] tab\there", flush=True)
print("x" * 5000, file=sys.stderr, flush=True)
for n in range(4):
    print(f"err {n}", file=sys.stderr, flush=True)
open(done, "w").write("done")
while go != "-" and os.path.exists(go):
    time.sleep(0.01)
if go != "-":
    print("after the pause", flush=True)
if sys.argv[5] == "crash":
    sys.exit(3)
time.sleep(120)
"""


def writer(tmp_path: Path, count: int, then: str, *, wait_for_go: bool = False) -> list[str]:
    """A child that writes `count` stdout lines, one with escapes and markup,
    a long stderr line and four short ones, then crashes (`then="crash"`) or stays.
    With `wait_for_go` it starts writing once the file `go` exists, and writes
    one more line once it is gone again."""
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    go = str(tmp_path / "go") if wait_for_go else "-"
    done, pidfile = str(tmp_path / "done"), str(tmp_path / "child.pid")
    return [sys.executable, str(script), go, done, pidfile, str(count), then]


async def output(redis: Redis, exchange_id: int = 1) -> list[OutputLine]:
    return await recent_output(redis, exchange_id, 100_000)


async def test_lines_are_kept_marked_cleaned_and_bounded(
    spawn_agent: SpawnAgent, redis: Redis, tmp_path: Path
) -> None:
    spawn_agent(
        args=[*FAST, "--autostart"],
        command=writer(tmp_path, 700, "stay"),
        env={"PERSEUS_OUTPUT_LINES": "100"},
    )

    async def all_written() -> list[OutputLine] | None:
        lines = await output(redis)
        return lines if lines and lines[-1].line == "err 3" else None

    lines = await eventually(all_written, what="the child's last line in its output stream")
    # MAXLEN ~ 100 trims whole stream nodes: about 100 kept, never the 700 written.
    assert 100 <= len(lines) <= 300
    assert all(line.stream in ("stdout", "stderr") for line in lines)
    by_text = {line.line: line for line in lines}
    assert by_text["out 699"].stream == "stdout"
    assert by_text["err 3"].stream == "stderr"
    # Escapes removed, markup kept as literal text, tabs folded.
    assert by_text["red [bold]not bold[/bold] tab here"].stream == "stdout"
    [long] = [line for line in lines if line.line.startswith("xxx")]
    assert long.stream == "stderr" and len(long.line) == LINE_CHARS and long.line.endswith("…")
    assert all(line.at.endswith("Z") for line in lines)
    ttl = await redis.pttl(keys.output_key(1))
    assert 6 * 86_400_000 < ttl <= 7 * 86_400_000


async def test_a_crash_quotes_the_last_three_stderr_lines(
    spawn_agent: SpawnAgent, redis: Redis, settings: Settings, tmp_path: Path
) -> None:
    agent = spawn_agent(args=[*FAST, "--autostart"], command=writer(tmp_path, 10, "crash"))
    await agent.wait_log("released the slot")
    [error] = await errors(redis, settings)
    assert error.error.startswith("child command exited with code 3 while ")
    assert error.error.endswith("; last stderr: err 1 | err 2 | err 3")
    lines = await output(redis)
    assert lines[0].stream == "perseus" and lines[0].line.startswith("child starting")


async def test_no_output_writes_no_key(
    spawn_agent: SpawnAgent, redis: Redis, tmp_path: Path
) -> None:
    agent = spawn_agent(
        args=[*FAST, "--autostart", "--no-output"], command=writer(tmp_path, 10, "stay")
    )
    await eventually(lambda: (tmp_path / "done").exists(), what="the child to write")
    await agent.wait_log("child stderr: err 3")
    await eventually(lambda: state_is(redis, "active"), what="active")
    assert not await redis.exists(keys.output_key(1))


@pytest.fixture
def paused_server() -> Iterator[RedisServer]:
    """A server of its own: this test stops it."""
    with RedisServer() as server:
        yield server


async def test_a_slow_redis_drops_lines_counted_never_the_child_or_the_heartbeat(
    spawn_agent: SpawnAgent, paused_server: RedisServer, tmp_path: Path
) -> None:
    """Redis is frozen while the child writes 20,000 lines: the child finishes
    writing all the same, the lines that found no room are counted in one entry
    once Redis answers again, and the same run still holds the slot."""
    # The TTL leaves the watchdog ample time: only the output is under test here.
    # Nothing trimmed either: every line must be found in Redis or counted.
    env = {
        "PERSEUS_HEARTBEAT_INTERVAL_MS": "300",
        "PERSEUS_HEARTBEAT_TTL_MS": "60000",
        "PERSEUS_OUTPUT_LINES": "100000",
    }
    spawn_agent(
        args=[*FAST, "--autostart"],
        command=writer(tmp_path, 20_000, "stay", wait_for_go=True),
        url=paused_server.url,
        env=env,
    )
    settings = Settings(redis_url=paused_server.url)
    redis = connect(settings)
    try:
        before = await eventually(lambda: state_is(redis, "active"), what="active")
        child_pid = await written_pid(tmp_path / "child.pid")
        paused_server.pause()
        try:
            (tmp_path / "go").write_text("go")
            # The child writes everything while Redis answers nothing.
            await eventually(lambda: (tmp_path / "done").exists(), 60, "the child to finish")
        finally:
            paused_server.resume()

        async def caught_up() -> bool:
            """Everything the child wrote is in Redis or counted: its last line
            landed, or the count of the lines that found no room did."""
            lines = await output(redis)
            return bool(lines) and (lines[-1].line == "err 3" or lines[-1].dropped is not None)

        # The writer retries with backoff (5 s at most) after the failed writes.
        await eventually(caught_up, 30, "the output writer to catch up")

        async def heartbeat_moved_on() -> bool:
            now = await status(redis)
            return now is not None and now.last_heartbeat > before.last_heartbeat

        await eventually(heartbeat_moved_on, what="a heartbeat after the pause")
        after = await status(redis)
        assert after is not None and after.connection_state == "active"
        assert pid_alive(child_pid)

        # With room in the queue again, a new line goes through.
        (tmp_path / "go").unlink()

        async def written_after() -> list[OutputLine] | None:
            lines = await output(redis)
            return lines if lines[-1].line == "after the pause" else None

        lines = await eventually(written_after, what="a line written after the pause")
        markers = [line for line in lines if line.dropped is not None]
        kept = [line for line in lines[:-1] if line.stream in ("stdout", "stderr")]
        lost = sum(line.dropped or 0 for line in markers)
        # 1000 lines wait for Redis at most: most of the 20,006 were dropped,
        # and every one of them is either kept or counted. (A batch whose
        # write timed out is counted, and may have landed all the same.)
        assert lost > 0
        assert len(kept) + lost >= 20_006
        assert len({line.line for line in kept}) == len(kept)  # nothing written twice
        assert all(line.stream == "perseus" for line in markers)
        assert all(
            line.line == f"{line.dropped} lines of output dropped: Redis was slow or unreachable"
            for line in markers
        )
    finally:
        await redis.aclose()


FLOOD = r"""
import os, sys
pidfile, done, megabytes = sys.argv[1], sys.argv[2], int(sys.argv[3])
open(pidfile, "w").write(str(os.getpid()))
block = (b"y" * 1023 + b"\n") * 1024  # 1 MiB of 1 KiB lines
for _ in range(megabytes):
    view = memoryview(block)
    while view:
        view = view[os.write(1, view):]
open(done, "w").write("done")
os.close(1)
import time
time.sleep(120)
"""


def _rss_kib(pid: int, field: str) -> int:
    """`VmRSS` or `VmHWM` (the peak) of a process, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for pid {pid}")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
async def test_a_child_writing_100_mb_costs_the_agent_bounded_memory_and_no_late_heartbeat(
    spawn_agent: SpawnAgent, redis_url: str, tmp_path: Path
) -> None:
    """100 MiB on the child's stdout, as fast as the pipe takes it: the agent
    reads it all (the child is never blocked for good), its peak memory grows
    by a bounded amount (lines are dropped, not queued, when Redis cannot keep
    up), and no heartbeat is late by more than one interval meanwhile."""
    interval_ms = 1000
    script = tmp_path / "flood.py"
    script.write_text(FLOOD)
    done, pidfile = tmp_path / "done", tmp_path / "child.pid"
    agent = spawn_agent(
        args=[*FAST, "--autostart"],
        command=[sys.executable, str(script), str(pidfile), str(done), "100"],
        env={
            "PERSEUS_HEARTBEAT_INTERVAL_MS": str(interval_ms),
            "PERSEUS_HEARTBEAT_TTL_MS": str(interval_ms * 6),
        },
    )
    settings = Settings(redis_url=redis_url)
    redis = connect(settings)
    try:
        # Measured from the first heartbeat on: a start's own work is not the flood's.
        await eventually(lambda: state_is(redis, "active"), what="active")
        baseline_kib = _rss_kib(agent.pid, "VmRSS")
        worst_age_ms = 0.0
        while not done.exists():
            now = await status(redis)
            assert now is not None, "the status key vanished during the flood"
            age_ms = (datetime.now(UTC) - now.last_heartbeat).total_seconds() * 1000
            worst_age_ms = max(worst_age_ms, age_ms)
            await asyncio.sleep(0.02)
            assert agent.process.poll() is None, agent.log()[-2000:]
        growth_mib = (_rss_kib(agent.pid, "VmHWM") - baseline_kib) / 1024
        # Due every interval; late by more than one interval is an age over two.
        assert worst_age_ms < 2 * interval_ms, f"a heartbeat {worst_age_ms:.0f} ms old"
        assert growth_mib < 40, f"the agent grew by {growth_mib:.0f} MiB"
        final = await status(redis)
        assert final is not None and final.connection_state == "active"
    finally:
        await redis.aclose()
