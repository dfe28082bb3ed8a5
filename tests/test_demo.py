"""`perseus demo` runs a real fleet and leaves nothing behind, however it is stopped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis as sync_redis

from perseus_cli.apps.demo import (
    FEED_MODULE,
    FREEZE_S,
    HEARTBEAT_INTERVAL_MS,
    HEARTBEAT_TTL_MS,
    TRY_FIRST,
    DemoEvent,
    DemoTimings,
    EventKind,
    Role,
    plan_fleet,
)
from perseus_cli.apps.demo_fleet import DemoFleet
from perseus_cli.apps.demo_intro import intro_text
from perseus_cli.apps.demo_supervisor import DemoAgent, FleetSupervisor
from perseus_cli.apps.host_file import host_file_text
from perseus_cli.apps.screenshot_demo import HOST_FILE
from perseus_cli.demo_cmd import perseus_argv
from perseus_core.plumbing.connection import connect
from perseus_core.present.exchange import Timing, card
from perseus_core.runtime.host_config import load_host_config, parse_host_config
from perseus_core.runtime.options import AgentOptions
from perseus_core.runtime.restarts import RestartMode
from perseus_core.runtime.supervisor import margin_ms
from perseus_core.store.activity import ActivityLog
from perseus_core.store.network import FleetReader
from perseus_core.store.output import recent_output
from perseus_core.wire import keys
from perseus_core.wire.models import (
    AgentPresence,
    ConnectionState,
    ErrorEntry,
    InstanceStatus,
    StateTransitionEntry,
)
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import parse_ts
from tests.cli.test_read_cmds import status_payload
from tests.waiting import eventually

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="collects the process tree from /proc"
)

_URL_RE = re.compile(r"perseus --redis-url (redis://\S+)$")
_DIR_RE = re.compile(r"Temporary directory \(agent logs\): (\S+)$")


def test_fleet_plan_shows_every_role_then_adds_active_ones() -> None:
    roles = [m.role for m in plan_fleet(8)]
    assert set(roles[:6]) == set(Role)
    assert roles[6:] == [Role.ACTIVE, Role.ACTIVE]
    fleet = plan_fleet(30)
    assert len({m.name for m in fleet}) == len({m.exchange_id for m in fleet}) == 30
    # Livermore's seeded ids for the exchanges it knows; the one to try is READY.
    ids = {m.name: m.exchange_id for m in fleet}
    assert [ids[n] for n in ("coinbase", "binance", "binance_us", "kraken", "kucoin", "mexc")] == [
        1,
        2,
        3,
        4,
        5,
        6,
    ]
    gemini = next(m for m in plan_fleet(2) if m.name == TRY_FIRST)
    assert (gemini.role, gemini.exchange_id > 6) == (Role.IDLE, True)


def test_a_freeze_turns_the_lagging_agent_red_and_never_expires_it() -> None:
    """Readers judge each agent by its own interval, so the lagging agent keeps
    the demo's and is frozen instead: a freeze outlasts two intervals (red),
    and with an interval and the supervision's 1 s poll on top it ends before
    its TTL and its child's watchdog deadline."""
    lagging = next(m for m in plan_fleet(6) if m.role is Role.LAGGING)
    assert 2 * HEARTBEAT_INTERVAL_MS < FREEZE_S * 1000
    worst_ms = HEARTBEAT_INTERVAL_MS + (FREEZE_S + 1.0) * 1000
    assert worst_ms < lagging.heartbeat_ttl_ms - margin_ms(lagging.heartbeat_ttl_ms)
    others = [m for m in plan_fleet(6) if m.role is not Role.LAGGING]
    assert {m.heartbeat_ttl_ms for m in others} == {HEARTBEAT_TTL_MS}


def _process_state(pid: int) -> str:
    """The kernel's one-letter state of `pid` (`T`: stopped)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.fixture
def stand_in() -> Iterator[subprocess.Popen[bytes]]:
    """A process standing in for an agent: it only sleeps."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield process
    finally:
        process.kill()
        process.wait()


