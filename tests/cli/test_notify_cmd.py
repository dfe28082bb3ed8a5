"""`perseus notify` as a user runs it: usage errors, --dry-run, posting, Ctrl-C.

The long-running cases start the real console entry point in a subprocess
against the test Redis, write wire-format entries and status keys, and read
what it prints or posts.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner
from redis.asyncio import Redis

from perseus_cli.apps.redis_server import free_port
from perseus_cli.main import cli
from perseus_core.store.activity import ActivityLog
from perseus_core.wire import keys
from perseus_core.wire.models import ErrorEntry, StateTransitionEntry
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import format_ts
from tests.core.test_notify import TOKEN, WebhookServer, status_json
from tests.helpers import PERSEUS_ARGV
from tests.waiting import commands_naming, eventually


def _entry(name: str, src: str, dst: str, hostname: str = "host-a") -> StateTransitionEntry:
    return StateTransitionEntry(
        timestamp=format_ts(datetime.now(UTC)),
        from_state=src,
        to_state=dst,
        exchange_id="1",
        exchange_name=name,
        hostname=hostname,
    )


# --- usage -------------------------------------------------------------------------


def test_webhook_is_required_without_dry_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PERSEUS_NOTIFY_WEBHOOK", raising=False)
    result = CliRunner().invoke(cli, ["notify"])
    assert result.exit_code == 2
    assert "--webhook" in result.output


def test_a_bad_webhook_url_is_refused_without_echoing_it() -> None:
    result = CliRunner().invoke(cli, ["notify", "--webhook", f"ftp://example.com/{TOKEN}"])
    assert result.exit_code == 2
    assert "http" in result.output
    assert TOKEN not in result.output


def test_unreachable_redis_exits_3_and_keeps_the_token_secret() -> None:
    url = f"https://discord.com/api/webhooks/123/{TOKEN}"
    result = CliRunner().invoke(
        cli, ["notify", "--webhook", url, "--redis-url", f"redis://127.0.0.1:{free_port()}/0"]
    )
    assert result.exit_code == 3
    assert "https://discord.com/..." in result.output
    assert "cannot reach Redis" in result.output
    assert TOKEN not in result.output


# --- running it ----------------------------------------------------------------------


class Process:
    """A `perseus notify` subprocess whose stdout and stderr are read as lines."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        assert proc.stdout is not None and proc.stderr is not None
        self._readers = [
            asyncio.create_task(self._collect(proc.stdout, self.stdout)),
            asyncio.create_task(self._collect(proc.stderr, self.stderr)),
        ]

    @staticmethod
    async def _collect(stream: asyncio.StreamReader, lines: list[str]) -> None:
        async for raw in stream:
            lines.append(raw.decode(errors="replace").rstrip("\n"))

    async def ready(self) -> None:
        await eventually(
            lambda: any("ready" in line for line in self.stderr) or self.exited,
            within=15,
            what="the notifier to say it is ready",
        )
        assert not self.exited, "\n".join(self.stderr)

    @property
    def exited(self) -> bool:
        return self.proc.returncode is not None

    async def interrupt(self, sig: int = signal.SIGINT) -> int:
        self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), 15)
        await asyncio.gather(*self._readers)
        return code

    async def kill(self) -> None:
        if not self.exited:
            self.proc.kill()
            await self.proc.wait()
        await asyncio.gather(*self._readers, return_exceptions=True)


Spawn = Callable[..., Awaitable[Process]]


@pytest.fixture
async def spawn(settings: Settings) -> AsyncIterator[Spawn]:
    started: list[Process] = []

    async def start(*args: str, env: dict[str, str] | None = None) -> Process:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("PERSEUS_")}
        full_env.update(
            {"PERSEUS_REDIS_URL": settings.redis_url, "PERSEUS_BLOCK_MS": "200", "NO_PROXY": "*"}
        )
        full_env.update(env or {})
        proc = await asyncio.create_subprocess_exec(
            *PERSEUS_ARGV,
            "notify",
            "--interval",
            "0.1",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=full_env,
        )
        process = Process(proc)
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            await process.kill()


async def test_dry_run_prints_payloads_and_exits_0_on_ctrl_c(
    spawn: Spawn, redis: Redis, settings: Settings
) -> None:
    process = await spawn("--dry-run", "--exchange", "COINBASE", "--settle", "0")
    await process.ready()
    activity = ActivityLog(redis, settings)
    await activity.append("kraken", _entry("kraken", "idle", "starting"))
    await activity.append("coinbase", _entry("coinbase", "idle", "starting", "\x1b[31m@everyone"))
    await activity.append("coinbase", ErrorEntry(error="boom", state="starting"))
    await eventually(lambda: len(process.stdout) == 2, what="two payloads")

    code = await process.interrupt()
    assert code == 0
    first, second = (json.loads(line) for line in process.stdout)
    assert first["embeds"][0]["fields"][1]["value"] == "idle → starting"
    assert "\x1b" not in json.dumps(first, ensure_ascii=False)
    assert "@\u200beveryone" in first["embeds"][0]["fields"][2]["value"]
    assert second["embeds"][0]["description"] == "boom"
    assert any("stopped" in line for line in process.stderr)


