"""`perseus exporter`: the fleet's metrics for Prometheus on `/metrics`."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import click

from perseus_cli.common import load_settings, log_to_stderr, run
from perseus_cli.options import EXIT_ERROR, fail, redis_url_option
from perseus_core.export import Exporter
from perseus_core.wire.errors import PerseusError


@click.command("exporter")
@click.option(
    "--listen",
    default=None,
    metavar="HOST:PORT",
    help="Where to serve /metrics (default: $PERSEUS_EXPORTER_LISTEN, 127.0.0.1:9464; "
    "[::1]:PORT for IPv6, port 0 for any free one).",
)
@click.option(
    "--cache-ms",
    type=click.IntRange(min=0),
    default=None,
    metavar="MS",
    help="How long one fleet read answers scrapes, so several Prometheus servers cost "
    "Redis one read per period (default: $PERSEUS_EXPORTER_CACHE_MS, 1000).",
)
@redis_url_option
def exporter(listen: str | None, cache_ms: int | None, redis_url: str | None) -> None:
    """Serve the fleet's metrics for Prometheus on /metrics.

    Each exchange's state, heartbeat age and health, uptime and agents, as
    `perseus status` judges them, and counters of the transitions, errors and
    command outcomes its activity streams record while the exporter runs.
    Runs until interrupted; while Redis cannot be read the last values stay
    and `perseus_exporter_redis_up` is 0. See docs/monitoring.md for a
    scrape config and alert rules.

    \b
    Example:
      perseus exporter --listen 0.0.0.0:9464
      curl -s localhost:9464/metrics | grep perseus_exchange_up
    """
    settings = load_settings(redis_url, exporter_listen=listen, exporter_cache_ms=cache_ms)
    try:
        server = Exporter(settings)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--listen") from None

    def ready() -> None:
        target = settings.redacted_redis_url
        click.echo(f"perseus exporter: serving {server.url} for {target}", err=True)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, server.stop)
        await server.run(ready)

    with log_to_stderr("exporter"):
        try:
            run(settings, main)
        except PerseusError as exc:
            fail(str(exc), EXIT_ERROR)
        except KeyboardInterrupt:  # a signal that arrived before the handlers were installed
            pass
    click.echo("perseus exporter: stopped", err=True)
