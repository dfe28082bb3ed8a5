"""Handling one command-stream entry: parse, claim, reject or run, answer, audit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from perseus_core.plumbing.processes import pid_is_running
from perseus_core.store.control.common import (
    COMMAND_FIELD,
    KNOWN_TYPES,
    MAX_MESSAGE_CHARS,
    PRUNE_EVERY,
    CommandHandler,
    HandlerResult,
    IdentityProvider,
    now_ms,
)
from perseus_core.store.control.outcomes import (
    INTERRUPTED_MESSAGE,
    RUNNING,
    CommandMeta,
    OutcomeBook,
    OutcomeRecord,
)
from perseus_core.store.control.replies import Responder
from perseus_core.wire.errors import PayloadError, PerseusError
from perseus_core.wire.models import Command, ReplyStatus
from perseus_core.wire.settings import Settings
from perseus_core.wire.text import clean
from perseus_core.wire.timeutil import Clock

log = logging.getLogger(__name__)


class EntryHandling:
    """What a command server does with each entry it reads (see `CommandServer`).

    Args:
        settings: the command expiry and the per-call time budget.
        handler: runs accepted commands.
        should_serve: optional filter; False leaves a valid command to another server.
        identity: `(hostname, ip)` of this host.
        clock: judges expiry.
        book: the outcomes hash.
        responder: replies and audit entries.
    """

    def __init__(
        self,
        settings: Settings,
        handler: CommandHandler,
        should_serve: Callable[[Command], Awaitable[bool]] | None,
        identity: IdentityProvider,
        clock: Clock,
        book: OutcomeBook,
        responder: Responder,
    ) -> None:
        self._settings = settings
        self._handler = handler
        self._should_serve = should_serve
        self._identity = identity
        self._clock = clock
        self._book = book
        self._responder = responder
        self._since_prune = 0

    async def handle(self, entry_id: str, fields: dict[str, str]) -> None:
        """Handle one entry; a command is run at most once however often it is read."""
        raw = fields.get(COMMAND_FIELD)
        try:
            if raw is None:
                raise PayloadError(f"stream entry has no {COMMAND_FIELD!r} field")
            command = Command.from_json(raw)
        except PayloadError as exc:
            await self._reject_unparsed(entry_id, raw, str(exc))
            return
        meta = CommandMeta.of(command)
        why_not = rejection(command, self._clock, self._settings.command_expiry_ms)
        if why_not is None and not await self._wants(command):
            return
        existing = await self._book.claim(command.correlation_id, entry_id, meta)
        if existing is not None:
            await self._repeat(meta, entry_id, existing)
            return
        cid = command.correlation_id
        if why_not is not None:
            await self._conclude(cid, entry_id, meta, ReplyStatus.ERROR, why_not, None)
            return
        hostname, _ = self._identity()
        await self._responder.reply(meta, ReplyStatus.ACK, f"acknowledged by {hostname}", None)
        await self._responder.audit(meta, ReplyStatus.ACK.value, f"acknowledged by {hostname}")
        try:
            status, message, data = await run_handler(self._handler, command)
        except asyncio.CancelledError:
            # Best effort, bounded: the sender learns the command was cut short.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self._conclude(
                        cid, entry_id, meta, ReplyStatus.ERROR, INTERRUPTED_MESSAGE, None
                    ),
                    self._settings.socket_timeout_ms / 1000,
                )
            raise
        await self._conclude(cid, entry_id, meta, status, message, data)

    async def _wants(self, command: Command) -> bool:
        if self._should_serve is None:
            return True
        try:
            return bool(await self._should_serve(command))
        except Exception:
            log.exception("should_serve failed; serving %s anyway", command.correlation_id)
            return True

    async def _reject_unparsed(self, entry_id: str, raw: str | None, problem: str) -> None:
        """A malformed entry: answered (when its correlation id can be read) and
        audited. It is claimed under its stream ID, since there may be no usable
        correlation id, so that a re-read does not answer it twice."""
        meta = CommandMeta.salvage(raw)
        field = f"entry:{entry_id}"
        if await self._book.claim(field, entry_id, meta) is not None:
            return
        await self._conclude(field, entry_id, meta, ReplyStatus.ERROR, problem, None)

    async def _repeat(self, meta: CommandMeta, entry_id: str, existing: OutcomeRecord) -> None:
        """A correlation id that was claimed before: never run it again."""
        responder = self._responder
        if existing.entry == entry_id:
            # The same entry read again (reconnect, restart, a second server):
            # it is or was handled by whoever claimed it, unless that was a
            # process on this host that has since died in the middle of it.
            hostname, _ = self._identity()
            if (
                existing.state == RUNNING
                and existing.hostname == hostname
                and existing.pid != os.getpid()
                and not pid_is_running(existing.pid)
            ):
                await self._conclude(
                    meta.correlation_id,
                    entry_id,
                    meta,
                    ReplyStatus.ERROR,
                    INTERRUPTED_MESSAGE,
                    None,
                )
            return
        if existing.state == RUNNING:
            note = "repeat of a command that is still running; not run again"
            await responder.reply(meta, ReplyStatus.ACK, note, None)
            await responder.audit(meta, ReplyStatus.ACK.value, note)
            return
        note = "repeat of a command already handled; not run again"
        await responder.reply(meta, ReplyStatus.ACK, note, None)
        await responder.reply(
            meta, ReplyStatus(existing.status), existing.message or None, existing.data
        )
        await responder.audit(meta, existing.status, f"{note}: {existing.message}".rstrip(": "))

    async def _conclude(
        self,
        field: str,
        entry_id: str,
        meta: CommandMeta,
        status: ReplyStatus,
        message: str | None,
        data: dict[str, Any] | None,
    ) -> None:
        """Record the outcome, answer the sender, write the audit entry."""
        text = (message or "")[:MAX_MESSAGE_CHARS]
        await self._book.conclude(field, entry_id, meta, status, text, data)
        await self._responder.reply(meta, status, text or None, data)
        await self._responder.audit(meta, status.value, text)
        self._since_prune += 1
        if self._since_prune >= PRUNE_EVERY:
            self._since_prune = 0
            await self._book.prune()


def rejection(command: Command, clock: Clock, expiry_ms: int) -> str | None:
    """Why a parsed command must not run, or None."""
    if command.type not in KNOWN_TYPES:
        expected = ", ".join(KNOWN_TYPES)
        return f"unknown command type '{clean(command.type, 64)}' (expected {expected})"
    if now_ms(clock) - command.timestamp > expiry_ms:
        return "Command expired"
    return None


async def run_handler(handler: CommandHandler, command: Command) -> HandlerResult:
    """Run the handler; whatever it does, return a final status and message."""
    try:
        result = await handler(command)
    except PerseusError as exc:  # CommandRejected, a claim conflict naming the holder, ...
        return ReplyStatus.ERROR, str(exc) or type(exc).__name__, None
    except Exception as exc:
        log.exception("handler failed on %s %s", command.type, command.correlation_id)
        return ReplyStatus.ERROR, f"internal error: {type(exc).__name__}: {exc}", None
    try:
        status, message, data = result
    except (TypeError, ValueError):
        return ReplyStatus.ERROR, "internal error: the handler returned no outcome", None
    if status not in (ReplyStatus.SUCCESS, ReplyStatus.ERROR):
        return ReplyStatus.ERROR, f"internal error: the handler returned {status!r}", None
    text = message if message is None or isinstance(message, str) else str(message)
    return ReplyStatus(status), text, data if isinstance(data, dict) else None
