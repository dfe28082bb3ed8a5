"""Answering a command's sender and writing its audit entry."""

from __future__ import annotations

from typing import Any, cast

from perseus_core.plumbing.topology import RedisClient
from perseus_core.store.activity import ActivityLog, StreamRows
from perseus_core.store.control.common import (
    MAX_MESSAGE_CHARS,
    REPLY_TTL_S,
    IdentityProvider,
    now_ms,
)
from perseus_core.store.control.link import ServerLink
from perseus_core.store.control.outcomes import CommandMeta
from perseus_core.store.control.scripts import ControlScripts
from perseus_core.wire import keys
from perseus_core.wire.models import CommandEntry, CommandReply, CommandType, ReplyStatus
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import Clock, format_ts


class Responder:
    """Pushes replies to `perseus:replies:{correlationId}` and appends
    `event=command` entries to the exchange's Perseus-only activity stream
    (`perseus:activity:{name}`), retrying each
    write (see `ServerLink.retry`) in a way that is harmless to repeat.

    Args:
        writer: the server's client for writes.
        link: retries writes until they succeed (or the server closes).
        settings: the activity stream's retention.
        exchange_id: written into audit entries.
        exchange_name: whose activity stream the audit goes to.
        identity: `(hostname, ip)` for audit entries.
        clock: stamps replies and audit entries.
    """

    def __init__(
        self,
        writer: RedisClient,
        link: ServerLink,
        settings: Settings,
        *,
        exchange_id: int,
        exchange_name: str,
        identity: IdentityProvider,
        clock: Clock,
    ) -> None:
        self._writer = writer
        self._scripts = ControlScripts.on(writer)
        self._link = link
        self._activity = ActivityLog(writer, settings)
        self._exchange_id = exchange_id
        self._exchange_name = exchange_name
        self._identity = identity
        self._clock = clock

    async def reply(
        self,
        meta: CommandMeta,
        status: ReplyStatus,
        message: str | None,
        data: dict[str, Any] | None,
    ) -> None:
        """Push one reply. A retry may push it twice; senders ignore the extra."""
        if not meta.correlation_id:
            return
        key = keys.replies_key(meta.correlation_id)
        reply = CommandReply(
            correlation_id=meta.correlation_id,
            status=status,
            message=message,
            data=data,
            timestamp=now_ms(self._clock),
        )

        async def op() -> None:
            await self._scripts.reply(keys=[key], args=[reply.to_json(), REPLY_TTL_S])

        await self._link.retry(op)

    async def audit(self, meta: CommandMeta, status: str, message: str) -> None:
        """Append an `event=command` entry to the Perseus-only stream, at most
        once even across retries. A ping changes nothing, so it is not audited."""
        if meta.command == CommandType.PING:
            return
        hostname, ip = self._identity()
        entry = CommandEntry(
            command=meta.command,
            correlation_id=meta.correlation_id,
            operator=meta.operator,
            status=status,
            message=message[:MAX_MESSAGE_CHARS],
            timestamp=format_ts(self._clock()),
            exchange_id=str(self._exchange_id),
            exchange_name=self._exchange_name,
            hostname=hostname,
            ip=ip or "",
        )
        wanted = entry.to_fields()
        stream = ActivityLog.stream_key(self._exchange_name, entry)
        attempted = False

        async def op() -> None:
            nonlocal attempted
            if attempted:
                # The previous XADD may have landed before its reply was lost.
                rows = cast(StreamRows, await self._writer.xrevrange(stream, count=50))
                if any(fields == wanted for _id, fields in rows):
                    return
            attempted = True
            await self._activity.append(self._exchange_name, entry)

        await self._link.retry(op)
