"""A self-contained demo fleet: a throw-away Redis and real agents in every state.

`perseus demo` is what a newcomer runs first, so within a few seconds the
fleet shows everything the dashboard can show: instances that are active,
one that stays idle until started, one warming slowly, one whose child keeps
crashing (errors in the feed) and one that is killed with SIGKILL so its
card goes offline with the last-known information.

Everything here is real: a redis-server process (see `embedded`) and one
`perseus agent` subprocess per exchange. The only thing the demo does that
an operator would not is steer two of them: it kills one agent once it is
active, and sends `start` again to the crashing one after each crash (unless
someone stopped it on purpose).

Cleanup is the point of this module as much as the fleet: on every exit path
every process it started is gone and its directory is removed. Agents run in
sessions (process groups) of their own, so a Ctrl-C in the demo's terminal
reaches only the demo, which then stops them in order: SIGTERM (the agents
stop their children and release their slots), a bounded wait, then SIGKILL
for the agent's group and for any descendant that is still there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Any

from redis.asyncio import Redis

from perseus_cli.apps.redis_server import RedisServer
from perseus_core.plumbing.connection import connect
from perseus_core.plumbing.errors import TRANSIENT_ERRORS
from perseus_core.plumbing.processes import parent_death_hook, pid_is_running
from perseus_core.store.activity import ActivityLog
from perseus_core.store.control import ControlClient
from perseus_core.wire import keys
from perseus_core.wire.errors import PayloadError, PerseusError
from perseus_core.wire.models import (
    CommandEntry,
    CommandType,
    ConnectionState,
    ErrorEntry,
    InstanceStatus,
)
from perseus_core.wire.settings import Settings

log = logging.getLogger(__name__)

_SEND_ERRORS: tuple[type[BaseException], ...] = (PerseusError, *TRANSIENT_ERRORS)

DEMO_OPERATOR = "perseus-demo"
"""Operator name on the commands the demo itself sends (visible in the feed)."""

HEARTBEAT_INTERVAL_MS = 2_000
HEARTBEAT_TTL_MS = 6_000
"""Shorter than production (15 s / 45 s) so that a killed agent's card goes
offline a few seconds after the kill instead of most of a minute."""

STOP_GRACE_S = 2.0
"""How long an agent gives its child after SIGTERM; the demo's children stop at once."""

KILL_AFTER_ACTIVE_S = 2.0
"""How long the doomed agent is seen active before the demo kills it."""

_AGENT_EXIT_WAIT_S = STOP_GRACE_S + 4.0
"""How long the demo waits for its agents to stop gracefully before SIGKILL."""


class Role(StrEnum):
    """What a demo agent is there to show."""

    ACTIVE = "active"
    """Autostarted, runs a long-lived child: the normal, healthy case."""
    CRASHING = "crashing"
    """Its child exits non-zero after a few seconds; the demo starts it again."""
    KILLED = "killed"
    """SIGKILLed once active: its key expires and the card goes offline."""
    WARMING = "warming"
    """Autostarted with a long warm-up: stays in `warming` for minutes."""
    IDLE = "idle"
    """Not started: waits for an operator's `start`."""


_ROLE_ORDER = (Role.ACTIVE, Role.CRASHING, Role.KILLED, Role.WARMING, Role.IDLE)
"""Roles given to the first five agents (a smaller fleet takes a prefix); the
rest are active."""

_EXCHANGES = (
    ("coinbase", "Coinbase", 25),
    ("kraken", "Kraken", 40),
    ("binance", "Binance", 120),
    ("bitstamp", "Bitstamp", 18),
    ("gemini", "Gemini", 12),
    ("okx", "OKX", 95),
    ("bybit", "Bybit", 80),
    ("kucoin", "KuCoin", 150),
    ("bitfinex", "Bitfinex", 60),
    ("cryptocom", "Crypto.com", 70),
    ("gateio", "Gate.io", 200),
    ("htx", "HTX", 55),
)

_ADMINS = (
    ("ops@example.com", "Ops Team"),
    ("alice.martin@example.com", "Alice Martin"),
    ("kenji.sato@example.com", "Kenji Sato"),
)

WARMING_SLOW_S = 300.0
"""Warm-up of the slow one: long enough to be seen warming for the whole visit."""

# The children are tiny Python programs standing in for a market-data feed, so
# the demo needs nothing but the interpreter that runs it.
_FEED_CHILD = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
    "print('feed: connected, streaming quotes', flush=True)\n"
    "while True:\n"
    "    time.sleep(3600)\n"
)
_CRASHING_CHILD = (
    "import random, sys, time\n"
    "time.sleep(random.uniform(4.0, 12.0))\n"
    "reason = random.choice(['websocket closed (1006)', 'order book checksum mismatch',"
    " 'rate limited (429) on REST snapshot'])\n"
    "print(f'feed: {reason}', file=sys.stderr, flush=True)\n"
    "sys.exit(random.choice([1, 2, 75]))\n"
)


