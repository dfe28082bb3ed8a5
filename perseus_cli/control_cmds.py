"""`perseus start|stop|ping EXCHANGE`: steer one exchange's agent from a shell or a script.

The exchange is named by its id (`perseus start 1`) or by its name
(`perseus start coinbase`, any case; else its display name), looked up in
the catalog and among the exchanges online or with history: a name no
exchange has, or that several have, is refused (exit 1) saying so.

Each verb first reads the exchange and refuses at once a command that
cannot succeed (no such exchange, no agent, an exchange held by another writer,
nothing to stop: `perseus_core.present.commands.refusal`, which the dashboard
uses too). Otherwise it sends one command and prints what comes back, a line
per step: `sent ...`, `ack: ...`, then the result. Exit codes are for scripts:
0 success; 1 refused, an error reply (its message on stderr), no result in
time, or a key Redis refuses to write or read (of the wrong type, out of
memory: the line names the command and the key); 3 Redis unusable
(unreachable, or this user may not write the command or read its outcome);
4 no agent acknowledged the command (or no Livermore server listens for the
owner identity of an exchange steered over Livermore's channel); 5 sent,
outcome unknown (the connection to Redis was lost after the command was
written, or Redis is out of memory so that no agent could take it: it may
run, at most once; look before sending it again).

For an exchange steered over Livermore's channel, success is what the
exchange's status key shows (a `start` reaching warming or active, a `stop`
leaving active), not what a server replied; a stop that several Livermore
servers would hear is refused (exit 1): any one of them could take it.
"""

from __future__ import annotations

import difflib
from typing import Any

import click
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoPermissionError, ResponseError

from perseus_cli.common import load_settings, run
from perseus_cli.options import (
    EXIT_ERROR,
    EXIT_NO_AGENT,
    EXIT_UNREACHABLE,
    MAX_EXCHANGE_ID,
    fail,
    redis_url_option,
)
from perseus_core.plumbing.connection import (
    access_denied,
    connect,
    describe_redis_error,
    is_acl_denial,
)
from perseus_core.plumbing.errors import TRANSIENT_ERRORS
from perseus_core.plumbing.topology import RedisClient
from perseus_core.present.commands import cannot, refusal, refused_line
from perseus_core.store.control.livermore import NoLivermoreListener
from perseus_core.store.control.records import (
    CommandNotSent,
    CommandOutcome,
    NoAgentAnswered,
    OutcomeUnknown,
    RedisOutOfMemory,
    refusal_reason,
)
from perseus_core.store.control.sender import ControlClient, Via, default_operator
from perseus_core.store.network import FleetReader
from perseus_core.wire import keys
from perseus_core.wire.errors import AccessDenied, CommandRejected, RedisUnavailable
from perseus_core.wire.models import Command, CommandReply, CommandType, ReplyStatus
from perseus_core.wire.settings import Settings
from perseus_core.wire.text import clean

EXIT_INTERRUPTED = 130
EXIT_OUTCOME_UNKNOWN = 5
"""Sent, then the connection to Redis was lost: the command may have run (at most once)."""

_HELP = {
    CommandType.START: "Claim the slot and bring the exchange up (idle -> active).",
    CommandType.STOP: "Bring the exchange down and release its slot (active -> idle).",
    CommandType.PING: "Ask the agent for its current state; changes nothing.",
}
_EXCHANGE_HELP = "EXCHANGE is its id (1) or its name (coinbase, any case)."


def exchange_argument(_ctx: click.Context, _param: click.Parameter, value: str) -> int | str:
    """EXCHANGE as given: an id, or a name to look up (`resolve_exchange`)."""
    text = value.strip()
    if text.isascii() and text.isdecimal():
        if len(text) > 18 or int(text) > MAX_EXCHANGE_ID:
            raise click.BadParameter(f"{text} is not an exchange id (at most 18 digits)")
        return int(text)
    if not text or text.startswith("-") or clean(text, 256) != text:
        raise click.BadParameter(
            f"{clean(text, 64)!r} is neither an exchange id (1) nor a name (coinbase)"
        )
    return text


