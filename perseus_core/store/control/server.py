"""Serving one exchange's commands: ack, expiry, de-duplication, audit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis

from perseus_core.plumbing.connection import connect, describe_redis_error
from perseus_core.plumbing.errors import TRANSIENT_ERRORS
from perseus_core.plumbing.processes import pid_is_running
from perseus_core.store.activity import ActivityLog, StreamRows
from perseus_core.store.control.common import (
    BACKOFF_MAX_S,
    COMMAND_FIELD,
    KNOWN_TYPES,
    MAX_MESSAGE_CHARS,
    NO_RETRY,
    OUTCOME_RETENTION_MS,
    PRUNE_EVERY,
    READ_COUNT,
    REPLY_TTL_S,
    CommandHandler,
    HandlerResult,
    IdentityProvider,
    backoff,
    now_ms,
)
from perseus_core.wire import keys
from perseus_core.wire.errors import PayloadError, PerseusError
from perseus_core.wire.models import (
    MAX_PAYLOAD_BYTES,
    Command,
    CommandEntry,
    CommandReply,
    ReplyStatus,
)
from perseus_core.wire.settings import Settings
from perseus_core.wire.text import clean
from perseus_core.wire.timeutil import Clock, format_ts, system_clock

log = logging.getLogger(__name__)

# --- serving ------------------------------------------------------------------

RUNNING = "running"
DONE = "done"
INTERRUPTED_MESSAGE = (
    "interrupted: the agent stopped while running this command (it may have partly run); "
    "not run again"
)


@dataclass(frozen=True, slots=True)
class _Meta:
    """What an audit entry and a reply need to know about a command, even a
    malformed one (whatever could be salvaged from it)."""

    correlation_id: str
    command: str
    operator: str

    @classmethod
    def of(cls, command: Command) -> _Meta:
        return cls(command.correlation_id, command.type, command.operator)

    @classmethod
    def salvage(cls, raw: str | None) -> _Meta:
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
class _Record:
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
    def from_json(cls, raw: str | None) -> _Record:
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


class _Stopped(Exception):
    """Raised inside the server when it is closing and Redis is unreachable."""


def _stream_entries(response: Any) -> list[tuple[str, dict[str, str]]]:
    """XREAD rows as (id, fields), for both RESP2 (list) and RESP3 (dict) replies."""
    if not response:
        return []
    streams = response.items() if isinstance(response, dict) else response
    rows: list[tuple[str, dict[str, str]]] = []
    for _key, entries in streams:
        for entry_id, fields in entries:
            rows.append((str(entry_id), dict(fields or {})))
    return rows


def _default_identity() -> tuple[str, str | None]:
    return socket.gethostname(), None


class CommandServer:
    """Serves the command stream of one exchange: one command at a time, in
    the order they were written (the `priority` field does not reorder them).

    For every entry: parse it; claim its correlation id in the outcomes hash
    (a repeat gets the first outcome again and is not run); reject malformed,
    unknown and expired commands with an `error` reply; otherwise push `ack`,
    run the handler, record and push its outcome. Each step is audited in the
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
        self._outcomes_key = keys.outcomes_key(exchange_id)
        self._token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._last_id: str | None = None
        self._closing = asyncio.Event()
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[Any] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._read_task: asyncio.Future[Any] | None = None
        self._reader: Redis | None = None
        self._writer: Redis | None = None
        self._activity: ActivityLog | None = None
        self._connected = False
        self._last_error: str | None = None
        self._since_prune = 0
        self.handled = 0
        """Stream entries handled so far (including rejected and repeated ones)."""

    # -- state seen from outside --

    @property
    def connected(self) -> bool:
        """Whether the last Redis call succeeded."""
        return self._connected

    @property
    def last_error(self) -> str | None:
        """The Redis problem the server is waiting out, if any (one line)."""
        return self._last_error

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
        self._reader = connect(self._settings, socket_timeout=block_s + 5, retry=NO_RETRY)
        self._writer = connect(self._settings, retry=NO_RETRY)
        self._activity = ActivityLog(self._writer, self._settings)
        try:
            await self._serve()
        finally:
            await self._reader.aclose()
            await self._writer.aclose()
            self._reader = self._writer = None
            self._task = None
            self._stopped.set()

    async def aclose(self) -> None:
        """Stop serving: a command being run finishes (and is answered) first.

        Safe to call when the server is not running, or more than once.
        """
        self._closing.set()
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
        self._closing.clear()
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

    async def _serve(self) -> None:
        assert self._reader is not None
        failures = 0
        while not self._closing.is_set():
            try:
                if self._last_id is None:
                    self._last_id = await self._start_id()
                    log.debug("serving %s from %s", self._stream_key, self._last_id)
                if self._closing.is_set():
                    return
                # The command is created inside the task: cancelling a task that
                # has not started yet then never leaves an un-awaited coroutine.
                self._read_task = asyncio.ensure_future(self._read(self._last_id))
                try:
                    response = await self._read_task
                finally:
                    self._read_task = None
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._closing.is_set() and task is not None and task.cancelling() == 0:
                    return  # aclose() interrupted the blocking read
                raise
            except TRANSIENT_ERRORS as exc:
                self._mark_down(exc)
                failures += 1
                await self._pause(backoff(failures))
                continue
            except Exception as exc:  # e.g. WRONGTYPE: someone wrote another type at the key
                self._mark_down(exc)
                log.error("cannot read %s: %s", self._stream_key, exc)
                failures += 1
                await self._pause(BACKOFF_MAX_S)
                continue
            failures = 0
            self._mark_ok()
            for entry_id, fields in _stream_entries(response):
                if self._closing.is_set():
                    return
                try:
                    await self._handle(entry_id, fields)
                except _Stopped:
                    return
                except Exception:
                    # A bug or an unexpected reply must not stop the exchange's
                    # control channel; the entry is not re-run (it was claimed
                    # or never reached the handler).
                    log.exception("failed to handle command entry %s", entry_id)
                self._last_id = entry_id
                self.handled += 1

    async def _read(self, last_id: str) -> Any:
        assert self._reader is not None
        return await self._reader.xread(
            {self._stream_key: last_id}, count=READ_COUNT, block=self._settings.block_ms
        )

    async def _start_id(self) -> str:
        """The ID just before the oldest entry that could still be unexpired."""
        assert self._writer is not None
        seconds, micros = await self._writer.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        return f"{max(0, now_ms - self._settings.command_expiry_ms)}-0"

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake up at once when the server is closed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    def _mark_ok(self) -> None:
        if not self._connected and self._last_error is not None:
            log.info("command server for %s reconnected", self.exchange_name)
        self._connected = True
        self._last_error = None

    def _mark_down(self, exc: BaseException) -> None:
        message = describe_redis_error(self._settings, exc)
        if self._connected or self._last_error is None:
            log.warning("command server for %s: %s", self.exchange_name, message)
        self._connected = False
        self._last_error = message

    async def _retry(self, op: Callable[[], Awaitable[Any]]) -> Any:
        """Run a Redis operation until it succeeds; give up only when closing."""
        failures = 0
        while True:
            try:
                result = await op()
            except TRANSIENT_ERRORS as exc:
                self._mark_down(exc)
                if self._closing.is_set():
                    raise _Stopped from exc
                failures += 1
                await self._pause(backoff(failures))
                continue
            self._mark_ok()
            return result

    # -- one entry --

    async def _handle(self, entry_id: str, fields: dict[str, str]) -> None:
        raw = fields.get(COMMAND_FIELD)
        try:
            if raw is None:
                raise PayloadError(f"stream entry has no {COMMAND_FIELD!r} field")
            command = Command.from_json(raw)
        except PayloadError as exc:
            await self._reject_unparsed(entry_id, raw, str(exc))
            return
        meta = _Meta.of(command)
        rejection = self._check(command)
        if rejection is None and not await self._wants(command):
            return
        existing = await self._claim(command.correlation_id, entry_id, meta)
        if existing is not None:
            await self._repeat(meta, entry_id, existing)
            return
        if rejection is not None:
            await self._conclude(
                command.correlation_id, entry_id, meta, ReplyStatus.ERROR, rejection, None
            )
            return
        hostname, _ = self._identity()
        await self._reply(meta, ReplyStatus.ACK, f"acknowledged by {hostname}", None)
        await self._audit(meta, ReplyStatus.ACK.value, f"acknowledged by {hostname}")
        try:
            status, message, data = await self._execute(command)
        except asyncio.CancelledError:
            # Best effort, bounded: the sender learns the command was cut short.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    self._conclude(
                        command.correlation_id,
                        entry_id,
                        meta,
                        ReplyStatus.ERROR,
                        INTERRUPTED_MESSAGE,
                        None,
                    ),
                    self._settings.socket_timeout_ms / 1000,
                )
            raise
        await self._conclude(command.correlation_id, entry_id, meta, status, message, data)

    def _check(self, command: Command) -> str | None:
        """Why a parsed command must not run, or None."""
        if command.type not in KNOWN_TYPES:
            expected = ", ".join(KNOWN_TYPES)
            return f"unknown command type '{clean(command.type, 64)}' (expected {expected})"
        age_ms = now_ms(self._clock) - command.timestamp
        if age_ms > self._settings.command_expiry_ms:
            return "Command expired"
        return None

    async def _wants(self, command: Command) -> bool:
        if self._should_serve is None:
            return True
        try:
            return bool(await self._should_serve(command))
        except Exception:
            log.exception("should_serve failed; serving %s anyway", command.correlation_id)
            return True

    async def _execute(self, command: Command) -> HandlerResult:
        """Run the handler; whatever it does, return a final status and message."""
        try:
            result = await self._handler(command)
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

    async def _reject_unparsed(self, entry_id: str, raw: str | None, problem: str) -> None:
        """A malformed entry: answered (when its correlation id can be read) and
        audited. It is claimed under its stream ID, since there may be no usable
        correlation id, so that a re-read does not answer it twice."""
        meta = _Meta.salvage(raw)
        field = f"entry:{entry_id}"
        if await self._claim(field, entry_id, meta) is not None:
            return
        await self._conclude(field, entry_id, meta, ReplyStatus.ERROR, problem, None)

    async def _claim(self, field: str, entry_id: str, meta: _Meta) -> _Record | None:
        """Record the command as running, unless someone already did.

        Returns None when this server now owns it, else the existing record.
        """
        assert self._writer is not None
        writer = self._writer
        hostname, _ = self._identity()
        record = _Record(
            RUNNING,
            entry_id,
            self._token,
            hostname,
            os.getpid(),
            now_ms(self._clock),
            meta.command,
        )

        async def op() -> tuple[int, str | None]:
            async with writer.pipeline(transaction=True) as pipe:
                pipe.hsetnx(self._outcomes_key, field, record.to_json())
                pipe.hget(self._outcomes_key, field)
                pipe.pexpire(self._outcomes_key, OUTCOME_RETENTION_MS)
                created, current, _ = await pipe.execute()
            return int(created), current

        created, current = await self._retry(op)
        if created:
            return None
        existing = _Record.from_json(current)
        if existing.server == self._token and existing.entry == entry_id:
            return None  # our own claim, whose reply was lost before a retry
        return existing

    async def _repeat(self, meta: _Meta, entry_id: str, existing: _Record) -> None:
        """A correlation id that was claimed before: never run it again."""
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
            await self._reply(meta, ReplyStatus.ACK, note, None)
            await self._audit(meta, ReplyStatus.ACK.value, note)
            return
        note = "repeat of a command already handled; not run again"
        await self._reply(meta, ReplyStatus.ACK, note, None)
        await self._reply(
            meta, ReplyStatus(existing.status), existing.message or None, existing.data
        )
        await self._audit(meta, existing.status, f"{note}: {existing.message}".rstrip(": "))

    async def _conclude(
        self,
        field: str,
        entry_id: str,
        meta: _Meta,
        status: ReplyStatus,
        message: str | None,
        data: dict[str, Any] | None,
    ) -> None:
        """Record the outcome, answer the sender, write the audit entry."""
        assert self._writer is not None
        writer = self._writer
        text = (message or "")[:MAX_MESSAGE_CHARS]
        hostname, _ = self._identity()
        record = _Record(
            DONE,
            entry_id,
            self._token,
            hostname,
            os.getpid(),
            now_ms(self._clock),
            meta.command,
            status.value,
            text,
            data,
        )

        async def op() -> None:
            async with writer.pipeline(transaction=True) as pipe:
                pipe.hset(self._outcomes_key, field, record.to_json())
                pipe.pexpire(self._outcomes_key, OUTCOME_RETENTION_MS)
                await pipe.execute()

        await self._retry(op)
        await self._reply(meta, status, text or None, data)
        await self._audit(meta, status.value, text)
        self._since_prune += 1
        if self._since_prune >= PRUNE_EVERY:
            self._since_prune = 0
            await self._prune()

    async def _reply(
        self, meta: _Meta, status: ReplyStatus, message: str | None, data: dict[str, Any] | None
    ) -> None:
        """Push one reply. A retry may push it twice; senders ignore the extra."""
        if not meta.correlation_id:
            return
        assert self._writer is not None
        writer = self._writer
        key = keys.replies_key(meta.correlation_id)
        reply = CommandReply(
            correlation_id=meta.correlation_id,
            status=status,
            message=message,
            data=data,
            timestamp=now_ms(self._clock),
        )

        async def op() -> None:
            async with writer.pipeline(transaction=True) as pipe:
                pipe.rpush(key, reply.to_json())
                pipe.expire(key, REPLY_TTL_S)
                await pipe.execute()

        await self._retry(op)

    async def _audit(self, meta: _Meta, status: str, message: str) -> None:
        """Append an `event=command` entry, at most once even across retries."""
        assert self._writer is not None and self._activity is not None
        writer, activity = self._writer, self._activity
        hostname, ip = self._identity()
        entry = CommandEntry(
            command=meta.command,
            correlation_id=meta.correlation_id,
            operator=meta.operator,
            status=status,
            message=message[:MAX_MESSAGE_CHARS],
            timestamp=format_ts(self._clock()),
            exchange_id=str(self.exchange_id),
            exchange_name=self.exchange_name,
            hostname=hostname,
            ip=ip or "",
        )
        wanted = entry.to_fields()
        stream = keys.activity_key(self.exchange_name)
        attempted = False

        async def op() -> None:
            nonlocal attempted
            if attempted:
                # The previous XADD may have landed before its reply was lost.
                rows = cast(StreamRows, await writer.xrevrange(stream, count=50))
                if any(fields == wanted for _id, fields in rows):
                    return
            attempted = True
            await activity.append(self.exchange_name, entry)

        await self._retry(op)

    async def _prune(self) -> None:
        """Drop outcome records past their retention (the hash has no per-field TTL)."""
        assert self._writer is not None
        cutoff = now_ms(self._clock) - OUTCOME_RETENTION_MS
        try:
            stale = [
                field
                async for field, raw in self._writer.hscan_iter(self._outcomes_key, count=500)
                if _Record.from_json(raw).at < cutoff
            ]
            for start in range(0, len(stale), 500):
                await self._writer.hdel(self._outcomes_key, *stale[start : start + 500])
        except TRANSIENT_ERRORS as exc:
            log.warning("could not prune %s: %s", self._outcomes_key, exc)
