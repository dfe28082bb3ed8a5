"""`perseus tui` (and `perseus` with no verb): the operator dashboard."""

from __future__ import annotations

import os
import platform
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

import click

from perseus_cli.common import load_settings, preflight
from perseus_cli.options import redis_url_file_of, redis_url_option
from perseus_core import __version__
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import format_ts, system_clock

if TYPE_CHECKING:
    from perseus_tui.app import PerseusApp


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
    from perseus_tui.app import create_app  # Textual only for this command

    overrides: dict[str, object] = {}
    if refresh is not None:
        overrides["refresh_ms"] = int(refresh * 1000)
    settings = load_settings(redis_url, **overrides)
    preflight(settings)  # not Redis, a wrong password, TLS: one line, before the App
    url_file = redis_url_file_of(settings.redis_url)
    run_app(create_app(settings, read_only=read_only, redis_url_file=url_file), settings)


def run_app(
    app: PerseusApp,
    settings: Settings,
    *,
    headless: bool = False,
    size: tuple[int, int] | None = None,
) -> None:
    """Run the dashboard; after a crash, keep a report and exit non-zero.

    `headless` and `size` are Textual's (tests run it headless at a fixed size).

    Nothing is caught around `app.run()`: Textual shows the traceback itself
    when it restores the terminal. What it does not do is exit non-zero or
    keep the traceback once the terminal has scrolled it away, and an
    operator over SSH needs both: a script sees the failure, a bug report
    has the file.
    """
    app.run(headless=headless, size=size)
    if not app.return_code:
        return
    path = write_crash_report(app.crash, settings)
    where = f"crash report: {path}" if path else "no crash report could be written"
    click.echo(f"perseus: the dashboard crashed ({where})", err=True)
    raise SystemExit(app.return_code)


def crash_dir() -> Path:
    """Where crash reports go: `$XDG_STATE_HOME/perseus`, else `~/.local/state/perseus`."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "perseus"


def write_crash_report(error: BaseException | None, settings: Settings) -> Path | None:
    """Write the traceback, the versions and the settings (the Redis URL
    redacted) to a new file under `crash_dir()`; its path, or None when no
    file can be written (a read-only home): the traceback is still on screen."""
    lines = [
        f"Perseus {__version__} dashboard crash at {format_ts(system_clock())}",
        f"Python {platform.python_version()} on {platform.platform()}",
        "",
        "settings:",
        *(f"  {name} = {value}" for name, value in _shown_settings(settings).items()),
        "",
        "traceback:",
    ]
    if error is not None:
        lines.append("".join(traceback.format_exception(error)).rstrip())
    else:
        lines.append("(Textual ended with a failure code but kept no exception)")
    text = "\n".join(lines).replace(settings.redis_url, settings.redacted_redis_url)
    stamp = format_ts(system_clock()).replace(":", "").replace(".", "-")
    try:
        directory = crash_dir()
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"dashboard-crash-{stamp}-{os.getpid()}.txt"
        path.write_text(text + "\n", encoding="utf-8")
    except OSError:
        return None
    return path


def _shown_settings(settings: Settings) -> dict[str, object]:
    shown: dict[str, object] = settings.model_dump()
    shown["redis_url"] = settings.redacted_redis_url
    return shown
