"""Entry point of the `perseus` console script.

Each verb lives in its own module and registers itself on `cli`; `perseus`
with no verb opens the dashboard.
"""

from __future__ import annotations

import importlib

import click

from perseus_cli.common import redis_url_option
from perseus_core import __version__

# Verb modules, each defining click commands that it adds to `cli` via `register(cli)`.
_VERB_MODULES = (
    "perseus_cli.read_cmds",  # status, log, catalog
    "perseus_cli.control_cmds",  # start, stop, ping
    "perseus_cli.agent_cmd",  # agent
    "perseus_cli.notify_cmd",  # notify
    "perseus_cli.tui_cmd",  # tui (and the default with no verb)
    "perseus_cli.demo_cmd",  # demo
)


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
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
        tui = cli.commands.get("tui")
        if tui is None:
            raise click.UsageError("the dashboard is not available in this build")
        ctx.invoke(tui, redis_url=redis_url, refresh=refresh, read_only=read_only)


def _register_verbs() -> None:
    for name in _VERB_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # verb not built yet
                continue
            raise
        module.register(cli)


_register_verbs()


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="perseus")