class EventKind(StrEnum):
    """What the demo's supervision reports."""

    KILLED = "killed"
    RESTART = "restart"
    RESTART_FAILED = "restart_failed"
    EXITED = "exited"


@dataclass(frozen=True, slots=True)
class DemoEvent:
    """One thing the demo did or saw, with a line for a person."""

    kind: EventKind
    exchange_name: str
    text: str


@dataclass(frozen=True, slots=True)
class DemoMember:
    """One agent of the demo fleet and what it is there to show."""

    exchange_id: int
    name: str
    display_name: str
    symbols: int
    role: Role
    admin_email: str
    admin_name: str
    ip: str

    @property
    def autostart(self) -> bool:
        """Every role but idle starts on its own."""
        return self.role is not Role.IDLE

    @property
    def warmup_s(self) -> float:
        """Long for the slow one, short for the rest so they are active quickly."""
        if self.role is Role.WARMING:
            return WARMING_SLOW_S
        if self.role is Role.CRASHING:
            return 1.5
        return 1.0

    def child_argv(self, python: str) -> list[str]:
        """The child command the agent supervises (none for the killed one, so that
        killing its agent leaves nothing behind to reap)."""
        if self.role is Role.CRASHING:
            return [python, "-c", _CRASHING_CHILD]
        if self.role is Role.KILLED:
            return []
        return [python, "-c", _FEED_CHILD]


def plan_fleet(instances: int) -> list[DemoMember]:
    """The members of a fleet of `instances` agents, ids from 1."""
    if instances < 1:
        raise ValueError("a demo fleet needs at least one instance")
    members = []
    for index in range(instances):
        base, label, symbols = _EXCHANGES[index % len(_EXCHANGES)]
        round_ = index // len(_EXCHANGES)
        name = base if round_ == 0 else f"{base}-{round_ + 1}"
        display = label if round_ == 0 else f"{label} {round_ + 1}"
        role = _ROLE_ORDER[index] if index < len(_ROLE_ORDER) else Role.ACTIVE
        email, admin = _ADMINS[index % len(_ADMINS)]
        members.append(
            DemoMember(
                exchange_id=index + 1,
                name=name,
                display_name=display,
                symbols=symbols,
                role=role,
                admin_email=email,
                admin_name=admin,
                ip=f"203.0.113.{10 + index % 240}",  # TEST-NET-3: never a real host
            )
        )
    return members


# --- processes ---------------------------------------------------------------


