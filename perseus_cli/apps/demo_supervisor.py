"""The scripted part of the demo: the agent killed once it is active, the
crashing one started again after each crash, the lagging one frozen now and
then, and a word whenever an agent dies on its own.

Everything else in the fleet runs as it would in production; this is the
only place where the demo does what an operator would not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from perseus_cli.apps.demo import (
    DEMO_OPERATOR,
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
from perseus_core.plumbing.topology import RedisClient
from perseus_core.store.activity import ActivityLog
from perseus_core.store.control.sender import ControlClient
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


@dataclass
class DemoAgent:
    """One running `perseus agent` process of the fleet, and what the
    supervision has seen of it."""

    member: DemoMember
    process: subprocess.Popen[bytes]
    log_path: Path
    killed_on_purpose: bool = False
    reported_exit: bool = False
    active_since: float | None = None
    frozen_since: float | None = None
    """When the supervision froze it (SIGSTOP); None while it runs."""


@dataclass
class FleetSupervisor:
    """Watches the fleet's agents through Redis and steers two of them.

    Args:
        agents: the fleet's agents (the list the fleet appends to).
        settings: settings for a client of the demo Redis.
        on_event: called whenever it kills or restarts an agent, or an agent
            dies on its own.
        freeze_s: how long the lagging agent is frozen each time.
        thaw_s: how long it then runs before the next freeze.
    """

    agents: Sequence[DemoAgent]
    settings: Settings
    on_event: Callable[[DemoEvent], None]
    freeze_s: float = FREEZE_S
    thaw_s: float = THAW_S

    async def run(self, *, poll_s: float = 1.0) -> None:
        """Kill the `killed` agent once it is active; restart the crashing one after
        each crash; freeze the lagging one now and then; report agents that die on
        their own. Runs until cancelled, and leaves no agent frozen."""
        settings = self.settings
        redis = connect(settings)
        try:
            control = ControlClient(redis, settings)
            activity = ActivityLog(redis, settings)
            restart_due: dict[int, float] = {}
            while True:
                for agent in self.agents:
                    try:
                        await self._supervise_one(agent, redis, control, activity, restart_due)
                    except TRANSIENT_ERRORS as exc:
                        log.debug("demo supervision: %s", exc)
                await asyncio.sleep(poll_s)
        finally:
            for agent in self.agents:
                self._thaw(agent)
            await redis.aclose()

    async def _supervise_one(
        self,
        agent: DemoAgent,
        redis: RedisClient,
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
            await self._kill_once_active(agent, redis)
        elif member.role is Role.LAGGING:
            await self._lag(agent, redis)
        elif member.role is Role.CRASHING:
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

    async def _kill_once_active(self, agent: DemoAgent, redis: RedisClient) -> None:
        """SIGKILL the doomed agent once it has been seen active for a while."""
        if agent.active_since is None:
            if await self._state(redis, agent.member) is ConnectionState.ACTIVE:
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
        if await self._state(redis, agent.member) is not ConnectionState.ACTIVE:
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

    def _kill(self, agent: DemoAgent) -> None:
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
