"""The eight reader surfaces, each run against whatever Redis holds, and the verdict.

A surface's run yields a `Reading`: what it printed (or showed on screen),
whether it crashed, and whether a traceback escaped. `problems` judges a
reading the same way for every surface: no crash, no traceback, no raw escape
or control character, markup shown literally where it is shown at all, the
secret never shown, and the healthy exchange still there.

The CLI verbs run in-process through click's CliRunner (the same code path as
the console script: `main` only adds the program name); the notifier through
its library class in dry-run mode, reading every stream from the start; the
dashboard through Textual's Pilot, built by the same factory as `perseus`.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import logging
import re
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from click.testing import CliRunner

from perseus_cli.apps.screenshots import screen_text
from perseus_cli.main import cli
from perseus_core.notify import Notifier
from perseus_core.wire.settings import Settings
from perseus_tui.app import PerseusApp, create_app
from tests.fuzz.corpus import LIVE_NAME, SECRET, VICTIM_ID, Hostile
from tests.waiting import eventually

RAW_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""Anything that may move the cursor, recolour, retitle or reorder a terminal
(newlines excepted: they separate lines)."""

CLI_SURFACES: dict[str, tuple[str, ...]] = {
    "status": ("status",),
    "status --json": ("status", "--json"),
    "status --exchange-id": ("status", "--exchange-id", str(VICTIM_ID)),
    "log": ("log", "--count", "50"),
    "log --json": ("log", "--json", "--count", "50"),
    "catalog list": ("catalog", "list"),
}
SURFACES = (*CLI_SURFACES, "notify", "dashboard")
RELEASE_WITHIN_S = 10.0
"""How long closed screens get to be released (the last one's history read
may still be finishing when it is closed)."""
REPORTING = ("status", "status --json", "status --exchange-id", "dashboard")
"""The surfaces that show every exchange's keys (or, `--exchange-id`, all of
the victim's): a key of the wrong type must be named there (the feed-only
surfaces skip an unreadable stream and warn)."""


@dataclass
class Reading:
    """What one surface made of what Redis holds."""

    surface: str
    output: str = ""
    crashed: str | None = None
    traceback: bool = False
    shows_live: bool = True
    notes: list[str] = field(default_factory=list)

    def problems(self, case: Hostile) -> list[str]:
        """Everything wrong with this reading of `case`; empty means it held."""
        found = [*self.notes]
        literal = case.literal
        if self.crashed:
            found.append(f"crashed: {self.crashed}")
        if self.traceback or "Traceback (most recent call last)" in self.output:
            found.append("traceback shown")
        control = RAW_CONTROL.search(self.output)
        if control:
            found.append(f"raw control character {control.group()!r} shown")
        if SECRET in self.output:
            found.append("the secret is shown")
        if literal is not None and _markup_parsed(literal, self.output):
            found.append(f"markup {literal!r} not shown literally")
        catalog_gone = case.breaks_catalog and self.surface.startswith("catalog")
        if not self.shows_live and not catalog_gone:
            found.append(f"the live exchange {LIVE_NAME} is missing")
        names_key = self.surface in REPORTING or catalog_gone
        if case.reported is not None and names_key and case.reported not in self.output:
            found.append(f"{case.reported} is not named")
        return found


def _markup_parsed(literal: str, output: str) -> bool:
    """The inner text of `literal` is shown without its tags: it was interpreted.

    A surface that cuts long fields may show a prefix of the tags only, and a
    JSON surface escapes nothing in them; both count as literal.
    """
    inner = re.sub(r"\[[^\]]*\]", "", literal)
    opening = literal[: literal.index("]") + 1]
    unescaped = output.replace("\\", "")  # Discord payloads escape brackets
    return inner in unescaped and opening not in unescaped


def run_cli(url: str, surface: str) -> Reading:
    """One CLI verb, in-process; its stdout and stderr together."""
    result = CliRunner().invoke(cli, [*CLI_SURFACES[surface], "--redis-url", url])
    output = result.stdout + result.stderr
    reading = Reading(surface, output)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        reading.crashed = f"{type(result.exception).__name__}: {result.exception}"
    if result.exit_code not in (0, 1):
        reading.notes.append(f"exit code {result.exit_code}")
    if surface == "status --exchange-id":  # the victim alone: shown, never an error exit
        reading.shows_live = result.exit_code == 0 and bool(result.stdout.strip())
    elif surface != "log --json" or result.exit_code == 0:
        reading.shows_live = LIVE_NAME in result.stdout
    return reading


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []
        self.tracebacks = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        if record.exc_info:
            self.tracebacks += 1


