"""Driving the real dashboard headless for the benchmarks that measure it.

The dashboard is built with `create_app` (the same factory as `perseus`) and run
with Textual's `App.run_test`, so every worker, timer, message and repaint is
the real one; only the terminal is missing. "On screen" means rendered by the
compositor: Textual renders every frame headless too and then skips writing it
to a terminal, so the moment the compositor hands a frame to `App._display` is
the moment it would have been written.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from _common import exchange_name, summary_ms, wait_until
from textual.pilot import Pilot
from textual.strip import Strip

from perseus_core.store.activity import ActivityLog
from perseus_core.wire.models import ErrorEntry
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import format_ts
from perseus_tui.app import PerseusApp, create_app
from perseus_tui.widgets.activity_feed import ActivityFeed

SIZE = (120, 40)
"""The terminal size the issue's figures were planned at."""


@dataclass(frozen=True)
class Frame:
    """When a frame was rendered: wall clock and this process's CPU clock."""

    wall: float
    cpu: float


class FrameClock:
    """Timestamps of the frames the compositor produces.

    Wraps `app._display` (what the screen calls with each rendered update) on
    the instance, so it sees every frame of every screen.
    """

    def __init__(self, app: PerseusApp) -> None:
        self.frames = 0
        self._waiters: list[tuple[Callable[[], bool], asyncio.Future[Frame]]] = []
        original = app._display

        def display(screen: Any, renderable: Any) -> None:
            original(screen, renderable)
            if renderable is None:
                return
            frame = Frame(time.perf_counter(), time.process_time())
            self.frames += 1
            ready = [(c, f) for c, f in self._waiters if not f.done() and c()]
            for condition, future in ready:
                future.set_result(frame)
                self._waiters.remove((condition, future))

        app._display = display  # type: ignore[method-assign]

    def when(self, condition: Callable[[], bool]) -> asyncio.Future[Frame]:
        """A future set to the first frame rendered while `condition()` holds;
        registered at once, so no frame after this call is missed."""
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self._waiters.append((condition, future))
        return future

    async def next_frame_when(self, condition: Callable[[], bool], limit_s: float) -> Frame:
        """The first frame rendered once `condition()` holds."""
        future = self.when(condition)
        try:
            return await asyncio.wait_for(future, limit_s)
        finally:
            self._waiters = [(c, f) for c, f in self._waiters if f is not future]


class FeedProbe:
    """Notes when a line containing a marker is first rendered by the feed.

    Wraps the feed's `render_line` (the line API the compositor calls for each
    visible line of each frame), so what it sees is the rendered text.
    """

    def __init__(self, feed: ActivityFeed) -> None:
        self._wanted: dict[str, asyncio.Event] = {}
        self.seen: dict[str, float] = {}
        original = feed.render_line

        def render_line(y: int) -> Strip:
            strip = original(y)
            if self._wanted:
                text = strip.text
                for marker in [m for m in self._wanted if m in text]:
                    self.seen[marker] = time.perf_counter()
                    self._wanted.pop(marker).set()
            return strip

        feed.render_line = render_line  # type: ignore[method-assign]

    def expect(self, marker: str) -> asyncio.Event:
        """Start watching for `marker`; the event is set when it is rendered."""
        event = asyncio.Event()
        self._wanted[marker] = event
        return event

    def forget(self, marker: str) -> None:
        """Stop watching for `marker` (it never showed up)."""
        self._wanted.pop(marker, None)


@contextlib.asynccontextmanager
async def running_dashboard(
    settings: Settings,
    *,
    size: tuple[int, int] = SIZE,
    limit_s: float = 30.0,
    before_start: Callable[[PerseusApp], None] | None = None,
    problems: list[str] | None = None,
    **app_options: Any,
) -> AsyncIterator[tuple[PerseusApp, Pilot[None]]]:
    """The dashboard, started headless, once its first read and its feed history are shown.

    An exception the app raises while it shuts down, after the measurement
    finished, is noted in `problems` (when given) instead of discarding the
    figures already taken; without `problems` it propagates.
    """
    app = create_app(settings, **app_options)
    if before_start is not None:
        before_start(app)
    body_done = False
    try:
        async with app.run_test(size=size) as pilot:
            await asyncio.wait_for(app.loaded.wait(), limit_s)
            await asyncio.wait_for(app.history_loaded.wait(), limit_s)
            await pilot.pause()
            yield app, pilot
            body_done = True
    except Exception as exc:
        if not body_done or problems is None:
            raise
        problems.append(f"the dashboard raised while shutting down: {type(exc).__name__}: {exc}")


