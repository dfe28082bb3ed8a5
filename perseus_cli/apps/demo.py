"""The demo fleet's plan: which agents it runs and what each is there to show.

`perseus demo` is what a newcomer runs first, so within half a minute the
fleet shows everything the dashboard and the agent can show: instances that
are active and writing output (`o`), one that stays READY until started
(Gemini: the one to try `s` on), one whose readiness check keeps it warming
until its feed opens a port, one whose child keeps crashing (the agent backs
off, restarts it, then gives up: FATAL, until an operator's start), one
killed with SIGKILL so its card goes offline with the last-known
information, and one whose heartbeats lag (the demo freezes it now and
then), so the heartbeat column shows green, yellow and red in turn.

Most of the fleet is one `perseus agent --config host.toml` process, as a
host that runs several exchanges would be: the killed and the lagging ones
run as agents of their own (`DemoMember.separate`), because what the demo
does to them (SIGKILL, SIGSTOP) acts on a whole process and would take every
slot of the host with it.

Exchange ids follow the ones Livermore seeds (1 coinbase, 2 binance,
3 binance_us, 4 kraken, 5 kucoin, 6 mexc), so a demo card never shows a
real exchange under another's id; exchanges Livermore does not seed (Gemini
among them) get ids above 6.

This module is the plan and its timings; `demo_fleet` runs it (a real
redis-server, the host file and the agent processes), `demo_feed` is the
child every agent supervises, and `demo_supervisor` plays the scripted part
(the kill, the freezes).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from perseus_core.runtime.options import AgentOptions
from perseus_core.runtime.restarts import RestartMode

DEMO_OPERATOR = "perseus-demo"
"""Operator name on the commands the demo itself sends (visible in the feed)."""

HEARTBEAT_INTERVAL_MS = 2_000
HEARTBEAT_TTL_MS = 6_000
"""Shorter than production (15 s / 45 s) so that a killed agent's card goes
offline a few seconds after the kill instead of most of a minute."""

STOP_GRACE_S = 2.0
"""How long an agent gives its child after SIGTERM; the demo's children stop at once."""

KILL_AFTER_ACTIVE_S = 2.0
"""How long the doomed agent is seen active before the demo kills it."""

AGENT_EXIT_WAIT_S = STOP_GRACE_S + 4.0
"""How long the demo waits for its agents to stop gracefully before SIGKILL."""


class Role(StrEnum):
    """What a demo agent is there to show."""

    ACTIVE = "active"
    """Autostarted, its feed writes a line of output every few seconds: the
    normal, healthy case."""
    CRASHING = "crashing"
    """Its child exits non-zero a few seconds after each start: the agent's
    restart policy starts it again after a growing backoff, and gives up
    (FATAL) after `DemoTimings.start_retries` quick failures in a row, until
    an operator's start."""
    KILLED = "killed"
    """SIGKILLed once active: its key expires and the card goes offline."""
    WARMING = "warming"
    """Autostarted with a readiness check (`ready_tcp`): stays in `warming`
    until its child opens its port, `DemoTimings.ready_after_s` after it starts."""
    IDLE = "idle"
    """Not started: READY, waits for an operator's `start`."""
    LAGGING = "lagging"
    """Active, but frozen (SIGSTOP) for `FREEZE_S` every `THAW_S`, as a stalled
    host would be: its heartbeats stop, so its age runs past its own interval
    (yellow), then past two (red), and turns green again once it runs on; its
    TTL (`LAGGING_TTL_MS`) outlasts every freeze, so it never goes offline."""


_SEPARATE = frozenset({Role.KILLED, Role.LAGGING})
"""Roles whose agent is a process of its own, outside the host file: the demo
kills or freezes that process, which would take every slot of the host with
it (and the lagging one needs a longer TTL, a process-wide setting)."""


