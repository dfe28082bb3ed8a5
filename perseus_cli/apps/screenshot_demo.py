"""The demo as a newcomer first sees it, frozen for screenshots and snapshot tests.

The live demo (`perseus demo`) moves on its own: real agents, crashes, a kill,
a lagging heartbeat. Its screenshots show the same fleet, planned by the same
code and explained by the same intro, at one frozen moment that has each
heartbeat colour on screen: fresh (Coinbase), late (the lagging KuCoin) and
overdue (Binance.US, killed, its key not yet expired).
"""

from __future__ import annotations

from datetime import timedelta

import redis as sync_redis
from textual.pilot import Pilot

from perseus_cli.apps.demo import HEARTBEAT_INTERVAL_MS, HEARTBEAT_TTL_MS, Role, plan_fleet
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
    AgentPresence,
    CatalogEntry,
    ConnectionState,
    ErrorEntry,
    InstanceStatus,
    StateTransitionEntry,
)
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import format_ts, to_epoch_ms
from perseus_tui.app import PerseusApp, create_app
from perseus_tui.messages import CommandProgress

MEMBERS = plan_fleet(6)
"""The demo's default fleet, as `perseus demo` plans it."""

_STATES = {
    Role.ACTIVE: (ConnectionState.ACTIVE, 1.0, None),
    Role.CRASHING: (ConnectionState.ACTIVE, 1.0, "websocket closed (1006)"),
    Role.KILLED: (ConnectionState.ACTIVE, 5.0, None),
    Role.WARMING: (ConnectionState.WARMING, 1.0, None),
    Role.LAGGING: (ConnectionState.ACTIVE, 3.0, None),
}
"""Role -> (state, heartbeat age in seconds, last error) at the frozen moment;
each agent's own interval is the demo's 2 s, so 3 s is late and 5 s overdue."""

HOST = "demo-host"


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
        intro=intro_text(MEMBERS),
        initial_selection=first_selection(MEMBERS),
    )
    app.animation_level = "none"
    return app


def seed_demo(url: str) -> None:
    """Write the demo fleet at its frozen moment: catalog, statuses, Gemini's agent, history."""
    with sync_redis.Redis.from_url(url, decode_responses=True) as client:
        client.flushall()
        seconds, micros = client.time()
        expires_ms = seconds * 1000 + micros // 1000 + STATUS_TTL_S * 1000
        for member in MEMBERS:
            entry = CatalogEntry(
                id=member.exchange_id, name=member.name, display_name=member.display_name
            )
            client.hset(keys.CATALOG_KEY, str(member.exchange_id), entry.to_json())
            if member.role is Role.IDLE:
                agent = AgentPresence(
                    agent_id=f"{HOST}:4300:1770700000000", exchange_id=member.exchange_id,
                    exchange_name=member.name, hostname=HOST, pid=4300,
                    state=ConnectionState.IDLE.value, since=FIXED_NOW - timedelta(seconds=40),
                    version="0.1.0",
                )  # fmt: skip
                client.zadd(keys.agents_key(member.exchange_id), {agent.to_json(): expires_ms})
                continue
            state, beat_s, error = _STATES[member.role]
            up = FIXED_NOW - timedelta(seconds=38)
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
            moment = up
            for src, dst in (("idle", "starting"), ("starting", "warming"), ("warming", state)):
                if src == state:
                    break
                fields = StateTransitionEntry(
                    timestamp=format_ts(moment), from_state=src, to_state=str(dst),
                    exchange_id=str(member.exchange_id), exchange_name=member.name,
                    hostname=HOST, ip=member.ip, admin_email=member.admin_email,
                ).to_fields()  # fmt: skip
                ms = to_epoch_ms(moment) * 10 + member.exchange_id  # unique, in time order
                client.xadd(keys.activity_key(member.name), fields, id=f"{ms}-0")
                moment += timedelta(seconds=1)
            if error:
                fields = ErrorEntry(
                    timestamp=format_ts(FIXED_NOW - timedelta(seconds=4)), error=error,
                    exchange_id=str(member.exchange_id), exchange_name=member.name,
                    hostname=HOST, ip=member.ip, state="active",
                ).to_fields()  # fmt: skip
                ms = to_epoch_ms(FIXED_NOW - timedelta(seconds=4)) * 10 + member.exchange_id
                client.xadd(keys.activity_key(member.name), fields, id=f"{ms}-0")


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
