"""`Instance` on real Redis: validated transitions, the status key they write,
the activity entries they append (exactly docs/wire-format.md 1.3), and what happens when
Redis cannot be reached."""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from perseus_cli.apps.redis_server import RedisServer
from perseus_core import __version__
from perseus_core.instance import MAX_ERROR_CHARS, Instance, StatusWrite
from perseus_core.instance.heartbeat import retry_delay_s
from perseus_core.plumbing.connection import connect
from perseus_core.wire import keys
from perseus_core.wire.errors import InvalidTransition, RedisUnavailable
from perseus_core.wire.lifecycle import TransitionRecord, can_transition
from perseus_core.wire.models import ConnectionState as S
from perseus_core.wire.settings import Settings
from tests.helpers import StepClock, stored
from tests.waiting import eventually

EXCHANGE_ID = 1
NAME = "coinbase"
KEY = keys.status_key(EXCHANGE_ID)
STREAM = keys.activity_key(NAME)
T0 = datetime(2026, 2, 10, 18, 22, 4, 511000, tzinfo=UTC)

# A shortest valid path from idle to each state.
PATH_TO = {
    S.IDLE: [],
    S.STARTING: [S.STARTING],
    S.WARMING: [S.STARTING, S.WARMING],
    S.ACTIVE: [S.STARTING, S.WARMING, S.ACTIVE],
    S.STOPPING: [S.STARTING, S.WARMING, S.ACTIVE, S.STOPPING],
    S.STOPPED: [S.STARTING, S.WARMING, S.ACTIVE, S.STOPPING, S.STOPPED],
}
ALL_PAIRS = list(itertools.product(S, S))


@pytest.fixture
async def make_instance() -> AsyncIterator[Callable[..., Instance]]:
    """Instances on their own clients, closed before their clients."""
    made: list[tuple[Instance, Redis]] = []

    def factory(settings: Settings, *, retry: Retry | None = None, **kwargs: Any) -> Instance:
        kwargs.setdefault("exchange_id", EXCHANGE_ID)
        kwargs.setdefault("exchange_name", NAME)
        kwargs.setdefault("hostname", "DESKTOP-ABC")
        client = connect(settings, retry=retry) if retry else connect(settings)
        instance = Instance(client, settings, **kwargs)
        made.append((instance, client))
        return instance

    yield factory
    for instance, client in made:
        await instance.close()
        await client.aclose()


async def stream_rows(redis: Redis, key: str = STREAM) -> list[list[tuple[str, str]]]:
    """Every entry's field/value pairs, oldest first, in stream order."""
    return [list(fields.items()) for _, fields in await redis.xrange(key)]


async def walk(instance: Instance, states: list[S], clock: StepClock | None = None) -> None:
    for state in states:
        if clock is not None:
            clock.advance(seconds=1)
        await instance.transition(state)


# --- validation -------------------------------------------------------------------


