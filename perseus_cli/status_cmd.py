"""`perseus status`: every known exchange in one table (or JSON for scripts).

Every word and tone of a row (an instance's state, `unreadable`, `ready`,
`offline`, the heartbeat's age, the notes) is the presenter's
`status_line` (`perseus_core.present`), the same one the dashboard's cards
and table ask, so the two never disagree; this module only lays the line
out as table cells. Every string read from Redis is cleaned by the
presenter before it reaches here.
"""

from __future__ import annotations

import click

from perseus_cli.common import load_settings, open_redis, run_read
from perseus_cli.options import MAX_EXCHANGE_ID, json_option, redis_url_option
from perseus_cli.output import Cell, echo_json, print_table, styled
from perseus_core.present import StatusLine, Timing, exchange_json, status_line
from perseus_core.store.network import FleetReader
from perseus_core.wire.errors import PerseusError
from perseus_core.wire.timeutil import system_clock
from perseus_tui.heap import collector_paused

STATUS_HEADERS = ("ID", "NAME", "STATE", "HOST", "IP", "HEARTBEAT", "UPTIME", "INFO")


def status_row(line: StatusLine) -> list[Cell]:
    """The presenter's status line as one table row, in `STATUS_HEADERS` order:
    the state and the heartbeat in their tones' terminal styles, the notes
    joined by `; `."""
    return [
        str(line.exchange_id),
        line.name,
        styled(line.state.text, line.state.tone),
        line.host,
        line.ip,
        styled(line.heartbeat.text, line.heartbeat.tone),
        line.uptime,
        "; ".join(line.info),
    ]


@click.command("status")
@json_option
@click.option(
    "--exchange-id",
    type=click.IntRange(0, MAX_EXCHANGE_ID),
    default=None,
    metavar="ID",
    help="Only this exchange.",
)
@redis_url_option
def status_cmd(as_json: bool, exchange_id: int | None, redis_url: str | None) -> None:
    """Show every known exchange: state, host, IP, heartbeat age and uptime.

    Exchanges whose status key is missing are offline; for those the host
    and IP come from their activity stream. One whose agent is running
    (ready to start it) shows as `ready`, with the agent's host.
    """
    settings = load_settings(redis_url)

    async def body() -> None:
        problems: tuple[str, ...] = ()
        async with open_redis(settings) as redis:
            reader = FleetReader(redis)
            if exchange_id is not None:
                view = await reader.exchange(exchange_id)
                known = view.in_catalog or view.online or view.agents or view.last_known
                if not (known or view.error):  # an unreadable key is shown, not "no exchange"
                    raise PerseusError(
                        f"no exchange {exchange_id}: not in the catalog, not online,"
                        " no agent, no activity"
                    )
                views = [view]
                now = system_clock()
            else:
                with collector_paused():  # 10,000 exchanges: a quarter of the read otherwise
                    snapshot = await reader.snapshot()
                views = list(snapshot.exchanges)
                now = snapshot.taken_at
                problems = snapshot.problems  # also warned about on stderr
        timing = Timing.from_settings(settings)  # holders are judged by their own timing
        if as_json:
            data: dict[str, object] = {"instances": [exchange_json(v, now, timing) for v in views]}
            if problems:
                data["problems"] = list(problems)
            echo_json(data)
        elif not views:
            click.echo("no exchanges known: add one with `perseus catalog add ID NAME`")
        else:
            rows = [status_row(status_line(view, now, timing)) for view in views]
            print_table(STATUS_HEADERS, rows)

    run_read(settings, body)
