"""The demo as a newcomer first sees it, frozen for screenshots and snapshot tests.

The live demo (`perseus demo`) moves on its own: real agents, crashes, a kill,
a lagging heartbeat. Its screenshots show the same fleet, planned by the same
code and explained by the same intro, at one frozen moment that has each
heartbeat colour on screen: fresh (Coinbase), late (the lagging KuCoin) and
overdue (Binance.US, killed, its key not yet expired); Kraken warming on its
readiness port, and Binance given up on by its agent's restart policy
(FATAL, its last crash above).
"""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from typing import Any

import redis as sync_redis
from textual.pilot import Pilot

from perseus_cli.apps.demo import (
    HEARTBEAT_INTERVAL_MS,
    HEARTBEAT_TTL_MS,
    DemoMember,
    DemoTimings,
    Role,
    plan_fleet,
)
from perseus_cli.apps.demo_intro import first_selection, intro_text
from perseus_cli.apps.screenshot_fleet import (
    DISPLAY_URL,
    FIXED_NOW,
    OPERATOR,
    SCREENSHOT_TZ,
    STATUS_TTL_S,
)
from perseus_core.wire import keys
from perseus_core.wire.models import (
    ActivityEntry,
    AgentPresence,
    CatalogEntry,
    ConnectionState,
    ErrorEntry,
    InstanceStatus,
    StateTransitionEntry,
)
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import format_ts, parse_ts, to_epoch_ms
from perseus_tui.app import PerseusApp, create_app
from perseus_tui.messages import CommandProgress

MEMBERS = plan_fleet(6)
"""The demo's default fleet, as `perseus demo` plans it."""

_STATES = {
    Role.ACTIVE: (ConnectionState.ACTIVE, 1.0, None),
    Role.KILLED: (ConnectionState.ACTIVE, 5.0, None),
    Role.WARMING: (ConnectionState.WARMING, 1.0, None),
    Role.LAGGING: (ConnectionState.ACTIVE, 3.0, None),
}
"""Role -> (state, heartbeat age in seconds, last error) at the frozen moment;
each agent's own interval is the demo's 2 s, so 3 s is late and 5 s overdue."""

HOST = "demo-host"

HOST_FILE = "/tmp/perseus-demo-k3v9x2qd/host.toml"
"""Where the intro says the host file is (the live demo names its own directory)."""

_CRASH = (
    "child command exited with code 1 while active;"
    " last stderr: feed: websocket closed (1006) by wss://stream.example"
)
_GAVE_UP = f"gave up after {DemoTimings().start_retries} quick failures: exited with code 1"
_FATAL_NOTE = f"FATAL: {_GAVE_UP}; `perseus start 2` tries again"
"""The crashing exchange's last crash, the error entry its agent wrote when it
gave up, and its presence note since, as the live demo's agent writes them."""


def demo_settings(url: str) -> Settings:
    """The demo's heartbeat timing, with polls slow enough that nothing moves."""
    return Settings(
        redis_url=url,
        heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
        heartbeat_ttl_ms=HEARTBEAT_TTL_MS,
        refresh_ms=60_000,
        block_ms=200,
        socket_timeout_ms=1_000,
        public_ip="off",
    )


def demo_app(url: str) -> PerseusApp:
    """The dashboard exactly as `perseus demo` builds it, with the clock, zone and label pinned."""
    app = create_app(
        demo_settings(url),
        clock=lambda: FIXED_NOW,
        local_tz=SCREENSHOT_TZ,
        target_label=DISPLAY_URL,
        operator=OPERATOR,
        intro=intro_text(MEMBERS, host_file=HOST_FILE),
        initial_selection=first_selection(MEMBERS),
    )
    app.animation_level = "none"
    return app


def seed_demo(url: str) -> None:
    """Write the demo fleet at its frozen moment: catalog, statuses, the agents
    of Gemini (READY) and Binance (FATAL), history."""
    with sync_redis.Redis.from_url(url, decode_responses=True) as client:
        client.flushall()
        seconds, micros = client.time()
        expires_ms = seconds * 1000 + micros // 1000 + STATUS_TTL_S * 1000
        for member in MEMBERS:
            entry = CatalogEntry(
                id=member.exchange_id, name=member.name, display_name=member.display_name
            )
            client.hset(keys.CATALOG_KEY, str(member.exchange_id), entry.to_json())
            up = FIXED_NOW - timedelta(seconds=38)
            if member.role in (Role.IDLE, Role.CRASHING):
                fatal = member.role is Role.CRASHING
                idle_since = FIXED_NOW - timedelta(seconds=9 if fatal else 40)
                agent = AgentPresence(
                    agent_id=f"{HOST}:4300:1770700000000", exchange_id=member.exchange_id,
                    exchange_name=member.name, hostname=HOST, pid=4300,
                    state=ConnectionState.IDLE.value, since=idle_since, version="0.1.0",
                    note=_FATAL_NOTE if fatal else None,
                )  # fmt: skip
                client.zadd(keys.agents_key(member.exchange_id), {agent.to_json(): expires_ms})
                if fatal:
                    _seed_history(client, member, up, ConnectionState.ACTIVE)
                    _seed_crash(client, member, idle_since)
                continue
            state, beat_s, error = _STATES[member.role]
            pid = 4200 + member.exchange_id
            status = InstanceStatus(
                exchange_id=member.exchange_id, exchange_name=member.name, hostname=HOST,
                ip_address=member.ip, admin_email=member.admin_email,
                admin_display_name=member.admin_name, connection_state=state,
                symbol_count=member.symbols,
                connected_at=up if state is ConnectionState.ACTIVE else None,
                last_heartbeat=FIXED_NOW - timedelta(seconds=beat_s), last_state_change=up,
                registered_at=up - timedelta(seconds=2), last_error=error,
                last_error_at=FIXED_NOW - timedelta(seconds=4) if error else None,
                instance_id=f"{HOST}:{member.exchange_id}:{pid}:1770700000000",
                epoch=1, pid=pid, version="0.1.0",
                ttl_ms=member.heartbeat_ttl_ms, heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
            )  # fmt: skip
            client.set(keys.status_key(member.exchange_id), status.to_json(), ex=STATUS_TTL_S)
            _seed_history(client, member, up, state)


