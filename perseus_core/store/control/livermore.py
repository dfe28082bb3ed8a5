"""Steering a TypeScript (Livermore) server over its own pub/sub channel.

A Livermore server holds no Perseus agent to read `perseus:commands:{id}`: it
listens on `livermore:commands:{identitySub}`, per owner identity rather than
per exchange, and answers on `livermore:responses:{identitySub}`
(docs/wire-format.md, "Sharing Redis with Livermore"). Both are single-key
pub/sub operations, so this works on a single Redis and on a cluster alike.

Pub/sub keeps nothing: the response channel is subscribed (and the
subscription confirmed) before the command is published, and a PUBLISH that
reaches no subscriber is answered at once instead of after a timeout.

A Livermore reply says what one server did, not what happened to the exchange
(docs/wire-format.md 4.1): a server runs one exchange at a time and answers
`already_started` while it runs another, believes it is idle after an
autostart, and with several servers on one identity any one of them takes a
command. So after the ack the outcome is read from the exchange's status key,
`exchange:{id}:status`, until the result deadline: a `start` has succeeded
when a Livermore holder of this exchange is warming or active, a `stop` when
the key has left `active` or is gone. Replies are kept and shown for what they
are: a reply that contradicts the key, or an error from another server of the
identity while the exchange comes up, is listed beside the outcome, never
taken for it. When every server reached has answered and, a moment later
(`SETTLE_S`), the key still shows no effect, the command has failed: the
message says what the replies claimed and what the key shows.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio.client import PubSub
from redis.exceptions import ResponseError

from perseus_core.plumbing.connection import (
    access_denied,
    connect,
    describe_redis_error,
    is_acl_denial,
)
from perseus_core.plumbing.errors import REDIS_ERRORS, TRANSIENT_ERRORS
from perseus_core.plumbing.topology import RedisClient
from perseus_core.store.control.records import (
    NO_RETRY,
    CommandOutcome,
    NoAgentAnswered,
    now_ms,
    parse_or_none,
)
from perseus_core.wire import keys
from perseus_core.wire.errors import PayloadError, PerseusError, RedisUnavailable
from perseus_core.wire.models import (
    CatalogEntry,
    Command,
    CommandReply,
    CommandType,
    ConnectionState,
    InstanceStatus,
    ReplyStatus,
)
from perseus_core.wire.settings import Settings
from perseus_core.wire.text import clean
from perseus_core.wire.timeutil import Clock, system_clock

log = logging.getLogger(__name__)

LIVERMORE_PRIORITY = 50
"""The `priority` of commands sent to a Livermore server (it accepts 1..100)."""
KEY_POLL_S = 0.2
"""How often the status key is read while a command's outcome is awaited."""
SETTLE_S = 1.0
"""After the last server's final reply, how long the key gets to show the effect
before the command counts as failed (a server writes its state as it goes, and
a reply can overtake the write it follows)."""
_UP = frozenset({ConnectionState.WARMING, ConnectionState.ACTIVE})


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
        how many Livermore servers a command would reach.

        Raises:
            AccessDenied: this user may not ask (`PUBSUB NUMSUB`), named so.
        """
        channel = keys.livermore_commands_channel(identity_sub)
        try:
            counts = await self._redis.pubsub_numsub(channel)
        except ResponseError as exc:
            raise _denied_or(exc, "PUBSUB NUMSUB", channel) from exc
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
            The outcome, decided by the status key (see the module docstring),
            and how many subscribers the PUBLISH reached.

        Raises:
            NoLivermoreListener: the PUBLISH reached nobody (no wait).
            NoAgentAnswered: reached, but nothing acknowledged in time.
            RedisUnavailable: Redis could not be reached.
            AccessDenied: this user may not subscribe to the response channel
                or publish on the command channel; the refused command and
                channel are named (nothing was sent).
        """
        cmd = livermore_command(command, exchange_name, clock=self._clock)
        ack_ms = ack_timeout_ms or self._settings.ack_timeout_ms
        result_ms = result_timeout_ms or self._settings.result_timeout_ms
        listener = connect(self._settings, retry=NO_RETRY)
        pubsub = listener.pubsub()
        responses = keys.livermore_responses_channel(identity_sub)
        commands = keys.livermore_commands_channel(identity_sub)
        try:
            try:
                await self._subscribe(pubsub, responses)
            except ResponseError as exc:
                raise _denied_or(exc, "SUBSCRIBE", responses) from exc
            try:
                reached = int(await self._redis.publish(commands, cmd.to_json()))
            except TRANSIENT_ERRORS as exc:
                raise RedisUnavailable(describe_redis_error(self._settings, exc)) from exc
            except ResponseError as exc:
                raise _denied_or(exc, "PUBLISH", commands) from exc
            if reached == 0:
                raise NoLivermoreListener(identity_sub, cmd.correlation_id)
            if on_sent is not None:
                on_sent(cmd)
            acked = None if on_ack is None else lambda reply: on_ack(_named(reply, identity_sub))
            target = Target(command, exchange_id, exchange_name, identity_sub, reached)
            outcome = await self._wait(pubsub, cmd, target, ack_ms, result_ms, acked)
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
        try:
            await pubsub.subscribe(channel)
            deadline = time.monotonic() + self._settings.ack_timeout_ms / 1000
            while time.monotonic() < deadline:
                message = await pubsub.get_message(timeout=max(0.01, deadline - time.monotonic()))
                if message is not None and message.get("type") == "subscribe":
                    return
        except TRANSIENT_ERRORS as exc:
            raise RedisUnavailable(describe_redis_error(self._settings, exc)) from exc
        raise RedisUnavailable(f"the subscription to {channel} was not confirmed in time")

    async def _wait(
        self,
        pubsub: PubSub,
        cmd: Command,
        target: Target,
        ack_ms: int,
        result_ms: int,
        on_ack: Callable[[CommandReply], None] | None,
    ) -> CommandOutcome | None:
        """Read replies and the status key until the key shows the command's
        effect, every server reached has answered without it, or the deadline.
        None when nothing acknowledged."""
        deadline = time.monotonic() + ack_ms / 1000
        acked = False
        finals: list[CommandReply] = []
        last_final = 0.0
        shown = Shown(False, None)
        while (remaining := deadline - time.monotonic()) > 0:
            if acked or finals:
                shown = await self._read_key(target.exchange_id)
                effect = target.effect(shown)
                if effect == "done":
                    return target.succeeded(cmd.correlation_id, acked, shown, finals)
                settled = time.monotonic() - last_final >= SETTLE_S
                if len(finals) >= target.reached and settled and effect == "none":
                    failed = await self._explain(target, shown, finals)
                    return CommandOutcome(
                        cmd.correlation_id, acked, ReplyStatus.ERROR, failed, None
                    )
            try:
                message = await pubsub.get_message(
                    ignore_subscribe_messages=True, timeout=max(0.01, min(remaining, KEY_POLL_S))
                )
            except TRANSIENT_ERRORS as exc:
                raise RedisUnavailable(describe_redis_error(self._settings, exc)) from exc
            if message is None or message.get("type") != "message":
                await asyncio.sleep(0)
                continue
            reply = _parse_response(message.get("data"), cmd.correlation_id)
            if reply is None:
                continue
            if reply.status is ReplyStatus.ACK:
                if not acked:  # several servers may each acknowledge
                    acked = True
                    deadline = time.monotonic() + result_ms / 1000
                    if on_ack is not None:
                        on_ack(reply)
                continue
            finals.append(reply)
            last_final = time.monotonic()
        if not acked and not finals:
            return None
        waited = CommandOutcome.no_result(cmd.correlation_id, result_ms)
        return CommandOutcome(
            cmd.correlation_id,
            acked,
            None,
            f"{waited.message}; {target.name} {shown.words()}"
            + (f" (answers: {_answers(finals)})" if finals else ""),
            None,
        )

    async def _read_key(self, exchange_id: int) -> Shown:
        """The exchange's status key as it reads now (one GET)."""
        try:
            raw = await self._redis.get(keys.status_key(exchange_id))
        except TRANSIENT_ERRORS as exc:
            raise RedisUnavailable(describe_redis_error(self._settings, exc)) from exc
        except REDIS_ERRORS:
            return Shown(True, None)  # wrong type, denied: there, but unreadable
        return Shown(raw is not None, parse_or_none(InstanceStatus, raw))

    async def _explain(self, target: Target, shown: Shown, finals: list[CommandReply]) -> str:
        """Why a command whose servers all answered had no effect on the key."""
        name = target.name
        statuses = {str((reply.data or {}).get("status", "")) for reply in finals}
        if target.command is CommandType.START and "already_started" in statuses:
            elsewhere = await self._running_elsewhere(target)
            who = (
                "; ".join(f"{host} is running {other}, not {name}" for host, other in elsewhere)
                if elsewhere
                else "the server runs another exchange"
            )
            return (
                f"{who}: the Livermore server answered already_started, but {name} {shown.words()}"
            )
        if target.command is CommandType.STOP and "already_idle" in statuses:
            return (
                f"the Livermore server believes it is idle, but {name} {shown.words()} "
                "(started without the control channel, as an autostart is: stop it from "
                "that server)"
            )
        errors = [
            clean(reply.message, 300) for reply in finals if reply.status is ReplyStatus.ERROR
        ]
        if errors and len(errors) == len(finals):
            return f"{'; '.join(errors)} ({name} {shown.words()})"
        return f"the Livermore server answered {_answers(finals)}, but {name} {shown.words()}"

    async def _running_elsewhere(self, target: Target) -> list[tuple[str, str]]:
        """(host, exchange) for each other exchange of the identity's catalog
        entries that a Livermore holder runs now: what a server answering
        `already_started` is busy with (single-key reads)."""
        try:
            entries = await self._redis.hgetall(keys.CATALOG_KEY)
        except REDIS_ERRORS:
            return []
        parsed = (parse_or_none(CatalogEntry, raw) for raw in entries.values())
        others = sorted(
            entry.id
            for entry in parsed
            if entry is not None
            and entry.livermore_sub == target.identity_sub
            and entry.id != target.exchange_id
        )
        if not others:
            return []
        try:  # one round trip; single-key GETs, so a cluster splits them per node
            async with self._redis.pipeline(transaction=False) as pipe:
                for exchange_id in others:
                    pipe.get(keys.status_key(exchange_id))
                raws = await pipe.execute(raise_on_error=False)
        except REDIS_ERRORS:
            return []
        found: list[tuple[str, str]] = []
        for raw in raws:
            status = parse_or_none(InstanceStatus, raw)
            if status is not None and status.instance_id is None and status.connection_state in _UP:
                found.append((clean(status.hostname, 128), clean(status.exchange_name, 64)))
        return found


