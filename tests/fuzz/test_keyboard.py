"""No key sequence crashes the dashboard: 12 s of random keys, 100 a second.

Every binding, the palette included, in cards and table mode, filtered and
unfiltered, with a fixed seed (see `tests/fuzz/keyboard.py`; the long form
with any seed and length is `bench/fuzz_keyboard.py`). Left to the random
keys, a screen is reached only by a key that opens it landing on the
dashboard, and the command palette keeps nearly every key (only Escape, or an
Enter that picks a command, closes it): a short run could leave a screen
without a key. So each screen the test asserts on opens one stretch of a phase
(`OPENERS`), and takes keys whatever the load.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.command import CommandPalette

from perseus_core.wire.settings import Settings
from perseus_tui.screens.confirm import ConfirmScreen
from perseus_tui.screens.detail import DetailScreen
from perseus_tui.screens.help import HelpScreen
from perseus_tui.screens.intro import IntroScreen
from tests.fuzz.keyboard import (
    OPENERS,
    PHASES,
    RATE,
    SEED,
    SETTLE_S,
    binding_keys,
    fuzz,
    fuzz_app,
    live_fleet,
)
from tests.waiting import eventually

PHASE_S = 3.0
"""Four phases: 12 s of keys, 1,200 (every binding is pressed about 20 times)."""


@pytest.mark.slow
@pytest.mark.timeout((PHASE_S + SETTLE_S) * len(PHASES) + SETTLE_S * len(OPENERS) + 60)
async def test_random_keys_never_crash_the_dashboard(settings: Settings, tmp_path: Path) -> None:
    with live_fleet(settings.redis_url, tmp_path):
        app = fuzz_app(settings)
        async with app.run_test(size=(120, 40)):
            await eventually(lambda: app.loaded.is_set() and app.history_loaded.is_set())
            report = await fuzz(app, seed=SEED, phase_s=PHASE_S, rate=RATE, openers=OPENERS)

    print(report)  # shown when the test fails
    assert report.problems == [], report.problems
    assert report.keys_sent == int(PHASE_S * RATE) * len(PHASES)
    # Sent on a fixed schedule: keys that fell due while the app held the loop are
    # sent at once, as a terminal delivers what it buffered, so only a loop held
    # at the very end of a phase lowers the average.
    assert report.rate >= 0.9 * RATE, f"{report.rate:.0f} keys/s"
    missing = set(binding_keys()) - set(report.pressed)
    assert not missing, f"bindings never pressed: {sorted(missing)}"
    # Every view and filter combination, and every kind of screen, took keys: how
    # many depends on how long the keys leave each screen open (20 to hundreds
    # each, quiet or beside CPU hogs; each screen of OPENERS takes at least the
    # first key of the stretch it opens).
    for phase in PHASES:
        filtered = "filtered" if phase.filter else "unfiltered"
        assert report.landed_on[f"dashboard {phase.view} {filtered}"] >= 10, report.landed_on
    for screen in (CommandPalette, DetailScreen, HelpScreen, ConfirmScreen, IntroScreen):
        assert report.landed_on[screen.__name__] > 0, report.landed_on
