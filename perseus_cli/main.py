"""Entry point of the `perseus` console script.

Each verb lives in its own module, imported only when that verb runs: a
`perseus status` in a script, or `perseus --version`, must not pay for
Textual, httpx or the agent. `perseus` with no verb opens the dashboard.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import dataclass

import click

from perseus_cli.groups import SuggestingGroup
from perseus_cli.options import EXIT_ERROR, fail, quiet_closed_stdout, redis_url_option
from perseus_core import __version__


@dataclass(frozen=True, slots=True)
class Verb:
    """Where a verb's click command lives, and its help line for `perseus --help`."""

    module: str
    attribute: str
    summary: str
    """The first paragraph of the command's help (a test keeps the two equal)."""


VERBS: dict[str, Verb] = {
    "agent": Verb(
        "perseus_cli.agent_cmd",
        "agent",
        "Run the agent of one exchange slot, or of every slot of a host file.",
    ),
    "catalog": Verb(
        "perseus_cli.catalog_cmd",
        "catalog_group",
        "List and edit the known exchanges (the `perseus:exchanges` hash).",
    ),
    "demo": Verb(
        "perseus_cli.demo_cmd",
        "demo",
        "Try Perseus on a throw-away Redis with a fleet of real agents.",
    ),
    "doctor": Verb(
        "perseus_cli.doctor_cmd",
        "doctor",
        "Check a Redis target the way Perseus will use it.",
    ),
    "exporter": Verb(
        "perseus_cli.exporter_cmd",
        "exporter",
        "Serve the fleet's metrics for Prometheus on /metrics.",
    ),
    "log": Verb(
        "perseus_cli.log_cmd",
        "log_cmd",
        "Show the activity log, newest first, all exchanges merged by default.",
    ),
    "notify": Verb(
        "perseus_cli.notify_cmd",
        "notify",
        "Post a webhook message when an instance changes state, reports an error,"
        " goes offline (its key expired without a stop) or comes back.",
    ),
    "output": Verb(
        "perseus_cli.output_cmd",
        "output_cmd",
        "Show the last lines an exchange's child wrote to stdout and stderr.",
    ),
    "ping": Verb(
        "perseus_cli.control_cmds",
        "ping",
        "Ask the agent for its current state; changes nothing.",
    ),
    "start": Verb(
        "perseus_cli.control_cmds",
        "start",
        "Claim the slot and bring the exchange up (idle -> active).",
    ),
    "status": Verb(
        "perseus_cli.status_cmd",
        "status_cmd",
        "Show every known exchange: state, host, IP, heartbeat age and uptime.",
    ),
    "stop": Verb(
        "perseus_cli.control_cmds",
        "stop",
        "Bring the exchange down and release its slot (active -> idle).",
    ),
    "tui": Verb(
        "perseus_cli.tui_cmd",
        "tui",
        "Open the dashboard: cards (or a table) per exchange, the live activity feed,"
        " start/stop keys. Press ? inside for every key.",
    ),
}
"""Every verb, by name."""


class LazyGroup(SuggestingGroup):
    """A group whose verbs are imported on demand, and whose `--help` lists
    them from `VERBS` without importing any (a mistyped verb gets the closest
    ones named, still without importing any)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(VERBS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        verb = VERBS.get(cmd_name)
        if verb is None:
            return None
        command = getattr(importlib.import_module(verb.module), verb.attribute)
        assert isinstance(command, click.Command)
        return command

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # Shortened exactly as click shortens a command's own help, but from
        # the summary: listing the verbs imports none of them.
        names = self.list_commands(ctx)
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = [
            (name, click.Command(name, help=VERBS[name].summary).get_short_help_str(limit))
            for name in names
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(
    cls=LazyGroup,
    invoke_without_command=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, "--version", prog_name="perseus")
@redis_url_option
@click.option(
    "--refresh",
    type=click.FloatRange(min=0.1),
    default=None,
    metavar="SECONDS",
    help="Dashboard: re-read every status this often (default 5).",
)
@click.option("--read-only", is_flag=True, help="Dashboard: disable start/stop.")
@click.pass_context
def cli(ctx: click.Context, redis_url: str | None, refresh: float | None, read_only: bool) -> None:
    """Perseus: watch and steer a fleet of service instances through Redis.

    With no command, opens the dashboard (same as `perseus tui`); the options
    above apply to it.
    """
    if ctx.invoked_subcommand is None:
        tui = cli.get_command(ctx, "tui")
        assert tui is not None
        ctx.invoke(tui, redis_url=redis_url, refresh=refresh, read_only=read_only)


def main() -> None:
    """Console-script entry point.

    Output still buffered when the command ends is flushed here, so a reader
    that closed our stdout (`perseus status | head -1`) ends the command
    quietly (exit 0) instead of with the interpreter's complaint.

    Known errors are turned into their own lines where they happen
    (`perseus_cli.failures`); whatever still reaches this point is a bug, and
    a person gets one line naming it (exit 1) instead of a traceback, unless
    PERSEUS_TRACEBACK=1 asks for the traceback.
    """
    try:
        try:
            cli(prog_name="perseus")
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        quiet_closed_stdout()
    except Exception as exc:  # the last resort for a bug; see the docstring
        if os.environ.get("PERSEUS_TRACEBACK"):
            raise
        from perseus_cli.failures import unexpected  # only on this path

        fail(unexpected(exc), EXIT_ERROR)
