"""The agent's side of the control channel: one exchange's command server.

`CommandServer` reads the exchange's command stream, admits each entry (claims
it in the exchange's `OutcomeBook`, so that it runs at most once; rejects what
is malformed, oversized, unknown, expired or future-dated; acknowledges the
rest as soon as they are taken), runs the admitted commands one at a time
through its handler, answers the sender, writes the audit trail, answers with
what failed when Redis refuses one of its writes, and keeps its hold on Redis
through outages. The records it writes are in `records`, its scripts in
`scripts`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from redis.exceptions import NoPermissionError, ResponseError

from perseus_core.plumbing.connection import connect, describe_redis_error
from perseus_core.plumbing.errors import REDIS_ERRORS, TRANSIENT_ERRORS
from perseus_core.plumbing.processes import pid_is_running
from perseus_core.plumbing.streams import xread_rows
from perseus_core.plumbing.tasks import raise_if_cancelling, wait_event
from perseus_core.plumbing.topology import RedisClient
from perseus_core.store.activity import ActivityLog, StreamRows
from perseus_core.store.control.records import (
    BACKOFF_MAX_S,
    COMMAND_FIELD,
    DONE,
    INTERRUPTED_MESSAGE,
    MAX_MESSAGE_CHARS,
    MAX_OPERATOR_CHARS,
    MAX_PAYLOAD_DEPTH,
    NO_RETRY,
    OUTCOME_RETENTION_MS,
    REPLY_TTL_S,
    RETRY_BACKOFF,
    RUNNING,
    CommandMeta,
    OutcomeRecord,
    is_out_of_memory,
    now_ms,
    refusal_reason,
)
from perseus_core.store.control.scripts import ControlScripts
from perseus_core.wire import keys
from perseus_core.wire.errors import PayloadError, PerseusError
from perseus_core.wire.models import (
    Command,
    CommandEntry,
    CommandReply,
    CommandType,
    ReplyStatus,
)
from perseus_core.wire.settings import Settings
from perseus_core.wire.text import clean
from perseus_core.wire.timeutil import Clock, format_ts, system_clock

log = logging.getLogger(__name__)

_T = TypeVar("_T")

READ_COUNT = 100
"""Entries read from the command stream per XREAD."""

PRUNE_EVERY = 100
"""Outcomes recorded between two prunes of the outcomes hash."""

KNOWN_TYPES = tuple(t.value for t in CommandType)

NOT_RUN_MESSAGE = "not run: the agent stopped before this command's turn came"

HandlerResult = tuple[ReplyStatus, str | None, dict[str, Any] | None]
"""What a handler returns: `success` or `error`, a message for a person, optional data."""

CommandHandler = Callable[[Command], Awaitable[HandlerResult]]
"""Runs one valid, unexpired, first-time command (start, stop or ping).