def _add(
    client: sync_redis.Redis, member: DemoMember, entry: ActivityEntry, *, own: bool = False
) -> None:
    """Append `entry` to the member's stream (`own`: Perseus's own stream) under an
    id in time order, unique in the fleet."""
    ms = to_epoch_ms(parse_ts(entry.timestamp)) * 10 + member.exchange_id
    fields: dict[Any, Any] = entry.to_fields()  # redis-py's narrower field types
    key = keys.perseus_activity_key if own else keys.activity_key
    client.xadd(key(member.name), fields, id=f"{ms}-0")


def _moves(
    client: sync_redis.Redis, member: DemoMember, moment: datetime, path: tuple[str, ...]
) -> datetime:
    """The transitions along `path` a second apart from `moment`; returns the next second."""
    for src, dst in itertools.pairwise(path):
        _add(
            client, member,
            StateTransitionEntry(
                timestamp=format_ts(moment), from_state=src, to_state=dst,
                exchange_id=str(member.exchange_id), exchange_name=member.name,
                hostname=HOST, ip=member.ip, admin_email=member.admin_email,
            ),
        )  # fmt: skip
        moment += timedelta(seconds=1)
    return moment


def _seed_history(
    client: sync_redis.Redis, member: DemoMember, up: datetime, state: ConnectionState
) -> None:
    """Its walk from idle to `state`, from `up` on, and its last error, if any."""
    path = ("idle", "starting", "warming", "active")
    _moves(client, member, up, path[: path.index(state.value) + 1])
    error = _STATES[member.role][2] if member.role in _STATES else None
    if error:
        _add(
            client, member,
            ErrorEntry(
                timestamp=format_ts(FIXED_NOW - timedelta(seconds=4)), error=error,
                exchange_id=str(member.exchange_id), exchange_name=member.name,
                hostname=HOST, ip=member.ip, state="active",
            ),
        )  # fmt: skip


def _seed_crash(client: sync_redis.Redis, member: DemoMember, at: datetime) -> None:
    """Its child's last crash, the walk back to idle, and at `at` the agent giving
    up (in Perseus's own stream, where the agent writes it)."""
    crash = ErrorEntry(
        timestamp=format_ts(at - timedelta(seconds=3)), error=_CRASH,
        exchange_id=str(member.exchange_id), exchange_name=member.name,
        hostname=HOST, ip=member.ip, state="active",
    )  # fmt: skip
    _add(client, member, crash)
    _moves(client, member, at - timedelta(seconds=2.5), ("active", "stopping", "stopped", "idle"))
    gave_up = ErrorEntry(
        timestamp=format_ts(at), error=_GAVE_UP,
        exchange_id=str(member.exchange_id), exchange_name=member.name,
        hostname=HOST, ip=member.ip, state="idle",
    )  # fmt: skip
    _add(client, member, gave_up, own=True)  # Livermore reads no such entry


async def settle_demo(pilot: Pilot[None]) -> None:
    """The fleet loaded behind the intro panel, which is still open."""
    app = pilot.app
    assert isinstance(app, PerseusApp)
    while not (app.loaded.is_set() and app.history_loaded.is_set() and app.timelines_read):
        await pilot.pause(0.05)
    await pilot.pause(0.2)


async def demo_dismissed(pilot: Pilot[None]) -> None:
    """The intro closed with Enter: every card, Gemini selected."""
    await settle_demo(pilot)
    await pilot.press("enter")
    await pilot.pause(0.2)


async def command_in_progress(pilot: Pilot[None]) -> None:
    """A start of Gemini sent and acknowledged, not done yet: its line in the command bar."""
    await demo_dismissed(pilot)
    app = pilot.app
    member = next(m for m in MEMBERS if m.role is Role.IDLE)
    label = f"{member.display_name} #{member.exchange_id}"
    app.post_message(CommandProgress(member.exchange_id, label, "start", "sent"))
    ack = f"acknowledged by {HOST}"
    app.post_message(CommandProgress(member.exchange_id, label, "start", "acknowledged", ack))
    await pilot.pause(0.2)