async def resolve_exchange(redis: RedisClient, exchange: int | str) -> int:
    """The id of the exchange `exchange` names: an id as it is; a name by the
    exchange name (any case) of a catalog entry or of an exchange online or
    with history, else by a display name.

    Raises:
        CommandRejected: no exchange has that name, or several have.
    """
    if isinstance(exchange, int):
        return exchange
    reader = FleetReader(redis)
    known: dict[int, tuple[str, str]] = {
        entry.id: (entry.name, entry.display_name) for entry in await reader.catalog()
    }
    snapshot = await reader.snapshot(last_known=False, agents=False)
    for view in snapshot.exchanges:
        if view.exchange_id >= 0 and view.exchange_name:
            known.setdefault(view.exchange_id, (view.exchange_name, view.display_name))
    wanted = exchange.lower()
    ids = sorted(i for i, (name, _) in known.items() if name.lower() == wanted)
    if not ids:
        ids = sorted(i for i, (_, display) in known.items() if display.lower() == wanted)
    if len(ids) == 1:
        return ids[0]
    shown = clean(exchange, 64)
    if ids:
        which = ", ".join(f"{i} ({clean(known[i][0], 64)})" for i in ids)
        raise CommandRejected(f"{shown!r} names {len(ids)} exchanges: {which}; give the id")
    names = sorted({name for name, _ in known.values()})
    close = difflib.get_close_matches(exchange, names, n=3)
    hint = f" (did you mean {' or '.join(repr(clean(n, 64)) for n in close)}?)" if close else ""
    raise CommandRejected(
        f"no exchange named {shown!r} in the catalog, online or with history{hint}: "
        "give its id, or a name `perseus status` lists"
    )


def _seconds_to_ms(value: float | None) -> int | None:
    return None if value is None else max(1, round(value * 1000))


def _print_reply(label: str, message: str | None, data: dict[str, Any] | None) -> None:
    click.echo(f"{label}: {clean(message)}" if message else label)
    for key, value in (data or {}).items():
        click.echo(f"  {clean(key, 40)}: {clean('-' if value is None else value)}")


async def _refuse_what_cannot_succeed(
    redis: RedisClient, settings: Settings, exchange_id: int, kind: CommandType
) -> None:
    """Raise CommandRejected when the exchange as it reads now says the command
    cannot succeed. A user who may send commands but not read the exchange
    skips this check: the agent then has the only word, as before."""
    try:
        view = await FleetReader(redis).exchange(exchange_id)
    except NoPermissionError:
        return
    reason = refusal(view, kind)
    if reason is not None:
        raise CommandRejected(cannot(kind.value, exchange_id, reason))


async def _send(
    settings: Settings,
    kind: CommandType,
    exchange: int | str,
    operator: str,
    ack_timeout_ms: int | None,
    result_timeout_ms: int | None,
) -> CommandOutcome:
    # No client-level retries: a command append must not be repeated blindly,
    # and an unreachable Redis should be reported at once, not after backoff.
    redis = connect(settings, retry=Retry(NoBackoff(), 0))
    sent: list[Command] = []
    client = ControlClient(redis, settings)
    exchange_id = exchange if isinstance(exchange, int) else -1
    try:
        exchange_id = await resolve_exchange(redis, exchange)
        route = await client.route(exchange_id, kind)
        if route.via is Via.NONE:
            raise CommandRejected(refused_line(route, kind.value))
        await _refuse_what_cannot_succeed(redis, settings, exchange_id, kind)

        def on_sent(command: Command) -> None:
            sent.append(command)
            via = (
                f" via {keys.livermore_commands_channel(route.identity_sub or '')}"
                if route.via is Via.LIVERMORE
                else ""
            )
            click.echo(
                f"sent {command.type} to exchange {exchange_id}{via} "
                f"(correlation id {command.correlation_id})"
            )

        def on_ack(reply: CommandReply) -> None:
            _print_reply("ack", reply.message, reply.data)

        return await client.send(
            exchange_id,
            kind,
            route=route,
            operator=operator,
            ack_timeout_ms=ack_timeout_ms,
            result_timeout_ms=result_timeout_ms,
            on_sent=on_sent,
            on_ack=on_ack,
        )
    except TRANSIENT_ERRORS as exc:
        if sent:
            raise
        # Reading the route or the exchange failed: nothing went out.
        raise RedisUnavailable(
            f"{describe_redis_error(settings, exc)} (the command was not sent)"
        ) from exc
    except (CommandNotSent, ResponseError) as exc:
        raise _named_refusal(exc, exchange_id, sent) from None
    finally:
        await redis.aclose()