def everything_shown(app: PerseusApp, exchanges: int) -> Callable[[], bool]:
    """A condition: the first read is shown with all `exchanges` in the current
    view (the table above 60 exchanges, else the cards)."""
    from textual.css.query import NoMatches

    def shown() -> bool:
        dashboard = app.dashboard
        if not (app.loaded.is_set() and dashboard.is_mounted):
            return False
        try:
            if dashboard.showing_table:
                return bool(dashboard.table.row_count == exchanges)
            return len(dashboard.grid.visible_cards) == exchanges
        except NoMatches:
            return False

    return shown


class ShowCounter:
    """Counts the dashboard's `show_views` calls (one per fleet read shown),
    so a measurement can wait for the frame after the next one."""

    def __init__(self, app: PerseusApp) -> None:
        self.calls = 0
        dashboard = app.dashboard
        original = dashboard.show_views

        def show_views(*args: Any, **kwargs: Any) -> None:
            original(*args, **kwargs)
            self.calls += 1

        dashboard.show_views = show_views  # type: ignore[method-assign]

    def grew(self, since: int) -> Callable[[], bool]:
        """A condition: a read was shown after the count was `since`."""
        return lambda: self.calls > since


async def refresh_cycle_cpu(
    app: PerseusApp,
    clock: FrameClock,
    shows: ShowCounter,
    before_each: Callable[[], Awaitable[None]],
    *,
    cycles: int,
    cycle_limit_s: float,
    phase_limit_s: float,
) -> dict[str, Any]:
    """CPU of full refresh cycles, as bench_scale measures them: after
    `before_each` (rewriting every status), `r`, then this process's CPU from
    the request to the first frame rendered after the new read was shown.

    No new cycle starts after `phase_limit_s`; a cycle not shown within
    `cycle_limit_s` is counted at what it cost so far and ends the phase.
    """
    costs: list[float] = []
    walls: list[float] = []
    timed_out = False
    phase_end = time.perf_counter() + phase_limit_s
    for _ in range(cycles):
        if time.perf_counter() > phase_end:
            break
        await before_each()
        await asyncio.sleep(0.3)
        done = clock.when(shows.grew(shows.calls))
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        app.request_refresh()
        try:
            frame = await asyncio.wait_for(done, cycle_limit_s)
        except TimeoutError:
            costs.append(time.process_time() - start_cpu)
            walls.append(time.perf_counter() - start_wall)
            timed_out = True
            break
        costs.append(frame.cpu - start_cpu)
        walls.append(frame.wall - start_wall)
    return {**summary_ms(costs), "wall": summary_ms(walls), "timed_out": timed_out}


async def key_press_latency(
    app: PerseusApp, clock: FrameClock, *, while_: Callable[[], bool], every_s: float = 0.05
) -> dict[str, Any]:
    """Press `p` (pause / resume the feed) through the app's driver every
    `every_s` while `while_()` holds, as a terminal delivers a key, and time
    each press until the first frame rendered after the action ran (as
    bench_burst measures it). A press not handled and shown within 2 s
    counts as infinitely late."""
    from textual import events

    feed = app.dashboard.feed
    handled_at: list[float] = []
    key_handled = asyncio.Event()

    def on_paused(_paused: bool) -> None:
        handled_at.append(time.perf_counter())
        key_handled.set()

    app.dashboard.watch(feed, "paused", on_paused, init=False)
    handled: list[float] = []
    shown: list[float] = []
    missed = 0
    assert app._driver is not None
    while while_():
        count = len(handled_at)
        key_handled.clear()
        repainted = clock.when(lambda count=count: len(handled_at) > count)  # type: ignore[misc]
        pressed = time.perf_counter()
        app._driver.send_message(events.Key("p", "p"))
        try:
            await asyncio.wait_for(key_handled.wait(), 2.0)
            frame = await asyncio.wait_for(repainted, 2.0)
        except TimeoutError:
            missed += 1
            continue
        handled.append(handled_at[count] - pressed)
        shown.append(frame.wall - pressed)
        await asyncio.sleep(max(0.0, every_s - (time.perf_counter() - pressed)))
    if feed.paused:
        feed.paused = False
    return {
        "presses": len(shown) + missed,
        "unhandled_after_2s": missed,
        "handled": summary_ms(handled),
        "to_repaint": summary_ms(shown + [math.inf] * missed),
    }


