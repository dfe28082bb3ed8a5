"""`perseus` / `perseus tui` build the dashboard from the options; every theme renders it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from click.testing import CliRunner

from perseus_cli.apps.redis_server import RedisServer
from perseus_cli.apps.screenshots import seed_fleet, settle
from perseus_cli.main import cli
from perseus_tui.app import PerseusApp
from perseus_tui.widgets.empty_fleet import empty_fleet_text


@pytest.mark.parametrize(
    "argv", [["--refresh", "2", "--read-only"], ["tui", "--refresh", "2", "--read-only"]]
)
def test_cli_builds_the_app_from_its_options(
    argv: list[str], redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[PerseusApp] = []

    def fake_run(self: PerseusApp, *args: Any, **kwargs: Any) -> None:
        built.append(self)  # the terminal UI itself is exercised by the Pilot tests

    monkeypatch.setattr(PerseusApp, "run", fake_run)
    if argv[0] == "tui":
        argv = [*argv, "--redis-url", redis_url]
    else:
        argv = ["--redis-url", redis_url, *argv]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 0, result.output
    (app,) = built
    assert app.settings.refresh_ms == 2000 and app.read_only
    assert app.settings.redis_url == redis_url


async def test_every_builtin_theme_renders_the_dashboard(
    make_app: Callable[..., PerseusApp], redis_url: str
) -> None:
    seed_fleet(redis_url)
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        for name in sorted(app.available_themes):
            app.theme = name
            await pilot.pause()
        for name in sorted(app.available_themes):
            app.theme = name
            await pilot.pause()
        await pilot.press("t")  # the table resolves theme colours itself: repainted per theme
        for name in ("textual-light", "ansi-dark", "textual-dark"):
            app.theme = name
            await pilot.pause()
        assert app.is_running


def test_the_empty_fleet_never_offers_a_redacted_url(
    fresh_redis: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commands an empty fleet suggests named `--redis-url redis://:***@...`,
    which fails when copied. A URL holding a password is never offered: the
    file it came from is, or nothing when the environment carries it, or a
    note says where to put it."""
    password = "s3cret-pw"
    with sync_redis.Redis(port=fresh_redis.port) as admin:
        admin.config_set("requirepass", password)
    url = f"redis://:{password}@127.0.0.1:{fresh_redis.port}/0"
    url_file = tmp_path / "redis url"
    url_file.write_text(url + "\n")
    url_file.chmod(0o600)
    built: list[PerseusApp] = []
    monkeypatch.setattr(PerseusApp, "run", lambda self, *a, **k: built.append(self))
    monkeypatch.delenv("PERSEUS_REDIS_URL", raising=False)

    def suggested(argv: list[str]) -> str:
        built.clear()
        result = CliRunner().invoke(cli, argv)
        assert result.exit_code == 0, result.output
        text = empty_fleet_text(built[0].redis_hint()).plain
        assert password not in text and "***" not in text
        return text

    from_file = f"--redis-url-file '{url_file}'"
    assert from_file in suggested(["--redis-url-file", str(url_file)])
    assert from_file in suggested(["tui", "--redis-url-file", str(url_file)])
    typed = suggested(["--redis-url", url])
    assert "--redis-url" not in typed.split("\n\n")[1]  # no option on the commands
    assert "set PERSEUS_REDIS_URL to it, or add --redis-url-file FILE" in typed
    monkeypatch.setenv("PERSEUS_REDIS_URL", url)
    from_env = suggested(["tui"])
    assert "--redis-url" not in from_env and "These read $PERSEUS_REDIS_URL" in from_env
