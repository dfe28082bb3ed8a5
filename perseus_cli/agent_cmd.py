"""`perseus agent`: run one exchange instance slot, steered through Redis."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from perseus_cli.agent_host import refuse_slot_options, run_host
from perseus_cli.agent_log import configure_logging, flush_log
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
from perseus_core.runtime.probes import check_http_url, parse_host_port
from perseus_core.runtime.restarts import RestartMode
from perseus_core.wire.models import validate_exchange_name

F = TypeVar("F", bound=Callable[..., Any])

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


def _host_port(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        parse_host_port(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None
    return value


def _http_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check_http_url(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from None


def _probe_options(stage: str, when: str) -> list[Callable[[F], F]]:
    """--{stage}-cmd/-tcp/-http/-file: the same four probes for readiness and health."""
    return [
        click.option(
            f"--{stage}-cmd",
            default=None,
            metavar="CMD",
            help=f"{when} this shell command exits 0, e.g. --{stage}-cmd 'curl -fs localhost:8080/'"
            " (run without Perseus's secrets in its environment).",
        ),
        click.option(
            f"--{stage}-tcp",
            default=None,
            metavar="HOST:PORT",
            callback=_host_port,
            help=f"{when} HOST:PORT accepts a connection, e.g. --{stage}-tcp 127.0.0.1:9000.",
        ),
        click.option(
            f"--{stage}-http",
            default=None,
            metavar="URL",
            callback=_http_url,
            help=f"{when} a GET of URL answers 2xx, e.g. --{stage}-http http://127.0.0.1:8080/health.",
        ),
        click.option(
            f"--{stage}-file",
            default=None,
            metavar="PATH",
            help=f"{when} PATH exists, e.g. --{stage}-file /run/feed/ready.",
        ),
    ]


def _apply(decorators: list[Callable[[F], F]]) -> Callable[[F], F]:
    def apply(function: F) -> F:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


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
    help="Time in `warming` (the child must stay alive that long) before `active`, when no"
    " --ready-* check is given.",
)
@click.option(
    "--restart",
    type=click.Choice([m.value for m in RestartMode]),
    default=RestartMode.ON_FAILURE.value,
    show_default=True,
    help="When a run that ends on its own is started again: never; on-failure (a non-zero"
    " exit, a signal, the watchdog, a lost lease, a failed check); always (even after exit 0)."
    " E.g. --restart always.",
)
@click.option(
    "--backoff-max",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    metavar="SECONDS",
    help="Longest wait between automatic starts (exponential backoff with jitter from 1 s),"
    " e.g. --backoff-max 60.",
)
@click.option(
    "--start-secs",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="A run that fails sooner than this after its claim, or before it was active, is a"
    " quick failure, e.g. --start-secs 30.",
)
@click.option(
    "--start-retries",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    metavar="N",
    help="Quick failures in a row before giving up (FATAL, shown on the dashboard) until an"
    " operator's start or stop, e.g. --start-retries 3.",
)
@_apply(_probe_options("ready", "Warming ends once"))
@click.option(
    "--ready-timeout",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="A start whose --ready-* checks have not passed after this long fails (warming ->"
    " idle, the check's last reason in the error), e.g. --ready-timeout 120.",
)
@click.option(
    "--probe-interval",
    type=click.FloatRange(min=0.001),
    default=1.0,
    show_default=True,
    metavar="SECONDS",
    help="Time between two rounds of --ready-* or --health-* checks, e.g. --probe-interval 5.",
)
@click.option(
    "--probe-timeout",
    type=click.FloatRange(min=0.001),
    default=5.0,
    show_default=True,
    metavar="SECONDS",
    help="How long one check may take before it counts as failed, e.g. --probe-timeout 2.",
)
@_apply(_probe_options("health", "While active, healthy while"))
@click.option(
    "--health-failures",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    metavar="N",
    help="Failed --health-* rounds in a row that make an error entry, e.g. --health-failures 5.",
)
@click.option(
    "--health-restart",
    is_flag=True,
    help="After --health-failures failed rounds, also restart the child (through --restart).",
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
    restart: str,
    backoff_max: float,
    start_secs: float,
    start_retries: int,
    ready_cmd: str | None,
    ready_tcp: str | None,
    ready_http: str | None,
    ready_file: str | None,
    ready_timeout: float,
    probe_interval: float,
    probe_timeout: float,
    health_cmd: str | None,
    health_tcp: str | None,
    health_http: str | None,
    health_file: str | None,
    health_failures: int,
    health_restart: bool,
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
    the slot is released; by the restart policy (--restart, default
    on-failure) it is then started again after a backoff (--backoff-max),
    with a fresh claim, until --start-retries quick failures in a row
    (--start-secs) make it give up (FATAL, on the dashboard) until an
    operator's start or stop. A child killed by its watchdog, or a run lost
    in a Redis outage, is restarted the same way once Redis answers.

    Warming lasts --warmup, or with --ready-cmd/-tcp/-http/-file until the
    check passes (--ready-timeout fails the start). --health-cmd/-tcp/-http/
    -file run the same checks while active: --health-failures failed rounds
    in a row make an error entry, and with --health-restart a restart.

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
        restart=RestartMode(restart),
        backoff_max_s=backoff_max,
        start_secs=start_secs,
        start_retries=start_retries,
        ready_cmd=ready_cmd,
        ready_tcp=ready_tcp,
        ready_http=ready_http,
        ready_file=ready_file,
        ready_timeout_s=ready_timeout,
        probe_interval_s=probe_interval,
        probe_timeout_s=probe_timeout,
        health_cmd=health_cmd,
        health_tcp=health_tcp,
        health_http=health_http,
        health_file=health_file,
        health_failures=health_failures,
        health_restart=health_restart,
    )
    try:
        code = Agent(settings, options).run_forever()
    except NameContradicted as exc:
        flush_log()
        fail(str(exc), EXIT_USAGE)
    except StartupFailed as exc:
        flush_log()
        fail(str(exc), EXIT_UNREACHABLE)
    sys.exit(code)
