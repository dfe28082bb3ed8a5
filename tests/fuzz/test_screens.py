"""Screens that are closed while data keeps arriving, and screens opened and closed many times.

The fleet is busy throughout: the dashboard re-reads every status every
100 ms and a writer appends an activity entry and refreshes the status key
every few tens of milliseconds, so results and live entries keep arriving
at screens that are being removed. A closed screen must be released:
measured by weak references after a garbage collection, not by a size or
time threshold (`bench/fuzz_hostile.py` reports the memory figures).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis
from textual.screen import Screen

import perseus_tui
from perseus_cli.tui_cmd import run_app
from perseus_core import __version__
from perseus_core.wire import keys
from perseus_core.wire.settings import Settings
from perseus_tui.app import PerseusApp, create_app
from perseus_tui.screens.detail import DetailScreen
from perseus_tui.screens.help import HelpScreen
from tests.fuzz.corpus import error_entry, status_payload
from tests.fuzz.surfaces import open_and_close, recording
from tests.waiting import eventually

ROUNDS = 25
RELEASE_ROUNDS = 10
"""Enough to tell a leak (every closed screen kept) from none; the long form
in `bench/fuzz_hostile.py` opens each 40 times and reports the memory."""


async def seed(redis: Redis) -> None:
    """Exchange 1 in the catalog and live."""
    entry = {"id": 1, "name": "coinbase", "displayName": "Coinbase", "isActive": True}
    await redis.hset(keys.CATALOG_KEY, "1", json.dumps(entry))
    await redis.set(keys.status_key(1), json.dumps(status_payload(1, "coinbase")), px=60_000)


@contextlib.asynccontextmanager
async def busy_fleet(redis: Redis) -> AsyncIterator[None]:
    """Exchange 1 live, with a new activity entry and heartbeat every 30 ms."""
    await seed(redis)

    async def write() -> None:
        while True:
            await redis.set(keys.status_key(1), json.dumps(status_payload(1, "coinbase")), px=5000)
            await redis.xadd(keys.activity_key("coinbase"), error_entry("coinbase", 1))  # type: ignore[arg-type]
            await asyncio.sleep(0.03)

    writer = asyncio.create_task(write())
    try:
        yield
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer


def failures(app: PerseusApp, notes: list[str]) -> list[str]:
    found = [note for note in notes if "failed" in note.lower()]
    if app.return_code not in (None, 0):
        found.append(f"exit code {app.return_code}")
    return found


async def test_enter_then_esc_every_120_ms_while_data_arrives(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    app = create_app(make_settings(refresh_ms=100), operator="tester@ci")
    app.animation_level = "none"
    notes = recording(app)
    async with busy_fleet(redis), app.run_test(size=(120, 40)):
        await eventually(lambda: 1 in app.views and app.history_loaded.is_set())
        opened = 0
        for _ in range(ROUNDS):
            # Keys as a person types them: queued at once, not after the app
            # settles (Pilot.press waits for that, and a busy app never does).
            app.simulate_key("enter")
            await asyncio.sleep(0.06)  # the pace of the scenario, not a wait for a condition
            opened += isinstance(app.screen, DetailScreen)
            app.simulate_key("escape")
            await asyncio.sleep(0.06)
        assert opened >= ROUNDS // 4  # the detail screen really opened (the card had focus)
        assert app.is_running
        assert not failures(app, notes), failures(app, notes)
    # Left at once: keys still queued meet an app whose screens are gone.
    assert app.return_code in (None, 0)


@pytest.mark.parametrize("key", ["enter", "question_mark"])
async def test_closed_screens_are_released(
    key: str, make_settings: Callable[..., Settings], redis: Redis
) -> None:
    app = create_app(make_settings(), operator="tester@ci")
    app.animation_level = "none"
    kind: type[Screen[None]] = DetailScreen if key == "enter" else HelpScreen
    await seed(redis)
    async with app.run_test(size=(120, 40)):
        await eventually(lambda: 1 in app.views and app.history_loaded.is_set())
        kept = await open_and_close(app, key, kind, RELEASE_ROUNDS)
        assert kept == 0, f"{kept} of {RELEASE_ROUNDS} closed {kind.__name__}s are still in memory"


def test_a_crash_exits_non_zero_and_keeps_a_report(
    make_settings: Callable[..., Settings],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    settings = make_settings(redis_url=make_settings().redis_url + "?password=crashSecret9")

    class Crashing(PerseusApp):
        CSS_PATH = Path(perseus_tui.__file__).parent / "perseus.tcss"

        def on_ready(self) -> None:
            raise RuntimeError("boom from the test")

    app = Crashing(settings, operator="tester@ci")
    with pytest.raises(SystemExit) as ended:
        run_app(app, settings, headless=True, size=(100, 30))
    assert ended.value.code == 1
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if x.startswith("perseus: the dashboard crashed")]
    found = re.search(r"crash report: (\S+)\)$", line)
    assert found is not None, line
    report = Path(found.group(1))
    assert report.parent == tmp_path / "perseus"
    text = report.read_text()
    assert "RuntimeError: boom from the test" in text and "Traceback" in text
    assert f"Perseus {__version__}" in text
    assert "password=***" in text and "crashSecret9" not in text