async def test_the_supervisor_freezes_the_lagging_agent_and_never_leaves_it_frozen(
    r: sync_redis.Redis, settings: Settings, stand_in: subprocess.Popen[bytes]
) -> None:
    lagging = next(m for m in plan_fleet(6) if m.role is Role.LAGGING)
    r.set(
        f"exchange:{lagging.exchange_id}:status",
        status_payload(lagging.exchange_id, lagging.name, connectionState="active"),
        ex=60,
    )
    agent = DemoAgent(lagging.name, (lagging,), stand_in, Path("agent.log"))
    events: list[DemoEvent] = []
    supervisor = FleetSupervisor([agent], settings, events.append, freeze_s=0.3, thaw_s=0.3)
    task = asyncio.create_task(supervisor.run(poll_s=0.05))

    def frozen() -> bool:
        return _process_state(stand_in.pid) == "T"

    await eventually(frozen, what="frozen")
    await eventually(lambda: not frozen(), what="running on")
    await eventually(frozen, what="frozen again")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert not frozen()  # cancelled while frozen: it runs on
    assert events == []


async def test_the_supervisor_says_once_when_the_crashing_exchange_goes_fatal(
    r: sync_redis.Redis, settings: Settings, stand_in: subprocess.Popen[bytes]
) -> None:
    members = plan_fleet(6)
    binance = next(m for m in members if m.role is Role.CRASHING)
    host = DemoAgent("host.toml", tuple(m for m in members if not m.separate), stand_in, Path("x"))
    events: list[DemoEvent] = []
    task = asyncio.create_task(FleetSupervisor([host], settings, events.append).run(poll_s=0.05))

    def presence(note: str | None) -> None:
        member = AgentPresence(agent_id="vm:1:1", exchange_id=binance.exchange_id, note=note)
        r.delete(keys.agents_key(binance.exchange_id))
        r.zadd(keys.agents_key(binance.exchange_id), {member.to_json(): 2**40})

    try:
        presence("restarting in 0.7s (quick failure 1 of 4): exited with code 1")
        presence("FATAL: gave up after 4 quick failures: exited with code 1")
        await eventually(lambda: events, what="the FATAL event")
        presence(None)  # a presence read between two writes: the same episode
        presence("FATAL: gave up after 4 quick failures: exited with code 1")
        status_key = keys.status_key(binance.exchange_id)
        r.set(status_key, status_payload(binance.exchange_id, binance.name), ex=60)
        await eventually(lambda: not host.fatal, what="running again after an operator's start")
        r.delete(status_key)
        presence("FATAL: gave up after 4 quick failures: exited with code 2")
        await eventually(lambda: len(events) == 2, what="the second FATAL event")
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert [(e.kind, e.exchange_name) for e in events] == [(EventKind.FATAL, "binance")] * 2
    assert "press s" in events[0].text


def test_the_intro_says_what_to_try_within_80_columns() -> None:
    """The panel is 70 characters wide inside at 80 columns: a longer line wraps
    and breaks its table."""
    for instances in (1, 6, 30):
        text = intro_text(plan_fleet(instances), host_file=HOST_FILE)
        assert max(len(line) for line in text.splitlines()) <= 70, text
    text = intro_text(plan_fleet(6), DemoTimings(start_retries=7, ready_after_s=12))
    for words in ("s starts it", "o on a card", "FATAL after 7 tries; s clears it", "(~12 s)"):
        assert words in text, words


def test_a_written_host_file_reads_back_as_its_slots() -> None:
    tricky = AgentOptions(
        exchange_id=9,
        exchange_name="bybit",
        display_name='By"bit\\ \n\x7f\x01 é 😀',
        command=(sys.executable, "-c", "print('a b')"),
        autostart=True,
        warmup_s=0.25,
        restart=RestartMode.ALWAYS,
        ready_tcp="127.0.0.1:9000",
    )
    plain = AgentOptions(exchange_id=10, exchange_name="bitstamp")
    text = host_file_text([tricky, plain], "two slots\nof a test", {9: "the tricky one"})
    assert parse_host_config(text) == (tricky, plain)
    assert text.startswith("# two slots\n# of a test\n\n# the tricky one\n[[slot]]\n")
    assert "warmup_s" not in text.split("bitstamp")[1]  # defaults are left out


def test_every_member_but_the_killed_and_the_lagging_runs_in_the_host_file() -> None:
    """SIGKILL and SIGSTOP act on a whole process: the two members the demo
    kills or freezes run alone, every other is a slot of the host process."""
    members = plan_fleet(8)
    assert {m.role for m in members if m.separate} == {Role.KILLED, Role.LAGGING}
    assert {m.ip for m in members if not m.separate} == {"203.0.113.10"}  # one host, one IP


_FAST = DemoTimings(
    output_every_s=0.2,
    crash_after_s=0.3,
    start_secs=10.0,
    backoff_max_s=0.2,
    start_retries=2,
    ready_after_s=3.0,
)
"""The demo's behaviours in a few seconds: FATAL after two quick crashes, the
port open 3 s after the warming feed starts (its warm-up alone is 1 s)."""


