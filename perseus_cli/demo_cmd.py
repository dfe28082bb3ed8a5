"""`perseus demo`: a throw-away Redis, a fleet of real agents, and the dashboard on it."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from types import FrameType

import click

from perseus_cli.apps.demo import (
    HEARTBEAT_INTERVAL_MS,
    HEARTBEAT_TTL_MS,
    DemoEvent,
    EventKind,
    Role,
)
from perseus_cli.apps.demo_fleet import DemoFleet
from perseus_cli.apps.demo_intro import first_selection, intro_text
from perseus_cli.apps.redis_server import PortInUse
from perseus_cli.options import EXIT_ERROR, EXIT_USAGE, fail
from perseus_core.wire.errors import PerseusError

_ROLE_NOTES = {
    Role.ACTIVE: "active, its child writes output (`perseus output ID`)",
    Role.CRASHING: "its child crashes: restarted with backoff, then FATAL; `perseus start ID`",
    Role.KILLED: "own agent, killed with SIGKILL once active: goes offline",
    Role.WARMING: "warming until its child opens its port (ready_tcp)",
    Role.IDLE: "READY: start it with `s` in the dashboard (or `perseus start ID`)",
    Role.LAGGING: "own agent, heartbeats lag: green, yellow and red in turn",
}


_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
"""Each ends the demo cleanly; SIGHUP is the terminal (or SSH session) going away."""


def perseus_argv() -> list[str]:
    """How to run this same `perseus` in a subprocess, whatever the install.

    Running the interpreter that runs us (rather than looking `perseus` up on
    PATH) guarantees the agents are the same version as the demo.
    """
    return [sys.executable, "-c", "from perseus_cli.main import main; main()"]


def _raise_interrupt(signum: int, _frame: FrameType | None) -> None:
    # Until the event loop takes over the signals, SIGTERM/SIGHUP must unwind through
    # `finally` (which stops the fleet) instead of ending the process outright.
    raise KeyboardInterrupt


@contextlib.asynccontextmanager
async def _supervised(fleet: DemoFleet, on_stop: Callable[[], object]) -> AsyncIterator[None]:
    """Run the fleet's scripted supervision while the body runs; SIGINT and
    SIGTERM call `on_stop` (which must make the body return)."""
    loop = asyncio.get_running_loop()
    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, on_stop)
    supervisor = asyncio.create_task(fleet.supervise())
    try:
        yield
    finally:
        for signum in _STOP_SIGNALS:
            loop.remove_signal_handler(signum)
        # Cancelled again if a cancellation got lost in redis-py (Python 3.11):
        # the demo stops its agents only once this task has ended.
        for _ in range(3):
            supervisor.cancel()
            done, _pending = await asyncio.wait({supervisor}, timeout=2)
            if done:
                break
        if supervisor.done():
            with contextlib.suppress(asyncio.CancelledError):
                await supervisor


@contextlib.asynccontextmanager
async def _exporting(
    fleet: DemoFleet, enabled: bool, tell: Callable[[str], object]
) -> AsyncIterator[None]:
    """With `--exporter`: `perseus exporter` on the fleet, on a free local
    port, in this loop while the body runs; `tell` gets its URL."""
    if not enabled:
        yield
        return
    from perseus_core.export import Exporter  # prometheus_client only when asked

    exporter = Exporter(fleet.settings(), listen="127.0.0.1:0")
    await exporter.start()
    try:
        tell(f"Prometheus metrics: {exporter.url}")
        yield
    finally:
        await exporter.aclose()


async def _headless(fleet: DemoFleet, exporter: bool = False) -> None:
    """Supervise the fleet until SIGINT or SIGTERM."""
    stop = asyncio.Event()
    async with _supervised(fleet, stop.set), _exporting(fleet, exporter, click.echo):
        await stop.wait()


async def _dashboard(
    fleet: DemoFleet,
    notify: Callable[[Callable[[DemoEvent], None]], None],
    exporter: bool = False,
) -> None:
    """Run the dashboard on the fleet; SIGTERM (or a SIGINT from outside) quits it."""
    from textual.notifications import SeverityLevel  # Textual only when needed

    from perseus_tui.app import create_app
    from perseus_tui.screens.intro import IntroScreen

    app = create_app(
        fleet.settings(),
        intro=intro_text(fleet.members, fleet.timings, str(fleet.host_file)),
        initial_selection=first_selection(fleet.members),
        expecting="Starting the demo's agents: their cards appear in a moment…",
    )
    # Inside the dashboard Ctrl-C is a key, not a signal: make it quit the demo
    # (as it does in the headless mode) by adding it to the quit binding's keys.
    app.update_keymap({"quit": "q,ctrl+c"})

    # What the demo does is told in notifications, but not over the intro
    # panel: on a small terminal they would cover what it says to try. They
    # wait until the panel is closed.
    held: list[tuple[str, SeverityLevel, float]] = []

    def intro_open() -> bool:
        screens = app.screen_stack
        return bool(screens) and isinstance(screens[-1], IntroScreen)

    def say(text: str, severity: SeverityLevel, timeout: float) -> None:
        if not app.is_running:
            return
        if intro_open():
            held.append((text, severity, timeout))
        else:
            app.notify(text, title="demo", severity=severity, timeout=timeout, markup=False)

    async def release_held() -> None:
        while True:
            await asyncio.sleep(0.3)
            if held and app.is_running and not intro_open():
                for text, severity, timeout in held:
                    app.notify(text, title="demo", severity=severity, timeout=timeout, markup=False)
                held.clear()

    def tell(event: DemoEvent) -> None:
        say(event.text, "error" if event.kind is EventKind.EXITED else "warning", 8)

    def tell_url(text: str) -> None:
        say(text, "information", 30)

    notify(tell)
    releasing = asyncio.create_task(release_held())
    try:
        async with _supervised(fleet, app.exit), _exporting(fleet, exporter, tell_url):
            await app.run_async()
    finally:
        releasing.cancel()
        await asyncio.gather(releasing, return_exceptions=True)


def _echo_event(event: DemoEvent) -> None:
    stamp = time.strftime("%H:%M:%S")
    click.echo(f"{stamp}  {event.text}")


@click.command("demo")
@click.option(
    "--instances",
    type=click.IntRange(1, 100),
    default=6,
    show_default=True,
    help="How many exchanges to run (the first six show one state each).",
)
@click.option(
    "--no-tui",
    is_flag=True,
    help="Run the fleet only and print the Redis URL, to attach from other terminals.",
)
@click.option(
    "--port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Port of the embedded Redis on 127.0.0.1 (default: a free one).",
)
@click.option(
    "--cluster",
    is_flag=True,
    help="Run on a local Redis Cluster (3 masters, 3 replicas) instead of one server.",
)
@click.option(
    "--exporter",
    is_flag=True,
    help="Also serve the fleet's Prometheus metrics (`perseus exporter`) on a free local "
    "port, and print its URL.",
)
def demo(instances: int, no_tui: bool, port: int | None, cluster: bool, exporter: bool) -> None:
    """Try Perseus on a throw-away Redis with a fleet of real agents.

    Starts redis-server (no persistence, in a temporary directory), one
    `perseus agent --config host.toml` process for most exchanges (the file
    is written into that directory) and an agent of its own for the two the
    demo kills or freezes, scripted so that every state is on screen within
    half a minute: active instances whose child writes output (`o`), one
    READY to start (Gemini: try `s` on it), one warming until its child opens
    a port (a readiness check), one whose child keeps crashing (restarted
    with backoff, then FATAL until `s`), one killed with SIGKILL that goes
    offline and one whose heartbeats lag. Then opens the dashboard on it:
    start (`s`) and stop (`x`) work for real.

    Quitting (q, Ctrl-C, SIGTERM) stops every agent and the Redis server and
    removes the temporary directory.
    """
    previous = {signum: signal.getsignal(signum) for signum in _STOP_SIGNALS}
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGHUP, _raise_interrupt)
    listeners: list[Callable[[DemoEvent], None]] = [_echo_event] if no_tui else []

    def on_event(event: DemoEvent) -> None:
        for listener in listeners:
            listener(event)

    if cluster and port is not None:
        fail("--port and --cluster cannot be combined: a cluster takes free ports", EXIT_USAGE)
    fleet = DemoFleet(
        agent_argv=perseus_argv(),
        instances=instances,
        port=port,
        cluster=cluster,
        on_event=on_event,
    )
    try:
        try:
            fleet.start()
        except PortInUse as exc:
            fail(f"cannot start the demo: {exc}; choose another --port", EXIT_USAGE)
        except PerseusError as exc:
            fail(f"cannot start the demo: {exc}", EXIT_ERROR)
        if no_tui:
            _print_banner(fleet)
            asyncio.run(_headless(fleet, exporter))
            click.echo("Stopping the demo fleet...")
        else:
            asyncio.run(_dashboard(fleet, listeners.append, exporter))
    except KeyboardInterrupt:
        if no_tui:
            click.echo("Stopping the demo fleet...")
    finally:
        # From here on a signal must not cut the cleanup short: close() turns
        # one into "skip the grace, SIGKILL now" instead.
        for signum in previous:
            signal.signal(signum, signal.SIG_IGN)
        fleet.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if no_tui:
        click.echo("Demo stopped: every agent and the Redis server are gone.")


def _print_banner(fleet: DemoFleet) -> None:
    """What is running and how to attach, for the headless mode."""
    click.echo(f"Perseus demo: {len(fleet.members)} exchanges on {fleet.url}")
    for member in fleet.members:
        click.echo(
            f"  {member.exchange_id:>3}  {member.name:<12} {member.symbols:>4} symbols  "
            f"{_ROLE_NOTES[member.role]}"
        )
    click.echo(
        f"Heartbeat every {HEARTBEAT_INTERVAL_MS // 1000} s, offline after "
        f"{HEARTBEAT_TTL_MS // 1000} s. Temporary directory (agent logs): {fleet.directory}"
    )
    click.echo(f"Host file of the `perseus agent --config` process: {fleet.host_file}")
    click.echo("Attach from another terminal:")
    click.echo(f"  perseus --redis-url {fleet.url}")
    click.echo(f"  perseus --redis-url {fleet.url} status")
    click.echo("Press Ctrl-C to stop.")