async def test_posts_to_the_webhook_and_reports_an_expired_key(
    spawn: Spawn, redis: Redis, settings: Settings
) -> None:
    server = await WebhookServer().start()
    try:
        key = keys.status_key(1)
        await redis.set(key, status_json(1, "coinbase", "active"), px=60_000)
        # The URL comes from the environment: never on the command line, never printed.
        process = await spawn(env={"PERSEUS_NOTIFY_WEBHOOK": server.url})
        await process.ready()
        await ActivityLog(redis, settings).append(
            "coinbase", _entry("coinbase", "warming", "active")
        )
        await eventually(lambda: len(server.requests) == 1, what="the first post")
        await redis.pexpire(key, 200)
        await eventually(lambda: len(server.requests) == 2, what="the second post")

        code = await process.interrupt(signal.SIGTERM)
    finally:
        await server.close()
    assert code == 0
    transition, offline = server.bodies()
    assert transition["embeds"][0]["fields"][1]["value"] == "warming → active"
    assert offline["embeds"][0]["fields"][1]["value"] == "active → offline"
    output = "\n".join(process.stdout + process.stderr)
    assert f"http://127.0.0.1:{server.port}/..." in output
    assert TOKEN not in output


async def test_real_agents_a_kill_is_offline_a_graceful_stop_is_not(
    spawn: Spawn, settings: Settings
) -> None:
    """Two `perseus agent` processes: SIGTERM one (graceful stop, key released),
    kill -9 the other (key left to expire). Only the second is offline. Each
    start, and the stop, is one message (the agents' entries told together)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSEUS_")}
    env.update(
        {
            "PERSEUS_REDIS_URL": settings.redis_url,
            "PERSEUS_HEARTBEAT_INTERVAL_MS": "100",
            "PERSEUS_HEARTBEAT_TTL_MS": "400",
            "PERSEUS_PUBLIC_IP": "off",
            "PERSEUS_BLOCK_MS": "200",
        }
    )
    notifier = await spawn("--dry-run", "--exchange", "gdax", "--exchange", "ftx")
    await notifier.ready()

    agents = {}
    for exchange_id, name in ((11, "gdax"), (12, "ftx")):
        agents[name] = await asyncio.create_subprocess_exec(
            *PERSEUS_ARGV,
            "agent",
            "--exchange-id",
            str(exchange_id),
            "--exchange-name",
            name,
            "--autostart",
            "--warmup",
            "0.1",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            env=env,
        )
    try:

        def transitions(name: str) -> list[str]:
            out = []
            for line in notifier.stdout:
                payload = json.loads(line)
                fields = {f["name"]: f["value"] for f in payload["embeds"][0]["fields"]}
                if fields["exchange"].startswith(name):
                    out.append(fields["transition"])
            return out

        started = "idle → starting → warming → active"
        await eventually(
            lambda: all(started in transitions(n) for n in agents),
            within=20,
            what="every agent active",
        )

        agents["gdax"].send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(agents["gdax"].wait(), 20) == 0
        agents["ftx"].kill()
        await agents["ftx"].wait()

        await eventually(
            lambda: "active → offline" in transitions("ftx"), within=20, what="ftx offline"
        )
        # More snapshots, each reading gdax's released key (its value, and its
        # TTL to date it: at most two reads each): gdax must stay quiet.
        async with commands_naming(settings.redis_url, keys.status_key(11)) as reads:
            await eventually(lambda: len(reads) >= 20, what="ten more status snapshots")
    finally:
        for proc in agents.values():
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
    assert await notifier.interrupt() == 0
    # One message for each thing that happened, not one per entry.
    assert transitions("gdax") == [started, "active → stopping → stopped → idle"]
    assert transitions("ftx") == [started, "active → offline"]


async def test_only_the_kinds_asked_for_are_posted(
    spawn: Spawn, redis: Redis, settings: Settings
) -> None:
    """`--only error,offline`: a clean stop is left out, a crash is posted,
    as one message with the states walked around it."""
    process = await spawn(
        "--dry-run", "--only", "error,OFFLINE", "--exchange", "coinbase", "--exchange", "kraken"
    )
    await process.ready()
    activity = ActivityLog(redis, settings)
    for src, dst in (("active", "stopping"), ("stopping", "stopped"), ("stopped", "idle")):
        await activity.append("kraken", _entry("kraken", src, dst))
    crash = ErrorEntry(error="child command exited with code 75 while active", state="active")
    await activity.append("coinbase", crash)
    for src, dst in (("active", "stopping"), ("stopping", "stopped"), ("stopped", "idle")):
        await activity.append("coinbase", _entry("coinbase", src, dst))
    for src, dst in (("idle", "starting"), ("starting", "active")):
        await activity.append("coinbase", _entry("coinbase", src, dst))
    await eventually(lambda: len(process.stdout) == 1, what="the crash's message")
    assert await process.interrupt() == 0
    (told,) = (json.loads(line) for line in process.stdout)
    assert told["embeds"][0]["title"] == "Error: coinbase"
    assert told["content"].endswith("active → stopping → stopped → idle → starting → active")
    assert any("1 left out by --only" in line for line in process.stderr)


def test_only_names_known_kinds() -> None:
    result = CliRunner().invoke(cli, ["notify", "--dry-run", "--only", "error,crash"])
    assert result.exit_code == 2
    assert "'crash' is not a kind: use transition, error, offline, online" in result.stderr