@dataclass(frozen=True, slots=True)
class Shown:
    """The exchange's status key as one read found it."""

    exists: bool
    status: InstanceStatus | None

    def words(self) -> str:
        """`is active on lm-c`, `is offline (no status key)`, `has an unreadable status key`."""
        if not self.exists:
            return "is offline (no status key)"
        if self.status is None:
            return "has an unreadable status key"
        state = self.status.connection_state.value
        return f"is {state} on {clean(self.status.hostname, 128) or 'an unnamed host'}"


@dataclass(frozen=True, slots=True)
class Target:
    """What a bridge command is meant to do to which exchange, and how many
    servers it reached."""

    command: CommandType
    exchange_id: int
    name: str
    identity_sub: str
    reached: int

    def effect(self, shown: Shown) -> str:
        """`done` when the key shows the command took effect, `progress` while
        it is on its way (a Livermore holder starting), else `none`."""
        status = shown.status
        if self.command is CommandType.STOP:
            if not shown.exists:
                return "done"
            if status is None:
                return "none"
            return "none" if status.connection_state is ConnectionState.ACTIVE else "done"
        if (
            status is None
            or status.instance_id is not None
            or status.exchange_id != self.exchange_id
        ):
            return "none"
        if status.connection_state in _UP:
            return "done"
        return "progress" if status.connection_state is ConnectionState.STARTING else "none"

    def succeeded(
        self, correlation_id: str, acked: bool, shown: Shown, finals: list[CommandReply]
    ) -> CommandOutcome:
        """Success, worded from the key; the replies that say otherwise listed."""
        contrary = [reply for reply in finals if not _agrees(reply)]
        note = f"; other answers: {_answers(contrary)}" if contrary else ""
        return CommandOutcome(
            correlation_id, acked, ReplyStatus.SUCCESS, f"{self.name} {shown.words()}{note}", None
        )


def _agrees(reply: CommandReply) -> bool:
    """A plain success: neither an error nor a no-op dressed as success."""
    status = str((reply.data or {}).get("status", ""))
    return reply.status is ReplyStatus.SUCCESS and not status.startswith("already_")


def _answers(replies: list[CommandReply]) -> str:
    """The replies as `error "x", success (already_started)`."""
    parts = []
    for reply in replies:
        status = reply.status.value if reply.status else "?"
        data_status = clean((reply.data or {}).get("status"), 40)
        detail = clean(reply.message, 200)
        part = status + (f" ({data_status})" if data_status else "")
        parts.append(part + (f' "{detail}"' if detail else ""))
    return ", ".join(parts)


def _denied_or(exc: ResponseError, command: str, channel: str) -> Exception:
    """What to raise for Redis's refusal of `command` on `channel`: the
    `AccessDenied` naming both when the user lacks the right (never left to
    the caller, which would name the command it meant to send instead), else
    the refusal as it came."""
    return access_denied(exc, command, channel) if is_acl_denial(exc) else exc


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