def _state(raw: str | None) -> ConnectionState | None:
    return None if raw is None else InstanceStatus.from_json(raw).connection_state


def _port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


async def test_the_host_process_backs_off_to_fatal_waits_for_its_port_and_keeps_output() -> None:
    fleet = DemoFleet(agent_argv=perseus_argv(), instances=5, timings=_FAST)
    try:
        fleet.start()
        slots = {o.exchange_name: o for o in load_host_config(fleet.host_file)}
        assert list(slots) == ["coinbase", "gemini", "binance", "kraken"]
        assert len(fleet.pids) == 2  # the host process, and the killed member's own agent
        assert fleet.ready_port is not None
        kraken = slots["kraken"]
        assert kraken.ready_tcp == kraken.health_tcp == f"127.0.0.1:{fleet.ready_port}"
        assert kraken.warmup_s < _FAST.ready_after_s - 1  # only the port can keep it warming
        redis = connect(fleet.settings())
        try:
            # Kraken: warming while its port is closed, active only once it is open.
            seen: list[tuple[ConnectionState | None, bool]] = []

            async def kraken_active() -> bool:
                state = _state(await redis.get(keys.status_key(kraken.exchange_id)))
                seen.append((state, _port_open(fleet.ready_port or 0)))
                return state is ConnectionState.ACTIVE

            await eventually(kraken_active, within=30, what="kraken active")
            assert (ConnectionState.WARMING, False) in seen, seen
            assert seen[-1] == (ConnectionState.ACTIVE, True)
            page = await ActivityLog(redis, fleet.settings()).page("kraken", count=20)
            moments = {
                e.to_state: parse_ts(e.timestamp)
                for e in page.entries
                if isinstance(e, StateTransitionEntry)
            }
            warmed_s = (moments["active"] - moments["warming"]).total_seconds()
            assert warmed_s > kraken.warmup_s + 1, moments

            # Binance: quick failures, a backoff each, then FATAL on its card.
            binance = slots["binance"]

            async def fatal() -> bool:
                members = await redis.zrange(keys.agents_key(binance.exchange_id), 0, -1)
                return any(AgentPresence.from_json(m).fatal for m in members)

            await eventually(fatal, within=30, what="binance FATAL")
            view = await FleetReader(redis).exchange(binance.exchange_id)
            look = card(view, datetime.now(UTC), Timing())
            shown = ["".join(part.text for part in line) for line in look.lines]
            assert shown[:2] == ["FATAL: gave up", "after 2 quick failures"], shown
            page = await ActivityLog(redis, fleet.settings()).page("binance", count=50)
            errors = [e.error for e in page.entries if isinstance(e, ErrorEntry)]
            assert errors[0].startswith("gave up after 2 quick failures: ")
            assert "exited with code" in errors[0]

            # Coinbase: its feed's lines, kept for `o` and `perseus output`.
            lines = await recent_output(redis, slots["coinbase"].exchange_id, 50)
            assert any("quotes/s" in line.line for line in lines), lines
        finally:
            await redis.aclose()
    finally:
        fleet.close()
    assert fleet.directory is not None and not fleet.directory.exists()


