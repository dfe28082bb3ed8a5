"""`perseus output`: the last lines an exchange's child wrote, or followed live.

The lines come from `perseus:output:{id}` (docs/wire-format.md 2.5), which the
exchange's agent writes; every value is cleaned again as read and printed with
`click.echo`, which interprets no markup.
"""

from __future__ import annotations

import json

import click

from perseus_cli.common import load_settings, open_redis, run_read
from perseus_cli.control_cmds import exchange_argument, resolve_exchange
from perseus_cli.follow import follow
from perseus_cli.options import json_option, redis_url_option
from perseus_cli.output import echo_json
from perseus_core.store.network import FleetReader
from perseus_core.store.output import OutputFollower, OutputLine, recent_output
from perseus_core.wire.errors import PerseusError
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import parse_ts_or_none


def output_line(line: OutputLine) -> str:
    """`2026-02-10 22:45:00  stderr   ERROR feed: connection refused`, in local time."""
    moment = parse_ts_or_none(line.at)
    when = moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "????-??-?? ??:??:??"
    return f"{when}  {line.stream:<7}  {line.line}"


async def _follow(settings: Settings, exchange_id: int, after: str, as_json: bool) -> None:
    """Print every new line after `after` until Ctrl-C (or stdout's reader leaves)."""

    def show(line: OutputLine) -> None:
        click.echo(json.dumps(line.to_json()) if as_json else output_line(line))

    await follow(OutputFollower(settings, exchange_id, after), show)


@click.command("output")
@click.argument("exchange", metavar="EXCHANGE", callback=exchange_argument)
@click.option(
    "--lines",
    "-n",
    "count",
    type=click.IntRange(1, 100_000),
    default=50,
    show_default=True,
    metavar="N",
    help="How many of the last lines to show.",
)
@click.option(
    "--follow", "-f", is_flag=True, help="Keep printing new lines as they come, until Ctrl-C."
)
@json_option
@redis_url_option
def output_cmd(
    exchange: int | str, count: int, follow: bool, as_json: bool, redis_url: str | None
) -> None:
    """Show the last lines an exchange's child wrote to stdout and stderr.

    EXCHANGE is its id (1) or its name (coinbase, any case).

    Its agent keeps them in Redis (about 500 lines, for 7 days after the last
    one; none with `perseus agent --no-output`). Each line shows when the
    agent read it and the stream: `stdout`, `stderr`, or `perseus` for the
    agent's own notes (a run starting, lines dropped while Redis was slow).
    `--json` prints {"exchangeId": ID, "lines": [{"id", "stream", "line",
    "at"}, ...]}, oldest first; with `--follow`, one JSON object per line.
    """
    settings = load_settings(redis_url)

    async def body() -> tuple[int, list[OutputLine]]:
        async with open_redis(settings) as redis:
            exchange_id = await resolve_exchange(redis, exchange)
            lines = await recent_output(redis, exchange_id, count)
            if not lines:
                view = await FleetReader(redis).exchange(exchange_id)
                if not (view.in_catalog or view.online or view.agents or view.last_known):
                    raise PerseusError(
                        f"no exchange {exchange_id}: not in the catalog, not online,"
                        " no agent, no activity"
                    )
        return exchange_id, lines

    exchange_id, lines = run_read(settings, body)
    if as_json and not follow:
        echo_json({"exchangeId": exchange_id, "lines": [line.to_json() for line in lines]})
        return
    for line in lines:
        click.echo(json.dumps(line.to_json()) if as_json else output_line(line))
    if not lines and not as_json:
        click.echo(
            f"no output kept for exchange {exchange_id} (its agent runs no child, runs it"
            " with --no-output, or its output expired)",
            err=True,
        )
    if follow:
        after = lines[-1].id if lines else "0-0"
        try:
            run_read(settings, lambda: _follow(settings, exchange_id, after, as_json))
        except KeyboardInterrupt:
            pass  # Ctrl-C is how --follow ends: a normal exit
