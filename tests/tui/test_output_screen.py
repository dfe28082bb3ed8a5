"""`o` on the dashboard: the selected exchange's child output, live, as plain text."""

from __future__ import annotations

import redis as sync_redis
from textual.widgets import Log

from perseus_cli.apps.screenshot_fleet import OUTPUT_HOSTILE, seed_output
from perseus_cli.apps.screenshots import screenshot_app, seed_fleet, settle, wait_for
from perseus_core.wire import keys
from perseus_tui.screens.dashboard import DashboardScreen
from perseus_tui.screens.help import binding_rows, help_sections
from perseus_tui.screens.output import OutputScreen


async def test_o_opens_the_output_live_and_escape_closes_it(redis_url: str) -> None:
    seed_fleet(redis_url)
    seed_output(redis_url, 1)
    app = screenshot_app(redis_url)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        assert app.dashboard.selected_id == 1
        await pilot.press("o")
        await wait_for(pilot, lambda: isinstance(app.screen, OutputScreen))
        log = app.screen.query_one(Log)
        await wait_for(pilot, lambda: log.line_count == 6)
        assert log.lines[0].endswith("perseus child starting (epoch 3)")
        assert log.lines[3].endswith("stderr  WARN feed: slow consumer, 3 messages behind")
        assert log.lines[4].endswith(OUTPUT_HOSTILE)  # shown as written, never as markup
        assert log.lines[5].startswith("??:??:?? perseus 212 lines of output dropped")

        # Live: what the agent writes now appears below.
        with sync_redis.Redis.from_url(redis_url) as client:
            client.xadd(
                keys.output_key(1),
                {"stream": "stdout", "line": "fresh line", "at": "2026-02-10T22:46:00.000Z"},
            )
        await wait_for(pilot, lambda: log.line_count == 7)
        assert log.lines[6].endswith("stdout  fresh line")
        assert "live" in str(log.border_subtitle)

        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen))
        # The live read ends with the screen.
        await wait_for(
            pilot, lambda: not [w for w in app.workers if w.group == "output" and not w.is_finished]
        )
        await pilot.press("o")  # opens again, and `o` closes it too
        await wait_for(pilot, lambda: isinstance(app.screen, OutputScreen))
        await pilot.press("o")
        await wait_for(pilot, lambda: isinstance(app.screen, DashboardScreen))


async def test_an_exchange_without_output_says_so(redis_url: str) -> None:
    seed_fleet(redis_url)
    app = screenshot_app(redis_url)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("o")
        await wait_for(pilot, lambda: isinstance(app.screen, OutputScreen))
        log = app.screen.query_one(Log)
        await wait_for(pilot, lambda: log.line_count == 2)
        assert log.lines[0].startswith("(no output kept:")
        assert max(len(line) for line in log.lines) < 72  # whole at 80 columns: a Log never wraps


def test_help_lists_the_output_keys() -> None:
    sections = {heading: binding_rows(bindings) for heading, bindings in help_sections(())}
    dashboard = [text for _, text in sections["Dashboard"]]
    assert "The last lines the selected exchange's child wrote, live" in dashboard
    [(keys_, text)] = sections["Output screen"]
    assert [b.key for b in keys_] == ["escape", "o"] and text == "Back to the dashboard"
