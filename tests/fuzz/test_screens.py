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
import gc
import json
import re
from collections import Counter
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from textual.screen import Screen
from textual.widget import Widget

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
STRAGGLERS = 1
"""Closed screens that may still be held when the check runs (see the test)."""
GROWTH_ROUNDS = 5
"""Per screen and round: each leaked a dozen widgets per opening, so a few tell."""


async def seed(redis: Redis) -> None:
    """Exchange 1 in the catalog and live."""
    entry = {"id": 1, "name": "coinbase", "displayName": "Coinbase", "isActive": True}
    await redis.hset(keys.CATALOG_KEY, "1", json.dumps(entry))
    await redis.set(keys.status_key(1), json.dumps(status_payload(1, "coinbase")), px=60_000)


@contextlib.asynccontextmanager
async def busy_fleet(redis: Redis) -> AsyncIterator[None]:
    """Exchange 1 live, with a new activity entry and heartbeat every 30 ms."""
    await seed(redis)

    stop = asyncio.Event()

    async def write() -> None:
        while not stop.is_set():
            await redis.set(keys.status_key(1), json.dumps(status_payload(1, "coinbase")), px=5000)
            await redis.xadd(keys.activity_key("coinbase"), error_entry("coinbase", 1))  # type: ignore[arg-type]
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.03)

    # Stopped between commands, never cancelled in one: a client cancelled while
    # it waits for a reply has once left this fixture's task pending for good,
    # and the test's event loop with it.
    writer = asyncio.create_task(write())
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(writer, 10)


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
        opened: list[Screen[None]] = []
        push_screen = app.push_screen

        def counting_push(screen: Any, *args: Any, **kwargs: Any) -> Any:
            if isinstance(screen, DetailScreen):
                opened.append(screen)
            return push_screen(screen, *args, **kwargs)

        app.push_screen = counting_push  # type: ignore[method-assign]
        for _ in range(ROUNDS):
            # Keys as a person types them: queued at once, not after the app
            # settles (Pilot.press waits for that, and a busy app never does).
            app.simulate_key("enter")
            await asyncio.sleep(0.06)  # the pace of the scenario, not a wait for a condition
            app.simulate_key("escape")
            await asyncio.sleep(0.06)
        # The detail screen really opened (the card had focus): counted as pushed,
        # not as seen on top 60 ms after Enter, which a loaded machine may miss.
        await eventually(lambda: len(opened) >= ROUNDS // 4, what=f"{len(opened)} opened")
        opened.clear()
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
        # A leak keeps every closed screen. One straggler, held by a Resize that
        # Textual posted during its last layout and that still waits in some
        # widget's queue (seen twice in dozens of loaded runs, holder not yet
        # named), is not one: `holders` names the chain if it ever grows.
        assert len(kept) <= STRAGGLERS, (
            f"{len(kept)} of {RELEASE_ROUNDS} closed {kind.__name__}s are still in memory,"
            f" held by: {'; '.join(kept)}"
        )


def live_widgets() -> Counter[str]:
    """How many widgets of each kind exist, attached or not, after a collection."""
    gc.collect()
    return Counter(type(obj).__name__ for obj in gc.get_objects() if isinstance(obj, Widget))


async def test_opening_and_closing_screens_keeps_no_widgets(
    make_settings: Callable[..., Settings], redis: Redis
) -> None:
    """A second round of opening and closing leaves exactly the widgets the first did.

    Each close recomposes the dashboard's footer; its removed keys, and the
    feeds of closed detail screens, used to stay reachable from the footer's
    watchers and the app's theme signal, a dozen widgets more per screen.
    """
    app = create_app(make_settings(), operator="tester@ci")
    app.animation_level = "none"
    await seed(redis)
    async with app.run_test(size=(120, 40)) as pilot:
        await eventually(lambda: 1 in app.views and app.history_loaded.is_set())
        counts = []
        for _ in range(2):
            await open_and_close(app, "enter", DetailScreen, GROWTH_ROUNDS)
            await open_and_close(app, "question_mark", HelpScreen, GROWTH_ROUNDS)
            await pilot.pause()
            counts.append(live_widgets())
        first, second = counts
        assert second == first, f"widgets kept by the second round: {second - first}"
        # Only the shown footer's keys stay alive. A screen closed last may hold
        # its own footer's keys for a moment after (its last messages go out),
        # never for good.
        await eventually(
            lambda: live_widgets()["FooterKey"] == len(app.screen.query("FooterKey")),
            within=5,
            what="only the shown footer's keys alive",
        )


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
