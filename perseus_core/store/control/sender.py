"""The sender's side of the control channel: which channel can carry a command
to an exchange (a Perseus agent's command stream, a Livermore server's pub/sub
channel, or none), sending it there and waiting for its ack and result."""

from __future__ import annotations

import asyncio
import getpass
import logging
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, cast

from redis.exceptions import NoPermissionError, ResponseError

from perseus_core.plumbing.connection import connect, describe_redis_error
from perseus_core.plumbing.errors import REDIS_ERRORS, TRANSIENT_ERRORS
from perseus_core.plumbing.memory import memory_use
from perseus_core.plumbing.topology import RedisClient, checkout
from perseus_core.store.activity import ActivityLog
from perseus_core.store.control.livermore import LivermoreBridge, NoLivermoreListener
from perseus_core.store.control.records import (
    COMMAND_FIELD,
    MAX_MESSAGE_CHARS,
    MAX_OPERATOR_CHARS,
    NO_RETRY,
    RETRY_BACKOFF,
    CommandNotSent,
    CommandOutcome,
    NoAgentAnswered,
    OutcomeUnknown,
    RedisOutOfMemory,
    now_ms,
    parse_or_none,
)
from perseus_core.store.control.scripts import APPEND_COMMAND_LUA
from perseus_core.store.wanted import Want, write_wanted
from perseus_core.wire import keys
from perseus_core.wire.errors import (
    CommandRejected,
    PayloadError,
    PerseusError,
    RedisUnavailable,
)
from perseus_core.wire.models import (
    MAX_PAYLOAD_BYTES,
    CatalogEntry,
    Command,
    CommandEntry,
    CommandReply,
    CommandType,
    InstanceStatus,
    ReplyStatus,
)
from perseus_core.wire.settings import Settings
from perseus_core.wire.text import clean
from perseus_core.wire.timeutil import Clock, format_ts, system_clock

log = logging.getLogger(__name__)


class Via(StrEnum):
    """The channel a command goes over."""

    PERSEUS = "perseus"
    LIVERMORE = "livermore"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Route:
    """Where a command for one exchange goes, and what the operator should know first.

    Attributes:
        via: the channel; `NONE` means refused: the exchange is held by
            `holder`, and its catalog entry names no Livermore owner to ask
            (`perseus_core.present.commands` says so in words).
        exchange_id: the exchange.
        exchange_name: its name, from the holder's key or the catalog ("" if unknown).
        holder: the hostname of a holder that is not a Perseus agent, else None.
        identity_sub: the Livermore owner identity from the catalog, if any.
        listeners: for `via=LIVERMORE`, how many Livermore servers are
            subscribed to the owner's channel (each would run the command).
    """

    via: Via
    exchange_id: int
    exchange_name: str = ""
    holder: str | None = None
    identity_sub: str | None = None
    listeners: int = 0


async def read_route(redis: RedisClient, exchange_id: int, command: str) -> Route:
    """Read the exchange's holder, its agents and its catalog entry, and `decide`.

    Three single-key reads, one round trip. An unreadable or wrong-type key
    reads as unknown (a status key that exists but cannot be parsed is a
    holder of unknown kind: Perseus's own channel, as before).
    """
    if command not in (CommandType.START, CommandType.STOP):
        return Route(Via.PERSEUS, exchange_id)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(keys.status_key(exchange_id))
        pipe.hget(keys.CATALOG_KEY, str(exchange_id))
        pipe.zcard(keys.agents_key(exchange_id))
        raw_status, raw_entry, agents = await pipe.execute(raise_on_error=False)
    return decide(
        exchange_id,
        command,
        holder=parse_or_none(InstanceStatus, raw_status),
        occupied=raw_status is not None and not isinstance(raw_status, Exception),
        entry=parse_or_none(CatalogEntry, raw_entry),
        agents=agents if isinstance(agents, int) else 0,
    )


