"""Steering a TypeScript (Livermore) server over its own pub/sub channel.

A Livermore server holds no Perseus agent to read `perseus:commands:{id}`: it
listens on `livermore:commands:{identitySub}`, per owner identity rather than
per exchange, and answers on `livermore:responses:{identitySub}`
(docs/wire-format.md, "Sharing Redis with Livermore"). Both are single-key
pub/sub operations, so this works on a single Redis and on a cluster alike.

Pub/sub keeps nothing: the response channel is subscribed (and the
subscription confirmed) before the command is published, and a PUBLISH that
reaches no subscriber is answered at once instead of after a timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

from redis.asyncio.client import PubSub

from perseus_core.plumbing.connection import connect, describe_redis_error
from perseus_core.plumbing.errors import TRANSIENT_ERRORS
from perseus_core.plumbing.topology import RedisClient
from perseus_core.store.control.records import NO_RETRY, CommandOutcome, NoAgentAnswered, now_ms
from perseus_core.wire import keys
from perseus_core.wire.errors import PayloadError, PerseusError, RedisUnavailable
from perseus_core.wire.models import Command, CommandReply, CommandType, ReplyStatus
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import Clock, system_clock

log = logging.getLogger(__name__)

LIVERMORE_PRIORITY = 50
"""The `priority` of commands sent to a Livermore server (it accepts 1..100)."""


class NoLivermoreListener(PerseusError):
    """A PUBLISH reached no subscriber: no Livermore server of that owner runs.

    Attributes:
        identity_sub: the owner whose channel nobody listens to.
        correlation_id: the published command's, for its audit entry ("" when
            not given).
    """

    def __init__(self, identity_sub: str, correlation_id: str = "") -> None:
        self.identity_sub = identity_sub
        self.correlation_id = correlation_id
        super().__init__(f"no Livermore server is listening for {identity_sub}")


def livermore_command(
    command: CommandType, exchange_name: str, *, clock: Clock, correlation_id: str | None = None
) -> Command:
    """A command in Livermore's shape: `start` names the exchange in its payload
    (Livermore would otherwise default to coinbase); `stop` has no payload."""
    payload = {"exchange": exchange_name} if command is CommandType.START else None
    return Command(
        correlation_id=correlation_id or str(uuid.uuid4()),
        type=command.value,
        payload=payload,
        timestamp=now_ms(clock),
        priority=LIVERMORE_PRIORITY,
    )


class LivermoreBridge:
    """Publishes commands to one owner's Livermore servers and waits for the answer.

    Args:
        redis: the caller's client; PUBLISH and PUBSUB NUMSUB go through it.
        settings: ack and result timeouts; the URL of the subscribing connection.
        clock: the time stamped on commands (Livermore expires them after 30 s).
    """

    def __init__(
        self, redis: RedisClient, settings: Settings, *, clock: Clock = system_clock
    ) -> None:
        self._redis = redis
        self._settings = settings
        self._clock = clock

    async def listeners(self, identity_sub: str) -> int:
        """How many connections are subscribed to the owner's command channel now:
        how many Livermore servers a command would reach."""
        channel = keys.livermore_commands_channel(identity_sub)
        counts = await self._redis.pubsub_numsub(channel)
        return sum(int(count) for name, count in counts if str(name) == channel)

    async def send(
        self,
        exchange_id: int,
        identity_sub: str,
        command: CommandType,
        exchange_name: str,
        *,
        ack_timeout_ms: int | None = None,
        result_timeout_ms: int | None = None,
        on_sent: Callable[[Command], None] | None = None,
        on_ack: Callable[[CommandReply], None] | None = None,
    ) -> tuple[CommandOutcome, int]:
        """Publish one command; wait for its ack, then its success or error.

        Returns:
            The outcome and how many subscribers the PUBLISH reached (when
            more than one, each of them runs the command and the first final
            answer is the one returned).

        Raises:
            NoLivermoreListener: the PUBLISH reached nobody (no wait).
            NoAgentAnswered: reached, but nothing acknowledged in time.
            RedisUnavailable: Redis could not be reached.
        """
        cmd = livermore_command(command, exchange_name, clock=self._clock)
        ack_ms = ack_timeout_ms or self._settings.ack_timeout_ms
        result_ms = result_timeout_ms or self._settings.result_timeout_ms
        listener = connect(self._settings, retry=NO_RETRY)
        pubsub = listener.pubsub()
        try:
            try:
                await self._subscribe(pubsub, keys.livermore_responses_channel(identity_sub))
                reached = int(
                    await self._redis.publish(
                        keys.livermore_commands_channel(identity_sub), cmd.to_json()
                    )
                )
            except TRANSIENT_ERRORS as exc:
                raise RedisUnavailable(describe_redis_error(self._settings, exc)) from exc
            if reached == 0:
                raise NoLivermoreListener(identity_sub, cmd.correlation_id)
            if on_sent is not None:
                on_sent(cmd)
            acked = None if on_ack is None else lambda reply: on_ack(_named(reply, identity_sub))
            outcome = await self._wait(pubsub, cmd.correlation_id, ack_ms, result_ms, acked)
            if outcome is None:
                raise NoAgentAnswered(
                    exchange_id,
                    ack_ms,
                    cmd.correlation_id,
                    who=f"the Livermore server listening for {identity_sub}",
                )
            return outcome, reached
        finally:
            await pubsub.aclose()
            await listener.aclose()

    async def _subscribe(self, pubsub: PubSub, channel: str) -> None:
        """Subscribe and wait for the server's confirmation: only then is a
        response published right after our command sure to reach us."""
        await pubsub.subscribe(channel)
        deadline = time.monotonic() + self._settings.ack_timeout_ms / 1000
        while time.monotonic() < deadline:
            message = await pubsub.get_message(timeout=max(0.01, deadline - time.monotonic()))
            if message is not None and message.get("type") == "subscribe":
                return
        raise RedisUnavailable(f"the subscription to {channel} was not confirmed in time")

    async def _wait(
        self,
        pubsub: PubSub,
        correlation_id: str,
        ack_ms: int,
        result_ms: int,
        on_ack: Callable[[CommandReply], None] | None,
    ) -> CommandOutcome | None:
        """Read responses until ours is final; None when nothing acknowledged."""
        deadline = time.monotonic() + ack_ms / 1000
        acked = False
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=max(0.01, remaining)
                )
            except TRANSIENT_ERRORS as exc:
                raise RedisUnavailable(describe_redis_error(self._settings, exc)) from exc
            if message is None or message.get("type") != "message":
                await asyncio.sleep(0)
                continue
            reply = _parse_response(message.get("data"), correlation_id)
            if reply is None:
                continue
            if reply.status is ReplyStatus.ACK:
                if not acked:  # several servers may each acknowledge
                    acked = True
                    deadline = time.monotonic() + result_ms / 1000
                    if on_ack is not None:
                        on_ack(reply)
                continue
            return CommandOutcome(correlation_id, acked, reply.status, reply.message, reply.data)
        if not acked:
            return None
        return CommandOutcome.no_result(correlation_id, result_ms)


def _named(reply: CommandReply, identity_sub: str) -> CommandReply:
    """An ack as the operator sees it, naming who answered like a Perseus
    agent's `acknowledged by {host}` does (a Livermore ack carries no message;
    one it does carry follows the name)."""
    who = f"acknowledged by the Livermore server ({identity_sub})"
    return reply.model_copy(update={"message": f"{who}: {reply.message}" if reply.message else who})


def _parse_response(raw: Any, correlation_id: str) -> CommandReply | None:
    """A response to our command, or None for anything else on the channel
    (other senders' responses, unreadable messages: logged, never fatal)."""
    if not isinstance(raw, str | bytes):
        return None
    try:
        reply = CommandReply.from_json(raw)
    except PayloadError as exc:
        log.warning("ignoring an unreadable Livermore response: %s", exc)
        return None
    return reply if reply.correlation_id == correlation_id else None
