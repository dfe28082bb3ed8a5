"""`perseus agent --config FILE`: every exchange slot of a host file in one process."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click
from click.core import ParameterSource

from perseus_cli.agent_log import configure_logging, flush_log
from perseus_cli.options import EXIT_ERROR, EXIT_UNREACHABLE, EXIT_USAGE, fail
from perseus_core.runtime.host import AllSlotsFailed, Host
from perseus_core.runtime.host_config import HostConfigInvalid, load_host_config
from perseus_core.runtime.options import StartupFailed
from perseus_core.runtime.registration import NameContradicted
from perseus_core.wire.settings import Settings

PROCESS_WIDE = frozenset(
    {"config", "verbose", "redis_url", "redis_url_file", "stop_grace", "no_output"}
)
"""The options of `perseus agent` that apply to the process, so to every slot of
a host file alike; every other option describes one slot and belongs in the file."""


def refuse_slot_options(ctx: click.Context) -> None:
    """Exit 2 when an option that describes one slot is given beside --config:
    the file says what each slot runs, and a command-line value that applied to
    all of them, or to none, would only surprise. Any option the verb gains
    later counts as a slot's unless listed in `PROCESS_WIDE`."""
    given = [
        param
        for param in ctx.command.params
        if param.name is not None
        and param.name not in PROCESS_WIDE
        and ctx.get_parameter_source(param.name) is ParameterSource.COMMANDLINE
    ]
    for param in given:
        shown = "COMMAND" if isinstance(param, click.Argument) else param.opts[0]
        click.echo(
            f"perseus: {shown} describes one slot: with --config, set it in the file"
            " ([defaults] for every slot, or in a [[slot]])",
            err=True,
        )
    if given:
        sys.exit(EXIT_USAGE)


def run_host(path: str, settings: Settings, *, verbose: bool) -> NoReturn:
    """Check the host file (every problem on its own line, exit 2), then run its
    slots until a signal; SIGHUP applies the file again."""
    try:
        slots = load_host_config(path)
    except HostConfigInvalid as exc:
        for line in exc.lines():
            click.echo(f"perseus: {line}", err=True)
        sys.exit(EXIT_USAGE)
    configure_logging(verbose)
    host = Host(
        settings, slots, reload=lambda: load_host_config(path), name=Path(path).name or path
    )
    try:
        code = host.run_forever()
    except AllSlotsFailed as exc:
        flush_log()
        causes = list(exc.failures.values())
        if any(isinstance(cause, StartupFailed) for cause in causes):
            fail(str(exc), EXIT_UNREACHABLE)
        if any(isinstance(cause, NameContradicted) for cause in causes):
            fail(str(exc), EXIT_USAGE)
        fail(str(exc), EXIT_ERROR)
    sys.exit(code)