It may also raise `CommandRejected`, or any other `PerseusError` (such as a
claim conflict naming the holder): its message becomes the `error` reply. Any
other exception is answered as an internal error and logged; the server keeps
serving. It is never called for the same correlation id twice, and never
while another call for the same exchange is in progress.
"""

IdentityProvider = Callable[[], tuple[str, str | None]]
"""Returns `(hostname, ip or None)` for audit entries; called per entry so a
public IP detected after start-up shows up as soon as it is known."""


def _default_identity() -> tuple[str, str | None]:
    return socket.gethostname(), None


@dataclass(frozen=True, slots=True)
class _Queued:
    """A command that was read, claimed and acknowledged, waiting for its turn."""

    command: Command
    entry_id: str
    meta: CommandMeta
    repeat: bool = False
    """A second entry of a command queued before it: answered, never run."""


class Stopped(Exception):
    """Raised inside the server when it is closing and Redis is unreachable."""


class Refused(Exception):
    """Redis refused one of the server's writes: a key of the wrong type, a
    missing ACL right, or (past the command's expiry, see `_retry`) out of
    memory. Its text names the step, the command and the key, and Redis's
    reason: `audit append refused (XADD perseus:activity:coinbase): WRONGTYPE ...`.
    """

    def __init__(self, step: str, command: str, key: str, exc: BaseException) -> None:
        self.out_of_memory = is_out_of_memory(exc)
        super().__init__(f"{step} refused ({command} {clean(key, 200)}): {refusal_reason(exc)}")


def not_taken(problem: Refused) -> str:
    """The error reply of a command that could not be taken: it never runs."""
    if problem.out_of_memory:  # refused until the command expired
        return f"Command expired: not run, {problem}"
    return f"{problem}; command not run"


class CommandServer:
    """Serves the command stream of one exchange: one command at a time, in
    the order they were written (the `priority` field does not reorder them).

    For every entry: parse it; claim its correlation id in the outcomes hash
    (a repeat gets the first outcome again and is not run; a different
    command under a used id is rejected); reject malformed, unknown, expired
    and future-dated commands with an `error` reply; otherwise write its
    `ack` audit entry, push `ack` (even while another command runs: "queued
    behind stop"), and queue it; a runner task runs the queue in order and
    pushes each outcome. Each step is audited in the exchange's Perseus-only
    activity stream: an `ack` entry when a command is accepted and one entry
    with the outcome (a rejected command only has the latter). A write Redis
    refuses before the ack means the command is not run, and its sender is
    told which write and why; out of memory is waited out (see `_retry`).

    Each run opens two connections: a blocking one for XREAD and one for
    writes. Neither lets redis-py retry on its own: a write whose reply was
    lost is retried here (`_retry`) only when a retry is harmless or checked
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
            another server of the same exchange (for example, the exchange's
            holder) without claiming, acknowledging or auditing it.
    """

    # Each run's own, made by `run()` when it opens its connection for writes.
    _writer: RedisClient
    _scripts: ControlScripts
    _activity: ActivityLog
    _book: OutcomeBook
    _queue: asyncio.Queue[_Queued | None]
    """Admitted commands in the order they were read; None ends the runner."""

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
        self._closing = asyncio.Event()
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[Any] | None = None
        self._runner: asyncio.Task[None] | None = None
        self._read_task: asyncio.Future[Any] | None = None
        self._running: CommandMeta | None = None
        """The command the runner is running, if any."""
        self._last_queued: CommandMeta | None = None
        """The command admitted last: what a new one waits behind when the
        queue is not empty."""
        self.connected = False
        """Whether the last Redis call succeeded."""
        self.last_error: str | None = None
        """The Redis problem the server is waiting out, if any (one line)."""
        self.handled = 0
        """Stream entries handled so far (including rejected and repeated ones)."""

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
        self._writer = connect(self._settings, retry=NO_RETRY)
        self._scripts = ControlScripts.on(self._writer)
        self._activity = ActivityLog(self._writer, self._settings)
        self._book = OutcomeBook(self._writer, self.exchange_id, self._clock)
        self._queue = asyncio.Queue()
        self._last_queued = None
        try:
            runner = asyncio.create_task(
                self._run_queue(), name=f"commands:{self.exchange_id} runner"
            )
            try:
                await self._serve(reader)
            finally:
                await self._drain(runner)
        finally:
            await reader.aclose()
            await self._writer.aclose()
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

    # -- reading the stream --

    async def _serve(self, reader: RedisClient) -> None:
        """Read the stream from where the last read ended, through outages, until closing."""
        failures = 0
        while not self._closing.is_set():
            try:
                response = await self._read(reader)
            except TRANSIENT_ERRORS as exc:
                raise_if_cancelling()
                self._mark_down(exc)
                await self._pause(RETRY_BACKOFF.compute(failures))
                failures += 1
                continue
            except Exception as exc:  # e.g. WRONGTYPE: someone wrote another type at the key
                raise_if_cancelling()
                self._mark_down(exc)
                log.error("cannot read %s: %s", self._stream_key, exc)
                await self._pause(BACKOFF_MAX_S)
                continue
            if self._closing.is_set():
                return
            failures = 0
            self._mark_ok()
            if not await self._admit_all(response):
                return

    async def _read(self, reader: RedisClient) -> Any:
        """One blocking read after the last entry handled; `aclose()` cuts it short."""
        if self._last_id is None:
            self._last_id = await self._start_id()
            log.debug("serving %s from %s", self._stream_key, self._last_id)
        if self._closing.is_set():
            return None
        # The command is created inside the task: cancelling a task that has
        # not started yet then never leaves an un-awaited coroutine.
        self._read_task = asyncio.ensure_future(self._xread(reader, self._last_id))
        try:
            response = await self._read_task
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._closing.is_set() and task is not None and task.cancelling() == 0:
                return None  # aclose() interrupted the blocking read
            raise
        finally:
            self._read_task = None
        # Cancelling this task cancels the read it awaits; redis-py can swallow
        # that cancellation and return the reply, and this task would then read
        # on for ever, cancelled in name only.
        raise_if_cancelling()
        return response

    async def _xread(self, reader: RedisClient, last_id: str) -> Any:
        return await reader.xread(
            {self._stream_key: last_id}, count=READ_COUNT, block=self._settings.block_ms
        )

    async def _start_id(self) -> str:
        """The ID just before the oldest entry that could still be unexpired."""
        seconds, micros = await self._writer.time()
        now = int(seconds) * 1000 + int(micros) // 1000
        return f"{max(0, now - self._settings.command_expiry_ms)}-0"

    async def _admit_all(self, response: Any) -> bool:
        """Admit every entry of one read, in order; False when serving must end."""
        for _key, rows in xread_rows(response):
            for entry_id, fields in rows:
                if self._closing.is_set():
                    return False
                try:
                    await self._admit(entry_id, fields)
                except Stopped:
                    return False
                except Refused as problem:  # answering a repeat: logged, serving goes on
                    log.warning("command server for %s: %s", self.exchange_name, problem)
                except Exception:
                    # A bug or an unexpected reply must not stop the exchange's
                    # control channel; the entry is not re-run (it was claimed
                    # or never reached the handler).
                    log.exception("failed to handle command entry %s", entry_id)
                self._last_id = entry_id
                self.handled += 1
        return True

    # -- admitting an entry --

    async def _admit(self, entry_id: str, fields: dict[str, str]) -> None:
        """Read one entry: reject it, or take it, acknowledge it at once and queue it.

        Taking a command is every write due before it runs: its claim in the
        outcomes hash (so that it runs at most once however often it is read)
        and its `ack` audit entry. Only then is the ack pushed, even while
        another command runs (`acknowledged by HOST, queued behind stop`): a
        busy agent must never look absent. When Redis refuses one of those
        writes the command is not run and its sender is told which write was
        refused and why; out of memory, it waits (reading no further) until
        memory is freed or the command expires. `_run_queue` runs the queued
        commands in order.
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
        deadline = command.timestamp + self._settings.command_expiry_ms
        try:
            existing = await self._claim(command.correlation_id, entry_id, meta, deadline)
        except Refused as problem:
            await self._refuse(meta, not_taken(problem))
            return
        if existing is not None:
            if existing.state == RUNNING and existing.server == self._token:
                # Queued or running here: answered with its outcome once it has one.
                self._queue.put_nowait(_Queued(command, entry_id, meta, repeat=True))
                return
            await self._repeat(meta, entry_id, existing)
            return
        if why_not is None:
            why_not = await self._take(meta, deadline)
        if why_not is not None:
            await self._conclude(
                command.correlation_id, entry_id, meta, ReplyStatus.ERROR, why_not, None
            )
            return
        self._last_queued = meta
        self._queue.put_nowait(_Queued(command, entry_id, meta))

    async def _take(self, meta: CommandMeta, deadline: int) -> str | None:
        """Write the claimed command's `ack` audit entry, then push the ack:
        None once it is taken and acknowledged, else why it is not run (a
        refused write, or an expiry that passed while memory was waited out)."""
        if self._expired(deadline):
            return "Command expired"
        hostname, _ = self._identity()
        ahead = self._running if self._running is not None else self._last_queued
        note = f"acknowledged by {hostname}"
        if ahead is not None and (self._running is not None or not self._queue.empty()):
            note += f", queued behind {clean(ahead.command, 64)}"
        try:
            await self._audit(meta, ReplyStatus.ACK.value, note, deadline)
            if self._expired(deadline):
                return "Command expired"
            await self._reply(meta, ReplyStatus.ACK, note, None)
        except Refused as problem:
            return not_taken(problem)
        return None

    def _expired(self, deadline_ms: int) -> bool:
        """Whether a command due to expire at `deadline_ms` has (by this server's clock)."""
        return now_ms(self._clock) > deadline_ms

    async def _wants(self, command: Command) -> bool:
        if self._should_serve is None:
            return True
        try:
            return bool(await self._should_serve(command))
        except REDIS_ERRORS as exc:  # e.g. a status key of the wrong type: no holder to defer to
            log.warning(
                "command server for %s: cannot tell who should serve %s (%s); serving it",
                self.exchange_name,
                command.correlation_id,
                refusal_reason(exc),
            )
            return True
        except Exception:
            log.exception("should_serve failed; serving %s anyway", command.correlation_id)
            return True

    async def _reject_unparsed(self, entry_id: str, raw: str | None, problem: str) -> None:
        """A malformed entry: answered (when its correlation id can be read) and
        audited. It is claimed under its stream ID, since there may be no usable
        correlation id, so that a re-read does not answer it twice."""
        meta = CommandMeta.salvage(raw)
        field = f"entry:{entry_id}"
        try:
            claimed = await self._claim(field, entry_id, meta, now_ms(self._clock))
        except Refused as refused:
            await self._refuse(meta, f"{problem}; {refused}")
            return
        if claimed is not None:
            return
        await self._conclude(field, entry_id, meta, ReplyStatus.ERROR, problem, None)

    async def _refuse(self, meta: CommandMeta, message: str) -> None:
        """Answer a command that could not be claimed: it is never run. Its
        sender is told why, and the audit trail when it can be written."""
        log.warning(
            "command server for %s: %s %s: %s",
            self.exchange_name,
            clean(meta.command, 64) or "malformed command",
            meta.correlation_id or "(no correlation id)",
            message,
        )
        try:
            await self._reply(meta, ReplyStatus.ERROR, message[:MAX_MESSAGE_CHARS], None)
        except Refused as again:
            log.warning("command server for %s: %s", self.exchange_name, again)
        try:
            await self._audit(meta, ReplyStatus.ERROR.value, message)
        except Refused as again:
            log.warning("command server for %s: %s", self.exchange_name, again)

    async def _repeat(self, meta: CommandMeta, entry_id: str, existing: OutcomeRecord) -> None:
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
        if existing.command and meta.command and existing.command != meta.command:
            # A correlation id names one command: a different one under it is an
            # error of the sender's (or a forgery), never an alias of the first.
            note = (
                f"correlation id already used by a {clean(existing.command, 64)} command; "
                f"this {clean(meta.command, 64)} is rejected and not run"
            )
            await self._reply(meta, ReplyStatus.ERROR, note, None)
            await self._audit(meta, ReplyStatus.ERROR.value, note)
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

    # -- running the queue --

    async def _run_queue(self) -> None:
        """Run the admitted commands one at a time, in the order they were read,
        until `_drain` ends the queue."""
        while (item := await self._queue.get()) is not None:
            self._running = item.meta
            try:
                await self._execute(item)
            except Stopped:
                return
            except Refused as problem:  # answering a repeat: logged, serving goes on
                log.warning("command server for %s: %s", self.exchange_name, problem)
            except Exception:
                # A bug or an unexpected reply must not stop the exchange's
                # control channel; the command is not re-run (it was claimed).
                log.exception("failed to run command %s", item.meta.correlation_id)
            finally:
                self._running = None

    async def _drain(self, runner: asyncio.Task[None]) -> None:
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
            existing = await self._claim(cid, entry_id, meta)
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

    # -- outcomes, replies and the audit trail --

    def _record(self, state: str, entry_id: str, meta: CommandMeta) -> OutcomeRecord:
        """This server's record of a command it claims or concludes."""
        hostname, _ = self._identity()
        return OutcomeRecord(
            state, entry_id, self._token, hostname, os.getpid(), now_ms(self._clock), meta.command
        )

    async def _claim(
        self, field: str, entry_id: str, meta: CommandMeta, until_ms: int | None = None
    ) -> OutcomeRecord | None:
        """Claim the command in the outcomes hash: None when it is now this
        server's to run, else the record of whoever claimed it first.

        Raises:
            Refused: Redis refused the claim (out of memory: past `until_ms`).
        """
        record = self._record(RUNNING, entry_id, meta)
        return await self._retry(
            lambda: self._book.claim(field, record),
            ("command claim", "HSETNX", self._book.key),
            until_ms,
        )

    async def _conclude(
        self,
        field: str,
        entry_id: str,
        meta: CommandMeta,
        status: ReplyStatus,
        message: str | None,
        data: dict[str, Any] | None,
    ) -> None:
        """Record the outcome, write the audit entry, answer the sender.

        A write Redis refuses does not stop the others: the reply says what
        was refused after the outcome (`...; audit append refused (XADD ...):
        WRONGTYPE ...`), so the sender learns both. Out of memory, each write
        waits until memory is freed (or the server closes): the command has
        been taken, and its sender must get its answer.
        """
        text = (message or "")[:MAX_MESSAGE_CHARS]
        record = dataclasses.replace(
            self._record(DONE, entry_id, meta), status=status.value, message=text, data=data
        )
        problems: list[str] = []
        try:
            await self._retry(
                lambda: self._book.record(field, record), ("outcome record", "HSET", self._book.key)
            )
        except Refused as problem:
            problems.append(str(problem))
        try:
            await self._audit(meta, status.value, text)
        except Refused as problem:
            problems.append(str(problem))
        problems = [p for p in problems if p not in text]  # a refusal the outcome already names
        if problems:
            log.warning("command server for %s: %s", self.exchange_name, "; ".join(problems))
            text = "; ".join([text, *problems] if text else problems)[: 2 * MAX_MESSAGE_CHARS]
        try:
            await self._reply(meta, status, text or None, data)
        except Refused as problem:
            log.error(
                "command server for %s: %s; the sender of %s gets no %s reply",
                self.exchange_name,
                problem,
                meta.correlation_id,
                status.value,
            )
        await self._book.prune_when_due()

    async def _reply(
        self,
        meta: CommandMeta,
        status: ReplyStatus,
        message: str | None,
        data: dict[str, Any] | None,
    ) -> None:
        """Push one reply to `perseus:replies:{correlationId}`. A retry may push
        it twice; senders ignore the extra.

        An agent whose user may not run scripts pushes it with a plain RPUSH
        and EXPIRE: the sender must hear why nothing runs (every other write
        of the server is a script, and refused the same way).

        Raises:
            Refused: Redis refused the push (never for out of memory: that is waited out).
        """
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
            try:
                await self._scripts.reply(keys=[key], args=[reply.to_json(), REPLY_TTL_S])
            except NoPermissionError:
                async with self._writer.pipeline(transaction=False) as pipe:
                    pipe.rpush(key, reply.to_json())
                    pipe.expire(key, REPLY_TTL_S)
                    await pipe.execute()

        await self._retry(op, ("reply push", "RPUSH", key))

    async def _audit(
        self, meta: CommandMeta, status: str, message: str, until_ms: int | None = None
    ) -> None:
        """Append an `event=command` entry to the exchange's Perseus-only stream
        (`perseus:activity:{name}`), at most once even across retries. A ping
        changes nothing, so it is not audited.

        Raises:
            Refused: Redis refused the append (out of memory: past `until_ms`).
        """
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
            exchange_id=str(self.exchange_id),
            exchange_name=self.exchange_name,
            hostname=hostname,
            ip=ip or "",
        )
        wanted = entry.to_fields()
        stream = ActivityLog.stream_key(self.exchange_name, entry)
        attempted = False

        async def op() -> None:
            nonlocal attempted
            if attempted:
                # The previous XADD may have landed before its reply was lost.
                rows = cast(StreamRows, await self._writer.xrevrange(stream, count=50))
                if any(fields == wanted for _id, fields in rows):
                    return
            attempted = True
            await self._activity.append(self.exchange_name, entry)

        await self._retry(op, ("audit append", "XADD", stream), until_ms)

    # -- the hold on Redis --

    async def _retry(
        self,
        op: Callable[[], Awaitable[_T]],
        write: tuple[str, str, str],
        until_ms: int | None = None,
    ) -> _T:
        """Run a Redis write until it succeeds; give up only when closing.

        A lost connection is waited out, and so is out of memory (a moment
        under `maxmemory` with `noeviction`: it passes once memory is freed),
        reported once per backoff; but only until `until_ms` (the expiry of a
        command not yet taken), when one is given. Any other refusal (a key of
        the wrong type, a missing ACL right) would only repeat: it is raised
        at once.

        Args:
            op: the write, one attempt per call.
            write: (step, command, key) naming the write in what is reported.
            until_ms: when to stop waiting out memory, on the server's clock.

        Raises:
            Stopped: the server is closing and Redis did not take the write.
            Refused: Redis refused the write.
        """
        failures = 0
        while True:
            try:
                result = await op()
            except TRANSIENT_ERRORS as exc:
                self._mark_down(exc)
                if self._closing.is_set():
                    raise Stopped from exc
                await self._pause(RETRY_BACKOFF.compute(failures))
                failures += 1
                continue
            except ResponseError as exc:
                problem = Refused(*write, exc)
                if not problem.out_of_memory or (
                    until_ms is not None and now_ms(self._clock) >= until_ms
                ):
                    raise problem from exc
                if self._closing.is_set():
                    raise Stopped from exc
                delay = RETRY_BACKOFF.compute(failures)
                if until_ms is not None:  # try once more right after the expiry, not later
                    delay = min(delay, (until_ms - now_ms(self._clock)) / 1000 + 0.01)
                failures += 1
                self.last_error = str(problem)
                log.warning(
                    "command server for %s: %s; retrying in %.1f s",
                    self.exchange_name,
                    problem,
                    delay,
                )
                await self._pause(delay)
                continue
            self._mark_ok()
            return result

    def _mark_ok(self) -> None:
        """The last call succeeded; say so once after an outage."""
        if not self.connected and self.last_error is not None:
            log.info("command server for %s reconnected", self.exchange_name)
        self.connected = True
        self.last_error = None

    def _mark_down(self, exc: BaseException) -> None:
        """The last call failed; log it when it starts an outage."""
        message = describe_redis_error(self._settings, exc)
        if self.connected or self.last_error is None:
            log.warning("command server for %s: %s", self.exchange_name, message)
        self.connected = False
        self.last_error = message

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake up at once when the server is closed."""
        await wait_event(self._closing, seconds)


class OutcomeBook:
    """The exchange's outcomes hash (`perseus:outcomes:{exchangeId}`): for each
    command ever claimed, who claimed it and, once known, what it came to.

    Claiming is one `HSETNX`, so a command runs at most once however often it
    is read. Each write is one attempt; the server decides about retrying,
    which is harmless here (a repeated claim recognises its own record, and a
    repeated record overwrites itself).

    Args:
        writer: the server's client for writes.
        exchange_id: whose outcomes hash.
        clock: judges the age of records when pruning.
    """

    def __init__(self, writer: RedisClient, exchange_id: int, clock: Clock) -> None:
        self._writer = writer
        self._scripts = ControlScripts.on(writer)
        self.key = keys.outcomes_key(exchange_id)
        self._clock = clock
        self._recorded = 0

    async def claim(self, field: str, record: OutcomeRecord) -> OutcomeRecord | None:
        """Write the `running` record under `field`, unless someone already did.

        Returns None when this record is now the claim (including a claim of
        this same record whose reply was lost before a retry), else the
        existing record.
        """
        created, current = await self._scripts.claim(
            keys=[self.key], args=[field, record.to_json(), OUTCOME_RETENTION_MS]
        )
        if int(created):
            return None
        existing = OutcomeRecord.from_json(current)
        if existing.server == record.server and existing.entry == record.entry:
            return None
        return existing

    async def record(self, field: str, record: OutcomeRecord) -> None:
        """Write a command's outcome, replacing its `running` record."""
        await self._scripts.record(
            keys=[self.key], args=[field, record.to_json(), OUTCOME_RETENTION_MS]
        )
        self._recorded += 1

    async def prune_when_due(self) -> None:
        """Every `PRUNE_EVERY` outcomes recorded, drop the records past their
        retention: the hash has no per-field expiry. Called once the sender has
        its answer, so that no reply waits for the scan."""
        if self._recorded < PRUNE_EVERY:
            return
        self._recorded = 0
        cutoff = now_ms(self._clock) - OUTCOME_RETENTION_MS
        try:
            stale = [
                field
                async for field, raw in self._writer.hscan_iter(self.key, count=500)
                if OutcomeRecord.from_json(raw).at < cutoff
            ]
            for start in range(0, len(stale), 500):
                await self._writer.hdel(self.key, *stale[start : start + 500])
        except REDIS_ERRORS as exc:
            log.warning("could not prune %s: %s", self.key, exc)


def rejection(command: Command, clock: Clock, expiry_ms: int, skew_ms: int) -> str | None:
    """Why a parsed command must not run, or None.

    A timestamp further ahead than `skew_ms` is rejected too: it would never
    expire, so a command written with a wrong clock (or replayed with a
    forged one) could wait in the stream and run at any later time.
    """
    if command.type not in KNOWN_TYPES:
        expected = ", ".join(KNOWN_TYPES)
        return f"unknown command type '{clean(command.type, 64)}' (expected {expected})"
    if len(command.operator) > MAX_OPERATOR_CHARS:
        return (
            f"operator name is {len(command.operator):,} characters, over the "
            f"{MAX_OPERATOR_CHARS} character limit; not run"
        )
    if nesting_depth(command.payload, MAX_PAYLOAD_DEPTH) > MAX_PAYLOAD_DEPTH:
        return f"payload nested deeper than {MAX_PAYLOAD_DEPTH} levels; not run"
    age_ms = now_ms(clock) - command.timestamp
    if age_ms > expiry_ms:
        return "Command expired"
    if -age_ms > skew_ms:
        return (
            f"timestamp {-age_ms / 1000:.1f} s in the future (more than the allowed "
            f"{skew_ms / 1000:g} s of clock skew); not run"
        )
    return None


def nesting_depth(value: Any, limit: int) -> int:
    """How many levels of objects and arrays `value` nests, counted no
    further than `limit + 1`: level by level, never by recursion."""
    depth, level = 0, [value]
    while depth <= limit:
        containers = [item for item in level if isinstance(item, dict | list)]
        if not containers:
            break
        depth += 1
        level = [
            child
            for item in containers
            for child in (item.values() if isinstance(item, dict) else item)
        ]
    return depth


async def run_handler(handler: CommandHandler, command: Command) -> HandlerResult:
    """Run the handler; whatever it does, return a final status and message."""
    try:
        result = await handler(command)
    except PerseusError as exc:  # CommandRejected, a claim conflict naming the holder, ...
        return ReplyStatus.ERROR, str(exc) or type(exc).__name__, None
    except ResponseError as exc:  # Redis said no (a key of the wrong type, ...): not a bug
        log.warning("%s %s: Redis refused: %s", command.type, command.correlation_id, exc)
        refused = f"Redis refused: {refusal_reason(exc)}; {clean(command.type, 64)} not completed"
        return ReplyStatus.ERROR, refused, None
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
