"""`perseus` / `perseus tui` build the dashboard from the options; every theme renders it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from click.testing import CliRunner

from perseus_cli.apps.screenshots import seed_fleet, settle
from perseus_cli.main import cli
from perseus_tui.app import PerseusApp


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