def test_demo_refuses_a_port_in_use_and_leaves_that_redis_alone(redis_url: str) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    with sync_redis.Redis.from_url(redis_url) as client:
        client.set("mine", "1")
        proc = subprocess.run(
            [*perseus_argv(), "demo", "--no-tui", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 2
        assert proc.stderr == (
            f"perseus: cannot start the demo: port {port} is already in use on 127.0.0.1;"
            " choose another --port\n"
        )
        assert "stopped" not in proc.stdout.lower()
        assert client.keys("*") == [b"mine"]


def _table() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, pgid, state) for every process."""
    out: dict[int, tuple[int, int, str]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            raw = Path(f"/proc/{name}/stat").read_bytes()
        except OSError:
            continue
        fields = raw[raw.rfind(b")") + 2 :].split()
        out[int(name)] = (int(fields[1]), int(fields[2]), fields[0].decode())
    return out


def _family(root: int) -> set[int]:
    """Every descendant of `root`, plus every member of their process groups."""
    table = _table()
    found: set[int] = set()
    pending = [root]
    while pending:
        parent = pending.pop()
        for pid, (ppid, _group, _state) in table.items():
            if ppid == parent and pid not in found:
                found.add(pid)
                pending.append(pid)
    groups = {table[pid][1] for pid in found if pid in table} - {os.getpgrp()}
    found |= {pid for pid, (_p, group, _s) in table.items() if group in groups}
    found.discard(root)
    return found


def _running(pids: set[int]) -> set[int]:
    table = _table()
    return {pid for pid in pids if pid in table and table[pid][2] != "Z"}


def _strays(url: str) -> dict[int, str]:
    """Processes still tied to the demo's Redis: the server itself (by its port) or
    anything started with the demo's environment (agents, and children they
    may have spawned after we looked at the tree)."""
    port = url.rsplit(":", 1)[1].split("/")[0]
    marker = f"PERSEUS_REDIS_URL={url}".encode()
    found: dict[int, str] = {}
    for pid in _running(set(_table())):
        cmd = _cmdline(pid)
        # redis-server rewrites its title to `redis-server 127.0.0.1:PORT`.
        if "redis-server" in cmd and (f":{port} " in f"{cmd} " or f"--port {port} " in f"{cmd} "):
            found[pid] = cmd
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if marker in environ:
            found[pid] = cmd
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@contextlib.contextmanager
def _demo(instances: int, *options: str) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    """Start `perseus demo --no-tui` and yield it once it printed its URL."""
    proc = subprocess.Popen(
        [*perseus_argv(), "demo", "--no-tui", "--instances", str(instances), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,  # our signals go to the demo alone, as a kill would
    )
    seen: list[str] = []
    leftovers: set[int] = set()
    url: str | None = None
    directory: Path | None = None
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 15
        while url is None and time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if match := _DIR_RE.search(line.strip()):
                directory = Path(match.group(1))
            if match := _URL_RE.search(line.strip()):
                url = match.group(1)
        assert url is not None and directory is not None, "".join(seen)
        leftovers = _family(proc.pid)
        yield proc, url, directory
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
        for pid in _running(leftovers | _family(proc.pid)):  # never leak, even on failure
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if directory is not None:  # what a demo killed by the failure could not remove
            shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_demo_stops_every_process_and_removes_its_directory(
    signum: signal.Signals,
) -> None:
    with _demo(instances=3) as (proc, url, directory):
        assert directory.is_dir()
        with sync_redis.Redis.from_url(url, decode_responses=True) as client:
            # The agents register their exchanges and the autostarted ones claim slots.
            asyncio.run(
                eventually(
                    lambda: client.hlen("perseus:exchanges") == 3,
                    within=10,
                    what="3 catalog entries",
                )
            )
            asyncio.run(
                eventually(
                    lambda: client.exists("exchange:1:status") == 1,
                    within=10,
                    what="coinbase online",
                )
            )

        def with_a_feed() -> dict[int, str]:  # coinbase's child, started after its claim
            commands = {pid: _cmdline(pid) for pid in _family(proc.pid)}
            return commands if any(FEED_MODULE in cmd for cmd in commands.values()) else {}

        commands = asyncio.run(eventually(with_a_feed, within=10, what="a feed process"))
        family = set(commands)
        servers = [pid for pid, cmd in commands.items() if "redis-server" in cmd]
        table = _table()
        agents = [  # the demo's own children: an agent forking its child has a copy a moment
            pid
            for pid, cmd in commands.items()
            if " agent --config " in cmd and table.get(pid, (0,))[0] == proc.pid
        ]
        assert len(servers) == 1, commands
        assert len(agents) == 1, commands  # one host process runs all three
        redis_dir = Path(os.readlink(f"/proc/{servers[0]}/cwd"))

        os.kill(proc.pid, signum)
        assert proc.wait(timeout=15) == 0

        assert _running(family) == set(), {pid: commands[pid] for pid in _running(family)}
        assert _strays(url) == {}
        assert not directory.exists()
        assert not redis_dir.exists()


def test_the_demo_serves_its_fleets_metrics_with_exporter() -> None:
    with _demo(1, "--exporter") as (proc, _url, _directory):
        assert proc.stdout is not None
        line = proc.stdout.readline()
        while line and "Prometheus metrics:" not in line:  # after the banner
            line = proc.stdout.readline()
        metrics_url = line.rsplit(" ", 1)[-1].strip()

        def coinbase_up() -> bool:
            with urllib.request.urlopen(metrics_url, timeout=5) as response:
                text = response.read().decode()
            return 'perseus_exchange_up{exchange_id="1",exchange_name="coinbase"} 1.0' in text

        asyncio.run(eventually(coinbase_up, within=15, what="coinbase up in the metrics"))
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
