"""Sending commands and waiting for their ack and result."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from perseus_core.plumbing.connection import connect, describe_redis_error
from perseus_core.plumbing.errors import TRANSIENT_ERRORS
from perseus_core.plumbing.topology import RedisClient, checkout
from perseus_core.store.control.common import (
    COMMAND_FIELD,
    COMMAND_STREAM_MAXLEN,
    NO_RETRY,
    new_backoff,
    now_ms,
)
from perseus_core.wire import keys
from perseus_core.wire.errors import PayloadError, PerseusError, RedisUnavailable
from perseus_core.wire.models import (
    MAX_PAYLOAD_BYTES,
    Command,
    CommandReply,
    CommandType,
    ReplyStatus,
)
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import Clock, system_clock

log = logging.getLogger(__name__)

# --- sending ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """How a sent command ended.

    `status` is None when the command was acknowledged but no result came
    within the result timeout (it may still be running); `message` says so.
    `acked` is False when the first answer was already final, as for a
    command rejected before it was accepted (malformed, unknown type, expired).
    """

    correlation_id: str
    acked: bool
    status: ReplyStatus | None
    message: str | None
    data: dict[str, Any] | None

    @property
    def ok(self) -> bool:
        """True when the command succeeded."""
        return self.status is ReplyStatus.SUCCESS


class NoAgentAnswered(PerseusError):
    """No server acknowledged a command within the ack timeout."""

    def __init__(self, exchange_id: int, timeout_ms: int, correlation_id: str) -> None:
        self.exchange_id = exchange_id
        self.timeout_ms = timeout_ms
        self.correlation_id = correlation_id
        super().__init__(
            f"no agent answered in {timeout_ms / 1000:g} s: check that an agent for "
            f"exchange {exchange_id} is running"
        )


async def _xadd_once(
    redis: RedisClient, settings: Settings, key: str, fields: dict[str, str]
) -> str:
    """XADD on one pooled connection, sent exactly once.

    redis-py retries a command after a connection error or timeout by default.
    For an XADD that is a blind retry of a non-idempotent write: if the first
    attempt reached a server that was merely slow (paused, overloaded), both
    entries land. So the command is written on a connection taken from the
    caller's pool, bypassing the retrying client.

    A pooled connection may be stale (Redis restarted since it was last used),
    which would make the single attempt fail for nothing. So the connection is
    first proven with a PING, which may be retried freely (on a fresh
    connection), and only then is the XADD sent, once.
    """
    args: list[str] = ["XADD", key, "MAXLEN", "~", str(COMMAND_STREAM_MAXLEN), "*"]
    for name, value in fields.items():
        args += [name, value]
    try:
        conn, release = await checkout(redis, key)
    except TRANSIENT_ERRORS as exc:
        raise RedisUnavailable(
            f"{describe_redis_error(settings, exc)} (the command was not sent)"
        ) from exc
    try:
        for attempt in range(3):
            try:
                await conn.send_command("PING")
                await conn.read_response()
                break
            except TRANSIENT_ERRORS as exc:
                await conn.disconnect()  # the next send reconnects
                if attempt == 2:
                    raise RedisUnavailable(
                        f"{describe_redis_error(settings, exc)} (the command was not sent)"
                    ) from exc
        try:
            await conn.send_command(*args)
            response = await conn.read_response()
        except TRANSIENT_ERRORS as exc:
            await conn.disconnect()
            raise RedisUnavailable(
                f"{describe_redis_error(settings, exc)} (the command may have been queued; "
                "it runs at most once)"
            ) from exc
    except BaseException:
        await conn.disconnect()
        raise
    finally:
        await release(conn)
    return response if isinstance(response, str) else str(response)


class ControlClient:
    """Sends commands to the server of one exchange and waits for the replies.

    Args:
        redis: the caller's client; the command is written through its pool.
        settings: ack/result timeouts and the URL of the blocking listener.
        clock: the time stamped on commands (the server judges expiry by it).
    """

    def __init__(
        self, redis: RedisClient, settings: Settings, *, clock: Clock = system_clock
    ) -> None:
        self._redis = redis
        self._settings = settings
        self._clock = clock

    async def submit(
        self,
        exchange_id: int,
        command: str | CommandType,
        *,
        operator: str,
        payload: dict[str, Any] | None = None,
        correlation_id: str | None = None,
    ) -> Command:
        """Append a command to the exchange's command stream; do not wait.

        The write is never retried here. If the connection fails after the
        command was sent, it may or may not be queued: RedisUnavailable says
        so. Re-submitting with the same `correlation_id` is then safe, because
        a server runs a correlation id at most once and answers a repeat with
        the first outcome.

        Raises:
            RedisUnavailable: Redis could not be reached.
            ValueError: the command is too large to be accepted by a server.
        """
        body = dict(payload or {})
        body["operator"] = operator
        cmd = Command(
            correlation_id=correlation_id or str(uuid.uuid4()),
            type=str(command.value if isinstance(command, CommandType) else command),
            payload=body,
            timestamp=now_ms(self._clock),
        )
        raw = cmd.to_json()
        if len(raw.encode()) > MAX_PAYLOAD_BYTES:
            raise ValueError(f"command is over the {MAX_PAYLOAD_BYTES:,} byte limit")
        await _xadd_once(
            self._redis, self._settings, keys.commands_key(exchange_id), {COMMAND_FIELD: raw}
        )
        return cmd

    async def wait(
        self,
        exchange_id: int,
        correlation_id: str,
        *,
        ack_timeout_ms: int | None = None,
        result_timeout_ms: int | None = None,
        on_ack: Callable[[CommandReply], None] | None = None,
    ) -> CommandOutcome:
        """Wait for the replies of a submitted command.

        Replies wait in their list for 60 s, so calling this late is fine. The
        result timeout starts when the ack arrives. A final reply that comes
        without an ack (a command rejected before it was accepted) ends the
        wait at once.

        Raises:
            NoAgentAnswered: nothing answered within the ack timeout.
            RedisUnavailable: Redis stayed unreachable until the ack deadline.
        """
        ack_ms = ack_timeout_ms or self._settings.ack_timeout_ms
        result_ms = result_timeout_ms or self._settings.result_timeout_ms
        key = keys.replies_key(correlation_id)
        chunk_s = max(self._settings.block_ms, 1_000) / 1000
        listener = connect(self._settings, socket_timeout=chunk_s + 5, retry=NO_RETRY)
        deadline = time.monotonic() + ack_ms / 1000
        acked = False
        backoff = new_backoff()
        last_error: BaseException | None = None
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                # BLPOP's timeout 0 means "forever": never let it round down to 0.
                block = max(0.01, round(min(remaining, chunk_s), 3))
                try:
                    item = cast(tuple[str, str] | None, await listener.blpop([key], block))
                except TRANSIENT_ERRORS as exc:
                    last_error = exc
                    await asyncio.sleep(min(backoff.next_delay(), max(0.0, remaining)))
                    continue
                backoff.reset()
                last_error = None
                if item is None:
                    continue
                reply = self._parse_reply(item[1], correlation_id)
                if reply is None:
                    continue
                if reply.status is ReplyStatus.ACK:
                    if not acked:  # a repeated command may bring a second ack
                        acked = True
                        deadline = time.monotonic() + result_ms / 1000
                        if on_ack is not None:
                            on_ack(reply)
                    continue
                return CommandOutcome(
                    correlation_id, acked, reply.status, reply.message, reply.data
                )
        finally:
            await listener.aclose()
        if not acked:
            if last_error is not None:
                raise RedisUnavailable(describe_redis_error(self._settings, last_error))
            raise NoAgentAnswered(exchange_id, ack_ms, correlation_id)
        return CommandOutcome(
            correlation_id,
            True,
            None,
            f"acknowledged, but no result within {result_ms / 1000:g} s "
            "(the command may still be running)",
            None,
        )

    @staticmethod
    def _parse_reply(raw: str, correlation_id: str) -> CommandReply | None:
        try:
            reply = CommandReply.from_json(raw)
        except PayloadError as exc:
            log.warning("ignoring an unreadable reply to %s: %s", correlation_id, exc)
            return None
        if reply.correlation_id != correlation_id:
            log.warning(
                "ignoring a reply for %s in the list of %s",
                reply.correlation_id[:128],
                correlation_id,
            )
            return None
        return reply

    async def send(
        self,
        exchange_id: int,
        command: str | CommandType,
        *,
        operator: str,
        payload: dict[str, Any] | None = None,
        ack_timeout_ms: int | None = None,
        result_timeout_ms: int | None = None,
        on_ack: Callable[[CommandReply], None] | None = None,
        on_sent: Callable[[Command], None] | None = None,
        correlation_id: str | None = None,
    ) -> CommandOutcome:
        """Submit a command and wait for its ack and result (`submit` + `wait`).

        Raises:
            NoAgentAnswered: nothing acknowledged within the ack timeout
                (default `settings.ack_timeout_ms`).
            RedisUnavailable: Redis could not be reached.
        """
        cmd = await self.submit(
            exchange_id, command, operator=operator, payload=payload, correlation_id=correlation_id
        )
        if on_sent is not None:
            on_sent(cmd)
        return await self.wait(
            exchange_id,
            cmd.correlation_id,
            ack_timeout_ms=ack_timeout_ms,
            result_timeout_ms=result_timeout_ms,
            on_ack=on_ack,
        )
