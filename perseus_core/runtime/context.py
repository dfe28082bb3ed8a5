"""What every part of one agent shares: who it is, its Redis client, its background tasks."""

from __future__ import annotations

import logging

from perseus_core.plumbing.connection import describe_redis_error
from perseus_core.plumbing.errors import TRANSIENT_ERRORS
from perseus_core.plumbing.tasks import TaskGroup
from perseus_core.plumbing.topology import RedisClient
from perseus_core.runtime.options import AgentOptions
from perseus_core.store.activity import ActivityLog
from perseus_core.wire.models import ActivityEntry, ConnectionState, ErrorEntry, RestartEntry
from perseus_core.wire.settings import Settings
from perseus_core.wire.text import clean
from perseus_core.wire.timeutil import Clock, format_ts

log = logging.getLogger(__name__)

MAX_REASON_CHARS = 300
"""Longest `reason` a restart entry carries (how the run ended, one line)."""


class AgentContext:
    """One agent's identity and shared resources, handed to each of its parts.

    Attributes:
        settings: Redis target and timings.
        options: what the agent was asked to run.
        name: the exchange name, prefixed to every log line.
        hostname: the hostname reported in statuses, entries and replies.
        clock: source of every timestamp written.
        redis: the client for short commands (the agent closes it).
        activity: the exchange's activity log.
        tasks: the agent's background tasks, cancelled when it closes.
        ip: the public IP once detected; None until then (or for good).
    """

    def __init__(
        self,
        settings: Settings,
        options: AgentOptions,
        *,
        hostname: str,
        clock: Clock,
        redis: RedisClient,
        tasks: TaskGroup,
    ) -> None:
        self.settings = settings
        self.options = options
        self.name = options.exchange_name
        self.hostname = hostname
        self.clock = clock
        self.redis = redis
        self.activity = ActivityLog(redis, settings)
        self.tasks = tasks
        self.ip: str | None = None

    async def append_error(self, message: str, state: ConnectionState) -> None:
        """An error entry for a run that does not (or no longer) hold the slot,
        and so must not write its status key: it goes to the Perseus-only
        stream, so the holder's shared stream (and its last-known holder)
        never shows this agent's host."""
        entry = ErrorEntry(
            timestamp=format_ts(self.clock()),
            error=message,
            exchange_id=str(self.options.exchange_id),
            exchange_name=self.name,
            hostname=self.hostname,
            ip=self.ip or "",
            state=state.value,
        )
        await self._append(entry, "error")

    async def append_restart(
        self, *, attempt: int, start_retries: int, delay_s: float, reason: str
    ) -> None:
        """A `restart` entry: the restart policy scheduled an automatic
        restart after a run ended on its own (docs/wire-format.md 2.8). It is
        Perseus's alone, so it goes to the Perseus-only stream.

        Args:
            attempt: quick failures in a row so far (0 after a run that lasted).
            start_retries: quick failures in a row that make the policy give up.
            delay_s: the wait before the restart.
            reason: how the run ended; cleaned to one bounded line here.
        """
        entry = RestartEntry(
            timestamp=format_ts(self.clock()),
            exchange_id=str(self.options.exchange_id),
            exchange_name=self.name,
            hostname=self.hostname,
            ip=self.ip or "",
            attempt=str(attempt),
            start_retries=str(start_retries),
            delay_ms=str(max(0, round(delay_s * 1000))),
            reason=clean(reason, MAX_REASON_CHARS),
        )
        await self._append(entry, "restart")

    async def _append(self, entry: ActivityEntry, what: str) -> None:
        """Append to the Perseus-only stream (`holder=False`); a Redis failure
        is logged, never raised: the agent acts on what it decided either way."""
        try:
            await self.activity.append(self.name, entry, holder=False)
        except TRANSIENT_ERRORS as exc:
            log.error(
                "%s: %s not recorded in the activity stream: %s",
                self.name,
                what,
                describe_redis_error(self.settings, exc),
            )
