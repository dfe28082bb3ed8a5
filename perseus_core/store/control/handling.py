"""Handling one command-stream entry: parse, claim, reject or run, answer, audit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from perseus_core.plumbing.errors import TRANSIENT_ERRORS
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
from perseus_core.store.control.link import Stopped
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

NOT_RUN_MESSAGE = "not run: the agent stopped before this command's turn came"


@dataclass(frozen=True, slots=True)
class _Queued:
    """A command that was read, claimed and acknowledged, waiting for its turn."""

    command: Command
    entry_id: str
    meta: CommandMeta
    repeat: bool = False
    """A second entry of a command queued before it: answered, never run."""


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
        self._queue: asyncio.Queue[_Queued | None] = asyncio.Queue()
        self._running: CommandMeta | None = None
        self._last_queued: CommandMeta | None = None

    async def admit(self, entry_id: str, fields: dict[str, str]) -> None:
        """Read one entry: reject it, or claim it, acknowledge it at once and queue it.

        The ack goes out as soon as the command is read, even while another
        command runs (`acknowledged by HOST, queued behind stop`): a busy agent
        must never look absent. A command is run at most once however often it
        is read; `run_queue` runs the queued ones in order.
        """
        raw = fields.get(COMMAND_FIELD)
        try:
            if raw is None:
                raise PayloadError(f"stream entry has no {COMMAND_FIELD!r} field")
            command = Command.from_json(raw)
        except PayloadError as exc:
            await self._reject_unparsed(entry_id, raw, str(exc))
            return
        meta = CommandMeta.of(command)
        why_not = rejection(
            command, self._clock, self._settings.command_expiry_ms, self._settings.command_skew_ms
        )
        if why_not is None and not await self._wants(command):
            return
        existing = await self._book.claim(command.correlation_id, entry_id, meta)
        if existing is not None:
            if existing.state == RUNNING and existing.server == self._book.token:
                # Queued or running here: answered with its outcome once it has one.
                self._queue.put_nowait(_Queued(command, entry_id, meta, repeat=True))
                return
            await self._repeat(meta, entry_id, existing)
            return
        if why_not is not None:
            await self._conclude(
                command.correlation_id, entry_id, meta, ReplyStatus.ERROR, why_not, None
            )
            return
        hostname, _ = self._identity()
        ahead = self._running if self._running is not None else self._last_queued
        note = f"acknowledged by {hostname}"
        if ahead is not None and (self._running is not None or not self._queue.empty()):
            note += f", queued behind {clean(ahead.command, 64)}"
        await self._responder.reply(meta, ReplyStatus.ACK, note, None)
        await self._responder.audit(meta, ReplyStatus.ACK.value, note)
        self._last_queued = meta
        self._queue.put_nowait(_Queued(command, entry_id, meta))

    async def run_queue(self) -> None:
        """Run the admitted commands one at a time, in the order they were read,
        until `drain` ends the queue."""
        while (item := await self._queue.get()) is not None:
            self._running = item.meta
            try:
                await self._execute(item)
            except Stopped:
                return
            except Exception:
                # A bug or an unexpected reply must not stop the exchange's
                # control channel; the command is not re-run (it was claimed).
                log.exception("failed to run command %s", item.meta.correlation_id)
            finally:
                self._running = None

    async def drain(self, runner: asyncio.Task[None]) -> None:
        """The server is closing: the command in progress finishes (and is answered);
        queued ones are answered as not run, so that no sender waits in vain."""
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if item is None or item.repeat:
                continue  # a repeat's record is its original's: leave it alone
            with contextlib.suppress(Stopped, *TRANSIENT_ERRORS):
                await self._conclude(
                    item.meta.correlation_id,
                    item.entry_id,
                    item.meta,
                    ReplyStatus.ERROR,
                    NOT_RUN_MESSAGE,
                    None,
                )
        self._queue.put_nowait(None)
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            runner.cancel()
        try:
            await asyncio.shield(runner)
        except asyncio.CancelledError:
            runner.cancel()
            raise

    async def _execute(self, item: _Queued) -> None:
        cid, entry_id, meta = item.meta.correlation_id, item.entry_id, item.meta
        if item.repeat:
            existing = await self._book.claim(cid, entry_id, meta)
            if existing is not None:
                await self._repeat(meta, entry_id, existing)
            return
        try:
            status, message, data = await run_handler(self._handler, item.command)
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
        if existing.command and meta.command and existing.command != meta.command:
            # A correlation id names one command: a different one under it is an
            # error of the sender's (or a forgery), never an alias of the first.
            note = (
                f"correlation id already used by a {clean(existing.command, 64)} command; "
                f"this {clean(meta.command, 64)} is rejected and not run"
            )
            await responder.reply(meta, ReplyStatus.ERROR, note, None)
            await responder.audit(meta, ReplyStatus.ERROR.value, note)
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


def rejection(command: Command, clock: Clock, expiry_ms: int, skew_ms: int) -> str | None:
    """Why a parsed command must not run, or None.

    A timestamp further ahead than `skew_ms` is rejected too: it would never
    expire, so a command written with a wrong clock (or replayed with a
    forged one) could wait in the stream and run at any later time.
    """
    if command.type not in KNOWN_TYPES:
        expected = ", ".join(KNOWN_TYPES)
        return f"unknown command type '{clean(command.type, 64)}' (expected {expected})"
    age_ms = now_ms(clock) - command.timestamp
    if age_ms > expiry_ms:
        return "Command expired"
    if -age_ms > skew_ms:
        return (
            f"timestamp {-age_ms / 1000:.1f} s in the future (more than the allowed "
            f"{skew_ms / 1000:g} s of clock skew); not run"
        )
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
