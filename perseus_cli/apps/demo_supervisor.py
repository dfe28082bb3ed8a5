"""The scripted part of the demo: the agent killed once it is active, the
lagging one frozen now and then, and a word whenever an exchange goes FATAL
or an agent dies on its own.

Everything else in the fleet runs as it would in production (the crashing
exchange is restarted, backed off and given up on by its agent's own restart
policy); this is the only place where the demo does what an operator would not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from perseus_cli.apps.demo import (
    FREEZE_S,
    HEARTBEAT_TTL_MS,
    KILL_AFTER_ACTIVE_S,
    THAW_S,
    DemoEvent,
    DemoMember,
    EventKind,
    Role,
)
from perseus_core.plumbing.connection import connect
from perseus_core.plumbing.errors import TRANSIENT_ERRORS
from perseus_core.plumbing.tasks import raise_if_cancelling
from perseus_core.plumbing.topology import RedisClient
from perseus_core.wire import keys
from perseus_core.wire.errors import PayloadError
from perseus_core.wire.models import AgentPresence, ConnectionState, InstanceStatus
from perseus_core.wire.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class DemoAgent:
    """One running `perseus agent` process of the fleet (the host process, or a
    member's own), and what the supervision has seen of it.

    Attributes:
        name: how the demo's messages name it (the host file, or the exchange).
        members: the exchanges it runs.
        process: the agent process.
        log_path: where its output goes.
    """

    name: str
    members: tuple[DemoMember, ...]
    process: subprocess.Popen[bytes]
    log_path: Path
    killed_on_purpose: bool = False
    reported_exit: bool = False
    active_since: float | None = None
    frozen_since: float | None = None
    """When the supervision froze it (SIGSTOP); None while it runs."""
    fatal: set[int] = field(default_factory=set)
    """Exchanges of it the supervision has said are FATAL, until seen running again."""

    @property
    def role(self) -> Role | None:
        """What the demo does to this process: its member's role when it runs
        one exchange alone, None for the host process."""
        return self.members[0].role if len(self.members) == 1 else None


@dataclass
class FleetSupervisor:
    """Watches the fleet's agents through Redis and steers two of them.

    Args:
        agents: the fleet's agents (the list the fleet appends to).
        settings: settings for a client of the demo Redis.
        on_event: called whenever it kills an agent, an exchange goes FATAL,
            or an agent dies on its own.
        freeze_s: how long the lagging agent is frozen each time.
        thaw_s: how long it then runs before the next freeze.
    """

    agents: Sequence[DemoAgent]
    settings: Settings
    on_event: Callable[[DemoEvent], None]
    freeze_s: float = FREEZE_S
    thaw_s: float = THAW_S

    async def run(self, *, poll_s: float = 1.0) -> None:
        """Kill the `killed` agent once it is active; freeze the lagging one now
        and then; say when an exchange goes FATAL; report agents that die on
        their own. Runs until cancelled, and leaves no agent frozen."""
        redis = connect(self.settings)
        try:
            while True:
                for agent in self.agents:
                    try:
                        await self._supervise_one(agent, redis)
                    except TRANSIENT_ERRORS as exc:
                        # A cancellation can come out of redis-py as a Redis
                        # error (Python 3.11): then end, never retry (the demo
                        # waits for this task before it stops its agents).
                        raise_if_cancelling()
                        log.debug("demo supervision: %s", exc)
                raise_if_cancelling()  # or one redis-py swallowed whole
                await asyncio.sleep(poll_s)
        finally:
            for agent in self.agents:
                self._thaw(agent)
            await redis.aclose()

    async def _supervise_one(self, agent: DemoAgent, redis: RedisClient) -> None:
        code = agent.process.poll()
        if code is not None:
            if not agent.reported_exit:
                agent.reported_exit = True
                if not agent.killed_on_purpose:
                    self.on_event(
                        DemoEvent(
                            EventKind.EXITED,
                            agent.name,
                            f"agent {agent.name} exited with code {code} (log: {agent.log_path})",
                        )
                    )
            return
        if agent.role is Role.KILLED:
            await self._kill_once_active(agent, redis)
        elif agent.role is Role.LAGGING:
            await self._lag(agent, redis)
        for member in agent.members:
            if member.role is Role.CRASHING:
                await self._watch_fatal(agent, member, redis)

    async def _watch_fatal(self, agent: DemoAgent, member: DemoMember, redis: RedisClient) -> None:
        """Say once when the crashing exchange's agent gives up (FATAL), and what
        clears it; again only after it ran since (an operator's start): a note
        read in between (a presence being rewritten) is not a new episode."""
        if await self._state(redis, member) is not None:
            agent.fatal.discard(member.exchange_id)
            return
        if member.exchange_id in agent.fatal or not await self._fatal(redis, member):
            return
        agent.fatal.add(member.exchange_id)
        self.on_event(
            DemoEvent(
                EventKind.FATAL,
                member.name,
                f"{member.display_name} is FATAL: its agent gave up after quick failures in a"
                " row and restarts it no more. Select it and press s to start it again.",
            )
        )

    async def _kill_once_active(self, agent: DemoAgent, redis: RedisClient) -> None:
        """SIGKILL the doomed agent once it has been seen active for a while."""
        if agent.active_since is None:
            if await self._state(redis, agent.members[0]) is ConnectionState.ACTIVE:
                agent.active_since = time.monotonic()
        elif time.monotonic() - agent.active_since >= KILL_AFTER_ACTIVE_S:
            self._kill(agent)

    async def _lag(self, agent: DemoAgent, redis: RedisClient) -> None:
        """Freeze the lagging agent for `freeze_s` (SIGSTOP: its heartbeats stop,
        as on a stalled host), then let it run for `thaw_s`, while it is active."""
        now = time.monotonic()
        if agent.frozen_since is not None:
            if now - agent.frozen_since >= self.freeze_s:
                self._thaw(agent)
                agent.active_since = now  # runs on from here
            return
        if await self._state(redis, agent.members[0]) is not ConnectionState.ACTIVE:
            agent.active_since = None
            return
        if agent.active_since is None:
            agent.active_since = now
        elif now - agent.active_since >= self.thaw_s:
            with contextlib.suppress(ProcessLookupError):
                os.kill(agent.process.pid, signal.SIGSTOP)
                agent.frozen_since = now

    @staticmethod
    def _thaw(agent: DemoAgent) -> None:
        """Let a frozen agent run on (SIGCONT)."""
        if agent.frozen_since is None:
            return
        agent.frozen_since = None
        with contextlib.suppress(ProcessLookupError):
            os.kill(agent.process.pid, signal.SIGCONT)

    @staticmethod
    async def _state(redis: RedisClient, member: DemoMember) -> ConnectionState | None:
        raw = await redis.get(keys.status_key(member.exchange_id))
        if raw is None:
            return None
        try:
            return InstanceStatus.from_json(raw).connection_state
        except PayloadError:
            return None

    @staticmethod
    async def _fatal(redis: RedisClient, member: DemoMember) -> bool:
        """Whether the member's agent says its restart policy has given up."""
        for raw in await redis.zrange(keys.agents_key(member.exchange_id), 0, -1):
            if not isinstance(raw, str | bytes):
                continue
            try:
                if AgentPresence.from_json(raw).fatal:
                    return True
            except PayloadError:
                continue
        return False

    def _kill(self, agent: DemoAgent) -> None:
        agent.killed_on_purpose = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(agent.process.pid, signal.SIGKILL)
        agent.process.wait()
        self.on_event(
            DemoEvent(
                EventKind.KILLED,
                agent.name,
                f"killed agent {agent.name} (pid {agent.process.pid}) with SIGKILL: "
                f"its card goes offline within {HEARTBEAT_TTL_MS // 1000} s",
            )
        )