@pytest.mark.parametrize(("a", "b"), ALL_PAIRS, ids=[f"{a}->{b}" for a, b in ALL_PAIRS])
async def test_every_transition_is_validated(
    a: S, b: S, long_ttl: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    instance = make_instance(long_ttl)
    await instance.claim(heartbeat=False)
    await walk(instance, PATH_TO[a])
    key_before = await redis.get(KEY)
    entries_before = await redis.xlen(STREAM)
    history_before = instance.history

    if can_transition(a, b):
        result = await instance.transition(b)
        assert result.ok and result.status is StatusWrite.WRITTEN
        assert instance.state is b
        assert (await stored(redis)).connection_state is b
        assert await redis.xlen(STREAM) == entries_before + 1
    else:
        with pytest.raises(InvalidTransition, match=f"^cannot go from {a} to {b}: {a} allows "):
            await instance.transition(b)
        assert instance.state is a
        assert instance.history == history_before
        assert await redis.get(KEY) == key_before
        assert await redis.xlen(STREAM) == entries_before


# --- the status key -----------------------------------------------------------------


async def test_connected_at_is_set_on_entering_active_and_cleared_on_leaving(
    long_ttl: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    clock = StepClock(T0)
    instance = make_instance(long_ttl, clock=clock)
    await instance.claim(heartbeat=False)
    await walk(instance, [S.STARTING, S.WARMING], clock)
    assert (await stored(redis)).connected_at is None

    entered = clock.advance(seconds=1)
    await instance.transition(S.ACTIVE)
    now = await stored(redis)
    assert now.connected_at == entered == instance.status.connected_at
    assert now.last_state_change == entered

    left = clock.advance(seconds=30)
    await instance.transition(S.STOPPING)
    now = await stored(redis)
    assert now.connected_at is None and instance.status.connected_at is None
    assert now.last_state_change == left
    assert now.registered_at == T0  # set once, at claim


async def test_error_recovery_to_idle_never_has_connected_at(
    long_ttl: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    instance = make_instance(long_ttl)
    await instance.claim(heartbeat=False)
    await walk(instance, [S.STARTING, S.WARMING, S.IDLE])
    assert (await stored(redis)).connected_at is None


async def test_payload_carries_owner_token_epoch_pid_and_version(
    long_ttl: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    instance = make_instance(long_ttl)
    await instance.claim(heartbeat=False)
    await instance.transition(S.STARTING)
    data = json.loads(await redis.get(KEY))
    assert data["instanceId"] == instance.instance_id
    assert data["instanceId"].startswith(f"DESKTOP-ABC:1:{instance.pid}:")
    assert data["epoch"] == 1
    assert data["pid"] == instance.pid
    assert data["version"] == __version__


async def test_updates_keep_the_ttl(
    long_ttl: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    instance = make_instance(long_ttl)
    await instance.claim(heartbeat=False)
    await redis.pexpire(KEY, 3_000)
    await instance.set_symbol_count(25)
    await instance.set_ip("203.0.113.7", "NL")
    await instance.transition(S.STARTING)
    await instance.record_error("feed lagging")
    assert 0 < await redis.pttl(KEY) <= 3_000
    now = await stored(redis)
    assert (now.symbol_count, now.ip_address, now.country_code) == (25, "203.0.113.7", "NL")


async def test_record_error_sets_last_error(
    long_ttl: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    clock = StepClock(T0)
    instance = make_instance(long_ttl, clock=clock)
    await instance.claim(heartbeat=False)
    at = clock.advance(minutes=5)
    result = await instance.record_error("websocket closed (1006)")
    assert result.ok and result.entry_id is not None
    now = await stored(redis)
    assert now.last_error == "websocket closed (1006)"
    assert now.last_error_at == at


async def test_a_huge_error_message_is_cut(
    long_ttl: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    instance = make_instance(long_ttl)
    await instance.claim(heartbeat=False)
    await instance.record_error("x" * 100_000)
    assert len((await stored(redis)).last_error or "") == MAX_ERROR_CHARS


# --- the activity stream ----------------------------------------------------------


async def test_state_transition_entries_are_exactly_wire_1_3(
    long_ttl: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    clock = StepClock(T0)
    instance = make_instance(long_ttl, clock=clock, admin_email="ops@example.com")
    await instance.claim(heartbeat=False)
    await instance.set_ip("203.0.113.7")
    await walk(instance, [S.STARTING, S.WARMING, S.ACTIVE], clock)

    rows = await stream_rows(redis)
    assert rows[-1] == [
        ("event", "state_transition"),
        ("timestamp", "2026-02-10T18:22:07.511Z"),
        ("fromState", "warming"),
        ("toState", "active"),
        ("exchangeId", "1"),
        ("exchangeName", "coinbase"),
        ("hostname", "DESKTOP-ABC"),
        ("ip", "203.0.113.7"),
        ("adminEmail", "ops@example.com"),
    ]
    assert [dict(r)["toState"] for r in rows] == ["starting", "warming", "active"]


async def test_unknown_values_are_empty_strings(
    long_ttl: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    instance = make_instance(long_ttl, clock=StepClock(T0))
    await instance.claim(heartbeat=False)
    await instance.transition(S.STARTING)
    await instance.record_error("boom")
    transition, error = await stream_rows(redis)
    assert transition == [
        ("event", "state_transition"),
        ("timestamp", "2026-02-10T18:22:04.511Z"),
        ("fromState", "idle"),
        ("toState", "starting"),
        ("exchangeId", "1"),
        ("exchangeName", "coinbase"),
        ("hostname", "DESKTOP-ABC"),
        ("ip", ""),
        ("adminEmail", ""),
    ]
    assert error == [
        ("event", "error"),
        ("timestamp", "2026-02-10T18:22:04.511Z"),
        ("error", "boom"),
        ("exchangeId", "1"),
        ("exchangeName", "coinbase"),
        ("hostname", "DESKTOP-ABC"),
        ("ip", ""),
        ("state", "starting"),
    ]


async def test_error_entry_carries_the_current_state(
    long_ttl: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    instance = make_instance(long_ttl)
    await instance.claim(heartbeat=False)
    await instance.set_ip("203.0.113.7")
    await walk(instance, [S.STARTING, S.WARMING, S.ACTIVE])
    await instance.record_error("websocket closed (1006)")
    last = dict((await stream_rows(redis))[-1])
    assert (last["event"], last["error"], last["state"], last["ip"]) == (
        "error",
        "websocket closed (1006)",
        "active",
        "203.0.113.7",
    )


async def test_heartbeats_and_field_updates_add_no_entries(
    settings: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    instance = make_instance(settings)
    await instance.claim()
    await instance.set_symbol_count(3)
    await instance.set_ip("203.0.113.7")
    for _ in range(3):
        await instance.heartbeat.tick()
    assert await redis.xlen(STREAM) == 0


async def test_without_the_lease_transitions_go_to_perseus_own_stream(
    long_ttl: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    """Only the slot's holder writes to `logs:network:{name}`: before the claim
    and after the release the entries are Perseus's own."""
    instance = make_instance(long_ttl)
    result = await instance.transition(S.STARTING)
    assert result.status is StatusWrite.NOT_HELD and result.ok
    assert result.entry_id is not None
    assert not await redis.exists(KEY)

    await instance.claim(heartbeat=False)
    await walk(instance, [S.STOPPING, S.STOPPED, S.IDLE])
    assert await instance.release()
    result = await instance.transition(S.STARTING)  # idle after release
    assert result.status is StatusWrite.NOT_HELD
    assert not await redis.exists(KEY)
    assert [dict(r)["toState"] for r in await stream_rows(redis)] == ["stopping", "stopped", "idle"]
    ours = [dict(r) for r in await stream_rows(redis, keys.perseus_activity_key(NAME))]
    assert [r["event"] for r in ours] == ["state_transition", "holder", "state_transition"]
    assert [r["toState"] for r in ours if r["event"] == "state_transition"] == [
        "starting",
        "starting",
    ]


# --- holder changes (docs/wire-format.md 2.7) -------------------------------------


async def holder_rows(redis: Redis) -> list[dict[str, str]]:
    rows = await stream_rows(redis, keys.perseus_activity_key(NAME))
    return [dict(r) for r in rows if dict(r).get("event") == "holder"]


async def test_a_claim_names_the_holder_it_followed_once(
    long_ttl: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    """The first holder is put on record; the same process claiming again (a
    new token, a new `startMs`) is no change; another process is, once, and
    the entry names both."""
    first = make_instance(long_ttl, hostname="host-a")
    await first.claim(heartbeat=False)
    [record] = await holder_rows(redis)
    assert record["instanceId"] == first.instance_id
    assert record["previousInstanceId"] == "" and record["via"] == "claim"
    assert record["epoch"] == str(first.status.epoch)
    await first.release()

    again = make_instance(long_ttl, hostname="host-a")  # same pid: one process
    assert again.instance_id != first.instance_id
    await again.claim(heartbeat=False)
    assert len(await holder_rows(redis)) == 1
    await again.release()

    # The logs of other entries in between do not hide the record.
    for _ in range(3):
        await again.transition(S.STARTING)
        await again.transition(S.IDLE)
    other = make_instance(long_ttl, hostname="host-b")
    await other.claim(heartbeat=False)
    rows = await holder_rows(redis)
    assert len(rows) == 2
    change = rows[-1]
    assert change["instanceId"] == other.instance_id
    assert change["previousInstanceId"] == first.instance_id  # the same process on record
    assert change["previousHostname"] == "host-a"
    assert change["previousPid"] == str(again.pid)
    shared = [dict(r).get("event") for r in await stream_rows(redis)]
    assert "holder" not in shared


async def test_a_hostile_record_is_copied_bounded(
    long_ttl: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    """The last record is untrusted: a huge token is cut, a pid that is not
    one is left out, and the claim stands."""
    await redis.xadd(
        keys.perseus_activity_key(NAME),
        {"event": "holder", "instanceId": "x" * 5000, "hostname": "[b]h\x1b", "pid": "-1e9"},
    )
    instance = make_instance(long_ttl)
    await instance.claim(heartbeat=False)
    change = (await holder_rows(redis))[-1]
    assert len(change["previousInstanceId"]) <= 400
    assert change["previousPid"] == ""
    assert instance.lease.held


# --- memory -----------------------------------------------------------------------


async def test_history_is_capped(
    settings: Settings, make_instance: Callable[..., Instance]
) -> None:
    clock = StepClock(T0)
    instance = make_instance(settings, clock=clock, history_size=3)
    await walk(instance, PATH_TO[S.STOPPED], clock)
    assert instance.history == [
        TransitionRecord(S.WARMING, S.ACTIVE, T0 + timedelta(seconds=3)),
        TransitionRecord(S.ACTIVE, S.STOPPING, T0 + timedelta(seconds=4)),
        TransitionRecord(S.STOPPING, S.STOPPED, T0 + timedelta(seconds=5)),
    ]


async def test_instances_never_share_an_owner_token(
    settings: Settings, make_instance: Callable[..., Instance]
) -> None:
    clock = StepClock(T0)
    ids = {make_instance(settings, clock=clock).instance_id for _ in range(5)}
    assert len(ids) == 5


async def test_bad_arguments_are_refused(settings: Settings, redis: Redis) -> None:
    with pytest.raises(ValueError, match="invalid exchange name"):
        Instance(redis, settings, exchange_id=1, exchange_name="bad name!")
    with pytest.raises(ValueError, match="exchange_id"):
        Instance(redis, settings, exchange_id=-1, exchange_name="ok")


async def test_negative_symbol_count_is_refused(
    settings: Settings, make_instance: Callable[..., Instance]
) -> None:
    instance = make_instance(settings)
    with pytest.raises(ValueError):
        await instance.set_symbol_count(-1)
    assert instance.status.symbol_count == 0


async def test_async_context_manager_releases(
    long_ttl: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    async with make_instance(long_ttl) as instance:
        await instance.claim()
        assert await redis.exists(KEY)
    assert not await redis.exists(KEY)


# --- Redis unreachable ------------------------------------------------------------


async def test_changes_survive_redis_being_down_and_the_gap_is_logged(
    fresh_redis: RedisServer,
    make_settings: Callable[..., Settings],
    make_instance: Callable[..., Instance],
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = make_settings(redis_url=fresh_redis.url)
    clock = StepClock(T0)
    instance = make_instance(settings, clock=clock, retry=Retry(NoBackoff(), 0))

    fresh_redis.stop()
    with caplog.at_level(logging.WARNING, logger="perseus_core.instance"):
        result = await instance.transition(S.STARTING)
    # The caller is not crashed; the change is in memory; the failure is reported.
    assert instance.state is S.STARTING
    assert instance.history[-1].to_state is S.STARTING
    assert result.status is StatusWrite.NOT_HELD
    assert result.entry_id is None and not result.ok
    assert "cannot reach Redis at redis://127.0.0.1" in (result.error or "")
    assert "state_transition entry not written" in caplog.text
    assert instance.publisher.last_write_error == result.error

    error_result = await instance.record_error("feed down")
    assert instance.status.last_error == "feed down" and not error_result.ok
    assert instance.publisher.unsent_entries == 2

    fresh_redis.start()
    clock.advance(seconds=10)
    result = await instance.transition(S.WARMING)
    assert result.ok and result.entry_id is not None
    assert instance.publisher.unsent_entries == 0

    client = connect(settings)
    try:  # never claimed: its entries are Perseus's own
        rows = [dict(r) for _, r in await client.xrange(keys.perseus_activity_key(NAME))]
    finally:
        await client.aclose()
    note, transition = rows
    assert note["event"] == "error"
    assert note["error"] == (
        "2 activity entries could not be written while Redis was unreachable: "
        "idle->starting at 2026-02-10T18:22:04.511Z; "
        "error 'feed down' at 2026-02-10T18:22:04.511Z"
    )
    assert note["state"] == "warming"
    assert (transition["fromState"], transition["toState"]) == ("starting", "warming")


async def test_claim_with_redis_down_raises_redis_unavailable(
    fresh_redis: RedisServer,
    make_settings: Callable[..., Settings],
    make_instance: Callable[..., Instance],
) -> None:
    settings = make_settings(redis_url=fresh_redis.url)
    instance = make_instance(settings, retry=Retry(NoBackoff(), 0))
    fresh_redis.stop()
    with pytest.raises(RedisUnavailable, match="cannot reach Redis"):
        await instance.claim()
    assert not instance.lease.held and not instance.heartbeat.running


async def test_release_with_redis_down_does_not_raise(
    fresh_redis: RedisServer,
    make_settings: Callable[..., Settings],
    make_instance: Callable[..., Instance],
) -> None:
    settings = make_settings(redis_url=fresh_redis.url)
    instance = make_instance(settings, retry=Retry(NoBackoff(), 0))
    await instance.claim()
    fresh_redis.stop()
    assert await instance.release() is False
    assert not instance.lease.held and not instance.heartbeat.running
    assert "expires by TTL" in (instance.publisher.last_write_error or "")


def test_a_failed_heartbeat_is_retried_within_a_quarter_interval() -> None:
    assert retry_delay_s(15.0) == 1.0
    assert retry_delay_s(3.0) == 0.75
    assert retry_delay_s(0.1) == 0.05


async def test_the_heartbeat_retries_quickly_and_renews_as_soon_as_redis_answers(
    fresh_redis: RedisServer,
    make_settings: Callable[..., Settings],
    make_instance: Callable[..., Instance],
) -> None:
    # Interval 1 s, retries every 0.25 s: after a failure, two more come well
    # within the 2 s that ticks at the interval would take.
    settings = make_settings(
        redis_url=fresh_redis.url, heartbeat_interval_ms=1000, heartbeat_ttl_ms=10_000
    )
    instance = make_instance(settings, retry=Retry(NoBackoff(), 0))
    await instance.claim()
    heartbeat = instance.heartbeat
    fresh_redis.stop()
    await eventually(lambda: heartbeat.failures >= 1, within=5, what="a failed tick")
    await eventually(lambda: heartbeat.failures >= 3, within=1.5, what="two quick retries")
    confirmed = heartbeat.count
    fresh_redis.start()
    await eventually(lambda: heartbeat.count > confirmed, within=5, what="a renewal")
    assert instance.lease.held
