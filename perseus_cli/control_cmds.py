"""`perseus start|stop|ping ID`: steer one exchange's agent from a shell or a script.

Each verb sends one command and prints what comes back, a line per step:
`sent ...`, `ack: ...`, then the result. Exit codes are for scripts:
0 success, 1 an error reply (its message on stderr) or no result in time,
3 Redis unreachable, 4 no agent acknowledged the command.
"""

from __future__ import annotations

import getpass
import socket
from typing import Any

import click
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from perseus_cli.common import load_settings, run
from perseus_cli.options import EXIT_ERROR, EXIT_NO_AGENT, fail, redis_url_option
from perseus_core.plumbing.connection import connect
from perseus_core.store.control import CommandOutcome, ControlClient, NoAgentAnswered
from perseus_core.wire.models import Command, CommandReply, CommandType, ReplyStatus
from perseus_core.wire.settings import Settings
from perseus_core.wire.text import clean

EXIT_INTERRUPTED = 130

_HELP = {
    CommandType.START: "Claim the slot and bring the exchange up (idle -> active).",
    CommandType.STOP: "Bring the exchange down and release its slot (active -> idle).",
    CommandType.PING: "Ask the agent for its current state; changes nothing.",
}


def default_operator() -> str:
    """`user@host`: who sent a command, as the audit trail records it."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no $USER (some containers)
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def _seconds_to_ms(value: float | None) -> int | None:
    return None if value is None else max(1, round(value * 1000))


def _print_reply(label: str, message: str | None, data: dict[str, Any] | None) -> None:
    click.echo(f"{label}: {clean(message)}" if message else label)
    for key, value in (data or {}).items():
        click.echo(f"  {clean(key, 40)}: {clean('-' if value is None else value)}")


async def _send(
    settings: Settings,
    kind: CommandType,
    exchange_id: int,
    operator: str,
    ack_timeout_ms: int | None,
    result_timeout_ms: int | None,
) -> CommandOutcome:
    # No client-level retries: a command append must not be repeated blindly,
    # and an unreachable Redis should be reported at once, not after backoff.
    redis = connect(settings, retry=Retry(NoBackoff(), 0))
    try:

        def on_sent(command: Command) -> None:
            click.echo(
                f"sent {command.type} to exchange {exchange_id} "
                f"(correlation id {command.correlation_id})"
            )

        def on_ack(reply: CommandReply) -> None:
            _print_reply("ack", reply.message, reply.data)

        return await ControlClient(redis, settings).send(
            exchange_id,
            kind,
            operator=operator,
            ack_timeout_ms=ack_timeout_ms,
            result_timeout_ms=result_timeout_ms,
            on_sent=on_sent,
            on_ack=on_ack,
        )
    finally:
        await redis.aclose()


def _control_command(kind: CommandType) -> click.Command:
    @click.command(name=kind.value, help=_HELP[kind])
    @click.argument("exchange_id", metavar="ID", type=click.IntRange(min=0))
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
        exchange_id: int,
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
                    exchange_id,
                    who,
                    _seconds_to_ms(ack_timeout),
                    _seconds_to_ms(timeout),
                ),
            )
        except NoAgentAnswered as exc:
            fail(str(exc), EXIT_NO_AGENT)
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
