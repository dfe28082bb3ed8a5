"""The Perseus dashboard app: turns what the fleet service reports into the state screens watch.

The Redis work lives in `perseus_tui.service`. The app holds what the
screens show as reactives (the fleet, the header, the clock's second, the
time zone, the outage, the activity as it arrives, read-only mode, the
command lines): it sets them from the service's messages, and each screen
watches the ones it shows, by name, so no screen imports the app. It also
answers the screens' requests (open, start, stop, refresh) and shows
notifications. The clock and the time zone are injected, so a snapshot test
renders the same screen on any machine on any day.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta, tzinfo
from operator import attrgetter

from textual import events, on
from textual.app import App
from textual.binding import Binding
from textual.command import CommandPalette
from textual.content import Content
from textual.reactive import reactive, var
from textual.screen import Screen
from textual.theme import ThemeProvider
from textual.worker import Worker, WorkerState

from perseus_core.present import refusal, route_of
from perseus_core.present.commands import CommandStep, step_text
from perseus_core.present.exchange import Timing, zone_name
from perseus_core.present.timeline import DAY
from perseus_core.store.control.sender import Via, default_operator
from perseus_core.store.network import ExchangeView
from perseus_core.wire.models import ActivityEntry, CommandType
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import Clock, system_clock
from perseus_tui import render
from perseus_tui.commands import ExchangeCommands, Palette
from perseus_tui.fleet import FleetCounts, FleetState
from perseus_tui.heap import dashboard_collector
from perseus_tui.messages import (
    CommandProgress,
    CommandRequested,
    ConnectionLost,
    DetailRequested,
    ExchangesRefreshed,
    FeedEntries,
    FeedHistory,
    IntroRequested,
    OutputRequested,
    ReadOnlyDetected,
    RefreshRequested,
    SnapshotLoaded,
    TimelineWindows,
)
from perseus_tui.observed import OfflineObserver
from perseus_tui.screens.confirm import ConfirmScreen
from perseus_tui.screens.dashboard import DashboardScreen
from perseus_tui.screens.detail import DetailScreen
from perseus_tui.screens.help import HelpScreen, help_sections
from perseus_tui.screens.intro import IntroScreen
from perseus_tui.screens.output import OutputScreen
from perseus_tui.service import FleetService
from perseus_tui.stop_question import StopQuestion, explanation, livermore_question
from perseus_tui.widgets.activity_feed import DEFAULT_MAX_LINES
from perseus_tui.widgets.banner import Outage
from perseus_tui.widgets.command_bar import FAILED_STAGES, CommandLine, progress
from perseus_tui.widgets.empty_fleet import RedisHint, redis_hint
from perseus_tui.widgets.header import HeaderState, summary_parts

ERROR_TIMEOUT_S = 10.0
"""Error notifications stay longer than progress ones."""


_view_order = attrgetter("exchange_id")
"""How the cards and the table list exchanges (ids are unique in a fleet's views)."""


class PerseusApp(App[None]):
    """The operator dashboard; build it with `create_app`."""

    CSS_PATH = "perseus.tcss"
    TITLE = "Perseus Network"
    COMMANDS = App.COMMANDS | {ExchangeCommands}
    BINDINGS = [
        Binding("q", "quit", "Quit", tooltip="Leave the dashboard", id="quit"),
        Binding("question_mark", "help", "Help", tooltip="List every key", id="help"),
        Binding(
            "u",
            "toggle_utc",
            "UTC/local",
            tooltip="Show times in UTC or in local time",
            id="toggle-utc",
        ),
    ]

    utc: reactive[bool] = reactive(False, init=False)
    """Absolute times in UTC (True) or in the local zone."""

    # What the screens watch (by name; they never call into the app).
    fleet: var[FleetState] = var(FleetState(), init=False)
    """The fleet as last read (or marked stale)."""
    header: var[HeaderState | None] = var(None, init=False, always_update=True)
    """What every header shows."""
    clock_tick: var[datetime | None] = var(None, init=False)
    """The clock, each second: ages, uptimes and countdowns advance."""
    display_tz: var[tzinfo | None] = var(None, init=False)
    """The zone absolute times are shown in (None: the machine's local zone)."""
    outage: var[Outage | None] = var(None, init=False)
    """Set while Redis is unreachable."""
    live_entries: var[Sequence[ActivityEntry]] = var((), init=False, always_update=True)
    """The latest batch of live activity entries, oldest first."""
    feed_history: var[Sequence[ActivityEntry]] = var((), init=False)
    """The recent history loaded at start, newest first."""
    read_only_reason: var[str] = var("", init=False)
    """Why start and stop are disabled (the flag, or Redis refused a write);
    empty while they are not."""
    commands: var[tuple[CommandLine, ...]] = var((), init=False)
    """The recent commands' progress lines, newest last."""

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock = system_clock,
        read_only: bool = False,
        local_tz: tzinfo | None = None,
        target_label: str | None = None,
        operator: str | None = None,
        feed_max_lines: int = DEFAULT_MAX_LINES,
        intro: str | None = None,
        initial_selection: int | None = None,
        expecting: str | None = None,
        redis_url_file: str | None = None,
    ) -> None:
        super().__init__()
        self.redis_url_file = redis_url_file
        """The file the Redis URL was read from, if it was (`--redis-url-file`)."""
        self.intro = intro
        """Text of the dismissable intro panel (the demo's tour), if any."""
        self.initial_selection = initial_selection
        """The exchange selected first, once listed (None: the first one)."""
        self.expecting = expecting
        """What an empty fleet says while exchanges are known to be on their way."""
        self.settings = settings
        self.clock = clock
        self.local_tz = local_tz
        self.set_reactive(PerseusApp.display_tz, local_tz)
        if read_only:
            self.set_reactive(
                PerseusApp.read_only_reason, "the dashboard was started with --read-only"
            )
        self.target = target_label or settings.redacted_redis_url
        self.operator = operator or default_operator()
        self.feed_max_lines = feed_max_lines
        # This dashboard's own timing matters only for holders that do not say theirs.
        timing = Timing.from_settings(settings, polled=True)
        self.set_reactive(PerseusApp.fleet, FleetState(timing=timing))
        self.observer = OfflineObserver()
        """Exchanges seen vanishing between two reads, and coming back."""
        self.loaded = asyncio.Event()
        """Set once the first fleet read has been shown (tests and screenshots wait on it)."""
        self.history_loaded = asyncio.Event()
        """Set once the feed's start-up history has been shown."""
        self.connected: bool | None = None
        """True: Redis answers; False: unreachable; None: not known yet."""
        self.service = FleetService(
            self, settings, clock=clock, operator=self.operator, feed_max_lines=feed_max_lines
        )
        self._collector = contextlib.ExitStack()
        """The garbage collector's thresholds while the dashboard runs (`dashboard_collector`)."""
        self._summary: tuple[tuple[object, ...], tuple[Content, ...]] | None = None
        """The header counts and what they were counted from (the views, the
        timelines' version, the minute: the clock tick reuses them)."""
        self._counts = FleetCounts(self.fleet.views)
        """The header's counts of the views shown: they change with a read only,
        not with the feed, whose every batch moves the timelines' version; a
        partial re-read updates them for the exchanges it read (`_show`)."""

    @property
    def read_only(self) -> bool:
        """Start and stop are disabled (see `read_only_reason`)."""
        return bool(self.read_only_reason)

    @property
    def timelines_read(self) -> bool:
        """Every listed exchange's timeline window has been read, so its strips
        are final (tests and screenshots wait on it)."""
        names = [view.exchange_name for view in self.fleet.ordered]
        return not self.fleet.timelines.unloaded(names)

    @property
    def views(self) -> Mapping[int, ExchangeView]:
        """Every listed exchange as last read, by id."""
        return self.fleet.views

    def redis_hint(self) -> RedisHint:
        """How commands shown to the user reach this Redis when copied (never
        with its password: `perseus_tui.widgets.empty_fleet.redis_hint`)."""
        return redis_hint(self.settings, self.target, self.redis_url_file)

    def header_state(self) -> HeaderState:
        """What every header shows right now."""
        views = self.views
        fleet = self.fleet
        now = self.clock()
        basis = (views, fleet.timelines.version, now.replace(second=0, microsecond=0))
        known = self._summary[0] if self._summary is not None else None
        if known is None or known[0] is not views or known[1:] != basis[1:]:
            counts = self._counts
            if counts.views is not views:  # not shown through `_show`: count them all
                counts = self._counts = FleetCounts(views)
            flapping = fleet.timelines.flapping(counts.names, now, self.settings.flap_transitions)
            parts = summary_parts(counts.online, len(views), ready=counts.ready, flapping=flapping)
            self._summary = (basis, tuple(parts))
        summary = self._summary
        assert summary is not None  # set just above
        return HeaderState(
            target=self.target,
            connected=self.connected,
            read_only=self.read_only,
            summary_parts=summary[1],
            now=now,
            tz=self.display_tz,
        )

    _dashboard: DashboardScreen | None = None
    """The main screen, built on first use."""

    @property
    def dashboard(self) -> DashboardScreen:
        """The main screen (always at the bottom of the stack)."""
        if self._dashboard is None:
            self._dashboard = DashboardScreen(
                self.header_state(),
                self.fleet,
                self.read_only_reason,
                clock=self.clock,
                feed_max_lines=self.feed_max_lines,
                tz=self.display_tz,
                redis_hint=self.redis_hint(),
                expecting=self.expecting,
                intro=bool(self.intro),
                initial_selection=self.initial_selection,
            )
        return self._dashboard

    @property
    def crash(self) -> BaseException | None:
        """The exception that ended the app, if one did (Textual keeps the
        first); the CLI writes it to a crash report."""
        return self._exception

    async def on_event(self, event: events.Event) -> None:
        # Keys typed faster than a busy app handles them can still be queued
        # when it shuts down, after its last screen is gone: Textual would
        # crash looking for a screen to give them to. Nothing is left to act.
        if isinstance(event, events.Key) and not self.screen_stack:
            return
        await super().on_event(event)

    def request_refresh(self) -> None:
        """Re-read the whole fleet now (key `r`)."""
        self.service.request_refresh()

    def _showing(self) -> bool:
        """The screens are up: results that arrive while the app shuts down are dropped."""
        # `_shutdown` clears is_running before it prunes the screens.
        return self.is_running and self._dashboard is not None and self._dashboard.is_attached

    # --- lifecycle -----------------------------------------------------------------

    def get_default_screen(self) -> Screen[None]:
        return self.dashboard

    def on_mount(self) -> None:
        self._collector.enter_context(dashboard_collector())
        self.service.start()
        self.show_intro()
        self.set_interval(1.0, self._tick, name="clock")

    async def on_unmount(self) -> None:
        await self.service.aclose()
        self._collector.close()

    def _tick(self) -> None:
        if not self._showing():
            return
        now = self.clock()
        self.header = self.header_state()
        self.clock_tick = now

    # --- results of the fleet service ------------------------------------------------

    @on(SnapshotLoaded)
    def _snapshot_loaded(self, message: SnapshotLoaded) -> None:
        if not self._showing():
            return
        views = {view.exchange_id: view for view in message.snapshot.exchanges}
        self._connection_ok()
        self._show(views, read_at=message.snapshot.taken_at)
        self.loaded.set()

    @on(ExchangesRefreshed)
    def _exchanges_refreshed(self, message: ExchangesRefreshed) -> None:
        if not self._showing():
            return
        views = dict(self.views)  # a new mapping: the header counts again
        changed: dict[int, ExchangeView] = {}
        for view in message.views:
            if view.exchange_id in views:
                views[view.exchange_id] = changed[view.exchange_id] = view
            else:
                self.request_refresh()  # a new exchange: let a full read place it
        self._connection_ok()
        self._show(views, changed=changed)

    def _show(
        self,
        views: dict[int, ExchangeView],
        *,
        read_at: datetime | None = None,
        changed: dict[int, ExchangeView] | None = None,
    ) -> None:
        """Show `views`. With `changed` (a partial re-read: the same
        exchanges, these few read again) the work follows them, not the
        fleet: a 10,000-exchange dashboard re-reads a few at a time."""
        previous = self.fleet
        if previous.loaded and not previous.stale:
            # Dated when the read was taken: the feed places it among the entries by that time.
            seen_at = read_at or self.clock()
            observed = self.observer.compare(
                previous.views, views if changed is None else changed, seen_at
            )
            if observed:
                previous.timelines.add(observed)  # marks in the strip's slices
                self.live_entries = observed  # feed and history; never written to Redis
        now = self.clock()
        if changed is None:
            ordered = sorted(views.values(), key=_view_order)
            previous.traces.forget(views)
            previous.traces.record(ordered, now)
            self._counts = FleetCounts(views)
            # Old entries go at a full read (they are bounded by KEPT_IN_FLEET between).
            previous.timelines.trim(now - DAY)
        else:
            ordered = list(previous.ordered)
            for view in changed.values():
                ordered[bisect.bisect_left(ordered, _view_order(view), key=_view_order)] = view
            previous.traces.record(changed.values(), now)
            if self._counts.views is previous.views:
                self._counts.update(views, changed)
        timing = previous.timing
        if read_at is not None and read_at != timing.read_at:
            timing = replace(timing, read_at=read_at)
        self.fleet = FleetState(
            views, ordered, now, False, True, timing, previous.timelines, previous.traces
        )
        self.header = self.header_state()

    def _connection_ok(self) -> None:
        recovered = self.connected is False
        self.connected = True
        if recovered:
            self.outage = None
            self.notify(f"Redis at {self.target} answers again.", title="Reconnected", markup=False)

    @on(ConnectionLost)
    def _connection_lost(self, message: ConnectionLost) -> None:
        if not self._showing():
            return
        self.connected = False
        now = self.clock()
        prefix = f"cannot reach Redis at {self.settings.redacted_redis_url}: "
        reason = message.reason.removeprefix(prefix)
        retry_at = now + timedelta(seconds=message.retry_in)
        self.outage = Outage(self.target, reason, retry_at, now)
        fleet = self.fleet
        if fleet.loaded and not fleet.stale:
            self.fleet = replace(fleet, stale=True)
        self.header = self.header_state()

    @on(TimelineWindows)
    def _timeline_windows(self, message: TimelineWindows) -> None:
        timelines = self.fleet.timelines
        for name, window in message.windows.items():
            timelines.load(name, window.entries, known_from=window.known_from)
        # Redraw the strips and the flapping count now rather than at the next
        # second's tick (which a frozen clock, as in screenshots, never brings).
        self.header = self.header_state()
        now = self.clock()
        if self.clock_tick == now:
            self.mutate_reactive(PerseusApp.clock_tick)
        else:
            self.clock_tick = now

    @on(FeedHistory)
    def _feed_history(self, message: FeedHistory) -> None:
        if not self._showing():
            return
        self.feed_history = message.entries
        self.history_loaded.set()

    @on(FeedEntries)
    def _feed_entries(self, message: FeedEntries) -> None:
        self.service.feed_batch_shown(message)  # the next batch may go
        if not self._showing():
            return
        self.fleet.timelines.add(message.entries)
        self.live_entries = message.entries
        self.service.refresh_soon(message.entries)

    @on(CommandProgress)
    def _command_progress(self, message: CommandProgress) -> None:
        step = step_text(CommandStep(message.stage, render.label(message.detail, "", 300)))
        self._command_step(message.exchange_id, message.command, message.stage, step)
        if message.stage in FAILED_STAGES:
            title = f"{message.command.capitalize()} {message.exchange_label}"
            self.notify(step, title=title, severity="error", timeout=ERROR_TIMEOUT_S, markup=False)

    def _command_step(self, exchange_id: int, command: str, stage: str, step: str) -> None:
        """Advance a command's line in the command bar (or start one)."""
        label = self.fleet.label(exchange_id)
        self.commands = progress(self.commands, exchange_id, label, command, stage, step)

    @on(ReadOnlyDetected)
    def _read_only_detected(self, message: ReadOnlyDetected) -> None:
        self.read_only_reason = message.reason
        self.notify(
            f"Switched to read-only: {message.reason}",
            title="Read-only",
            severity="warning",
            timeout=ERROR_TIMEOUT_S,
            markup=False,
        )

    def watch_read_only_reason(self, _reason: str) -> None:
        self.refresh_bindings()
        self.header = self.header_state()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one place a worker failure is reported; the fleet and feed workers restart."""
        worker = event.worker
        if event.state is not WorkerState.ERROR:
            return
        self.notify(
            f"{worker.name or worker.group}: {worker.error}",
            title="Background task failed",
            severity="error",
            timeout=ERROR_TIMEOUT_S,
            markup=False,
        )
        self.service.restart(worker)

    # --- requests from the screens -----------------------------------------------------

    @on(IntroRequested)
    def _intro_requested(self) -> None:
        self.show_intro()

    @on(RefreshRequested)
    def _refresh_requested(self) -> None:
        self.request_refresh()

    @on(DetailRequested)
    def _detail_requested(self, message: DetailRequested) -> None:
        view = self.views.get(message.exchange_id)
        if view is None:
            return
        self.push_screen(
            DetailScreen(
                view,
                self.header_state(),
                self.fleet,
                self.read_only_reason,
                service=self.service,
                observer=self.observer,
                clock=self.clock,
                tz=self.display_tz,
            )
        )

    @on(OutputRequested)
    def _output_requested(self, message: OutputRequested) -> None:
        view = self.views.get(message.exchange_id)
        if view is not None:
            self.push_screen(
                OutputScreen(
                    view.exchange_id, view.display_name, service=self.service, tz=self.display_tz
                )
            )

    @on(CommandRequested)
    def _command_requested(self, message: CommandRequested) -> None:
        view = self.views.get(message.exchange_id)
        if self.read_only:
            reason: str | None = self.read_only_reason
        else:
            reason = refusal(view, message.command) if view is not None else None
        if reason is not None:
            # Refused from what was just read: nothing is sent, no timeout is waited out.
            self._command_step(message.exchange_id, message.command.value, "refused", reason)
            return
        if message.command is CommandType.STOP:
            self._confirm_stop(message.exchange_id)
        else:
            self.send_command(message.exchange_id, message.command)

    def send_command(self, exchange_id: int, command: CommandType) -> None:
        """Send start/stop to an exchange's agent; progress shows in the command bar."""
        if self.read_only:
            self._command_step(exchange_id, command.value, "refused", self.read_only_reason)
            return
        self.service.send_command(exchange_id, self.fleet.label(exchange_id), command)

    def _confirm_stop(self, exchange_id: int) -> None:
        """Ask, naming who would be asked (counting the Livermore servers that
        listen when it goes over their channel), then send `stop`."""
        view = self.views.get(exchange_id)
        if view is not None and route_of(view, CommandType.STOP).via is Via.LIVERMORE:

            async def count_then_ask() -> None:
                redis, settings = self.service.redis, self.settings
                self._ask_stop(exchange_id, await livermore_question(redis, settings, view))

            self.run_worker(count_then_ask(), exit_on_error=False)
        else:
            self._ask_stop(exchange_id, StopQuestion(explanation(view)))

    def _ask_stop(self, exchange_id: int, question: StopQuestion) -> None:
        if question.refused is not None:
            self._command_step(exchange_id, "stop", question.stage, question.refused)
            return
        title = f"Stop {self.fleet.label(exchange_id)}?"
        self.push_screen(
            ConfirmScreen(title, question.explanation, yes="Stop"),
            lambda yes: self.send_command(exchange_id, CommandType.STOP) if yes else None,
        )

    # --- display ---------------------------------------------------------------------------

    def watch_utc(self, utc: bool) -> None:
        self.display_tz = UTC if utc else self.local_tz
        self.header = self.header_state()
        self.notify(self.zone_note(), timeout=2, markup=False)

    def zone_note(self) -> str:
        """What `u` says it switched to: UTC, or local time and its zone. Where
        local time is UTC, the two would read alike: it says so."""
        now = self.clock()
        local_is_utc = now.astimezone(self.local_tz).utcoffset() == timedelta(0)
        if self.utc:
            return "Times in UTC" + (" (local time here is UTC too)" if local_is_utc else "")
        return f"Times in local time ({zone_name(self.local_tz, now)})"

    def action_toggle_utc(self) -> None:
        """Switch absolute times between UTC and local time."""
        self.utc = not self.utc

    def action_toggle_view(self) -> None:
        """Switch the dashboard between cards and table."""
        self.dashboard.action_toggle_view()

    def show_intro(self) -> None:
        """Open the intro panel over the dashboard, if the dashboard was given one."""
        if self.intro and not isinstance(self.screen, IntroScreen):
            self.push_screen(IntroScreen(self.intro))

    def action_command_palette(self) -> None:
        """Open the command palette (one that cannot be submitted twice).

        It has no id, unlike Textual's own: a screen a key asked for before
        Ctrl+P (Enter: the detail screen) can open above the palette, and
        Ctrl+P there opens a second palette while the first is still on the
        stack; two screens with one id end the app (`DuplicateIds`).
        """
        if self.use_command_palette and not isinstance(self.screen, CommandPalette):
            self.push_screen(Palette())

    def search_themes(self) -> None:
        """Pick a theme (the palette's Theme command) in the same safe palette."""
        self.push_screen(Palette(providers=[ThemeProvider], placeholder="Search for themes…"))

    def action_help(self) -> None:
        """List every key binding."""
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(help_sections(PerseusApp.BINDINGS)))