def decide(
    exchange_id: int,
    command: str,
    *,
    holder: InstanceStatus | None,
    occupied: bool,
    entry: CatalogEntry | None,
    agents: int,
) -> Route:
    """The one decision of which channel carries a command, for every surface
    (the CLI, the dashboard and their early refusals say the same thing).

    A Perseus holder, or an agent waiting idle, is reached over Perseus's own
    command stream. An exchange held by another writer (a Livermore server: no
    `instanceId`), or vacant with no agent of ours, is reached over
    Livermore's channel when the catalog entry names the Livermore owner
    identity; a foreign holder without one is refused (`Via.NONE`). Anything
    else (`ping`, an unreadable key) goes to Perseus.

    Args:
        exchange_id: the exchange.
        command: the command type.
        holder: the valid status payload of the exchange, if any.
        occupied: the status key exists (valid or not).
        entry: the valid catalog entry, if any.
        agents: how many Perseus agents announce themselves for the exchange.
    """
    if command not in (CommandType.START, CommandType.STOP):
        return Route(Via.PERSEUS, exchange_id)
    sub = entry.livermore_sub if entry is not None else None
    name = holder.exchange_name if holder is not None else (entry.name if entry else "")
    if holder is not None and holder.instance_id is None:
        host = clean(holder.hostname, 128) or "an unnamed host"
        if sub:
            return Route(Via.LIVERMORE, exchange_id, name, host, sub)
        return Route(Via.NONE, exchange_id, name, host)
    if not occupied and sub and agents == 0:  # vacant, and no agent of ours waits
        return Route(Via.LIVERMORE, exchange_id, name, None, sub)
    return Route(Via.PERSEUS, exchange_id, name)


class NotSteerable(PerseusError):
    """Nothing Perseus can reach would run the command: `route` (its `via` is
    `NONE`) names the exchange and its holder, for the surface to say why."""

    def __init__(self, route: Route, command: str) -> None:
        self.route = route
        self.command = command
        super().__init__(f"no channel can carry {command} to exchange {route.exchange_id}")


class StopNotAimed(CommandRejected):
    """A stop over Livermore's channel that several servers would hear.

    Livermore's `stop` names no exchange, and the servers of one identity share
    one command queue, so any one of them takes it: not necessarily the one
    running this exchange (docs/wire-format.md 4.1). It is never sent; there is
    no override.
    """

    def __init__(self, route: Route) -> None:
        self.route = route
        sub = clean(route.identity_sub, 128)
        name = clean(route.exchange_name, 64) or f"exchange {route.exchange_id}"
        super().__init__(
            f"cannot stop exchange {route.exchange_id}: {route.listeners} Livermore servers "
            f"listen for {sub}, and Livermore's stop names no exchange, so any one of them "
            f"would take it, not necessarily the one running {name}; stop it from that "
            "server, or give each server its own identity"
        )


async def _xadd_once(
    redis: RedisClient, settings: Settings, key: str, fields: dict[str, str], correlation_id: str
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

    Raises:
        RedisUnavailable: Redis could not be reached (the command was not sent).
        OutcomeUnknown: the connection failed after the command was sent.
        CommandNotSent: Redis refused the append (its `__cause__` says why).
        NoPermissionError: this user may not append it.
    """
    args = ["EVAL", APPEND_COMMAND_LUA, "1", key, str(settings.command_expiry_ms)]
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
        except NoPermissionError:
            raise  # the surfaces name the missing right themselves
        except ResponseError as exc:  # a stream of the wrong type, out of memory
            raise CommandNotSent(key, exc) from exc
        except TRANSIENT_ERRORS as exc:
            await conn.disconnect()
            raise OutcomeUnknown(
                correlation_id,
                f"{describe_redis_error(settings, exc)}; the command may have been queued "
                "(it runs at most once)",
            ) from exc
    except BaseException:
        await conn.disconnect()
        raise
    finally:
        await release(conn)
    return response if isinstance(response, str) else str(response)


def default_operator() -> str:
    """`user@host`: who sends a command from this process when nobody says,
    as the command's `operator` and its audit entry record it (the CLI and
    the dashboard alike)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no $USER (some containers)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


