"""Helpers several test modules share: the CLI as a process or in-process, a
clock that moves only when told, reads of the test exchange's status key, and
rounds of entries followed by a live tail (single server and cluster alike)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from click.testing import CliRunner
from redis.asyncio import Redis

from perseus_cli.main import cli
from perseus_core.plumbing.topology import RedisClient
from perseus_core.store.activity import ActivityLog, ActivityTail
from perseus_core.wire import keys
from perseus_core.wire.models import InstanceStatus, StateTransitionEntry
from perseus_core.wire.settings import Settings
from tests.waiting import eventually

PERSEUS_ARGV = [sys.executable, "-c", "from perseus_cli.main import main; main()"]
"""The `perseus` console script's entry point, run as a process of its own."""

AGENT_ARGV = [*PERSEUS_ARGV, "agent"]
"""`perseus agent` as a process of its own; its options follow."""


def start_agent(
    redis_url: str, args: list[str], log_path: Path, **env: str
) -> subprocess.Popen[bytes]:
    """`perseus agent ARGS` on `redis_url` as a process of its own, in its own
    session (so its child can be killed with it), its output in `log_path`.

    The environment is this one without any PERSEUS_ setting, then public-IP
    detection off, then `env` (PERSEUS_HEARTBEAT_INTERVAL_MS and the like).
    """
    environ = {k: v for k, v in os.environ.items() if not k.startswith("PERSEUS_")}
    environ.update(PERSEUS_REDIS_URL=redis_url, PERSEUS_PUBLIC_IP="off", PYTHONUNBUFFERED="1")
    environ.update(env)
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [*AGENT_ARGV, *args],
            env=environ,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def stop_agent(process: subprocess.Popen[bytes], grace_s: float = 5.0) -> None:
    """SIGTERM an agent started by `start_agent`, then, if it has not exited
    within `grace_s`, SIGKILL its whole session (its child included)."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait(5)


def invoke(settings: Settings, *args: str) -> tuple[int, str, str]:
    """Run `perseus ARGS --redis-url URL` in-process: exit code, stdout, stderr.

    An exception other than the CLI's own exit is raised, so a crash fails the
    test with its traceback instead of a bare exit code.
    """
    result = CliRunner().invoke(cli, [*args, "--redis-url", settings.redis_url])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


class StepClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


async def stored(redis: Redis, exchange_id: int = 1) -> InstanceStatus:
    """The exchange's status as stored; fails the test when the key does not exist."""
    key = keys.status_key(exchange_id)
    raw = await redis.get(key)
    assert raw is not None, f"{key} does not exist"
    return InstanceStatus.from_json(raw)


async def status_gone(redis: Redis, exchange_id: int = 1) -> bool:
    """Whether the exchange's status key is gone (released or expired)."""
    return not await redis.exists(keys.status_key(exchange_id))


def perseus_argv(*args: str) -> list[str]:
    """A real `perseus` process (the console script's entry point), showing
    any ResourceWarning (an unclosed connection) on its stderr."""
    code = "from perseus_cli.main import main; main()"
    return [sys.executable, "-W", "default::ResourceWarning", "-c", code, *args]


@contextlib.contextmanager
def following(*args: str) -> Iterator[subprocess.Popen[str]]:
    """`perseus ARGS` (a verb that follows, `--follow`) as a process of its
    own, unbuffered, its blocking reads 200 ms long; killed if it still runs
    when the block ends, and its pipes closed."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PERSEUS_BLOCK_MS": "200"}
    proc = subprocess.Popen(
        perseus_argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def interrupt_cleanly(proc: subprocess.Popen[str]) -> None:
    """Ctrl-C a following `perseus`: it must end with exit 0, no traceback and
    no unclosed connection on its stderr (Ctrl-C is how `--follow` ends)."""
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=15)
    assert proc.stderr is not None
    stderr = proc.stderr.read()
    assert proc.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "ResourceWarning" not in stderr


class LineReader:
    """Collects a subprocess's output lines on a thread, for reads with a deadline."""

    def __init__(self, stream: Any) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))

    def drain(self) -> list[str]:
        """Every line left, once the process has exited."""
        self._thread.join(timeout=10)
        lines = []
        while not self.lines.empty():
            lines.append(self.lines.get())
        return lines

    def wait_for(self, needle: str, timeout: float = 15.0) -> list[str]:
        """Lines read until one contains `needle`; fails after `timeout`."""
        got: list[str] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                continue
            got.append(line)
            if needle in line:
                return got
        raise AssertionError(f"{needle!r} not printed within {timeout} s; got {got}")


async def append_round(log: ActivityLog, fleet: Sequence[tuple[int, str]], round_no: int) -> None:
    """One transition entry on each exchange of `fleet`, its host naming the round."""
    for exchange_id, name in fleet:
        await log.append(
            name,
            StateTransitionEntry(
                from_state="idle",
                to_state="starting",
                exchange_id=str(exchange_id),
                exchange_name=name,
                hostname=f"round-{round_no}",
            ),
        )


async def tail_collects(
    settings: Settings,
    redis: RedisClient,
    fleet: Sequence[tuple[int, str]],
    rounds: int,
    after_first_round: Callable[[], Awaitable[object]] | None = None,
) -> list[tuple[str, str]]:
    """Follow `fleet`'s streams while `rounds` rounds of entries are written
    (`append_round`), and return what the tail delivered as (exchange, round);
    `after_first_round` runs once the tail has delivered the first round. A
    closing round (not returned) shows the tail has read every stream past
    the last of them."""
    names = [name for _, name in fleet]

    async def provider() -> list[str]:
        return names

    log = ActivityLog(redis, settings)
    seen: list[tuple[str, str]] = []
    closing = {(name, f"round-{rounds}") for name in names}
    async with ActivityTail(settings, provider) as tail:

        async def consume() -> None:
            async for entry in tail:
                seen.append((entry.exchange_name or "", entry.hostname or ""))

        task = asyncio.create_task(consume())
        try:
            for round_no in range(rounds):
                await append_round(log, fleet, round_no)
                if round_no == 0 and after_first_round is not None:
                    await eventually(lambda: len(seen) == len(fleet), what="the first round")
                    await after_first_round()
            await eventually(lambda: len(seen) >= rounds * len(fleet), what="the tail")
            # One more entry on every stream, read through: a duplicate (a stream
            # read again from an old position) would have arrived before it.
            await append_round(log, fleet, rounds)
            await eventually(lambda: closing <= set(seen), what="the closing round")
        finally:
            await tail.aclose()
            await task
    return [entry for entry in seen if entry not in closing]


def expected_rounds(fleet: Sequence[tuple[int, str]], rounds: int) -> list[tuple[str, str]]:
    """What `tail_collects` returns when every entry arrived once."""
    return [(name, f"round-{r}") for r in range(rounds) for _, name in fleet]