async def event_to_screen(
    app: PerseusApp,
    clock: FrameClock,
    log: ActivityLog,
    exchanges: int,
    *,
    events: int,
    warmup: int = 10,
    missing_after_s: float = 2.0,
    phase_limit_s: float = math.inf,
) -> dict[str, Any]:
    """Append error entries one by one through `log` (as an agent does) and
    time each from just before its XADD until it is on screen, spaced
    20-60 ms apart at random.

    On screen is the first of: the feed's `render_line` produced the line
    holding it (bench_event_to_screen's end), or the first frame rendered
    after the entry was handed to the feed. On a quiet feed they are the
    same frame; with hundreds of entries a second newer entries can push it
    below the feed's visible lines before any frame is drawn, so it is never
    rendered although the screen showed the feed with it in place.

    An event not on screen within `missing_after_s` counts as infinitely
    late. No new event starts after `phase_limit_s`.
    """
    probe = FeedProbe(app.dashboard.feed)
    dashboard = app.dashboard
    handed = dashboard.add_feed_entries
    wanted: dict[str, tuple[float, asyncio.Event]] = {}
    """Markers appended and not yet handed to the feed -> when, and their event."""
    appended: dict[str, float] = {}
    """When each counted marker was appended (t0)."""
    delivered: dict[str, float] = {}
    """When each marker was handed to the feed, however late."""
    framed: dict[str, float] = {}
    """When the first frame after each marker's hand-off was rendered."""

    def add_feed_entries(entries: Any) -> None:
        batch = list(entries)
        if wanted:
            now = time.perf_counter()
            for entry in batch:
                marker = getattr(entry, "error", "")[:11]
                if marker in wanted:
                    _appended, shown = wanted.pop(marker)
                    delivered[marker] = now

                    def on_frame(
                        future: asyncio.Future[Frame],
                        marker: str = marker,
                        shown: asyncio.Event = shown,
                    ) -> None:
                        if not future.cancelled():
                            framed[marker] = future.result().wall
                            shown.set()

                    clock.when(lambda: True).add_done_callback(on_frame)
        handed(batch)

    dashboard.add_feed_entries = add_feed_entries  # type: ignore[method-assign]
    latencies: list[float] = []
    in_view = 0
    missing = 0
    phase_end = time.perf_counter() + phase_limit_s
    try:
        for index in range(warmup + events):
            if time.perf_counter() > phase_end:
                break
            exchange_id = index * 7919 % exchanges + 1  # spread over the fleet
            name = exchange_name(exchange_id)
            marker = f"probe-{index:05d}"
            entry = ErrorEntry(
                timestamp=format_ts(datetime.now(UTC)),
                error=f"{marker} websocket closed (1006)",
                exchange_id=str(exchange_id),
                exchange_name=name,
                hostname="trader-01.eu-west.internal",
                ip="203.0.113.7",
                state="active",
            )
            shown = probe.expect(marker)
            start = time.perf_counter()
            wanted[marker] = (start, shown)
            if index >= warmup:
                appended[marker] = start
            await log.append(name, entry)
            try:
                await asyncio.wait_for(shown.wait(), missing_after_s)
            except TimeoutError:
                probe.forget(marker)  # still watched for its hand-off to the feed
                missing += index >= warmup
                continue
            if index >= warmup:
                seen = probe.seen.get(marker, math.inf)
                in_view += seen < math.inf
                latencies.append(min(seen, framed.get(marker, math.inf)) - start)
            await asyncio.sleep(random.uniform(0.02, 0.06))
        # The late ones a little longer, to tell late from lost.
        await wait_until(lambda: all(m in delivered for m in appended), missing_after_s)
    finally:
        dashboard.add_feed_entries = handed  # type: ignore[method-assign]
    return {
        "events": len(latencies) + missing,
        "warmup_events_not_counted": warmup,
        "missing": missing,
        "missing_after_s": missing_after_s,
        **summary_ms(latencies + [math.inf] * missing),
        # Where the time went: appended to handed to the feed (the read),
        # late ones included; "never": not handed by the end of the phase.
        "handed_to_feed": {
            **summary_ms([delivered[m] - t0 for m, t0 in appended.items() if m in delivered]),
            "never": sum(m not in delivered for m in appended),
        },
        "rendered_in_the_feed_s_view": in_view,
    }
