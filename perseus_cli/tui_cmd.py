"""`perseus tui` (and `perseus` with no verb): the operator dashboard."""

from __future__ import annotations

import click

from perseus_cli.common import load_settings, preflight
from perseus_cli.options import redis_url_option


@click.command("tui")
@redis_url_option
@click.option(
    "--refresh",
    type=click.FloatRange(min=0.1),
    default=None,
    metavar="SECONDS",
    help="Re-read every status this often (default 5; activity shows at once regardless).",
)
@click.option("--read-only", is_flag=True, help="Disable start/stop (watch only).")
def tui(redis_url: str | None, refresh: float | None, read_only: bool) -> None:
    """Open the dashboard: cards (or a table) per exchange, the live activity feed,
    start/stop keys. Press ? inside for every key.

    An unreachable Redis does not stop it from opening: it shows a banner and
    keeps retrying. One that answers but cannot be used (not Redis, a wrong
    password, a TLS mismatch) is one line and exit 3 instead.
    """
    from perseus_tui.app import create_app  # noqa: PLC0415 - Textual only for this command

    overrides: dict[str, object] = {}
    if refresh is not None:
        overrides["refresh_ms"] = int(refresh * 1000)
    settings = load_settings(redis_url, **overrides)
    preflight(settings)  # not Redis, a wrong password, TLS: one line, before the App
    # No try/except here: an unexpected failure must surface with its traceback.
    create_app(settings, read_only=read_only).run()
