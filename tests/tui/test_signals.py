"""The presenter's signals: heartbeat colours from each holder's own timing, an overdue
heartbeat that stops the uptime, commands refused from what is already known, and
the words of each step of a sent command."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError

from perseus_core.present import Timing, Tone, heartbeat, refusal, uptime_s
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


def _live(
    state: ConnectionState = ConnectionState.ACTIVE, beat_age_s: float = 1, **extras: Any
) -> ExchangeView:
    """A live view whose last heartbeat was `beat_age_s` before NOW; a Perseus
    payload without timing fields unless `extras` say otherwise."""
    fields: dict[str, Any] = {"instance_id": "h:1:4242:1770700000000", **extras}
    status = InstanceStatus(
        exchange_id=1, exchange_name="alpha", hostname="h", connection_state=state,
        last_heartbeat=NOW - timedelta(seconds=beat_age_s),
        last_state_change=NOW - timedelta(hours=1), registered_at=NOW - timedelta(hours=1),
        connected_at=NOW - timedelta(hours=1), **fields,
    )  # fmt: skip
    return ExchangeView(1, "alpha", "Alpha", True, status, key_exists=True)


def _reader(interval_ms: int = 15_000, **overrides: Any) -> Timing:
    """A reader's timing (a dashboard's or the CLI's) at `interval_ms`."""
    values: dict[str, Any] = {"heartbeat_ttl_ms": 3 * interval_ms, **overrides}
    return Timing.from_settings(Settings(heartbeat_interval_ms=interval_ms, **values))


def test_default_timing_is_green_to_18s_and_red_from_30s() -> None:
    thresholds = Timing.from_settings(Settings()).thresholds(_live().status)
    assert thresholds.tone(18) is Tone.SUCCESS
    assert thresholds.tone(18.1) is Tone.WARNING
    assert thresholds.tone(30) is Tone.WARNING
    assert thresholds.tone(30.1) is Tone.ERROR


def test_thresholds_follow_the_interval_and_the_overrides() -> None:
    """A holder that does not say its timing (an older Perseus payload) is
    judged by the reader's interval; the reader's overrides win over any."""
    older = _live().status
    demo = _reader(2_000).thresholds(older)
    assert (demo.fresh_s, demo.late_s) == (2.4, 4.0)
    custom = _reader(heartbeat_fresh_ms=25_000, heartbeat_overdue_ms=40_000)
    assert (custom.thresholds(older).fresh_s, custom.thresholds(older).late_s) == (25.0, 40.0)
    own = _live(heartbeat_interval_ms=1_000, ttl_ms=3_000).status
    assert (custom.thresholds(own).fresh_s, custom.thresholds(own).late_s) == (25.0, 40.0)
    only_overdue = _reader(300, heartbeat_overdue_ms=60_000).thresholds(own)
    assert (only_overdue.fresh_s, only_overdue.late_s) == (1.2, 60.0)


def test_a_healthy_agent_between_two_reads_is_never_yellow() -> None:
    """At a 15 s interval read every 5 s, a healthy agent's age reaches 20 s on
    screen before the next read shows its new heartbeat: that wait is not its fault."""
    polled = Timing.from_settings(Settings(), polled=True).thresholds(_live().status)
    assert polled.tone(20, unseen_s=5) is Tone.SUCCESS
    assert polled.tone(20, unseen_s=0) is Tone.WARNING  # just read: really late
    assert polled.tone(60, unseen_s=600) is Tone.ERROR  # at most one refresh is forgiven


def test_an_overdue_heartbeat_says_so_and_stops_the_uptime() -> None:
    timing = Timing.from_settings(Settings())
    fresh = heartbeat(_live(beat_age_s=3), NOW, timing)
    assert fresh is not None and fresh.text == "3s ago" and not fresh.overdue
    view = _live(beat_age_s=32)
    late = heartbeat(view, NOW, timing)
    assert late is not None and late.overdue and late.text == "no heartbeat for 32s"
    assert uptime_s(view, NOW, late) == 3600 - 32
    assert uptime_s(view, NOW + timedelta(seconds=10), late) == 3600 - 32
    assert uptime_s(_live(ConnectionState.WARMING), NOW, fresh) is None


WRITERS: dict[str, tuple[dict[str, Any], float]] = {
    "livermore": ({"instance_id": None}, 15.0),  # no instanceId: Livermore's fixed 15 s / 45 s
    "perseus-1s": ({"heartbeat_interval_ms": 1_000, "ttl_ms": 3_000}, 1.0),
    "perseus-30s": ({"heartbeat_interval_ms": 30_000, "ttl_ms": 90_000}, 30.0),
}
"""Writer -> (its payload's timing fields, the interval it is judged by)."""

AGES: tuple[tuple[float, Tone], ...] = (
    (0.5, Tone.SUCCESS),
    (1.15, Tone.SUCCESS),
    (1.5, Tone.WARNING),
    (1.9, Tone.WARNING),
    (2.5, Tone.ERROR),
    (10, Tone.ERROR),
)
"""A heartbeat age in the writer's own intervals -> its tone on any reader."""


@pytest.mark.parametrize("reader_ms", [300, 15_000, 60_000])
@pytest.mark.parametrize("writer", list(WRITERS))
@pytest.mark.parametrize("polled", [False, True], ids=["cli", "dashboard"])
def test_every_writer_is_judged_by_its_own_timing_on_any_reader(
    writer: str, reader_ms: int, polled: bool
) -> None:
    """A Livermore server and Perseus agents at 1 s and 30 s look the same on
    readers configured for 300 ms, 15 s and 60 s: fresh within their own
    interval plus a fifth, late to two of them, overdue (uptime stopped) beyond."""
    extras, interval_s = WRITERS[writer]
    settings = Settings(
        heartbeat_interval_ms=reader_ms, heartbeat_ttl_ms=3 * reader_ms, refresh_ms=reader_ms
    )
    timing = replace(Timing.from_settings(settings, polled=polled), read_at=NOW)
    for intervals, tone in AGES:
        age_s = intervals * interval_s
        view = _live(beat_age_s=age_s, **extras)
        beat = heartbeat(view, NOW, timing)
        assert beat is not None and beat.tone is tone, (intervals, beat)
        running = uptime_s(view, NOW, beat)
        assert running == (3600 - age_s if beat.overdue else 3600), (intervals, running)
        assert ("no heartbeat for" in beat.text) is (tone is Tone.ERROR)


def test_an_older_perseus_payload_is_judged_by_the_readers_interval() -> None:
    """Neither `heartbeatIntervalMs` nor `ttlMs`: the reader's own interval is all there is."""
    older = _live(beat_age_s=12)
    assert _reader(15_000).thresholds(older.status).tone(12) is Tone.SUCCESS
    assert _reader(5_000).thresholds(older.status).tone(12) is Tone.ERROR
    ttl_only = _live(beat_age_s=12, ttl_ms=15_000).status  # an interval of a third of it
    assert _reader(60_000).thresholds(ttl_only).tone(12) is Tone.ERROR
    bad = _live(beat_age_s=12, heartbeat_interval_ms=0).status  # out of range: absent
    assert bad is not None and bad.heartbeat_interval_ms is None
    assert _reader(15_000).thresholds(bad).tone(12) is Tone.SUCCESS


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
    assert refusal(ready, CommandType.STOP) is None  # the idle agent answers for itself
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
