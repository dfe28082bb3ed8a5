"""The presenter's signals: heartbeat colours from the configured timing, an overdue
heartbeat that stops the uptime, commands refused from what is already known, and
the words of each step of a sent command."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError

from perseus_core.present import HeartbeatThresholds, Tone, heartbeat, refusal, uptime_s
from perseus_core.present.commands import CommandStep, failure_step, outcome_step, unsteerable
from perseus_core.store.control.livermore import NoLivermoreListener
from perseus_core.store.control.records import CommandOutcome, NoAgentAnswered
from perseus_core.store.control.sender import NotSteerable, Route, Via
from perseus_core.store.network import ExchangeView
from perseus_core.wire.models import (
    AgentPresence,
    CommandType,
    ConnectionState,
    InstanceStatus,
    ReplyStatus,
)
from perseus_core.wire.settings import Settings

NOW = datetime(2026, 2, 10, 22, 45, tzinfo=UTC)


def _live(state: ConnectionState = ConnectionState.ACTIVE, beat_age_s: float = 1) -> ExchangeView:
    status = InstanceStatus(
        exchange_id=1, exchange_name="alpha", hostname="h", connection_state=state,
        last_heartbeat=NOW - timedelta(seconds=beat_age_s),
        last_state_change=NOW - timedelta(hours=1), registered_at=NOW - timedelta(hours=1),
        connected_at=NOW - timedelta(hours=1), instance_id="h:1:4242:1770700000000",
    )  # fmt: skip
    return ExchangeView(1, "alpha", "Alpha", True, status, key_exists=True)


def test_default_timing_is_green_to_18s_and_red_from_30s() -> None:
    thresholds = HeartbeatThresholds.from_settings(Settings())
    assert thresholds.tone(18) is Tone.SUCCESS
    assert thresholds.tone(18.1) is Tone.WARNING
    assert thresholds.tone(30) is Tone.WARNING
    assert thresholds.tone(30.1) is Tone.ERROR


def test_thresholds_follow_the_interval_and_the_overrides() -> None:
    demo = HeartbeatThresholds.from_settings(
        Settings(heartbeat_interval_ms=2_000, heartbeat_ttl_ms=6_000)
    )
    assert (demo.fresh_s, demo.late_s) == (2.4, 4.0)
    custom = HeartbeatThresholds.from_settings(
        Settings(heartbeat_fresh_ms=25_000, heartbeat_overdue_ms=40_000)
    )
    assert (custom.fresh_s, custom.late_s) == (25.0, 40.0)


def test_a_healthy_agent_between_two_reads_is_never_yellow() -> None:
    """At a 15 s interval read every 5 s, a healthy agent's age reaches 20 s on
    screen before the next read shows its new heartbeat: that wait is not its fault."""
    polled = HeartbeatThresholds.from_settings(Settings(), polled=True)
    assert polled.tone(20, unseen_s=5) is Tone.SUCCESS
    assert polled.tone(20, unseen_s=0) is Tone.WARNING  # just read: really late
    assert polled.tone(60, unseen_s=600) is Tone.ERROR  # at most one refresh is forgiven


def test_an_overdue_heartbeat_says_so_and_stops_the_uptime() -> None:
    thresholds = HeartbeatThresholds.from_settings(Settings())
    fresh = heartbeat(_live(beat_age_s=3), NOW, thresholds)
    assert fresh is not None and fresh.text == "3s ago" and not fresh.overdue
    view = _live(beat_age_s=32)
    late = heartbeat(view, NOW, thresholds)
    assert late is not None and late.overdue and late.text == "no heartbeat for 32s"
    assert uptime_s(view, NOW, late) == 3600 - 32
    assert uptime_s(view, NOW + timedelta(seconds=10), late) == 3600 - 32
    assert uptime_s(_live(ConnectionState.WARMING), NOW, fresh) is None


def test_commands_that_cannot_succeed_are_refused_with_the_reason() -> None:
    agent = AgentPresence(
        agent_id="h:1:1", exchange_id=1, exchange_name="alpha", hostname="h", pid=1, state="idle"
    )
    ready = ExchangeView(1, "alpha", "Alpha", True, agents=(agent,))
    offline = ExchangeView(1, "alpha", "Alpha", True)
    assert refusal(_live(), CommandType.START) == "it is already active"
    assert refusal(_live(), CommandType.STOP) is None
    assert refusal(_live(ConnectionState.STOPPING), CommandType.STOP) == "it is already stopping"
    assert refusal(ready, CommandType.START) is None
    assert refusal(ready, CommandType.STOP) == "no instance of it is running"
    assert refusal(offline, CommandType.STOP) == "no instance of it is running"
    assert "no agent" in (refusal(offline, CommandType.START) or "")


def test_every_way_a_sent_command_ends_is_worded_once() -> None:
    """The dashboard posts these steps as they are: the stage and the words."""
    settings = Settings()
    held = Route(Via.NONE, 2, "beta", holder="ts-host")
    denied = NoPermissionError("NOPERM this user has no permissions to run 'xadd'\nmore")
    assert failure_step(NoAgentAnswered(1, 5_000, "c-1"), settings).stage == "no-agent"
    assert failure_step(NoLivermoreListener("sub-1"), settings) == CommandStep(
        "no-agent", "no Livermore server is listening for sub-1"
    )
    assert failure_step(NotSteerable(held, "stop"), settings) == CommandStep(
        "failed", "cannot stop exchange 2: " + unsteerable(held)
    )
    reason = (
        "Redis refuses commands from this user (NOPERM this user has no permissions to run 'xadd')"
    )
    assert failure_step(denied, settings) == CommandStep("failed", reason, read_only=reason)
    silent = failure_step(RedisConnectionError(), settings)
    assert silent.stage == "failed" and silent.detail and silent.read_only is None
    replied = CommandOutcome("c-1", True, ReplyStatus.ERROR, None, None)
    assert outcome_step(replied) == CommandStep("error", "the agent reported an error")
    done = CommandOutcome("c-1", True, ReplyStatus.SUCCESS, "coinbase is active", None)
    assert outcome_step(done) == CommandStep("success", "coinbase is active")