class ControlClient:
    """Sends commands to an exchange over the channel that can carry them (its
    agent's command stream, or a Livermore server's channel: see `decide`) and
    waits for the replies.

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
        command was sent, it may or may not be queued: OutcomeUnknown says
        so. Re-submitting the same command with the same `correlation_id` is
        then safe, because a server runs a correlation id at most once and
        answers a repeat with the first outcome.

        Raises:
            RedisUnavailable: Redis could not be reached (the command was not sent).
            OutcomeUnknown: the connection failed after the command was sent.
            CommandNotSent: Redis refused to append it (wrong type, out of memory).
            NoPermissionError: this user may not append it.
            ValueError: the command is too large to be accepted by a server, or
                its operator name too long.
        """
        if len(operator) > MAX_OPERATOR_CHARS:
            raise ValueError(f"operator name is over the {MAX_OPERATOR_CHARS} character limit")
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
            self._redis,
            self._settings,
            keys.commands_key(exchange_id),
            {COMMAND_FIELD: raw},
            cmd.correlation_id,
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
            RedisOutOfMemory: nothing answered, and Redis is out of memory: no
                agent could take the command (it may run once memory is freed).
            OutcomeUnknown: the connection to Redis was lost during the wait and
                no outcome came by the deadline: the command was sent, what
                came of it is unknown.
        """
        ack_ms = ack_timeout_ms or self._settings.ack_timeout_ms
        result_ms = result_timeout_ms or self._settings.result_timeout_ms
        key = keys.replies_key(correlation_id)
        chunk_s = max(self._settings.block_ms, 1_000) / 1000
        listener = connect(self._settings, socket_timeout=chunk_s + 5, retry=NO_RETRY)
        deadline = time.monotonic() + ack_ms / 1000
        acked = False
        failures = 0
        lost: BaseException | None = None  # any outage during the wait: replies may be gone
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                # BLPOP's timeout 0 means "forever": never let it round down to 0.
                block = max(0.01, round(min(remaining, chunk_s), 3))
                try:
                    item = cast(tuple[str, str] | None, await listener.blpop([key], block))
                except TRANSIENT_ERRORS as exc:
                    lost = exc
                    await asyncio.sleep(min(RETRY_BACKOFF.compute(failures), max(0.0, remaining)))
                    failures += 1
                    continue
                failures = 0
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
        if lost is not None:
            # The command was sent; Redis may have lost it, or its replies, with
            # the connection (a restart without data), or may still be down.
            raise OutcomeUnknown(correlation_id, describe_redis_error(self._settings, lost))
        if not acked:
            memory = await self._memory_full()
            if memory is not None:
                raise RedisOutOfMemory(correlation_id, ack_ms, memory)
            raise NoAgentAnswered(exchange_id, ack_ms, correlation_id)
        return CommandOutcome.no_result(correlation_id, result_ms)

    async def _memory_full(self) -> str | None:
        """How Redis is over its `maxmemory`, or None when it is not (or this
        user may not ask: INFO is optional).

        Asked when no agent acknowledged a command, so that an agent refused
        every write is not mistaken for no agent at all: out of memory, the
        command the sender could still append (just below the limit) cannot
        be claimed or answered.
        """
        try:
            info = await self._redis.info("memory")
        except REDIS_ERRORS:
            return None
        use = memory_use(info)
        return use.describe() if use is not None and use.over else None

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
        route: Route | None = None,
    ) -> CommandOutcome:
        """Send a command over the channel that can carry it and wait for its
        ack and result.

        The channel is `route` (see `route`; read now when not given): a
        Perseus agent's command stream (`submit` + `wait`), or a Livermore
        server's pub/sub channel (`LivermoreBridge`, audited here since no
        agent of ours writes that audit).

        A Livermore command's outcome is what the exchange's status key shows,
        not what the first reply said (`LivermoreBridge`).

        Raises:
            NotSteerable: nothing Perseus can reach would run it (at once).
            StopNotAimed: a stop several Livermore servers would hear (at once).
            NoLivermoreListener: no Livermore server listens for the owner (at once).
            NoAgentAnswered: nothing acknowledged within the ack timeout
                (default `settings.ack_timeout_ms`).
            RedisUnavailable: Redis could not be reached.
            AccessDenied: this user may not use Livermore's channel (`PUBSUB
                NUMSUB`, `SUBSCRIBE` or `PUBLISH`, named so; nothing was sent).
        """
        kind = str(command.value if isinstance(command, CommandType) else command)
        if route is None:
            route = await self.route(exchange_id, kind)
        if route.via is Via.NONE:
            raise NotSteerable(route, kind)
        if route.via is Via.LIVERMORE and kind == CommandType.STOP and route.listeners > 1:
            raise StopNotAimed(route)
        if kind in (CommandType.START, CommandType.STOP):
            await self._record_wanted(exchange_id, Want(kind), operator)
        if route.via is Via.LIVERMORE:
            return await self._send_livermore(
                route,
                CommandType(kind),
                operator=operator,
                ack_timeout_ms=ack_timeout_ms,
                result_timeout_ms=result_timeout_ms,
                on_ack=on_ack,
                on_sent=on_sent,
            )
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

    async def _record_wanted(self, exchange_id: int, want: Want, operator: str) -> None:
        """Record the operator's word before sending it (`store.wanted`): a stop
        then holds against every agent that would start the exchange on its
        own, and a start lifts it, whether or not an agent hears the command.

        A record Redis refuses is logged, not raised: the command itself still
        goes out (an agent answers it), only its holding is lost.
        """
        try:
            await write_wanted(self._redis, exchange_id, want, operator, clock=self._clock)
        except REDIS_ERRORS as exc:
            log.warning(
                "%s of exchange %d not recorded in %s (%s): an agent started with"
                " --autostart may act against it",
                want.value,
                exchange_id,
                keys.wanted_key(exchange_id),
                describe_redis_error(self._settings, exc),
            )

    async def route(self, exchange_id: int, command: str) -> Route:
        """Where `command` for `exchange_id` would go, with the number of
        Livermore servers it would reach (a stop reaching several is refused).

        Raises:
            RedisError: Redis could not be read.
            AccessDenied: this user may not count the Livermore listeners
                (`PUBSUB NUMSUB`), named so.
        """
        route = await read_route(self._redis, exchange_id, command)
        if route.via is Via.LIVERMORE and route.identity_sub:
            listeners = await LivermoreBridge(self._redis, self._settings).listeners(
                route.identity_sub
            )
            route = replace(route, listeners=listeners)
        return route

    async def _send_livermore(
        self,
        route: Route,
        command: CommandType,
        *,
        operator: str,
        ack_timeout_ms: int | None,
        result_timeout_ms: int | None,
        on_ack: Callable[[CommandReply], None] | None,
        on_sent: Callable[[Command], None] | None,
    ) -> CommandOutcome:
        """The Livermore leg of `send`, and its audit entry in the Perseus-only stream."""
        sub = route.identity_sub or ""
        bridge = LivermoreBridge(self._redis, self._settings, clock=self._clock)
        sent: list[Command] = []

        def remember(cmd: Command) -> None:
            sent.append(cmd)
            if on_sent is not None:
                on_sent(cmd)

        status, message, published = "error", "", ""
        try:
            outcome, reached = await bridge.send(
                route.exchange_id,
                sub,
                command,
                route.exchange_name,
                ack_timeout_ms=ack_timeout_ms,
                result_timeout_ms=result_timeout_ms,
                on_sent=remember,
                on_ack=on_ack,
            )
            status = outcome.status.value if outcome.status else "no result"
            message = f"{outcome.message or ''} (via {sub}, {reached} server(s))".lstrip()
            return outcome
        except (NoLivermoreListener, NoAgentAnswered) as exc:
            message, published = str(exc), exc.correlation_id
            raise
        finally:
            if sent or message:
                await self._audit_livermore(
                    route, command, operator, status, message, sent, published
                )

    async def _audit_livermore(
        self,
        route: Route,
        command: CommandType,
        operator: str,
        status: str,
        message: str,
        sent: list[Command],
        published: str = "",
    ) -> None:
        # A command nobody heard was still published: `published` is its id.
        entry = CommandEntry(
            command=command.value,
            correlation_id=sent[0].correlation_id if sent else published,
            operator=operator,
            status=status,
            message=message[:MAX_MESSAGE_CHARS],
            timestamp=format_ts(self._clock()),
            exchange_id=str(route.exchange_id),
            exchange_name=route.exchange_name,
            hostname=route.holder or "",
        )
        try:
            await ActivityLog(self._redis, self._settings).append(route.exchange_name, entry)
        except REDIS_ERRORS as exc:
            log.warning(
                "%s: audit entry not written: %s",
                route.exchange_name,
                describe_redis_error(self._settings, exc),
            )