def _process_table() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) of every process, from /proc.

    Empty where there is no /proc: cleanup then relies on process groups alone.
    """
    table: dict[int, tuple[int, int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return table
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                raw = stat.read()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: split after the last ')'.
        fields = raw[raw.rfind(b")") + 2 :].split()
        with contextlib.suppress(IndexError, ValueError):
            table[int(name)] = (int(fields[1]), int(fields[2]))
    return table


def descendants(pid: int) -> dict[int, int]:
    """Every live descendant of `pid` (children, grandchildren...) -> its process group."""
    table = _process_table()
    children: dict[int, list[int]] = {}
    for child, (parent, _group) in table.items():
        children.setdefault(parent, []).append(child)
    found: dict[int, int] = {}
    pending = list(children.get(pid, ()))
    while pending:
        child = pending.pop()
        if child in found:
            continue
        found[child] = table[child][1]
        pending.extend(children.get(child, ()))
    return found


@dataclass
class _Agent:
    member: DemoMember
    process: subprocess.Popen[bytes]
    log_path: Path
    killed_on_purpose: bool = False
    reported_exit: bool = False
    active_since: float | None = None


@dataclass
class DemoFleet:
    """A throw-away Redis and a fleet of real agents; `close()` removes all of it.

    Use `start()` (blocking, a second or two), then `await supervise()` in an
    event loop for the scripted behaviour (the kill, the restarts), and
    `close()` from a `finally`. `close()` is idempotent and safe to call
    after a partial start.

    Args:
        agent_argv: how to run `perseus` (e.g. `[sys.executable, "-m", ...]`):
            the agents are started as `agent_argv + ["agent", ...]`.
        instances: fleet size (default 5: one of each role).
        port: Redis port on 127.0.0.1 (default: a free one).
        on_event: called whenever the demo kills or restarts an agent, or an
            agent dies on its own.
    """

    agent_argv: Sequence[str]
    instances: int = 5
    port: int | None = None
    on_event: Callable[[DemoEvent], None] = field(default=lambda event: None)
    members: list[DemoMember] = field(init=False)
    directory: Path | None = field(init=False, default=None)
    server: RedisServer | None = field(init=False, default=None)
    _agents: list[_Agent] = field(init=False, default_factory=list)
    _closed: bool = field(init=False, default=False)
    _force: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.members = plan_fleet(self.instances)

    # --- start ----------------------------------------------------------------

    @property
    def url(self) -> str:
        """The Redis URL the fleet uses."""
        if self.server is None:
            raise PerseusError("the demo fleet is not started")
        return self.server.url

    def settings(self, **overrides: Any) -> Settings:
        """Settings for a client of the demo Redis (the dashboard, the supervisor)."""
        values: dict[str, Any] = {
            "redis_url": self.url,
            "heartbeat_interval_ms": HEARTBEAT_INTERVAL_MS,
            "heartbeat_ttl_ms": HEARTBEAT_TTL_MS,
            "public_ip": "off",
            "refresh_ms": 1_000,
        }
        values.update(overrides)
        return Settings(**values)

    @property
    def pids(self) -> list[int]:
        """Process ids of the agents that are still running."""
        return [a.process.pid for a in self._agents if a.process.poll() is None]

    def start(self) -> None:
        """Start Redis, then every agent. Raises PerseusError if Redis cannot start
        (for example the requested port is taken); cleans up after itself then."""
        try:
            self.directory = Path(tempfile.mkdtemp(prefix="perseus-demo-"))
            self.server = RedisServer(self.port)
            self.server.start()
            for member in self.members:
                self._spawn(member)
        except BaseException:
            self.close()
            raise

    def _agent_env(self, member: DemoMember) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PERSEUS_")}
        env.update(
            {
                "PERSEUS_REDIS_URL": self.url,
                "PERSEUS_HEARTBEAT_INTERVAL_MS": str(HEARTBEAT_INTERVAL_MS),
                "PERSEUS_HEARTBEAT_TTL_MS": str(HEARTBEAT_TTL_MS),
                "PERSEUS_PUBLIC_IP": member.ip,
                "PERSEUS_STOP_GRACE_MS": str(int(STOP_GRACE_S * 1000)),
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def _spawn(self, member: DemoMember) -> None:
        assert self.directory is not None
        argv = [
            *self.agent_argv,
            "agent",
            "--exchange-id",
            str(member.exchange_id),
            "--exchange-name",
            member.name,
            "--display-name",
            member.display_name,
            "--symbols",
            str(member.symbols),
            "--warmup",
            f"{member.warmup_s:g}",
            "--admin-email",
            member.admin_email,
            "--admin-name",
            member.admin_name,
        ]
        if member.autostart:
            argv.append("--autostart")
        child = member.child_argv(sys.executable)
        if child:
            argv += ["--", *child]
        log_path = self.directory / f"agent-{member.exchange_id}-{member.name}.log"
        with open(log_path, "ab") as output:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=self._agent_env(member),
                start_new_session=True,  # a Ctrl-C in the terminal reaches the demo only
                preexec_fn=parent_death_hook(signal.SIGTERM),  # noqa: PLW1509 - only syscalls in the hook
            )
        self._agents.append(_Agent(member, process, log_path))

    # --- the scripted part ----------------------------------------------------

    async def supervise(self, *, poll_s: float = 1.0) -> None:
        """Kill the `killed` agent once it is active; restart the crashing one after
        each crash; report agents that die on their own. Runs until cancelled."""
        settings = self.settings()
        redis = connect(settings)
        try:
            control = ControlClient(redis, settings)
            activity = ActivityLog(redis, settings)
            restart_due: dict[int, float] = {}
            while True:
                for agent in self._agents:
                    try:
                        await self._supervise_one(agent, redis, control, activity, restart_due)
                    except TRANSIENT_ERRORS as exc:
                        log.debug("demo supervision: %s", exc)
                await asyncio.sleep(poll_s)
        finally:
            await redis.aclose()

    async def _supervise_one(
        self,
        agent: _Agent,
        redis: Redis,
        control: ControlClient,
        activity: ActivityLog,
        restart_due: dict[int, float],
    ) -> None:
        member = agent.member
        code = agent.process.poll()
        if code is not None:
            if not agent.reported_exit:
                agent.reported_exit = True
                if not agent.killed_on_purpose:
                    self.on_event(
                        DemoEvent(
                            EventKind.EXITED,
                            member.name,
                            f"agent {member.name} exited with code {code} (log: {agent.log_path})",
                        )
                    )
            return
        if member.role is Role.KILLED:
            if agent.active_since is None:
                if await self._state(redis, member) is ConnectionState.ACTIVE:
                    agent.active_since = time.monotonic()
            elif time.monotonic() - agent.active_since >= KILL_AFTER_ACTIVE_S:
                self._kill(agent)
            return
        if member.role is Role.CRASHING:
            state = await self._state(redis, member)
            now = time.monotonic()
            if state not in (None, ConnectionState.IDLE):
                restart_due.pop(member.exchange_id, None)
                return
            if not await self._crashed_last(activity, member):
                return  # idle because someone stopped it: leave it so
            due = restart_due.setdefault(member.exchange_id, now + random.uniform(2.0, 5.0))
            if now >= due:
                restart_due.pop(member.exchange_id, None)
                self.on_event(
                    DemoEvent(
                        EventKind.RESTART,
                        member.name,
                        f"sending start to {member.name} again after its child crashed",
                    )
                )
                asyncio.get_running_loop().create_task(self._send_start(control, member))

    @staticmethod
    async def _state(redis: Redis, member: DemoMember) -> ConnectionState | None:
        raw = await redis.get(keys.status_key(member.exchange_id))
        if raw is None:
            return None
        try:
            return InstanceStatus.from_json(raw).connection_state
        except PayloadError:
            return None

    @staticmethod
    async def _crashed_last(activity: ActivityLog, member: DemoMember) -> bool:
        """True if the newest error is newer than the newest `stop` command: the
        agent is idle because its child crashed, not because an operator stopped it."""
        page = await activity.page(member.name, count=30)
        for entry in page.entries:
            if isinstance(entry, ErrorEntry):
                return True
            if isinstance(entry, CommandEntry) and entry.command == "stop":
                return False
        return False

    async def _send_start(self, control: ControlClient, member: DemoMember) -> None:
        try:
            await control.send(member.exchange_id, CommandType.START, operator=DEMO_OPERATOR)
        except _SEND_ERRORS as exc:
            self.on_event(
                DemoEvent(
                    EventKind.RESTART_FAILED, member.name, f"restart of {member.name} failed: {exc}"
                )
            )

    def _kill(self, agent: _Agent) -> None:
        agent.killed_on_purpose = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(agent.process.pid, signal.SIGKILL)
        agent.process.wait()
        self.on_event(
            DemoEvent(
                EventKind.KILLED,
                agent.member.name,
                f"killed agent {agent.member.name} (pid {agent.process.pid}) with SIGKILL: "
                f"its card goes offline within {HEARTBEAT_TTL_MS // 1000} s",
            )
        )

    # --- cleanup --------------------------------------------------------------

    def close(self) -> None:
        """Stop every agent (gracefully, then by force), stop Redis, remove the
        directory. A SIGINT/SIGTERM arriving meanwhile skips straight to SIGKILL
        instead of interrupting the cleanup half-way."""
        if self._closed:
            return
        self._closed = True
        previous = self._catch_signals()
        try:
            self._stop_agents()
            if self.server is not None:
                self.server.close()
            if self.directory is not None:
                shutil.rmtree(self.directory, ignore_errors=True)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)

    def _catch_signals(self) -> dict[int, Any]:
        previous: dict[int, Any] = {}

        def force(_signum: int, _frame: FrameType | None) -> None:
            self._force = True

        with contextlib.suppress(ValueError):  # not the main thread: leave handlers alone
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                previous[signum] = signal.signal(signum, force)
        return previous

    def _stop_agents(self) -> None:
        running = [a for a in self._agents if a.process.poll() is None]
        family: dict[int, int] = {}
        own_group = os.getpgrp()
        for agent in running:
            family.update(descendants(agent.process.pid))
            with contextlib.suppress(ProcessLookupError):
                agent.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _AGENT_EXIT_WAIT_S
        while (
            not self._force
            and time.monotonic() < deadline
            and any(a.process.poll() is None for a in running)
        ):
            time.sleep(0.05)
        for agent in running:
            if agent.process.poll() is None:
                log.warning("agent %s did not stop in time: SIGKILL", agent.member.name)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(agent.process.pid, signal.SIGKILL)
            agent.process.wait()
        # Anything an agent left behind (a child that ignored SIGTERM while its
        # agent was killed): its whole group goes, never the demo's own group.
        for pid, group in family.items():
            if not pid_is_running(pid):
                continue
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if group not in (own_group, 0):
                    os.killpg(group, signal.SIGKILL)
                else:
                    os.kill(pid, signal.SIGKILL)