@dataclass(frozen=True, slots=True)
class DemoTimings:
    """How fast the scripted behaviours play out: the live demo's by default,
    so that each is on screen within half a minute; tests pass shorter ones.

    Attributes:
        output_every_s: time between two lines of each feed's output.
        crash_after_s: how long the crashing feed runs before it exits non-zero.
        start_secs: the crashing slot's `start_secs`: a crash sooner than this
            is a quick failure (every one of the demo's is).
        backoff_max_s: the crashing slot's longest wait before a restart (the
            waits double from about a second: with four tries, 1, 2 and 4 s,
            long enough to be seen on its card).
        start_retries: quick failures in a row before it is FATAL (about 25 s
            after the demo starts, with these timings).
        ready_after_s: how long the warming feed takes to open its port.
    """

    output_every_s: float = 3.0
    crash_after_s: float = 4.0
    start_secs: float = 10.0
    backoff_max_s: float = 8.0
    start_retries: int = 4
    ready_after_s: float = 15.0


FREEZE_S = 6.0
"""How long the demo freezes the lagging agent each time: past two of its
intervals, so its heartbeat turns red. Readers judge a holder by its own
interval (it writes it into its status), so a slower interval would only
look healthy: the heartbeats must really stop."""

THAW_S = 6.0
"""How long the lagging agent then runs before the next freeze."""

LAGGING_TTL_MS = 12_000
"""The lagging agent's TTL: a freeze plus an interval plus the supervision's
poll fits well inside it, before its child's watchdog deadline, so its key
never expires and its child is never killed."""

HOST_IP = "203.0.113.10"
"""The public IP the host process reports for every slot of the host file."""

_ROLE_ORDER = (Role.ACTIVE, Role.IDLE, Role.CRASHING, Role.KILLED, Role.WARMING, Role.LAGGING)
"""Roles given to the first six agents (a smaller fleet takes a prefix); the
rest are active."""

_EXCHANGES = (
    (1, "coinbase", "Coinbase", 25),
    (7, "gemini", "Gemini", 12),
    (2, "binance", "Binance", 120),
    (3, "binance_us", "Binance.US", 60),
    (4, "kraken", "Kraken", 40),
    (5, "kucoin", "KuCoin", 150),
    (6, "mexc", "MEXC", 90),
    (8, "okx", "OKX", 95),
    (9, "bybit", "Bybit", 80),
    (10, "bitstamp", "Bitstamp", 18),
    (11, "bitfinex", "Bitfinex", 60),
    (12, "gateio", "Gate.io", 200),
)
"""(id, name, display name, symbols), in the order agents are planned; ids as
Livermore seeds them (see the module docstring)."""

TRY_FIRST = "gemini"
"""The exchange a newcomer is told to start first (READY in every fleet of two or more)."""

_ADMINS = (
    ("ops@example.com", "Ops Team"),
    ("alice.martin@example.com", "Alice Martin"),
    ("kenji.sato@example.com", "Kenji Sato"),
)

FEED_MODULE = "perseus_cli.apps.demo_feed"
"""The child every demo agent supervises (`python -m` it): a stand-in for a
market-data feed, so the demo needs nothing but the interpreter that runs it."""


class EventKind(StrEnum):
    """What the demo's supervision reports."""

    KILLED = "killed"
    EXITED = "exited"
    FATAL = "fatal"


@dataclass(frozen=True, slots=True)
class DemoEvent:
    """One thing the demo did or saw, with a line for a person."""

    kind: EventKind
    exchange_name: str
    text: str


