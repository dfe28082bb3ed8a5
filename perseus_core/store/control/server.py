"""Serving one exchange's commands: ack, expiry, de-duplication, audit."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from perseus_core.plumbing.connection import connect
from perseus_core.plumbing.errors import TRANSIENT_ERRORS
from perseus_core.plumbing.streams import xread_rows
from perseus_core.plumbing.topology import RedisClient
from perseus_core.store.control.common import (
    BACKOFF_MAX_S,
    NO_RETRY,
    READ_COUNT,
    CommandHandler,
    IdentityProvider,
    new_backoff,
)
from perseus_core.store.control.handling import EntryHandling
from perseus_core.store.control.link import ServerLink, Stopped
from perseus_core.store.control.outcomes import INTERRUPTED_MESSAGE, OutcomeBook
from perseus_core.store.control.replies import Responder
from perseus_core.wire import keys
from perseus_core.wire.models import Command
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import Clock, system_clock

log = logging.getLogger(__name__)

__all__ = ["INTERRUPTED_MESSAGE", "CommandServer"]


def _default_identity() -> tuple[str, str | None]:
    return socket.gethostname(), None


class CommandServer:
    """Serves the command stream of one exchange: one command at a time, in
    the order they were written (the `priority` field does not reorder them).

    For every entry: parse it; claim its correlation id in the outcomes hash
    (a repeat gets the first outcome again and is not run; a different
    command under a used id is rejected); reject malformed, unknown, expired
    and future-dated commands with an `error` reply; otherwise push `ack` at
    once, even while another command runs ("queued behind stop"), and queue
    it; a runner task runs the queue in order and pushes each outcome.
    Each step is audited in the
    exchange's activity stream: an `ack` entry when a command is accepted and
    one entry with the outcome (a rejected command only has the latter).

    It owns two connections, created by `run()`: a blocking one for XREAD and
    one for writes. Neither lets redis-py retry on its own: a write whose
    reply was lost is retried here only when a retry is harmless or checked
    (the claim recognises its own record, replies may repeat because senders
    ignore extras, an audit entry is looked for before it is written again).
    When Redis goes away the server reconnects with backoff and goes on from
    the last entry it handled.

    Args:
        settings: Redis URL, block time, command expiry.
        exchange_id: whose command stream to serve.
        exchange_name: for the activity stream and messages.
        handler: runs accepted commands (see `CommandHandler`).
        identity: `(hostname, ip)` for audit entries (default: this host, no IP).
        clock: judges expiry and stamps replies and audit entries.
        should_serve: optional filter for a valid command; False leaves it to
            another server of the same exchange (for example, the one holding
            the slot) without claiming, acknowledging or auditing it.
    """

    def __init__(
        self,
        settings: Settings,
        exchange_id: int,
        exchange_name: str,
        handler: CommandHandler,
        *,
        identity: IdentityProvider | None = None,
        clock: Clock = system_clock,
        should_serve: Callable[[Command], Awaitable[bool]] | None = None,
    ) -> None:
        self._settings = settings
        self.exchange_id = exchange_id
        self.exchange_name = exchange_name
        self._handler = handler
        self._identity = identity or _default_identity
        self._clock = clock
        self._should_serve = should_serve
        self._stream_key = keys.commands_key(exchange_id)
        self._token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._last_id: str | None = None
        self._link = ServerLink(settings, exchange_name)
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[Any] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._read_task: asyncio.Future[Any] | None = None
        self.handled = 0
        """Stream entries handled so far (including rejected and repeated ones)."""

    # -- state seen from outside --

    @property
    def connected(self) -> bool:
        """Whether the last Redis call succeeded."""
        return self._link.connected

    @property
    def last_error(self) -> str | None:
        """The Redis problem the server is waiting out, if any (one line)."""
        return self._link.last_error

    @property
    def last_id(self) -> str | None:
        """Stream ID of the last entry handled (None before the first read)."""
        return self._last_id

    # -- lifecycle --

    async def run(self) -> None:
        """Serve until `aclose()` is called or the task is cancelled."""
        if self._task is not None:
            raise RuntimeError("this command server is already running")
        self._task = asyncio.current_task()
        self._stopped.clear()
        block_s = self._settings.block_ms / 1000
        reader = connect(self._settings, socket_timeout=block_s + 5, retry=NO_RETRY)
        writer = connect(self._settings, retry=NO_RETRY)
        book = OutcomeBook(
            writer,
            self._link,
            keys.outcomes_key(self.exchange_id),
            self._token,
            self._identity,
            self._clock,
        )
        responder = Responder(
            writer,
            self._link,
            self._settings,
            exchange_id=self.exchange_id,
            exchange_name=self.exchange_name,
            identity=self._identity,
            clock=self._clock,
        )
        try:
            handling = EntryHandling(
                self._settings,
                self._handler,
                self._should_serve,
                self._identity,
                self._clock,
                book,
                responder,
            )
            runner = asyncio.create_task(
                handling.run_queue(), name=f"commands:{self.exchange_id} runner"
            )
            try:
                await self._serve(reader, writer, handling)
            finally:
                await handling.drain(runner)
        finally:
            await reader.aclose()
            await writer.aclose()
            self._task = None
            self._stopped.set()

    async def aclose(self) -> None:
        """Stop serving: a command being run finishes (and is answered) first.

        Safe to call when the server is not running, or more than once.
        """
        self._link.closing.set()
        task = self._task
        if task is None:
            return
        if self._read_task is not None:
            self._read_task.cancel()
        if task is not asyncio.current_task():
            await self._stopped.wait()

    async def start(self) -> None:
        """Run the server in a background task of the current loop (see `stop`)."""
        if self._runner is not None and not self._runner.done():
            raise RuntimeError("this command server is already running")
        self._link.closing.clear()
        self._runner = asyncio.create_task(self.run(), name=f"commands:{self.exchange_id}")
        await asyncio.sleep(0)  # let run() take its connections before the caller goes on

    async def stop(self) -> None:
        """`aclose()`, then wait for the task `start()` created; raises what it raised."""
        await self.aclose()
        runner, self._runner = self._runner, None
        if runner is not None and runner is not asyncio.current_task():
            await runner

    async def __aenter__(self) -> CommandServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- the loop --

    async def _serve(
        self, reader: RedisClient, writer: RedisClient, handling: EntryHandling
    ) -> None:
        closing = self._link.closing
        backoff = new_backoff()
        while not closing.is_set():
            try:
                if self._last_id is None:
                    self._last_id = await self._start_id(writer)
                    log.debug("serving %s from %s", self._stream_key, self._last_id)
                if closing.is_set():
                    return
                # The command is created inside the task: cancelling a task that
                # has not started yet then never leaves an un-awaited coroutine.
                self._read_task = asyncio.ensure_future(self._read(reader, self._last_id))
                try:
                    response = await self._read_task
                finally:
                    self._read_task = None
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if closing.is_set() and task is not None and task.cancelling() == 0:
                    return  # aclose() interrupted the blocking read
                raise
            except TRANSIENT_ERRORS as exc:
                self._link.mark_down(exc)
                await self._link.pause(backoff.next_delay())
                continue
            except Exception as exc:  # e.g. WRONGTYPE: someone wrote another type at the key
                self._link.mark_down(exc)
                log.error("cannot read %s: %s", self._stream_key, exc)
                await self._link.pause(BACKOFF_MAX_S)
                continue
            backoff.reset()
            self._link.mark_ok()
            for _key, rows in xread_rows(response):
                for entry_id, fields in rows:
                    if closing.is_set():
                        return
                    try:
                        await handling.admit(entry_id, fields)
                    except Stopped:
                        return
                    except Exception:
                        # A bug or an unexpected reply must not stop the exchange's
                        # control channel; the entry is not re-run (it was claimed
                        # or never reached the handler).
                        log.exception("failed to handle command entry %s", entry_id)
                    self._last_id = entry_id
                    self.handled += 1

    async def _read(self, reader: RedisClient, last_id: str) -> Any:
        return await reader.xread(
            {self._stream_key: last_id}, count=READ_COUNT, block=self._settings.block_ms
        )

    async def _start_id(self, writer: RedisClient) -> str:
        """The ID just before the oldest entry that could still be unexpired."""
        seconds, micros = await writer.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        return f"{max(0, now_ms - self._settings.command_expiry_ms)}-0"
