"""Random key sequences at an operator's fastest: every binding, the palette, both
views, filtered and not, against a live fleet on a real Redis.

The keys are every key of every binding the dashboard declares (read from the
classes, so a new binding is fuzzed without touching this file), the command
palette's and Textual's own, and what an operator types into the filter and
the palette. They are posted at a fixed rate without waiting for the app to
handle them, as a terminal delivers a burst, so they also arrive while
screens open and close. The run is split into phases, one per view and filter
combination; each phase starts from that combination (set up by pressing keys,
as a person would) and then lets the random keys go wherever they lead.

The fleet is live throughout: a real `perseus agent` subprocess that the
fuzzed `s`, `x` and `y` really start and stop, a Livermore-style writer that
heartbeats and changes state, the screenshot fleet (every state, an offline
exchange, a corrupt key, a READY exchange with agents), and a dashboard that
re-reads every status twice a second. `q` and Ctrl+Q are counted instead of
ending the run (leaving is the one thing a key may do that ends the fuzz), and
so is the palette's Screenshot (it would write a file into the downloads folder).

A problem is: an exception escaping the app, a background worker failing, an
"internal error" shown, or the app not answering a key once the burst is over.
The suite runs it for 12 s (`tests/fuzz/test_keyboard.py`), with each screen
it asserts on opening a stretch of keys (`OPENERS`); the long form, any seed
and length, is `bench/fuzz_keyboard.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import redis as sync_redis
from textual import events
from textual.app import App
from textual.binding import Binding, BindingType
from textual.command import CommandPalette
from textual.screen import Screen
from textual.widget import Widget

from perseus_cli.apps.screenshots import DISPLAY_URL, SCREENSHOT_TZ, seed_fleet
from perseus_core.wire.settings import Settings
from perseus_tui.app import PerseusApp, create_app
from perseus_tui.screens.confirm import ConfirmScreen
from perseus_tui.screens.dashboard import DashboardScreen
from perseus_tui.screens.detail import DetailScreen
from perseus_tui.screens.help import HelpScreen
from perseus_tui.screens.intro import IntroScreen
from perseus_tui.widgets.card_grid import CardGrid
from perseus_tui.widgets.instance_table import InstanceTable
from tests.helpers import start_agent, stop_agent
from tests.livermore.shapes import LivermoreWriter

SEED = 1604
RATE = 100
"""Keys per second."""
AGENT_EXCHANGE = (20, "fuzzex")
"""The exchange a real agent runs, so that start and stop do something."""
LIVERMORE_EXCHANGE = (21, "lvfuzz")
"""The exchange a Livermore-style writer holds and moves through its states."""
HOLD_S = 0.3
"""How long a state must hold before the keys still queued are taken to be handled."""
SETTLE_S = 120.0
"""How long the app gets to work through the keys queued in a phase and answer
one more. Polling sleeps instead of `Pilot.pause`, which gives up after 30 s
of widgets with messages pending: on a loaded machine a phase's backlog can
take longer than that to handle, and that is slow, not broken."""
SETUP_S = 5.0
"""How long the keys that set up a phase get to be handled before they are pressed again."""
INTRO = "What is on screen, for the fuzz: i opens this again."

BOUND: tuple[type[App[None] | Screen[object] | Widget], ...] = (
    PerseusApp,
    DashboardScreen,
    DetailScreen,
    HelpScreen,
    IntroScreen,
    ConfirmScreen,
    CardGrid,
    InstanceTable,
    CommandPalette,
)
"""Every class whose bindings (its own and its bases') are fuzzed."""
TYPED = tuple("abcdefghijklmnopqrstuvwxyz0123456789") + ("space", "backspace", "minus")
"""What an operator types into the filter and the palette."""
CHARACTERS = {
    "space": " ",
    "backspace": "\x7f",
    "enter": "\r",
    "escape": "\x1b",
    "tab": "\t",
    "question_mark": "?",
    "slash": "/",
    "minus": "-",
}
"""The character a terminal sends with a named key (none for the others)."""

View = Literal["cards", "table"]


@dataclass(frozen=True)
class Phase:
    """Where a phase starts: a view, and a filter typed and kept (or none)."""

    view: View
    filter: str

    @property
    def name(self) -> str:
        return f"{self.view}, " + (f"filtered by {self.filter!r}" if self.filter else "unfiltered")


PHASES = (Phase("cards", ""), Phase("table", ""), Phase("cards", "o"), Phase("table", "co"))


@dataclass(frozen=True)
class Opener:
    """A screen a stretch of keys starts on, and the keys that open it from the dashboard."""

    screen: type[Screen[Any]]
    keys: tuple[str, ...]


OPENERS = (
    Opener(CommandPalette, ("ctrl+p",)),
    Opener(DetailScreen, ("enter",)),
    Opener(HelpScreen, ("question_mark",)),
    Opener(ConfirmScreen, ("x",)),
    Opener(IntroScreen, ("i",)),
)
"""The screens `fuzz(..., openers=OPENERS)` starts a stretch of keys on (one
screen a phase, round again), so that each takes keys whatever the random keys
and the load do: left to them, a screen is reached only when a key that opens
it lands on the dashboard, and the command palette, which keeps every key but
Escape (and an Enter that picks a command), can hold the keyboard for hundreds
of keys."""
OPEN_TRIES = 8
"""How often an opener is tried, the selection moved down between tries (a stop
is refused on some exchanges: its confirmation opens on another)."""


def fuzz_app(settings: Settings) -> PerseusApp:
    """The dashboard as the CLI builds it, with the intro panel (so `i` opens one),
    animations off and a fixed zone; re-reading every status twice a second."""
    app = create_app(
        settings.model_copy(update={"refresh_ms": 500}),
        local_tz=SCREENSHOT_TZ,
        target_label=DISPLAY_URL,
        operator="fuzz@ci",
        intro=INTRO,
    )
    app.animation_level = "none"
    return app


def binding_keys(classes: tuple[type, ...] = BOUND) -> list[str]:
    """Every key of every binding of `classes` and their bases, sorted (an app's
    command palette key included: Textual binds it apart from `BINDINGS`)."""
    found = {cls.COMMAND_PALETTE_BINDING for cls in classes if issubclass(cls, App)}
    for cls in classes:
        for base in cls.__mro__:
            bindings: list[BindingType] = list(base.__dict__.get("BINDINGS", ()))
            for binding in bindings:
                key = binding.key if isinstance(binding, Binding) else binding[0]
                found.update(part.strip() for part in key.split(","))
    return sorted(found)


def key_sequence(seed: int, count: int) -> list[str]:
    """`count` keys, the same for the same seed: seven in ten a binding, the rest typed."""
    rng = random.Random(seed)
    bound = binding_keys()
    return [rng.choice(bound) if rng.random() < 0.7 else rng.choice(TYPED) for _ in range(count)]


def key_event(key: str) -> events.Key:
    """The event a terminal produces for `key`."""
    return events.Key(key, key if len(key) == 1 else CHARACTERS.get(key))


def where(app: PerseusApp) -> str:
    """What the keys land on now: the top screen, and on the dashboard its view and filter."""
    screen = app.screen
    if isinstance(screen, DashboardScreen):
        view = "table" if screen.showing_table else "cards"
        return f"dashboard {view} " + ("filtered" if screen.filter_input.value else "unfiltered")
    if isinstance(screen, CommandPalette):
        return "CommandPalette"  # the app's own, or the theme picker
    return type(screen).__name__


@dataclass
class FuzzReport:
    """What one run did and found."""

    seed: int
    keys_sent: int = 0
    seconds: float = 0.0
    quits_asked: int = 0
    screenshots_asked: int = 0
    """The palette's Screenshot command, counted instead of writing an SVG file."""
    landed_on: Counter[str] = field(default_factory=Counter)
    """Fuzzed keys by what was on screen when the app took each one (see `where`).

    Counted when the app takes the key, not when it is sent: on a loaded machine
    keys go out in bursts, and a burst sent while one screen is up is handled
    across the screens its own keys open and close."""
    in_flight: dict[int, events.Key] = field(default_factory=dict)
    """Fuzzed keys sent and not yet taken, by id (held, so no id is reused meanwhile)."""
    pressed: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    drain_s: list[float] = field(default_factory=list)
    """Per phase: how long the app took to answer a key once the burst was over."""

    @property
    def rate(self) -> float:
        return self.keys_sent / self.seconds if self.seconds else 0.0


def watch_for_problems(app: PerseusApp, report: FuzzReport) -> None:
    """Record a failed worker or an internal error shown; count quits instead of leaving;
    count each fuzzed key where the app takes it."""
    notify = app.notify
    on_event = app.on_event

    async def take(event: events.Event) -> None:
        if report.in_flight.pop(id(event), None) is event:
            report.landed_on[where(app)] += 1
        await on_event(event)

    def record(message: str, **kwargs: object) -> None:
        title = str(kwargs.get("title", ""))
        if title == "Background task failed" or "internal error" in f"{title} {message}".lower():
            report.problems.append(f"shown: {title}: {message}")
        notify(message, **kwargs)  # type: ignore[arg-type]

    def quit_asked() -> None:
        report.quits_asked += 1

    def screenshot_asked(*_args: object, **_kwargs: object) -> None:
        report.screenshots_asked += 1

    app.notify = record  # type: ignore[method-assign]
    app.on_event = take  # type: ignore[method-assign]
    app.action_quit = quit_asked  # type: ignore[method-assign,assignment]
    app.deliver_screenshot = screenshot_asked  # type: ignore[method-assign,assignment]


def crashed(app: PerseusApp) -> BaseException | None:
    """The exception that escaped the app, if one did (it then stops)."""
    return app._exception


def at_rest(app: PerseusApp, phase: Phase | None = None) -> bool:
    """Only the dashboard is open, in `phase`'s view and filter (default: no filter),
    with the keyboard on the fleet, not in the filter input."""
    screen = app.screen
    if not isinstance(screen, DashboardScreen):
        return False
    filter_input = screen.filter_input
    if filter_input.has_focus or filter_input.value != (phase.filter if phase else ""):
        return False
    return phase is None or screen.showing_table == (phase.view == "table")


async def reach(app: PerseusApp, phase: Phase | None, deadline: float) -> bool:
    """Press keys as a person would until `at_rest(app, phase)` holds for a moment.

    Keys of the burst may still sit in the queues of the widgets they were
    forwarded to (a `/` opens the filter after the dashboard was reached), so
    the state must hold for a while, and the keys are pressed again if it does
    not: Escape to close what is open, then `t` and the filter as needed.
    """
    held_since: float | None = None
    while time.monotonic() < deadline and not crashed(app):
        now = time.monotonic()
        if at_rest(app, phase):
            held_since = held_since or now
            if now - held_since >= HOLD_S:
                return True
        elif at_rest(app) and phase is not None:
            held_since = None
            if app.dashboard.showing_table != (phase.view == "table"):
                send(app, "t")
            send(app, *(("slash", *phase.filter, "enter") if phase.filter else ()))
            answered_by = min(deadline, time.monotonic() + SETUP_S)
            while True:  # until the setup keys are handled, or pressed again
                if at_rest(app, phase) or time.monotonic() >= answered_by:
                    break
                await asyncio.sleep(0.05)
        else:
            held_since = None
            send(app, "escape")
        await asyncio.sleep(0.05)
    return False


async def answers(app: PerseusApp, limit_s: float) -> float | None:
    """Seconds until the app, after a burst, is back at rest and opens the help for
    `?` (None: it did not within `limit_s`)."""
    started = time.monotonic()
    deadline = started + limit_s
    while await reach(app, None, deadline):
        send(app, "question_mark")
        helped = time.monotonic() + 2.0
        while time.monotonic() < min(helped, deadline) and not crashed(app):
            if isinstance(app.screen, HelpScreen):
                send(app, "escape")
                return time.monotonic() - started
            await asyncio.sleep(0.02)
    return None


def send(app: PerseusApp, *keys: str) -> None:
    """Post `keys` to the app without waiting for them to be handled."""
    for key in keys:
        app.post_message(key_event(key))


async def opened(app: PerseusApp, phase: Phase, opener: Opener, deadline: float) -> bool:
    """Press keys as a person would until `opener`'s screen is on top of `phase`'s
    dashboard and stays there for a moment (False: not before `deadline`).

    From the phase's dashboard at rest, its keys are pressed; when the screen does
    not open (a stop refused on the selected exchange), the selection moves down
    and the keys are pressed again.
    """
    for attempt in range(OPEN_TRIES):
        if not await reach(app, phase, deadline):
            return False
        if attempt:
            send(app, "down")
        send(app, *opener.keys)
        answered_by = min(deadline, time.monotonic() + SETUP_S)
        held_since: float | None = None
        while time.monotonic() < answered_by and not crashed(app):
            now = time.monotonic()
            if isinstance(app.screen, opener.screen):
                held_since = held_since or now
                if now - held_since >= HOLD_S:
                    return True
            else:
                held_since = None
            await asyncio.sleep(0.02)
        if crashed(app) or time.monotonic() >= deadline:
            return False
    return False


async def fuzz(
    app: PerseusApp,
    *,
    seed: int = SEED,
    phase_s: float = 16.0,
    rate: int = RATE,
    phases: tuple[Phase, ...] = PHASES,
    settle_s: float = SETTLE_S,
    openers: tuple[Opener, ...] = (),
) -> FuzzReport:
    """Send `rate` keys a second for `phase_s` in each phase; what happened.

    Keys are posted on a fixed schedule, never waiting for the app: the app and
    this loop share one event loop, so when the app is slow (a loaded machine)
    the keys that fell due meanwhile are posted at once, in a burst, as a
    terminal delivers what it buffered; they queue in the app. The rate is the
    schedule's, whatever the load. After each phase the app must answer a key
    within `settle_s` (the queue drained).

    With `openers`, each one opens a stretch of a phase (the first opener in the
    first phase, the second in the second, and round again): a phase's keys are
    split into a stretch that starts on its dashboard and one for each of its
    openers, which starts on the opener's screen, opened over that dashboard
    (`opened`) once the stretch before is handled. Every stretch then goes
    wherever its keys lead. (Each stretch ends on the schedule's last key: the
    fewer the stretches, the less a loop held at their ends lowers the rate.)
    """
    report = FuzzReport(seed=seed)
    watch_for_problems(app, report)
    per_phase = int(phase_s * rate)
    sequence = key_sequence(seed, per_phase * len(phases))
    for number, phase in enumerate(phases):
        keys = sequence[number * per_phase : (number + 1) * per_phase]
        starts: tuple[Opener | None, ...] = (None, *openers[number :: len(phases)])
        set_up = True
        for part, opener in enumerate(starts):
            deadline = time.monotonic() + settle_s
            ready = (
                await reach(app, phase, deadline)
                if opener is None
                else await opened(app, phase, opener, deadline)
            )
            if not ready:
                on = "" if opener is None else f" with {opener.screen.__name__} open"
                report.problems.append(
                    f"could not set up the phase {phase.name}{on} ({where(app)})"
                )
                set_up = False
                break
            stretch = keys[part * per_phase // len(starts) : (part + 1) * per_phase // len(starts)]
            await press(app, report, stretch, rate)
            if crashed(app):
                break
        if not set_up or crashed(app):
            break
        answered = await answers(app, settle_s)
        if answered is None:
            stack = " > ".join(type(screen).__name__ for screen in app.screen_stack)
            report.problems.append(
                f"no answer to a key {settle_s:.0f} s after {phase.name} (screens: {stack}; "
                f"focus: {app.focused!r})"
            )
            break
        report.drain_s.append(answered)
    error = crashed(app)
    if error is not None:
        report.problems.append(f"crashed: {type(error).__name__}: {error}")
    return report


async def press(app: PerseusApp, report: FuzzReport, keys: list[str], rate: int) -> None:
    """Post `keys`, `rate` a second on a fixed schedule, each counted where the app takes it."""
    started = time.monotonic()
    for index, key in enumerate(keys):
        if crashed(app):
            break
        if (due_in := started + index / rate - time.monotonic()) > 0:
            await asyncio.sleep(due_in)  # behind: no yield until caught up
        report.pressed[key] += 1
        event = key_event(key)
        report.in_flight[id(event)] = event
        app.post_message(event)
        report.keys_sent += 1
    report.seconds += time.monotonic() - started + 1 / rate  # to the next key's slot


@contextlib.contextmanager
def live_fleet(url: str, log_dir: Path) -> Iterator[None]:
    """The screenshot fleet, a real agent and a Livermore-style writer, all on `url`."""
    seed_fleet(url)
    exchange_id, name = AGENT_EXCHANGE
    agent = start_agent(
        url,
        ["--exchange-id", str(exchange_id), "--exchange-name", name],
        log_dir / "fuzz-agent.log",
        PERSEUS_HEARTBEAT_INTERVAL_MS="300",
        PERSEUS_HEARTBEAT_TTL_MS="3000",
        PERSEUS_BLOCK_MS="300",
    )
    stop = threading.Event()
    writer = threading.Thread(target=_livermore_server, args=(url, stop), daemon=True)
    writer.start()
    try:
        yield
    finally:
        stop.set()
        writer.join(10)
        stop_agent(agent, grace_s=10)


def _livermore_server(url: str, stop: threading.Event) -> None:
    """Claim, heartbeat every 0.3 s and cycle through the lifecycle every few seconds."""
    exchange_id, name = LIVERMORE_EXCHANGE
    cycle = ("starting", "warming", "active", "stopping", "stopped", "idle")
    with sync_redis.Redis.from_url(url, decode_responses=True) as client:
        writer = LivermoreWriter(client, exchange_id, name, "lv-fuzz-1")
        writer.claim()
        beats = 0
        while not stop.wait(0.3):
            writer.heartbeat()
            beats += 1
            if beats % 10 == 0:
                writer.transition(cycle[(beats // 10 - 1) % len(cycle)])
        writer.deregister()