def create_app(
    settings: Settings,
    *,
    clock: Clock = system_clock,
    read_only: bool = False,
    local_tz: tzinfo | None = None,
    target_label: str | None = None,
    operator: str | None = None,
    feed_max_lines: int = DEFAULT_MAX_LINES,
    intro: str | None = None,
    initial_selection: int | None = None,
    expecting: str | None = None,
    redis_url_file: str | None = None,
) -> PerseusApp:
    """Build the dashboard; the CLI, the tests and the screenshot tool all start here.

    Args:
        settings: Redis URL, refresh interval, command timeouts.
        clock: "now" for ages, uptimes and the header clock (fixed in snapshot tests).
        read_only: disable start/stop from the start.
        local_tz: the zone "local time" means; None for the machine's own
            (snapshot tests pin it so they pass in any time zone).
        target_label: how the Redis target is named in the header and banner;
            default: the URL with its password redacted. Snapshot tests pass a
            fixed label so the random port of their server never shows.
        operator: who sends commands, for the audit trail (default `user@host`).
        feed_max_lines: how many entries the activity feed keeps.
        intro: plain text for a panel that explains what is on screen (the
            demo's tour); `i` opens it again once closed.
        initial_selection: the exchange to select first, as soon as it is
            listed (the demo's "try this first"); default: the first one.
        expecting: what the fleet area says while it is empty because its
            exchanges are on their way (the demo's agents starting), instead
            of how to add a first exchange.
        redis_url_file: the `--redis-url-file` the URL was read from, if it
            was: the commands the dashboard suggests name it, never a URL
            holding a password.
    """
    return PerseusApp(
        settings,
        clock=clock,
        read_only=read_only,
        local_tz=local_tz,
        target_label=target_label,
        operator=operator,
        feed_max_lines=feed_max_lines,
        intro=intro,
        initial_selection=initial_selection,
        expecting=expecting,
        redis_url_file=redis_url_file,
    )


__all__ = ["PerseusApp", "create_app"]
