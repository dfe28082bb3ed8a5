"""`perseus agent`: run one exchange instance slot, steered through Redis."""

from __future__ import annotations

import sys

import click

from perseus_cli.agent_host import refuse_slot_options, run_host
from perseus_cli.agent_log import configure_logging
from perseus_cli.common import load_settings
from perseus_cli.options import (
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    agent_redis_url_option,
    fail,
    password_in,
)
from perseus_core.runtime.agent import Agent, AgentOptions, NameContradicted, StartupFailed
from perseus_core.runtime.options import child_command_problem
from perseus_core.wire.models import validate_exchange_name

ARGV_PASSWORD = (
    "refusing a Redis password on the command line, where every process on this host "
    "can read it (ps, /proc/PID/cmdline), the agent's child included: put the URL in "
    "$PERSEUS_REDIS_URL or in a file given with --redis-url-file PATH (mode 600)"
)


def _exchange_name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:  # --config
        return None
    try:
        return validate_exchange_name(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


@click.command(
    "agent",
    context_settings={"allow_interspersed_args": False},
    epilog=(
        "Example: perseus agent --exchange-id 1 --exchange-name coinbase --warmup 5 "
        "-- ./run-feed --exchange coinbase\n\n"
        "Several slots in one process: perseus agent --config host.toml, a file such as"
        " (docs/host.example.toml has every key):\n\n"
        "\b\n"
        "  [defaults]                  # optional: any slot key, for every slot\n"
        "  warmup_s = 5\n"
        "  [[slot]]                    # one per exchange slot\n"
        "  exchange_id = 1\n"
        '  exchange_name = "coinbase"\n'
        '  command = "./run-feed --exchange coinbase"\n'
        "  [[slot]]\n"
        "  exchange_id = 4\n"
        '  exchange_name = "kraken"\n'
        '  command = ["./run-feed", "--exchange", "kraken"]\n'
        "  autostart = true"
    ),
)
@click.option(
    "--config",
    default=None,
    metavar="FILE",
    help="Run every exchange slot of this TOML file in one process, each its own agent"
    " (a slot's keys: exchange_id, exchange_name, command, warmup_s, symbol_count,"
    " autostart...; example below). Checked before anything starts (exit 2, every"
    " problem with its line). SIGHUP re-reads it:"
    " added slots start, removed ones stop, changed ones restart, the others run on."
    " Replaces --exchange-id, --exchange-name and the other slot options.",
)
@click.option(
    "--exchange-id", type=click.IntRange(min=0), default=None, help="The slot this agent runs."
)
@click.option(
    "--exchange-name",
    default=None,
    callback=_exchange_name,
    help="Exchange name (letters, digits, '.', '_', '-'), e.g. coinbase.",
)
@click.option("--display-name", default=None, help="Name shown in the catalog (default: NAME).")
@click.option(
    "--rename",
    is_flag=True,
    help="When the catalog names this exchange id differently, rename its entry to NAME "
    "(without it the agent refuses to start, exit 2).",
)
@click.option("--autostart", is_flag=True, help="Run `start` at once instead of waiting idle.")
@click.option(
    "--symbols",
    "symbol_count",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="symbolCount reported while active.",
)
@click.option(
    "--warmup",
    type=click.FloatRange(min=0),
    default=2.0,
    show_default=True,
    metavar="SECONDS",
    help="Time in `warming` (the child must stay alive that long) before `active`.",
)
@click.option("--admin-email", default=None, help="Operator identity written in the status.")
@click.option("--admin-name", default=None, help="Operator display name written in the status.")
@click.option(
    "--stop-grace",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="SIGTERM-to-SIGKILL grace for the child (default: $PERSEUS_STOP_GRACE_MS or 10 s).",
)
@click.option(
    "--startup-timeout",
    type=click.FloatRange(min=0),
    default=None,
    metavar="SECONDS",
    help="Give up (exit 3) if Redis is still unreachable after this long (default: keep trying).",
)
@click.option(
    "--pass-env",
    is_flag=True,
    help="Give the child PERSEUS_REDIS_URL and Perseus's other secrets (removed by default).",
)
@click.option(
    "--no-output",
    "no_output",
    is_flag=True,
    help="Keep the child's output out of Redis (perseus:output:ID): only in this log"
    " (default: $PERSEUS_CHILD_OUTPUT, on).",
)
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail too.")
@agent_redis_url_option
@click.argument("command", nargs=-1, type=click.UNPROCESSED, metavar="[-- COMMAND ARGS...]")
def agent(
    config: str | None,
    exchange_id: int | None,
    exchange_name: str | None,
    display_name: str | None,
    rename: bool,
    autostart: bool,
    symbol_count: int,
    warmup: float,
    admin_email: str | None,
    admin_name: str | None,
    stop_grace: float | None,
    startup_timeout: float | None,
    pass_env: bool,
    no_output: bool,
    verbose: bool,
    redis_url: str | None,
    redis_url_in_argv: bool,
    command: tuple[str, ...],
) -> None:
    """Run the agent of one exchange slot, or of every slot of a host file.

    It registers the exchange in the catalog, waits for `start`/`stop`/`ping`
    commands (from `perseus start ID`, or the dashboard) and drives the
    lifecycle idle -> starting -> warming -> active -> stopping -> stopped ->
    idle. With a COMMAND it runs that command as the instance's process while
    the slot is held: started on `start`, stopped with SIGTERM (then SIGKILL
    after the grace) on `stop`. A child that exits on its own is reported and
    the slot is released.

    Every process the child starts is stopped with it, setsid and
    double-forked ones included (a cgroup of its own where the host allows
    it, PERSEUS_CHILD_CGROUP=off for none; a subreaper otherwise). The child
    runs under a watchdog that kills all of them when the lease has not been
    renewed in time (the agent frozen, or cut off from Redis for nearly the
    TTL) or the agent is gone, so that no two children ever run for one
    slot. The child's output goes into the agent's log (at a bounded rate),
    never to the agent's terminal, and its last lines into Redis for
    `perseus output ID` and the dashboard (--no-output: not there). The child's environment lacks
    PERSEUS_REDIS_URL and Perseus's other secrets unless --pass-env is given.
    While Redis is unreachable the agent keeps retrying; SIGTERM, SIGHUP or
    Ctrl-C stop it gracefully, a second Ctrl-C forces it.

    The exchange name must be the catalog's for the id, if it lists one (the
    dashboard would show one name, the status key and the activity stream
    another): otherwise the agent refuses to start, unless --rename is given,
    which renames the catalog entry and says so.

    A Redis password is refused on the command line (--redis-url), where any
    process on the host can read it: give it in $PERSEUS_REDIS_URL or, better,
    in a file only the agent's user can read (--redis-url-file, mode 600).

    Exit codes: 0 after a graceful stop, 2 bad arguments (a malformed URL, a
    host file with problems, a password in --redis-url, a child command that
    is not an executable file, a name the catalog contradicts without
    --rename), 3 Redis unreachable
    past --startup-timeout or rejecting the credentials, 130 forced exit.
    """
    if config is not None:
        refuse_slot_options(click.get_current_context())
    else:
        for value, option in ((exchange_id, "--exchange-id"), (exchange_name, "--exchange-name")):
            if value is None:
                raise click.UsageError(f"Missing option '{option}' (or give --config FILE).")
    problem = child_command_problem(command)
    if problem is not None:
        fail(problem, EXIT_USAGE)
    settings = load_settings(
        redis_url,
        stop_grace_ms=None if stop_grace is None else int(stop_grace * 1000),
        child_output=False if no_output else None,
    )
    if redis_url_in_argv and password_in(settings.redis_url):
        fail(ARGV_PASSWORD, EXIT_USAGE)
    if config is not None:
        run_host(config, settings, verbose=verbose)
    assert exchange_id is not None and exchange_name is not None  # checked above
    configure_logging(verbose)
    options = AgentOptions(
        exchange_id=exchange_id,
        exchange_name=exchange_name,
        display_name=display_name,
        command=command,
        autostart=autostart,
        symbol_count=symbol_count,
        warmup_s=warmup,
        admin_email=admin_email,
        admin_display_name=admin_name,
        startup_timeout_s=startup_timeout,
        pass_env=pass_env,
        rename=rename,
    )
    try:
        code = Agent(settings, options).run_forever()
    except NameContradicted as exc:
        fail(str(exc), EXIT_USAGE)
    except StartupFailed as exc:
        fail(str(exc), EXIT_UNREACHABLE)
    sys.exit(code)