async def run_notify(settings: Settings, streams: list[str], within: float = 5.0) -> Reading:
    """The notifier in dry-run mode, reading `streams` from their start, until
    it has posted for the live exchange's two baseline entries and polled once
    more; its payloads and its log lines are the output."""
    lines: list[str] = []
    records = _Records()
    logger = logging.getLogger("perseus_core")
    logger.addHandler(records)
    notifier = Notifier(
        settings,
        None,
        dry_run=True,
        output=lines.append,
        interval_ms=20,
        start={name: "0-0" for name in streams},
        settle_s=0,  # each entry its own message: each hostile value is read on its own
    )
    reading = Reading("notify")
    task = asyncio.create_task(notifier.run())
    try:
        deadline = time.monotonic() + within
        while not task.done() and time.monotonic() < deadline:
            live = sum(LIVE_NAME in line for line in lines)
            if live >= 2 and notifier.stats.polls >= 2:
                break
            await asyncio.sleep(0.02)
        notifier.stop()
        await asyncio.wait_for(asyncio.shield(task), 5)
    except Exception as exc:  # whatever escapes the notifier is the finding
        reading.crashed = f"{type(exc).__name__}: {exc}"
    finally:
        logger.removeHandler(records)
        if not task.done():
            task.cancel()
    reading.output = "\n".join([*lines, *records.lines])
    reading.traceback = records.tracebacks > 0
    reading.shows_live = sum(LIVE_NAME in line for line in lines) >= 2
    return reading


def recording(app: PerseusApp) -> list[str]:
    """Every notification the app shows from now on, as `title: text`."""
    notes: list[str] = []
    original = app.notify

    def record(message: str, **kwargs: object) -> None:
        notes.append(f"{kwargs.get('title', '')}: {message}")
        original(message, **kwargs)  # type: ignore[arg-type]

    app.notify = record  # type: ignore[method-assign]
    return notes


async def open_and_close(app: PerseusApp, key: str, kind: type[Any], rounds: int) -> list[str]:
    """Open a `kind` screen with `key` and close it with Esc, `rounds` times,
    each time waiting for it to show and to go; what holds each of the closed
    screens still in memory once the app has had `RELEASE_WITHIN_S` to let go
    of them (`holders`), empty when every one was released."""
    refs: list[weakref.ref[Any]] = []
    for _ in range(rounds):
        app.simulate_key(key)
        shown = await eventually(lambda: app.screen if isinstance(app.screen, kind) else None)
        refs.append(weakref.ref(shown))
        del shown
        app.simulate_key("escape")
        await eventually(lambda: not isinstance(app.screen, kind))

    def released() -> bool:
        gc.collect()
        return all(ref() is None for ref in refs)

    with contextlib.suppress(AssertionError):
        await eventually(released, within=RELEASE_WITHIN_S)
    kept = [holders(ref) for ref in refs if ref() is not None]
    return kept


def holders(ref: weakref.ref[Any], depth: int = 4) -> str:
    """What keeps `ref`'s object alive, `depth` referrers up: `Task <- dict
    <- ...`, so that a leak names its cause in the failure instead of only
    its count. At each step every referrer's type is listed and the first
    that is not this function's own bookkeeping is followed (held through
    the weak reference only, so that no local of this module is among the
    referrers)."""
    chain: list[str] = []
    ours: list[object] = []  # this function's own lists (kept alive), never a cause
    current = ref()
    for _ in range(depth):
        referrers = gc.get_referrers(current)
        ours.append(referrers)
        found = [
            r
            for r in referrers
            if not inspect.isframe(r) and r is not chain and not any(r is o for o in ours)
        ]
        ours.append(found)
        if not found:
            break
        kinds = ", ".join(sorted({type(r).__name__ for r in found}))
        current = found[0]
        chain.append(f"{type(current).__name__} {repr(current)[:100]} (all: {kinds})")
    del current
    return " <- ".join(chain) or "nothing found"


def _drawn(app: PerseusApp) -> bool:
    """Whether the fleet read is on screen: the table, or a card painted for
    every exchange (its title's `#id` on screen). The card grid binds its
    cards once it is laid out, a frame after the read, and a bound card is
    painted a frame or more after that, later still beside CPU hogs: a
    screen taken as soon as the cards were bound can lack what a card has
    yet to paint (a fresh-clone run once missed a card's problem line)."""
    dashboard = app.dashboard
    if not app.views or dashboard.showing_table:
        return True
    if not dashboard.grid.visible_cards:
        return False
    text = screen_text(app)
    return all(re.search(rf"#{exchange_id}\b", text) for exchange_id in app.views)


async def run_dashboard(settings: Settings, *, within: float = 5.0) -> Reading:
    """The dashboard under Pilot until its first read and history are shown;
    the text of every screen row, every notification, is the output."""
    app = create_app(settings, target_label=None, operator="fuzz@ci")
    app.animation_level = "none"
    notes = recording(app)
    reading = Reading("dashboard")
    try:
        async with app.run_test(size=(160, 50)) as pilot:
            await eventually(
                lambda: app.loaded.is_set() and app.history_loaded.is_set() and _drawn(app),
                within=within,
            )
            await pilot.pause()
            reading.output = "\n".join([screen_text(app), *notes])
            reading.shows_live = any(view.exchange_name == LIVE_NAME for view in app.views.values())
            if app.connected is False:
                reading.notes.append("says Redis is unreachable")
            if any("Background task failed" in note for note in notes):
                reading.notes.append("a background task failed")
    except Exception as exc:  # whatever escapes the app is the finding
        reading.crashed = f"{type(exc).__name__}: {exc}"
    if app.return_code not in (0, None):
        reading.crashed = reading.crashed or f"exit code {app.return_code}"
    return reading