@dataclass(frozen=True, slots=True)
class DemoMember:
    """One agent of the demo fleet and what it is there to show."""

    exchange_id: int
    name: str
    display_name: str
    symbols: int
    role: Role
    admin_email: str
    admin_name: str
    ip: str

    @property
    def autostart(self) -> bool:
        """Every role but idle starts on its own."""
        return self.role is not Role.IDLE

    @property
    def separate(self) -> bool:
        """Whether its agent is a process of its own rather than a slot of the
        host file (see `_SEPARATE`)."""
        return self.role in _SEPARATE

    @property
    def heartbeat_ttl_ms(self) -> int:
        """The demo's TTL, except for the agent it freezes (`LAGGING_TTL_MS`)."""
        return LAGGING_TTL_MS if self.role is Role.LAGGING else HEARTBEAT_TTL_MS

    @property
    def warmup_s(self) -> float:
        """Short, so that the fleet is active quickly; the warming one's readiness
        check makes it wait longer than this."""
        return 1.5 if self.role is Role.CRASHING else 1.0

    def feed_argv(
        self, python: str, timings: DemoTimings, ready_port: int | None = None
    ) -> list[str]:
        """The child command its agent supervises: none for the killed one (killing
        its agent then leaves nothing behind to reap), a feed for every other.

        Args:
            python: the interpreter to run the feed with.
            timings: how often it writes and, by role, when it crashes or opens its port.
            ready_port: the port the warming one's feed opens once ready.
        """
        if self.role is Role.KILLED:
            return []
        argv = [
            python,
            "-m",
            FEED_MODULE,
            "--exchange",
            self.name,
            "--symbols",
            str(self.symbols),
            "--every",
            f"{timings.output_every_s:g}",
        ]
        if self.role is Role.CRASHING:
            argv += ["--crash-after", f"{timings.crash_after_s:g}"]
        if self.role is Role.WARMING and ready_port is not None:
            argv += [
                "--listen-port",
                str(ready_port),
                "--listen-after",
                f"{timings.ready_after_s:g}",
            ]
        return argv

    def slot_options(
        self, python: str, timings: DemoTimings, ready_port: int | None = None
    ) -> AgentOptions:
        """Its slot in the host file (see `feed_argv` for the arguments): the
        crashing one with a restart policy fast enough to go FATAL within half
        a minute, the warming one with a readiness and a health check on its
        feed's port."""
        options = AgentOptions(
            exchange_id=self.exchange_id,
            exchange_name=self.name,
            display_name=self.display_name,
            command=tuple(self.feed_argv(python, timings, ready_port)),
            autostart=self.autostart,
            symbol_count=self.symbols,
            warmup_s=self.warmup_s,
            admin_email=self.admin_email,
            admin_display_name=self.admin_name,
        )
        if self.role is Role.CRASHING:
            return replace(
                options,
                restart=RestartMode.ON_FAILURE,
                start_secs=timings.start_secs,
                backoff_max_s=timings.backoff_max_s,
                start_retries=timings.start_retries,
            )
        if self.role is Role.WARMING and ready_port is not None:
            address = f"127.0.0.1:{ready_port}"
            return replace(
                options,
                ready_tcp=address,
                ready_timeout_s=timings.ready_after_s + 60.0,
                health_tcp=address,
            )
        return options


def plan_fleet(instances: int) -> list[DemoMember]:
    """The members of a fleet of `instances` agents; beyond the named exchanges,
    numbered copies with ids after the last named one."""
    if instances < 1:
        raise ValueError("a demo fleet needs at least one instance")
    members = []
    for index in range(instances):
        first_id, base, label, symbols = _EXCHANGES[index % len(_EXCHANGES)]
        round_ = index // len(_EXCHANGES)
        exchange_id = first_id + round_ * len(_EXCHANGES)
        name = base if round_ == 0 else f"{base}-{round_ + 1}"
        display = label if round_ == 0 else f"{label} {round_ + 1}"
        role = _ROLE_ORDER[index] if index < len(_ROLE_ORDER) else Role.ACTIVE
        email, admin = _ADMINS[index % len(_ADMINS)]
        members.append(
            DemoMember(
                exchange_id=exchange_id,
                name=name,
                display_name=display,
                symbols=symbols,
                role=role,
                admin_email=email,
                admin_name=admin,
                # TEST-NET-3, never a real host: the host file's slots share the host's address.
                ip=f"203.0.113.{10 + index % 240}" if role in _SEPARATE else HOST_IP,
            )
        )
    return members
