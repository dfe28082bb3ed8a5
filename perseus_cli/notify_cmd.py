"""`perseus notify`: post fleet events to a Discord-compatible webhook."""

from __future__ import annotations

import asyncio
import contextlib
import signal

import click

from perseus_cli.common import load_settings, log_to_stderr, run
from perseus_cli.options import redis_url_option
from perseus_core.notify import EventKind, Notifier, validate_webhook_url
from perseus_core.wire.text import clean

_KIND_NAMES = tuple(kind.value for kind in EventKind)


def _kinds(values: tuple[str, ...]) -> frozenset[EventKind] | None:
    """The kinds `--only` names (comma-separated, repeatable, any case, `-`
    for `_`); None when it is not given."""
    if not values:
        return None
    kinds: set[EventKind] = set()
    for value in values:
        for word in value.split(","):
            name = word.strip().lower().replace("-", "_")
            if name not in _KIND_NAMES:
                raise click.BadParameter(
                    f"{clean(word.strip(), 40)!r} is not a kind: use {', '.join(_KIND_NAMES)}",
                    param_hint="--only",
                )
            kinds.add(EventKind(name))
    return frozenset(kinds)


@click.command("notify")
@click.option(
    "--webhook",
    "webhook",
    envvar="PERSEUS_NOTIFY_WEBHOOK",
    default=None,
    metavar="URL",
    help="Discord-compatible webhook to post to (or $PERSEUS_NOTIFY_WEBHOOK, which keeps "
    "the token out of the process list). Required unless --dry-run.",
)
@click.option(
    "--exchange",
    "exchanges",
    multiple=True,
    metavar="NAME",
    help="Only this exchange (case-insensitive); repeat for several. Default: all.",
)
@click.option(
    "--only",
    "only",
    multiple=True,
    metavar="KINDS",
    callback=lambda _ctx, _param, values: _kinds(values),
    help=f"Post only these kinds, comma-separated ({', '.join(_KIND_NAMES)}); "
    "a crash, with its stop and restart, is an error. Default: all.",
)
@click.option(
    "--settle",
    type=click.FloatRange(min=0),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Tell an exchange's transitions and errors that come together as one message, "
    "once it is at rest (active; idle after a clean stop) or quiet this long; 0 posts "
    "each at once.",
)
@click.option("--dry-run", is_flag=True, help="Print each JSON payload on stdout; post nothing.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.05),
    default=None,
    metavar="SECONDS",
    help="How often to check for instances gone offline (default: $PERSEUS_REFRESH_MS, 5 s).",
)
@redis_url_option
def notify(
    webhook: str | None,
    exchanges: tuple[str, ...],
    only: frozenset[EventKind] | None,
    settle: float,
    dry_run: bool,
    interval: float | None,
    redis_url: str | None,
) -> None:
    """Post a webhook message when an instance changes state, reports an error,
    goes offline (its key expired without a stop) or comes back.

    Runs until interrupted (Ctrl-C exits 0). Each event is posted once; a
    failing webhook is retried with backoff and never stops the watching.
    What an exchange does in one go is one message: a crash, the stop that
    follows and the restart are one error, a start is `idle -> starting ->
    warming -> active` (see --settle). An error another host writes while
    the holder is healthy (a refused claim) is posted as that host's, not
    as the exchange's.

    \b
    Example:
      PERSEUS_NOTIFY_WEBHOOK=https://discord.com/api/webhooks/ID/TOKEN perseus notify
      perseus notify --dry-run --exchange coinbase
      perseus notify --only error,offline
    """
    if webhook is None and not dry_run:
        raise click.UsageError("--webhook URL is required (or use --dry-run)")
    if webhook is not None:
        try:
            validate_webhook_url(webhook)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--webhook") from None
    settings = load_settings(redis_url)
    notifier = Notifier(
        settings,
        webhook,
        exchanges=exchanges or None,
        dry_run=dry_run,
        output=click.echo,
        interval_ms=round(interval * 1000) if interval is not None else None,
        settle_s=settle,
        only=only,
    )
    scope = ", ".join(exchanges) if exchanges else "all exchanges"
    if only is not None:
        scope += f" ({', '.join(sorted(only))} only)"
    target = "stdout (dry run)" if dry_run else notifier.webhook
    click.echo(
        f"perseus notify: watching {scope} on {settings.redacted_redis_url}, posting to {target}",
        err=True,
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, notifier.stop)
        await notifier.run()

    with log_to_stderr("notify"):
        try:
            run(settings, main)
        except KeyboardInterrupt:  # a signal that arrived before the handlers were installed
            pass
    stats = notifier.stats
    skipped = f", {stats.skipped} left out by --only" if only is not None else ""
    click.echo(
        f"perseus notify: stopped ({stats.delivered} sent, {stats.failed} failed, "
        f"{stats.dropped} dropped{skipped})",
        err=True,
    )
