"""The demo fleet's plan: which agents it runs and what each is there to show.

`perseus demo` is what a newcomer runs first, so within a few seconds the
fleet shows everything the dashboard can show: instances that are active,
one that stays READY until started (Gemini: the one to try `s` on), one
warming slowly, one whose child keeps crashing (errors in the feed), one
killed with SIGKILL so its card goes offline with the last-known
information, and one whose heartbeats lag (the demo freezes it now and
then), so the heartbeat column shows green, yellow and red in turn.

Exchange ids follow the ones Livermore seeds (1 coinbase, 2 binance,
3 binance_us, 4 kraken, 5 kucoin, 6 mexc), so a demo card never shows a
real exchange under another's id; exchanges Livermore does not seed (Gemini
among them) get ids above 6.

This module is the plan and its timings; `demo_fleet` runs it (a real
redis-server and one `perseus agent` subprocess per exchange) and
`demo_supervisor` plays the scripted part (the kill, the restarts, the freezes).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

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
    """Autostarted, runs a long-lived child: the normal, healthy case."""
    CRASHING = "crashing"
    """Its child exits non-zero after a few seconds; the demo starts it again."""
    KILLED = "killed"
    """SIGKILLed once active: its key expires and the card goes offline."""
    WARMING = "warming"
    """Autostarted with a long warm-up: stays in `warming` for minutes."""
    IDLE = "idle"
    """Not started: READY, waits for an operator's `start`."""
    LAGGING = "lagging"
    """Active, but frozen (SIGSTOP) for `FREEZE_S` every `THAW_S`, as a stalled
    host would be: its heartbeats stop, so its age runs past its own interval
    (yellow), then past two (red), and turns green again once it runs on; its
    TTL (`LAGGING_TTL_MS`) outlasts every freeze, so it never goes offline."""


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

WARMING_SLOW_S = 300.0
"""Warm-up of the slow one: long enough to be seen warming for the whole visit."""

# The children are tiny Python programs standing in for a market-data feed, so
# the demo needs nothing but the interpreter that runs it.
_FEED_CHILD = (
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
    "print('feed: connected, streaming quotes', flush=True)\n"
    "while True:\n"
    "    time.sleep(3600)\n"
)
_CRASHING_CHILD = (
    "import random, sys, time\n"
    "time.sleep(random.uniform(4.0, 12.0))\n"
    "reason = random.choice(['websocket closed (1006)', 'order book checksum mismatch',"
    " 'rate limited (429) on REST snapshot'])\n"
    "print(f'feed: {reason}', file=sys.stderr, flush=True)\n"
    "sys.exit(random.choice([1, 2, 75]))\n"
)


class EventKind(StrEnum):
    """What the demo's supervision reports."""

    KILLED = "killed"
    RESTART = "restart"
    RESTART_FAILED = "restart_failed"
    EXITED = "exited"


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
    def heartbeat_ttl_ms(self) -> int:
        """The demo's TTL, except for the agent it freezes (`LAGGING_TTL_MS`)."""
        return LAGGING_TTL_MS if self.role is Role.LAGGING else HEARTBEAT_TTL_MS

    @property
    def warmup_s(self) -> float:
        """Long for the slow one, short for the rest so they are active quickly."""
        if self.role is Role.WARMING:
            return WARMING_SLOW_S
        if self.role is Role.CRASHING:
            return 1.5
        return 1.0

    def child_argv(self, python: str) -> list[str]:
        """The child command the agent supervises (none for the killed one, so that
        killing its agent leaves nothing behind to reap)."""
        if self.role is Role.CRASHING:
            return [python, "-c", _CRASHING_CHILD]
        if self.role is Role.KILLED:
            return []
        return [python, "-c", _FEED_CHILD]


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
                ip=f"203.0.113.{10 + index % 240}",  # TEST-NET-3: never a real host
            )
        )
    return members
