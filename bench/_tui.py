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
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from textual.pilot import Pilot
from textual.strip import Strip

from perseus_core.wire.settings import Settings
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
