"""The outcomes hash (`perseus:outcomes:{exchangeId}`): one record per claimed
command, so a command runs at most once however often it is read or written."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

from perseus_core.plumbing.errors import TRANSIENT_ERRORS
from perseus_core.plumbing.topology import RedisClient
from perseus_core.store.control.common import (
    OUTCOME_RETENTION_MS,
    IdentityProvider,
    now_ms,
)
from perseus_core.store.control.link import ServerLink
from perseus_core.store.control.scripts import ControlScripts
from perseus_core.wire.models import MAX_PAYLOAD_BYTES, Command, ReplyStatus
from perseus_core.wire.timeutil import Clock

log = logging.getLogger(__name__)

RUNNING = "running"
DONE = "done"
INTERRUPTED_MESSAGE = (
    "interrupted: the agent stopped while running this command (it may have partly run); "
    "not run again"
)


@dataclass(frozen=True, slots=True)
class CommandMeta:
    """What an audit entry and a reply need to know about a command, even a
    malformed one (whatever could be salvaged from it)."""

    correlation_id: str
    command: str
    operator: str

    @classmethod
    def of(cls, command: Command) -> CommandMeta:
        return cls(command.correlation_id, command.type, command.operator)

    @classmethod
    def salvage(cls, raw: str | None) -> CommandMeta:
        """Best-effort fields of an unparseable command, so that its sender
        still gets an error reply when its correlation id can be read."""
        data: Any = None
        if raw is not None and len(raw) <= MAX_PAYLOAD_BYTES:
            with contextlib.suppress(ValueError):
                data = json.loads(raw)
        if not isinstance(data, dict):
            return cls("", "", "")
        cid = data.get("correlationId")
        kind = data.get("type")
        payload = data.get("payload")
        operator = payload.get("operator") if isinstance(payload, dict) else None
        return cls(
            cid if isinstance(cid, str) and 0 < len(cid) <= 128 else "",
            kind[:64] if isinstance(kind, str) else "",
            operator[:256] if isinstance(operator, str) else "",
        )


@dataclass(frozen=True, slots=True)
class OutcomeRecord:
    """One field of the outcomes hash: a command that was claimed.

    `entry` is the stream ID it was read from: the same ID again means a re-read
    (after a reconnect or restart, or by a second server) and is skipped; a
    different ID means the command was written twice and the repeat is
    answered with the first outcome. `server`, `hostname` and `pid` say who
    claimed it, so that a server can recognise its own claim after a lost
    reply, and a command left `running` by a process that died on this host.
    """

    state: str
    entry: str
    server: str
    hostname: str
    pid: int
    at: int
    command: str = ""
    status: str = ""
    message: str = ""
    data: dict[str, Any] | None = None

    def to_json(self) -> str:
        body = {
            "state": self.state,
            "entry": self.entry,
            "server": self.server,
            "hostname": self.hostname,
            "pid": self.pid,
            "at": self.at,
            "command": self.command,
        }
        if self.state == DONE:
            body.update(status=self.status, message=self.message, data=self.data)
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | None) -> OutcomeRecord:
        """Parse a record; an unreadable one counts as handled (never re-run)."""
        data: Any = None
        if raw is not None and len(raw) <= 4 * MAX_PAYLOAD_BYTES:
            with contextlib.suppress(ValueError):
                data = json.loads(raw)
        if not isinstance(data, dict):
            return cls(
                DONE,
                "",
                "",
                "",
                0,
                0,
                status=ReplyStatus.ERROR.value,
                message="already handled (its recorded outcome is unreadable)",
            )

        def text(name: str) -> str:
            value = data.get(name)
            return value if isinstance(value, str) else ""

        def number(name: str) -> int:
            value = data.get(name)
            return value if isinstance(value, int) and not isinstance(value, bool) else 0

        status = text("status")
        if status not in (ReplyStatus.SUCCESS.value, ReplyStatus.ERROR.value):
            status = ReplyStatus.ERROR.value
        extra = data.get("data")
        return cls(
            RUNNING if text("state") == RUNNING else DONE,
            text("entry"),
            text("server"),
            text("hostname"),
            number("pid"),
            number("at"),
            text("command"),
            status,
            text("message"),
            extra if isinstance(extra, dict) else None,
        )


class OutcomeBook:
    """Claims commands, records their outcomes and prunes old records.

    Args:
        writer: the server's client for writes.
        link: retries writes until they succeed (or the server closes).
        outcomes_key: the exchange's outcomes hash.
        token: this server's identity in its records.
        identity: `(hostname, ip)` of this host.
        clock: stamps records (their age decides pruning).
    """

    def __init__(
        self,
        writer: RedisClient,
        link: ServerLink,
        outcomes_key: str,
        token: str,
        identity: IdentityProvider,
        clock: Clock,
    ) -> None:
        self._writer = writer
        self._scripts = ControlScripts.on(writer)
        self._link = link
        self._key = outcomes_key
        self._token = token
        self._identity = identity
        self._clock = clock

    @property
    def token(self) -> str:
        """This server's identity in its records."""
        return self._token

    def _record(self, state: str, entry_id: str, meta: CommandMeta) -> OutcomeRecord:
        hostname, _ = self._identity()
        return OutcomeRecord(
            state, entry_id, self._token, hostname, os.getpid(), now_ms(self._clock), meta.command
        )

    async def claim(self, field: str, entry_id: str, meta: CommandMeta) -> OutcomeRecord | None:
        """Record the command as running (one `HSETNX`), unless someone already did.

        Returns None when this server now owns it, else the existing record.
        """
        record = self._record(RUNNING, entry_id, meta)

        async def op() -> tuple[int, str | None]:
            created, current = await self._scripts.claim(
                keys=[self._key], args=[field, record.to_json(), OUTCOME_RETENTION_MS]
            )
            return int(created), current

        created, current = await self._link.retry(op)
        if created:
            return None
        existing = OutcomeRecord.from_json(current)
        if existing.server == self._token and existing.entry == entry_id:
            return None  # our own claim, whose reply was lost before a retry
        return existing

    async def conclude(
        self,
        field: str,
        entry_id: str,
        meta: CommandMeta,
        status: ReplyStatus,
        text: str,
        data: dict[str, Any] | None,
    ) -> None:
        """Record the command's outcome (replacing its `running` record)."""
        record = dataclasses.replace(
            self._record(DONE, entry_id, meta), status=status.value, message=text, data=data
        )

        async def op() -> None:
            await self._scripts.record(
                keys=[self._key], args=[field, record.to_json(), OUTCOME_RETENTION_MS]
            )

        await self._link.retry(op)

    async def prune(self) -> None:
        """Drop outcome records past their retention (the hash has no per-field TTL)."""
        cutoff = now_ms(self._clock) - OUTCOME_RETENTION_MS
        try:
            stale = [
                field
                async for field, raw in self._writer.hscan_iter(self._key, count=500)
                if OutcomeRecord.from_json(raw).at < cutoff
            ]
            for start in range(0, len(stale), 500):
                await self._writer.hdel(self._key, *stale[start : start + 500])
        except TRANSIENT_ERRORS as exc:
            log.warning("could not prune %s: %s", self._key, exc)
