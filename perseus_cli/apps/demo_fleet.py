"""A self-contained demo fleet: a throw-away Redis and real agents in every state.

Everything here is real: a redis-server process (see `redis_server`), one
`perseus agent --config host.toml` process for most of the fleet (the host
file written into the demo's directory, where a newcomer can read it), and
a `perseus agent` process of its own for each member the demo kills or
freezes (`DemoMember.separate`); planned by `demo`, steered by `demo_supervisor`.

Cleanup is the point of this module as much as the fleet: on every exit path
every process it started is gone and its directory is removed. Agents run in
sessions (process groups) of their own, so a Ctrl-C in the demo's terminal
reaches only the demo, which then stops them in order: SIGTERM (the agents
stop their children and release their slots), a bounded wait, then SIGKILL
for the agent's group and for any descendant that is still there.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from perseus_cli.apps.demo import (
    AGENT_EXIT_WAIT_S,
    HEARTBEAT_INTERVAL_MS,
    HEARTBEAT_TTL_MS,
    HOST_IP,
    STOP_GRACE_S,
    DemoEvent,
    DemoMember,
    DemoTimings,
    Role,
    plan_fleet,
)
from perseus_cli.apps.demo_supervisor import DemoAgent, FleetSupervisor
from perseus_cli.apps.host_file import host_file_text
from perseus_cli.apps.redis_cluster import RedisClusterNodes
from perseus_cli.apps.redis_server import RedisServer, free_port
from perseus_core.plumbing.processes import descendants, parent_death_hook, pid_is_running
from perseus_core.wire.errors import PerseusError
from perseus_core.wire.settings import Settings

log = logging.getLogger(__name__)

HOST_FILE = "host.toml"
"""The host file's name in the demo's directory."""

_HOST_FILE_HEADER = """\
Written by `perseus demo`: the demo's host process runs every slot below as
`perseus agent --config host.toml` (docs/host.example.toml has every key).
Its Redis URL and heartbeat timing come from the environment, never from here."""

_SLOT_NOTES = {
    Role.ACTIVE: "active, its feed writes a line every few seconds",
    Role.IDLE: "no autostart: READY until an operator's start",
    Role.CRASHING: "its feed crashes after a few seconds; quick failures back off, then FATAL",
    Role.WARMING: "warming until its feed opens its port (ready_tcp), then checked (health_tcp)",
}
"""The comment above each slot of the host file."""


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
        instances: fleet size (default 6: one of each role).
        port: Redis port on 127.0.0.1 (default: a free one).
        cluster: run the fleet on a local Redis Cluster (3 masters, 3
            replicas) instead of one server; `url` is then one of its nodes.
        on_event: called whenever the demo kills an agent, one of its exchanges
            goes FATAL, or an agent dies on its own.
        timings: how fast the scripted behaviours play out.
    """

    agent_argv: Sequence[str]
    instances: int = 6
    port: int | None = None
    cluster: bool = False
    on_event: Callable[[DemoEvent], None] = field(default=lambda event: None)
    timings: DemoTimings = field(default_factory=DemoTimings)
    members: list[DemoMember] = field(init=False)
    directory: Path | None = field(init=False, default=None)
    ready_port: int | None = field(init=False, default=None)
    """The port the warming member's feed opens once ready (its `ready_tcp`)."""
    server: RedisServer | RedisClusterNodes | None = field(init=False, default=None)
    _agents: list[DemoAgent] = field(init=False, default_factory=list)
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

    @property
    def host_file(self) -> Path:
        """The host file the host process runs (in the demo's directory)."""
        if self.directory is None:
            raise PerseusError("the demo fleet is not started")
        return self.directory / HOST_FILE

    def start(self) -> None:
        """Start Redis, then every agent. Raises PerseusError if Redis cannot start
        (for example the requested port is taken); cleans up after itself then."""
        try:
            self.directory = Path(tempfile.mkdtemp(prefix="perseus-demo-"))
            self.server = RedisClusterNodes() if self.cluster else RedisServer(self.port)
            self.server.start()
            if any(m.role is Role.WARMING for m in self.members):
                self.ready_port = free_port()
            in_host = [m for m in self.members if not m.separate]
            if in_host:
                self._spawn_host(in_host)
            for member in self.members:
                if member.separate:
                    self._spawn_separate(member)
        except BaseException:
            self.close()
            raise

    def _agent_env(self, ttl_ms: int, ip: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PERSEUS_")}
        env.update(
            {
                "PERSEUS_REDIS_URL": self.url,
                "PERSEUS_HEARTBEAT_INTERVAL_MS": str(HEARTBEAT_INTERVAL_MS),
                "PERSEUS_HEARTBEAT_TTL_MS": str(ttl_ms),
                "PERSEUS_PUBLIC_IP": ip,
                "PERSEUS_STOP_GRACE_MS": str(int(STOP_GRACE_S * 1000)),
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def _spawn_host(self, members: list[DemoMember]) -> None:
        """One `perseus agent --config` process for every member that need not
        run alone, from a host file written for them."""
        slots = [m.slot_options(sys.executable, self.timings, self.ready_port) for m in members]
        notes = {m.exchange_id: f"{m.display_name}: {_SLOT_NOTES[m.role]}" for m in members}
        self.host_file.write_text(host_file_text(slots, _HOST_FILE_HEADER, notes))
        argv = [*self.agent_argv, "agent", "--config", str(self.host_file)]
        env = self._agent_env(HEARTBEAT_TTL_MS, HOST_IP)
        self._spawn(argv, env, members, HOST_FILE, "host.log")

    def _spawn_separate(self, member: DemoMember) -> None:
        """A `perseus agent` process of its own, for a member the demo kills or freezes."""
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
        child = member.feed_argv(sys.executable, self.timings)
        if child:
            argv += ["--", *child]
        env = self._agent_env(member.heartbeat_ttl_ms, member.ip)
        log_name = f"agent-{member.exchange_id}-{member.name}.log"
        self._spawn(argv, env, [member], member.name, log_name)

    def _spawn(
        self,
        argv: list[str],
        env: dict[str, str],
        members: list[DemoMember],
        name: str,
        log_name: str,
    ) -> None:
        assert self.directory is not None
        log_path = self.directory / log_name
        with open(log_path, "ab") as output:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # a Ctrl-C in the terminal reaches the demo only
                preexec_fn=parent_death_hook(signal.SIGTERM),  # only syscalls in the hook
            )
        self._agents.append(DemoAgent(name, tuple(members), process, log_path))

    # --- the scripted part ----------------------------------------------------

    async def supervise(self, *, poll_s: float = 1.0) -> None:
        """The scripted part (see `FleetSupervisor.run`); runs until cancelled."""
        await FleetSupervisor(self._agents, self.settings(), self.on_event).run(poll_s=poll_s)

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
            family.update((pid, info.pgid) for pid, info in descendants(agent.process.pid).items())
            with contextlib.suppress(ProcessLookupError):
                agent.process.send_signal(signal.SIGTERM)
                agent.process.send_signal(signal.SIGCONT)  # a frozen agent must hear it
        deadline = time.monotonic() + AGENT_EXIT_WAIT_S
        while (
            not self._force
            and time.monotonic() < deadline
            and any(a.process.poll() is None for a in running)
        ):
            time.sleep(0.05)
        for agent in running:
            if agent.process.poll() is None:
                log.warning("agent %s did not stop in time: SIGKILL", agent.name)
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