def _named_refusal(
    exc: CommandNotSent | ResponseError, exchange_id: int, sent: list[Command]
) -> Exception:
    """What to raise for a refusal from Redis while sending: one line naming
    the command and the key (`AccessDenied` for a missing right, exit 3)."""
    if isinstance(exc, CommandNotSent):
        cause = exc.__cause__
        if isinstance(cause, ResponseError) and is_acl_denial(cause):  # denied in the script
            return access_denied(cause, "XADD", exc.key)
        return exc
    # Which right is missing follows from how far the command got: not sent,
    # the command stream; sent, the list its replies arrive in.
    if not sent:
        if is_acl_denial(exc):
            return access_denied(exc, "XADD", keys.commands_key(exchange_id))
        return exc
    replies = keys.replies_key(sent[0].correlation_id)
    if is_acl_denial(exc):
        denied = access_denied(exc, "BLPOP", replies)
        return OutcomeUnreadable(f"the command was sent, but its outcome cannot be read: {denied}")
    return CommandRejected(
        f"the command was sent, but its outcome cannot be read: Redis refused BLPOP "
        f"{replies}: {refusal_reason(exc)}; correlation id {sent[0].correlation_id}"
    )


class OutcomeUnreadable(AccessDenied):
    """The command went out, but this user may not read the replies to it."""


def _control_command(kind: CommandType) -> click.Command:
    @click.command(name=kind.value, help=f"{_HELP[kind]}\n\n{_EXCHANGE_HELP}")
    @click.argument("exchange", metavar="EXCHANGE", callback=exchange_argument)
    @click.option(
        "--timeout",
        "timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        metavar="SECONDS",
        help="Result wait after the ack (default 60; $PERSEUS_RESULT_TIMEOUT_MS).",
    )
    @click.option(
        "--ack-timeout",
        "ack_timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        metavar="SECONDS",
        help="Wait for an agent's ack (default 5; $PERSEUS_ACK_TIMEOUT_MS).",
    )
    @click.option(
        "--operator",
        default=None,
        metavar="NAME",
        help="Who is sending, for the audit trail (default: user@host).",
    )
    @redis_url_option
    def command(
        exchange: int | str,
        timeout: float | None,
        ack_timeout: float | None,
        operator: str | None,
        redis_url: str | None,
    ) -> None:
        settings = load_settings(redis_url)
        who = clean(operator, 256) if operator else default_operator()
        try:
            outcome = run(
                settings,
                lambda: _send(
                    settings,
                    kind,
                    exchange,
                    who,
                    _seconds_to_ms(ack_timeout),
                    _seconds_to_ms(timeout),
                ),
            )
        except (NoAgentAnswered, NoLivermoreListener) as exc:
            fail(str(exc), EXIT_NO_AGENT)
        except (OutcomeUnknown, RedisOutOfMemory) as exc:
            fail(clean(str(exc), 600), EXIT_OUTCOME_UNKNOWN)
        except AccessDenied as exc:
            fail(clean(str(exc), 600), EXIT_UNREACHABLE)
        except (CommandRejected, CommandNotSent) as exc:
            fail(clean(str(exc), 600), EXIT_ERROR)
        except KeyboardInterrupt:
            fail("interrupted while waiting; the command may still run", EXIT_INTERRUPTED)
        if outcome.status is ReplyStatus.SUCCESS:
            _print_reply("success", outcome.message, outcome.data)
            return
        fail(clean(outcome.message or "the command failed", 2_000), EXIT_ERROR)

    return command


start = _control_command(CommandType.START)
stop = _control_command(CommandType.STOP)
ping = _control_command(CommandType.PING)
