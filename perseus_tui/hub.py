"""What the screens read from the dashboard: reactives on the app, watched, never called.

`FleetHub` is the app as its screens and the command palette know it: the
fleet as last read, the header, the clock's second, the time zone, the
outage, the activity entries as they arrive. The app (`perseus_tui.app`)
sets them from what the fleet service reports; each screen watches the ones
it shows and hands them to its own widgets (`data_bind` inside a screen).
This module imports no screen, so nothing imports in a circle.
"""

from __future__ import annotations

import asyncio
import getpass
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, tzinfo

from textual.app import App
from textual.content import Content
from textual.reactive import var

from perseus_core.present import HeartbeatThresholds
from perseus_core.store.network import ExchangeView, ViewKind
from perseus_core.wire.models import ActivityEntry
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import Clock, system_clock
from perseus_tui import render
from perseus_tui.observed import OfflineObserver
from perseus_tui.service import FleetService
from perseus_tui.widgets.activity_feed import DEFAULT_MAX_LINES
from perseus_tui.widgets.command_bar import CommandLine
from perseus_tui.widgets.header import HeaderState, summary_parts


def default_operator() -> str:
    """Who sends commands from this dashboard, for the audit trail: `user@host`."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True, eq=False)
class FleetState:
    """The fleet as last shown: a new object on every change (compared by identity,
    since comparing 10,000 views would cost more than showing them)."""

    views: Mapping[int, ExchangeView] = field(default_factory=dict)
    """Every listed exchange, by id."""
    ordered: Sequence[ExchangeView] = ()
    """The same views sorted by id, as the cards and the table list them."""
    now: datetime | None = None
    """When they were read (by the app's clock)."""
    stale: bool = False
    """Redis is unreachable: these are the last known views."""
    loaded: bool = False
    """Redis answered at least once (an empty fleet is then really empty)."""
    read_at: datetime | None = None
    """When the whole fleet was last read (a partial re-read keeps it: a view
    read since then is only fresher than this says)."""


@dataclass(frozen=True)
class Outage:
    """Redis cannot be reached: why, and when the next attempt is due."""

    target: str
    reason: str
    retry_at: datetime
    seen_at: datetime


class FleetHub(App[None]):
    """The dashboard's shared state; `PerseusApp` adds the screens and the handlers."""

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
    read_only: var[bool] = var(False, init=False)
    """Start and stop are disabled (flag, or Redis refused a write)."""
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
    ) -> None:
        super().__init__()
        self.intro = intro
        """Text of the dismissable intro panel (the demo's tour), if any."""
        self.initial_selection = initial_selection
        """The exchange selected first, once listed (None: the first one)."""
        self.expecting = expecting
        """What an empty fleet says while exchanges are known to be on their way."""
        self.settings = settings
        self.clock = clock
        self.local_tz = local_tz
        self.set_reactive(FleetHub.display_tz, local_tz)
        self.set_reactive(FleetHub.read_only, read_only)
        self.read_only_reason = "the dashboard was started with --read-only" if read_only else ""
        self.target = target_label or settings.redacted_redis_url
        self.operator = operator or default_operator()
        self.feed_max_lines = feed_max_lines
        self.heartbeat_thresholds = HeartbeatThresholds.from_settings(settings, polled=True)
        """Heartbeat colours from the configured timing, for every surface."""
        self._timing = render.Timing(self.heartbeat_thresholds)
        self.observer = OfflineObserver()
        """Instances seen vanishing between two reads, and coming back."""
        self.loaded = asyncio.Event()
        """Set once the first fleet read has been shown (tests and screenshots wait on it)."""
        self.history_loaded = asyncio.Event()
        """Set once the feed's start-up history has been shown."""
        self.connected: bool | None = None
        """True: Redis answers; False: unreachable; None: not known yet."""
        self.service = FleetService(
            self, settings, clock=clock, operator=self.operator, feed_max_lines=feed_max_lines
        )
        self._summary: tuple[Mapping[int, ExchangeView], tuple[Content, ...]] | None = None
        """The header counts and the views they were counted from (the clock tick
        reuses them; every read replaces the views)."""

    def timing(self) -> render.Timing:
        """What heartbeat colours depend on: the configured thresholds and the last read."""
        read_at = self.fleet.read_at
        if self._timing.read_at != read_at:
            self._timing = render.Timing(self.heartbeat_thresholds, read_at)
        return self._timing

    @property
    def views(self) -> Mapping[int, ExchangeView]:
        """Every listed exchange as last read, by id."""
        return self.fleet.views

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
        views = self.views
        if self._summary is None or self._summary[0] is not views:
            states: list[str | None] = []
            ready = 0
            for view in views.values():
                kind = view.kind
                if kind is ViewKind.LIVE and view.status is not None:
                    states.append(view.status.connection_state.value)
                elif kind is ViewKind.UNREADABLE:
                    states.append(None)
                elif kind is ViewKind.READY:
                    ready += 1
            parts = tuple(summary_parts(states, len(views), ready=ready))
            self._summary = (views, parts)
        return HeaderState(
            target=self.target,
            connected=self.connected,
            read_only=self.read_only,
            summary_parts=self._summary[1],
            now=self.clock(),
            tz=self.display_tz,
        )
