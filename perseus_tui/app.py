"""The Perseus dashboard app: Redis workers, the state they report, and the screens showing it.

Three kinds of async workers talk to Redis, none on a thread (redis.asyncio
must stay on the app's event loop):

- the fleet poller re-reads every status every `--refresh` seconds, and at
  once the exchanges whose streams just had activity;
- the activity follower loads the recent history, then follows every stream
  with blocking reads (`ActivityTail`), so a new entry shows at once;
- one worker per start/stop command, reporting sent -> acknowledged -> result.

Workers only post messages (`perseus_tui.messages`); the handlers here update
the screens. The clock and the time zone are injected, so a snapshot test
renders the same screen on any machine on any day.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import socket
import time
from collections.abc import Iterable
from datetime import UTC, timedelta, tzinfo

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoPermissionError, RedisError
from textual import on, work
from textual.app import App
from textual.binding import Binding
from textual.content import Content
from textual.reactive import reactive
from textual.screen import Screen
from textual.worker import Worker, WorkerState

from perseus_core.plumbing.connection import connect, describe_redis_error
from perseus_core.store.activity import ActivityLog, ActivityTail
from perseus_core.store.control import ControlClient, NoAgentAnswered
from perseus_core.store.network import ExchangeView, NetworkReader
from perseus_core.wire.errors import PerseusError
from perseus_core.wire.models import ActivityEntry, CommandReply, CommandType, ReplyStatus
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import Clock, system_clock
from perseus_tui import render
from perseus_tui.commands import ExchangeCommands
from perseus_tui.messages import (
    CommandProgress,
    ConnectionLost,
    ExchangesRefreshed,
    FeedEntries,
    FeedHistory,
    ReadOnlyDetected,
    SnapshotLoaded,
)
from perseus_tui.screens.base import ExchangeScreen
from perseus_tui.screens.confirm import ConfirmScreen
from perseus_tui.screens.dashboard import DashboardScreen
from perseus_tui.screens.detail import DetailScreen
from perseus_tui.screens.help import HelpScreen, HelpSection
from perseus_tui.widgets.activity_feed import DEFAULT_MAX_LINES
from perseus_tui.widgets.card_grid import CardGrid
from perseus_tui.widgets.header import HeaderState
from perseus_tui.widgets.instance_table import InstanceTable

RETRY_MAX_S = 4.0
"""Longest wait between reconnect attempts (shorter when --refresh is shorter)."""
PARTIAL_REFRESH_MAX = 20
"""More exchanges than this with fresh activity: re-read the whole fleet instead."""

ERROR_TIMEOUT_S = 10.0
"""Error notifications stay longer than progress ones."""


def default_operator() -> str:
    """Who sends commands from this dashboard, for the audit trail: `user@host`."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


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
    ) -> None:
        super().__init__()
        self.settings = settings
        self.clock = clock
        self.read_only = read_only
        self.read_only_reason = "the dashboard was started with --read-only" if read_only else ""
        self.target = target_label or settings.redacted_redis_url
        self.operator = operator or default_operator()
        self.feed_max_lines = feed_max_lines
        self.views: dict[int, ExchangeView] = {}
        self.connected: bool | None = None
        self.loaded = asyncio.Event()
        """Set once the first fleet read has been shown (tests and screenshots wait on it)."""
        self.history_loaded = asyncio.Event()
        """Set once the feed's start-up history has been shown."""
        self._local_tz = local_tz
        self._redis: Redis | None = None
        self._wake = asyncio.Event()
        self._dirty: set[int] = set()
        self._full_due = False
        self._discover_due = False
        self._feed_batch: FeedEntries | None = None
        self._retry_at = self.clock()
        self._stale = False
        self._dashboard: DashboardScreen | None = None
        self._summary: tuple[dict[int, ExchangeView], tuple[Content, ...]] | None = None
        """The header counts and the `views` they were counted from (the clock tick
        reuses them; every read replaces `views`)."""

    # --- shared state ------------------------------------------------------------

    @property
    def redis(self) -> Redis:
        """The client for short commands (blocking reads use their own)."""
        if self._redis is None:
            # One immediate retry replaces a pooled connection that went stale
            # (server restarted); redis-py's default backoff retries would hide
            # an outage from the banner for seconds.
            self._redis = connect(self.settings, retry=Retry(NoBackoff(), 1))
        return self._redis

    @property
    def display_tz(self) -> tzinfo | None:
        """The zone absolute times are shown in (None: the machine's local zone)."""
        return UTC if self.utc else self._local_tz

    @property
    def dashboard(self) -> DashboardScreen:
        """The main screen (always at the bottom of the stack)."""
        if self._dashboard is None:
            self._dashboard = DashboardScreen(
                self.header_state(), feed_max_lines=self.feed_max_lines, tz=self.display_tz
            )
        return self._dashboard

    @property
    def refresh_s(self) -> float:
        """Seconds between full fleet reads."""
        return self.settings.refresh_ms / 1000

    def redis_option(self) -> str:
        """`--redis-url <target>` for commands shown to the user ("" for the default Redis)."""
        if self.settings.redis_url == Settings.model_fields["redis_url"].default:
            return ""
        return f"--redis-url {self.target}"

    def exchange_label(self, exchange_id: int) -> str:
        """A safe, human name for an exchange: `Coinbase #1`."""
        view = self.views.get(exchange_id)
        if view is None:
            return f"exchange #{exchange_id}"
        return f"{render.label(view.display_name or view.exchange_name, '?', 40)} #{exchange_id}"

    def header_state(self) -> HeaderState:
        """What every header shows right now."""
        if self._summary is None or self._summary[0] is not self.views:
            online = [v for v in self.views.values() if v.online]
            states = [v.status.connection_state.value if v.status else None for v in online]
            ready = sum(1 for v in self.views.values() if v.ready)
            parts = tuple(render.summary_parts(states, len(self.views), ready=ready))
            self._summary = (self.views, parts)
        return HeaderState(
            target=self.target,
            connected=self.connected,
            read_only=self.read_only,
            summary_parts=self._summary[1],
            now=self.clock(),
            tz=self.display_tz,
        )

    def _showing(self) -> bool:
        """The screens are up: results that arrive while the app shuts down are dropped."""
        # `_shutdown` clears is_running before it prunes the screens.
        return self.is_running and self._dashboard is not None and self._dashboard.is_attached

    def _exchange_screens(self) -> list[DashboardScreen | DetailScreen]:
        """The screens that show fleet data (modals on top are skipped)."""
        return [s for s in self.screen_stack if isinstance(s, DashboardScreen | DetailScreen)]

    # --- lifecycle -----------------------------------------------------------------

    def get_default_screen(self) -> Screen[None]:
        return self.dashboard

    def on_mount(self) -> None:
        self._poll_fleet()
        self._follow_activity()
        self.set_interval(1.0, self._tick, name="clock")

    async def on_unmount(self) -> None:
        # Cancelled workers still have to close their own connections: let them.
        workers = list(self.workers)
        for worker in workers:
            worker.cancel()
        waits = [asyncio.ensure_future(worker.wait()) for worker in workers]
        if waits:
            done, _ = await asyncio.wait(waits, timeout=5)
            for future in done:
                future.exception()
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    def _tick(self) -> None:
        if not self._showing():
            return
        now = self.clock()
        self._update_headers()
        for screen in self._exchange_screens():
            screen.tick(now)

    # --- fleet polling ---------------------------------------------------------------

    @property
    def retry_s(self) -> float:
        """Seconds between reconnect attempts while Redis is unreachable."""
        return min(RETRY_MAX_S, self.refresh_s)

    def request_refresh(self) -> None:
        """Re-read the whole fleet now (key `r`)."""
        self._full_due = True
        self._wake.set()

    @work(exclusive=True, group="poll", exit_on_error=False)
    async def _poll_fleet(self) -> None:
        """Read the fleet every `refresh_s`, and changed exchanges as soon as they change.

        One loop does both, so a partial read can never overtake a full one.
        Failures are reported (banner) and retried every `retry_s`.
        """
        reader = NetworkReader(self.redis, self.settings, clock=self.clock)
        next_full = 0.0
        failing = False
        while True:
            timeout = self.retry_s
            try:
                if failing or self._full_due or time.monotonic() >= next_full:
                    # After an outage (Redis may have restarted empty) or activity
                    # from an unlisted exchange, look for online exchanges now
                    # instead of at the reader's next periodic scan.
                    discover = True if failing or self._discover_due else None
                    self._full_due = self._discover_due = False
                    self._dirty.clear()
                    snapshot = await reader.snapshot(discover_online=discover)
                    next_full = time.monotonic() + self.refresh_s
                    self.post_message(SnapshotLoaded(snapshot))
                elif self._dirty:
                    ids = sorted(self._dirty)
                    self._dirty.clear()
                    if len(ids) > PARTIAL_REFRESH_MAX:
                        self._full_due = True
                        continue
                    views = [await reader.exchange(exchange_id) for exchange_id in ids]
                    self.post_message(ExchangesRefreshed(views))
                failing = False
                timeout = max(0.0, next_full - time.monotonic())
            except (RedisError, OSError) as exc:
                failing = True
                self.post_message(
                    ConnectionLost(describe_redis_error(self.settings, exc), self.retry_s)
                )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            self._wake.clear()

    @on(SnapshotLoaded)
    def _snapshot_loaded(self, message: SnapshotLoaded) -> None:
        if not self._showing():
            return
        self.views = {view.exchange_id: view for view in message.snapshot.exchanges}
        self._connection_ok()
        self._show_views()
        self.loaded.set()

    @on(ExchangesRefreshed)
    def _exchanges_refreshed(self, message: ExchangesRefreshed) -> None:
        if not self._showing():
            return
        views = dict(self.views)  # a new mapping: the header counts again
        for view in message.views:
            if view.exchange_id in views:
                views[view.exchange_id] = view
            else:
                self.request_refresh()  # a new exchange: let a full read place it
        self.views = views
        self._connection_ok()
        self._show_views()

    def _connection_ok(self) -> None:
        recovered = self.connected is False
        self.connected = True
        self._stale = False
        if recovered:
            self.dashboard.show_connected()
            self.notify(f"Redis at {self.target} answers again.", title="Reconnected", markup=False)

    @on(ConnectionLost)
    def _connection_lost(self, message: ConnectionLost) -> None:
        if not self._showing():
            return
        self.connected = False
        self._stale = True
        now = self.clock()
        self._retry_at = now + timedelta(seconds=message.retry_in)
        prefix = f"cannot reach Redis at {self.settings.redacted_redis_url}: "
        reason = message.reason.removeprefix(prefix)
        self.dashboard.show_failure(self.target, reason, self._retry_at, now)
        self._update_headers()

    def _show_views(self) -> None:
        now = self.clock()
        ordered = sorted(self.views.values(), key=lambda v: (v.exchange_id, v.exchange_name))
        self.dashboard.show_views(ordered, now, stale=self._stale)
        for screen in self._exchange_screens():
            if isinstance(screen, DetailScreen):
                view = self.views.get(screen.exchange_id)
                if view is not None:
                    screen.show_view(view, now)
        self._update_headers()

    def _update_headers(self) -> None:
        state = self.header_state()
        for screen in self._exchange_screens():
            screen.show_header(state)

    # --- activity feed ---------------------------------------------------------------

    @work(exclusive=True, group="activity", exit_on_error=False)
    async def _follow_activity(self) -> None:
        """Load the recent history, then follow every stream live (blocking reads).

        The tail fixes its starting point *before* the history is read, so an
        entry written in between is in one or both; the feed drops duplicates.
        """
        tail = ActivityTail(self.settings)
        try:
            await tail.start()
            await self._load_history()
            async for entry in tail:
                batch = self._feed_batch
                if batch is None:
                    batch = self._feed_batch = FeedEntries()
                    self.post_message(batch)
                batch.entries.append(entry)
        finally:
            await tail.aclose()

    async def _load_history(self) -> None:
        reader = NetworkReader(self.redis, self.settings, clock=self.clock)
        log = ActivityLog(self.redis, self.settings)
        while True:
            try:
                names = await reader.exchange_names()
                # Many streams: fewer entries each, so start-up stays one cheap round trip.
                per_stream = max(50, 20_000 // max(1, len(names)))
                page = await log.merged_page(names, count=min(self.feed_max_lines, per_stream))
            except (RedisError, OSError):
                await asyncio.sleep(self.retry_s)  # the poller reports the outage
                continue
            self.post_message(FeedHistory(page.entries))
            return

    @on(FeedHistory)
    def _feed_history(self, message: FeedHistory) -> None:
        if not self._showing():
            return
        self.dashboard.add_feed_history(message.entries)
        self.history_loaded.set()

    @on(FeedEntries)
    def _feed_entries(self, message: FeedEntries) -> None:
        if not self._showing():
            return
        if message is self._feed_batch:
            self._feed_batch = None  # the follower starts a new batch from here on
        entries = message.entries
        self.dashboard.add_feed_entries(entries)
        for screen in self._exchange_screens():
            if isinstance(screen, DetailScreen):
                screen.add_live(entries)
        self._refresh_soon(entries)

    def _refresh_soon(self, entries: Iterable[ActivityEntry]) -> None:
        """Re-read the exchanges these entries belong to without waiting for the poll."""
        by_name = {view.exchange_name.lower(): view.exchange_id for view in self.views.values()}
        for entry in entries:
            exchange_id = by_name.get(entry.stream)
            if exchange_id is None:
                # An exchange the dashboard does not list yet: read everything, scan included.
                self._full_due = self._discover_due = True
            else:
                self._dirty.add(exchange_id)
        self._wake.set()

    # --- commands ----------------------------------------------------------------------

    def send_command(self, exchange_id: int, command: CommandType) -> None:
        """Send start/stop to an exchange's agent; progress shows as notifications."""
        if self.read_only:
            self.notify(
                f"Cannot {command.value}: {self.read_only_reason}",
                title="Read-only",
                severity="warning",
                markup=False,
            )
            return
        label = self.exchange_label(exchange_id)
        self.run_worker(
            self._send(exchange_id, label, command),
            name=f"{command.value} {label}",
            group="commands",
            exit_on_error=False,
        )

    def request_stop(self, exchange_id: int) -> None:
        """Ask for confirmation, then send `stop`."""
        name = self.exchange_label(exchange_id)
        view = self.views.get(exchange_id)
        host = render.label(view.status.hostname) if view is not None and view.status else ""
        question = f"Stop {name}?"
        explanation = (
            f"The instance on {host} will be asked to stop."
            if host
            else "No instance of it is online right now."
        ) + " Its card follows the transitions."

        def answered(yes: bool | None) -> None:
            if yes:
                self.send_command(exchange_id, CommandType.STOP)

        self.push_screen(ConfirmScreen(question, explanation, yes="Stop"), answered)

    async def _send(self, exchange_id: int, label: str, command: CommandType) -> None:
        # Commands carry the real time: the agent judges expiry by it, whatever
        # clock the display uses.
        client = ControlClient(self.redis, self.settings)

        def progress(stage: str, detail: str = "") -> None:
            self.post_message(
                CommandProgress(exchange_id, label, command.value, stage, detail)  # type: ignore[arg-type]
            )

        def acked(reply: CommandReply) -> None:
            progress("acknowledged", reply.message or "")

        try:
            outcome = await client.send(
                exchange_id,
                command,
                operator=self.operator,
                on_ack=acked,
                on_sent=lambda _cmd: progress("sent"),
            )
        except NoAgentAnswered as exc:
            progress("no-agent", str(exc))
            return
        except NoPermissionError as exc:
            reason = f"Redis refuses commands from this user ({str(exc).splitlines()[0]})"
            self.post_message(ReadOnlyDetected(reason))
            progress("failed", reason)
            return
        except (PerseusError, RedisError, OSError) as exc:
            progress("failed", str(exc) or describe_redis_error(self.settings, exc))
            return
        if outcome.status is ReplyStatus.SUCCESS:
            progress("success", outcome.message or "")
        else:
            progress("error", outcome.message or "the agent reported an error")
        self._dirty.add(exchange_id)
        self._wake.set()

    @on(CommandProgress)
    def _command_progress(self, message: CommandProgress) -> None:
        title = f"{message.command.capitalize()} {message.exchange_label}"
        detail = render.label(message.detail, "", 300)
        if message.stage == "sent":
            self.notify("Sent; waiting for the agent…", title=title, timeout=4, markup=False)
        elif message.stage == "acknowledged":
            self.notify(render.acknowledgement(detail), title=title, timeout=4, markup=False)
        elif message.stage == "success":
            text = "Done" + (f": {detail}" if detail else "")
            self.notify(text, title=title, markup=False)
        else:
            self.notify(
                detail or "failed",
                title=title,
                severity="error",
                timeout=ERROR_TIMEOUT_S,
                markup=False,
            )

    @on(ReadOnlyDetected)
    def _read_only_detected(self, message: ReadOnlyDetected) -> None:
        self.read_only = True
        self.read_only_reason = message.reason
        self.notify(
            f"Switched to read-only: {message.reason}",
            title="Read-only",
            severity="warning",
            timeout=ERROR_TIMEOUT_S,
            markup=False,
        )
        self.refresh_bindings()
        self._update_headers()

    # --- failures ------------------------------------------------------------------------

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
        if worker.group == "poll":
            self.set_timer(self.retry_s, self._poll_fleet)
        elif worker.group == "activity":
            self.set_timer(self.retry_s, self._follow_activity)

    # --- navigation and display ------------------------------------------------------------

    def open_detail(self, exchange_id: int) -> None:
        """Show every field and the history of one exchange."""
        view = self.views.get(exchange_id)
        if view is None:
            return
        self.push_screen(
            DetailScreen(view, self.header_state(), now=self.clock(), tz=self.display_tz)
        )

    def watch_utc(self, _utc: bool) -> None:
        for screen in self._exchange_screens():
            screen.set_timezone(self.display_tz)
        self._update_headers()
        self.notify(f"Times in {render.zone_name(self.display_tz, self.clock())}", timeout=2)

    def action_toggle_utc(self) -> None:
        """Switch absolute times between UTC and local time."""
        self.utc = not self.utc

    def action_toggle_view(self) -> None:
        """Switch the dashboard between cards and table."""
        self.dashboard.action_toggle_view()

    def action_help(self) -> None:
        """List every key binding."""
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.help_sections()))

    @staticmethod
    def help_sections() -> list[HelpSection]:
        """Every binding, grouped by where it applies (read from the classes themselves)."""
        palette = Binding(
            "ctrl+p",
            "command_palette",
            "Commands",
            tooltip="Command palette: start, stop or open an exchange, switch view, change theme",
        )
        focus = Binding(
            "tab,shift+tab", "focus_next", "Next", tooltip="Move to the next card / pane"
        )
        return [
            ("Anywhere", [*PerseusApp.BINDINGS, palette]),
            ("Dashboard", [*ExchangeScreen.BINDINGS, *DashboardScreen.BINDINGS]),
            ("Cards", [*CardGrid.BINDINGS, focus]),
            ("Table", [*InstanceTable.BINDINGS]),
            ("Detail screen", [*DetailScreen.BINDINGS]),
            ("Stop confirmation", [*ConfirmScreen.BINDINGS]),
        ]


def create_app(
    settings: Settings,
    *,
    clock: Clock = system_clock,
    read_only: bool = False,
    local_tz: tzinfo | None = None,
    target_label: str | None = None,
    operator: str | None = None,
    feed_max_lines: int = DEFAULT_MAX_LINES,
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
    """
    return PerseusApp(
        settings,
        clock=clock,
        read_only=read_only,
        local_tz=local_tz,
        target_label=target_label,
        operator=operator,
        feed_max_lines=feed_max_lines,
    )


__all__ = ["PerseusApp", "create_app", "default_operator"]
