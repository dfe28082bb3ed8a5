"""Activity log against real Redis: retention, pages and cursors, merged pages, live tail.

The tail tests run a consumer task that collects what the tail yields and
poll for the expected entries with a deadline; they assert what arrived
(no gap, no duplicate), never how fast.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from perseus_cli.apps.redis_server import RedisServer
from perseus_core.plumbing.connection import connect
from perseus_core.store.activity import (
    ActivityLog,
    ActivityTail,
    format_cursor,
    parse_cursor,
    parse_stream_id,
    reads,
)
from perseus_core.store.network import FleetReader
from perseus_core.wire import keys
from perseus_core.wire.models import (
    ActivityEntry,
    CatalogEntry,
    ConnectionState,
    ErrorEntry,
    InstanceStatus,
    OtherEntry,
    StateTransitionEntry,
)
from perseus_core.wire.settings import Settings
from tests.helpers import expected_rounds, tail_collects
from tests.waiting import blocked_clients, eventually, until_blocked
from tests.wire_examples import WIRE_ERROR, WIRE_TRANSITION

DAY_MS = 86_400_000


def error(text: str) -> ErrorEntry:
    return ErrorEntry(error=text, timestamp="2026-02-10T19:03:11.870Z", state="active")


async def add_catalog(redis: Redis, *entries: tuple[int, str]) -> None:
    for exchange_id, name in entries:
        entry = CatalogEntry(id=exchange_id, name=name)
        await redis.hset(keys.CATALOG_KEY, str(exchange_id), entry.to_json())  # type: ignore[misc]


class Collector:
    """Runs `async for` over a tail in a task and keeps what it yields."""

    def __init__(self, tail: ActivityTail) -> None:
        self.tail = tail
        self.entries: list[ActivityEntry] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for entry in self.tail:
            self.entries.append(entry)

    def ids(self, stream: str | None = None) -> list[str]:
        return [e.id for e in self.entries if stream is None or e.stream == stream]

    def texts(self) -> list[str]:
        return [e.error for e in self.entries if isinstance(e, ErrorEntry)]

    async def stop(self) -> None:
        await self.tail.aclose()
        await asyncio.wait_for(self.task, 10)


@asynccontextmanager
async def collecting(tail: ActivityTail) -> AsyncIterator[Collector]:
    await tail.start()
    collector = Collector(tail)
    try:
        yield collector
    finally:
        await collector.stop()


def fixed(*names: str) -> Callable[[], Awaitable[list[str]]]:
    async def provider() -> list[str]:
        return list(names)

    return provider


# --- append and retention ------------------------------------------------------


async def test_append_writes_wire_fields_and_page_reads_them_back(
    redis: Redis, settings: Settings
) -> None:
    log = ActivityLog(redis, settings)
    entry_id = await log.append("Coinbase", StateTransitionEntry(**_snake(WIRE_TRANSITION)))
    rows = await redis.xrange("logs:network:coinbase")
    assert rows == [(entry_id, WIRE_TRANSITION)]
    page = await log.page("coinbase")
    assert [e.id for e in page.entries] == [entry_id]
    assert page.entries[0].stream == "coinbase" and page.next_cursor is None


async def test_minid_retention_trims_entries_older_than_the_window(
    redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(retention_days=30)
    key = keys.activity_key("coinbase")
    seconds, _ = await redis.time()
    now_ms = int(seconds) * 1000
    # 300 entries from 100 days ago fill several whole stream nodes: `MINID ~`
    # trims whole nodes, so these must go; 5 from 10 days ago must stay.
    old_ids = [f"{now_ms - 100 * DAY_MS}-{seq}" for seq in range(300)]
    recent_ids = [f"{now_ms - 10 * DAY_MS}-{seq}" for seq in range(5)]
    for entry_id in old_ids + recent_ids:
        await redis.xadd(key, {"event": "error", "error": "x"}, id=entry_id)
    assert await redis.xlen(key) == 305

    new_id = await ActivityLog(redis, settings).append("coinbase", error("now"))

    remaining = [row[0] for row in await redis.xrange(key)]
    left_old = [i for i in remaining if i in old_ids]
    assert len(left_old) < 100, "whole nodes of expired entries must be trimmed"
    assert remaining[-6:] == [*recent_ids, new_id], "entries inside the window are kept"


# --- single-stream pages -------------------------------------------------------------


async def test_page_is_newest_first_with_an_exclusive_cursor(
    redis: Redis, settings: Settings
) -> None:
    log = ActivityLog(redis, settings)
    ids = [await log.append("kraken", error(f"e{i}")) for i in range(7)]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = await log.page("kraken", count=3, before=cursor)
        seen.extend(e.id for e in page.entries)
        pages += 1
        cursor = page.next_cursor
        if cursor is None:
            break
    assert seen == ids[::-1]
    assert pages == 3
    exactly = await log.page("kraken", count=7)
    assert exactly.next_cursor is None and len(exactly.entries) == 7


async def test_page_accepts_a_merged_cursor_and_rejects_garbage(
    redis: Redis, settings: Settings
) -> None:
    log = ActivityLog(redis, settings)
    ids = [await log.append("kraken", error(str(i))) for i in range(3)]
    page = await log.page("kraken", before=format_cursor(ids[2], "kraken"))
    assert [e.id for e in page.entries] == ids[1::-1]
    with pytest.raises(ValueError):
        await log.page("kraken", before="not-an-id")


async def test_stream_entries_with_missing_fields_and_unknown_events(
    redis: Redis, settings: Settings
) -> None:
    key = keys.activity_key("gemini")
    await redis.xadd(key, WIRE_TRANSITION)  # type: ignore[arg-type]
    await redis.xadd(key, WIRE_ERROR)  # type: ignore[arg-type]
    await redis.xadd(key, {"event": "rebalance", "weight": "3", "hostname": "h1"})
    await redis.xadd(key, {"toState": "active"})  # no event at all
    await redis.xadd(key, {"event": "state_transition"})  # every other field missing
    page = await ActivityLog(redis, settings).page("gemini")
    bare, no_event, other, err, transition = page.entries
    assert isinstance(transition, StateTransitionEntry)
    assert (transition.from_state, transition.to_state, transition.hostname) == (
        "warming",
        "active",
        "DESKTOP-ABC",
    )
    assert isinstance(err, ErrorEntry) and err.error == "websocket closed (1006)" and err.ip == ""
    assert isinstance(other, OtherEntry) and other.extra_fields == {"weight": "3"}
    assert other.hostname == "h1"
    assert isinstance(no_event, OtherEntry) and no_event.event == ""
    assert isinstance(bare, StateTransitionEntry) and bare.to_state == "" and bare.time is None


# --- merged pages ----------------------------------------------------------------------


async def test_merged_page_orders_three_streams_newest_first(
    redis: Redis, settings: Settings
) -> None:
    log = ActivityLog(redis, settings)
    written: list[tuple[str, str]] = []
    for i in range(12):
        name = ("coinbase", "kraken", "binance")[i % 3]
        written.append((await log.append(name, error(f"{name}-{i}")), name))
    page = await log.merged_page(["coinbase", "kraken", "binance"], count=50)
    expected = sorted(written, key=lambda row: (parse_stream_id(row[0]), row[1]), reverse=True)
    assert [(e.id, e.stream) for e in page.entries] == expected
    assert page.next_cursor is None and page.errors == {}


async def test_merged_cursor_pages_through_ties_without_skip_or_repeat(
    redis: Redis, settings: Settings
) -> None:
    # The same IDs in three streams: only (id, stream) tells entries apart.
    names = ["alpha", "bravo", "charlie"]
    ids = ["1000-0", "1000-1", "2000-0", "3000-0", "3000-5"]
    for name in names:
        extra = ["2500-0"] if name == "bravo" else []
        for entry_id in sorted(ids + extra, key=parse_stream_id):
            await redis.xadd(
                keys.activity_key(name), {"event": "error", "error": name}, id=entry_id
            )
    expected = sorted(
        [(i, n) for n in names for i in ids] + [("2500-0", "bravo")],
        key=lambda row: (parse_stream_id(row[0]), row[1]),
        reverse=True,
    )
    log = ActivityLog(redis, settings)
    for size in (1, 2, 3, 4, 7, 16, 17):
        seen: list[tuple[str, str]] = []
        cursor: str | None = None
        while True:
            page = await log.merged_page(
                ["Charlie", "alpha", "bravo", "alpha"], count=size, before=cursor
            )
            assert len(page.entries) <= size
            seen.extend((e.id, e.stream) for e in page.entries)
            cursor = page.next_cursor
            if cursor is None:
                break
            assert parse_cursor(cursor) == (page.entries[-1].id, page.entries[-1].stream)
        assert seen == expected, f"page size {size}"


async def test_merged_page_accepts_a_plain_id_cursor(redis: Redis, settings: Settings) -> None:
    for name in ("a", "b"):
        for entry_id in ("1-0", "2-0", "3-0"):
            await redis.xadd(keys.activity_key(name), {"event": "error"}, id=entry_id)
    page = await ActivityLog(redis, settings).merged_page(["a", "b"], before="3-0")
    assert [(e.id, e.stream) for e in page.entries] == [
        ("2-0", "b"),
        ("2-0", "a"),
        ("1-0", "b"),
        ("1-0", "a"),
    ]
    bare_ms = await ActivityLog(redis, settings).merged_page(["a", "b"], before="2")
    assert [e.id for e in bare_ms.entries] == ["1-0", "1-0"]


async def test_merged_page_reports_an_unreadable_stream_and_reads_the_rest(
    redis: Redis, settings: Settings
) -> None:
    log = ActivityLog(redis, settings)
    kept = await log.append("okx", error("fine"))
    await redis.set(keys.activity_key("broken"), "not a stream")
    page = await log.merged_page(["okx", "broken", "empty"])
    assert [e.id for e in page.entries] == [kept]
    assert set(page.errors) == {"broken"} and "WRONGTYPE" in page.errors["broken"]


@pytest.mark.parametrize("cursor", ["", "abc", "1-2-3", "12-x", "5-0@", "-1-0"])
async def test_merged_page_rejects_malformed_cursors(
    redis: Redis, settings: Settings, cursor: str
) -> None:
    log = ActivityLog(redis, settings)
    if cursor == "":
        assert (await log.merged_page(["x"], before=cursor)).entries == []
        return
    with pytest.raises(ValueError):
        await log.merged_page(["x"], before=cursor)


async def test_merged_page_edge_cases(redis: Redis, settings: Settings) -> None:
    log = ActivityLog(redis, settings)
    assert await log.merged_page([]) == await log.merged_page(["nothing-here"])
    with pytest.raises(ValueError):
        await log.merged_page(["x"], count=0)
    assert format_cursor("5-1", "kraken") == "5-1@kraken"
    assert parse_cursor("5@Kraken") == ("5-0", "kraken")
    assert parse_cursor("5-1") == ("5-1", None)


# --- live tail ---------------------------------------------------------------------------


async def test_tail_yields_only_entries_appended_after_start(
    redis: Redis, settings: Settings
) -> None:
    log = ActivityLog(redis, settings)
    await log.append("coinbase", error("before"))
    tail = ActivityTail(settings, names=fixed("coinbase", "kraken"))
    async with collecting(tail) as got:
        written = []
        for i in range(6):
            name = "coinbase" if i % 2 else "kraken"
            written.append((await log.append(name, error(f"after-{i}")), name))
        await eventually(lambda: len(got.entries) >= 6)
        await until_blocked(redis, "xread")  # read on and found nothing else
        # Across streams, arrival order is stream-ID order (two streams can
        # share an ID within one millisecond; then the order between them is
        # arbitrary); within a stream it is exact.
        assert sorted((e.id, e.stream) for e in got.entries) == sorted(written)
        arrived = [parse_stream_id(e.id) for e in got.entries]
        assert arrived == sorted(arrived)
        for name in ("coinbase", "kraken"):
            assert got.ids(name) == [i for i, n in written if n == name]
        assert "before" not in got.texts()
        assert tail.connected and tail.streams == ["coinbase", "kraken"]
        shared = {k: v for k, v in tail.positions.items() if not k.startswith("perseus:")}
        assert shared == {"kraken": written[-2][0], "coinbase": written[-1][0]}
        assert set(tail.positions) - set(shared) == {
            "perseus:activity:coinbase",
            "perseus:activity:kraken",
        }


async def test_tail_drains_a_burst_larger_than_one_read(redis: Redis, settings: Settings) -> None:
    tail = ActivityTail(settings, names=fixed("bybit"), count=50)
    async with collecting(tail) as got:
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(400):
                pipe.xadd(keys.activity_key("bybit"), {"event": "error", "error": str(i)})
            written = await pipe.execute()
        await eventually(lambda: len(got.entries) >= 400)
        assert got.ids() == written


async def test_tail_over_many_streams_reads_a_share_of_each_and_drains_them_all(
    redis: Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over many streams one read takes only a share of each (`per_stream`):
    a flood comes back in small replies, and every entry still arrives once,
    in its stream's order."""
    monkeypatch.setattr(reads, "READ_TOTAL", 12)  # 24 streams: one entry each per read
    names = [f"ex{n}" for n in range(12)]
    assert reads.per_stream(500, 2 * len(names)) == 1
    tail = ActivityTail(settings, names=fixed(*names))
    async with collecting(tail) as got:
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(10):
                for name in names:
                    pipe.xadd(keys.activity_key(name), {"event": "error", "error": f"{name}-{i}"})
            written = await pipe.execute()
        await eventually(lambda: len(got.entries) >= len(written))
        assert sorted(e.id for e in got.entries) == sorted(written)
        for name in names:
            assert [e.error for e in got.entries if e.stream == name] == [  # type: ignore[union-attr]
                f"{name}-{i}" for i in range(10)
            ]


LARGE_FLEET = [(n, f"large{n}") for n in range(1, 9)]
"""Sixteen streams: a large fleet once `reads.BLOCKING_STREAMS_MAX` is set below that."""


@asynccontextmanager
async def keyspace_events(redis: Redis, flags: str) -> AsyncIterator[None]:
    """The shared server's `notify-keyspace-events` set to `flags`, then off again."""
    await redis.config_set("notify-keyspace-events", flags)
    try:
        yield
    finally:
        await redis.config_set("notify-keyspace-events", "")


@pytest.mark.parametrize("notifications", ["", "Kt"], ids=["blocking", "keyspace-notifications"])
async def test_tail_of_a_large_fleet_on_one_server(
    notifications: str, redis: Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past `BLOCKING_STREAMS_MAX` streams the tail is woken by keyspace
    notifications where the server sends them, and reads only the streams
    written (no XREAD BLOCK of every stream); without them it waits in the
    one blocking XREAD. Either way every entry arrives once."""
    monkeypatch.setattr(reads, "BLOCKING_STREAMS_MAX", 2)

    async def waits_as_it_should() -> None:
        patterns = int(await redis.execute_command("PUBSUB", "NUMPAT"))
        if notifications:
            assert patterns == 2  # logs:network:* and perseus:activity:*
            assert await blocked_clients(redis, "xread") == 0
        else:
            assert patterns == 0
            await until_blocked(redis, "xread")

    async with keyspace_events(redis, notifications):
        seen = await tail_collects(
            settings, redis, LARGE_FLEET, rounds=3, after_first_round=waits_as_it_should
        )
    assert sorted(seen) == sorted(expected_rounds(LARGE_FLEET, 3))


async def test_tail_of_a_large_fleet_sweeps_when_notifications_go_missing(
    redis: Redis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries whose notification never comes still arrive: each quiet block
    time reads the next slice of the streams (here four a turn)."""
    monkeypatch.setattr(reads, "BLOCKING_STREAMS_MAX", 2)
    monkeypatch.setattr(reads, "SWEEP_CHUNK", 4)

    async def notifications_go_missing() -> None:  # the subscription stays, silent
        await redis.config_set("notify-keyspace-events", "")

    async with keyspace_events(redis, "Kt"):
        seen = await tail_collects(
            settings, redis, LARGE_FLEET, rounds=3, after_first_round=notifications_go_missing
        )
    assert sorted(seen) == sorted(expected_rounds(LARGE_FLEET, 3))


async def test_tail_resumes_from_given_ids(redis: Redis, settings: Settings) -> None:
    log = ActivityLog(redis, settings)
    ids = [await log.append("kucoin", error(str(i))) for i in range(5)]
    other = [await log.append("okx", error(f"okx{i}")) for i in range(2)]
    tail = ActivityTail(settings, names=fixed("kucoin", "okx"), start={"KuCoin": ids[2]})
    async with collecting(tail) as got:
        # kucoin resumes after ids[2]; okx (not given) starts with new entries only.
        later = await log.append("okx", error("okx-new"))
        await eventually(lambda: len(got.entries) >= 3)
        await until_blocked(redis, "xread")  # read on and found nothing else
        assert [(e.id, e.stream) for e in got.entries] == [
            (ids[3], "kucoin"),
            (ids[4], "kucoin"),
            (later, "okx"),
        ]
        assert got.ids("okx") == [later] and later not in other


def test_tail_rejects_a_bad_start(settings: Settings) -> None:
    with pytest.raises(ValueError):
        ActivityTail(settings, fixed(), start="0")
    with pytest.raises(ValueError):
        ActivityTail(settings, fixed(), start={"coinbase": "yesterday"})


async def test_tail_picks_up_an_exchange_added_to_the_catalog_later(
    redis: Redis, settings: Settings
) -> None:
    await add_catalog(redis, (1, "coinbase"))
    log = ActivityLog(redis, settings)
    # The names every caller of the dashboard, CLI and notifier passes: catalog + online.
    names = FleetReader(redis).exchange_names
    tail = ActivityTail(settings, names, names_every_s=0.1)
    async with collecting(tail) as got:
        assert tail.streams == ["coinbase"]
        # The new exchange writes before the tail can have noticed it: that
        # entry is after the tail's start, so it must still arrive.
        await add_catalog(redis, (2, "kraken"))
        first = await log.append("kraken", error("k1"))
        await eventually(lambda: "kraken" in tail.streams)
        second = await log.append("kraken", error("k2"))
        third = await log.append("coinbase", error("c1"))
        await eventually(lambda: len(got.entries) >= 3)
        assert got.ids("kraken") == [first, second]
        assert got.ids("coinbase") == [third]


async def test_tail_follows_online_exchanges_missing_from_the_catalog(
    redis: Redis, settings: Settings
) -> None:
    payload = InstanceStatus(
        exchange_id=9,
        exchange_name="bitstamp",
        hostname="h",
        connection_state=ConnectionState.ACTIVE,
        last_heartbeat=datetime.now(UTC),
        last_state_change=datetime.now(UTC),
        registered_at=datetime.now(UTC),
    ).to_json()
    await redis.set(keys.status_key(9), payload, px=60_000)
    log = ActivityLog(redis, settings)
    names = FleetReader(redis).exchange_names
    async with collecting(ActivityTail(settings, names)) as got:
        entry_id = await log.append("bitstamp", error("b1"))
        await eventually(lambda: got.ids() == [entry_id])


async def test_tail_resumes_after_its_connection_is_killed_without_gap_or_duplicate(
    redis: Redis, settings: Settings
) -> None:
    names = ("coinbase", "kraken", "binance")
    log = ActivityLog(redis, settings)
    tail = ActivityTail(settings, names=fixed(*names))
    written: dict[str, list[str]] = {name: [] for name in names}
    async with collecting(tail) as got:
        for round_ in range(6):
            # The tail's connection dies while it blocks; entries are appended
            # while it is down (backing off) and after it is back.
            await eventually(lambda: tail.connected)
            await redis.client_kill_filter(_type="normal", skipme=True)
            for i in range(5):
                name = names[(round_ + i) % 3]
                written[name].append(await log.append(name, error(f"{round_}-{i}")))
            await asyncio.sleep(0.05 * (round_ % 3))
        total = sum(len(ids) for ids in written.values())
        await eventually(lambda: len(got.entries) >= total)
        await until_blocked(redis, "xread")  # read on and found nothing else
        for name in names:
            assert got.ids(name) == written[name], name
        assert len(got.entries) == total
        assert tail.reconnects >= 1
        assert tail.last_error is not None and "cannot reach Redis" in tail.last_error


async def test_tail_survives_a_server_pause(
    fresh_redis: RedisServer, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(redis_url=fresh_redis.url)
    writer = connect(settings)
    try:
        log = ActivityLog(writer, settings)
        async with collecting(ActivityTail(settings, names=fixed("gemini"))) as got:
            first = await log.append("gemini", error("1"))
            await eventually(lambda: got.ids() == [first])
            fresh_redis.pause()
            try:
                # Queued on the socket while the server is stopped.
                pending = asyncio.create_task(log.append("gemini", error("2")))
                await asyncio.sleep(0.4)
            finally:
                fresh_redis.resume()
            second = await pending
            third = await log.append("gemini", error("3"))
            await eventually(lambda: len(got.entries) >= 3)
            assert got.ids() == [first, second, third]
    finally:
        await writer.aclose()


async def test_tail_reconnects_after_a_redis_restart(
    fresh_redis: RedisServer, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(redis_url=fresh_redis.url)
    writer = connect(settings)
    try:
        log = ActivityLog(writer, settings)
        tail = ActivityTail(settings, names=fixed("okx"))
        async with collecting(tail) as got:
            before = await log.append("okx", error("before"))
            await eventually(lambda: got.ids() == [before])
            fresh_redis.stop()
            await eventually(lambda: not tail.connected)
            assert tail.retry_in_s is not None and 0 < tail.retry_in_s <= 1
            assert tail.last_error is not None and "cannot reach Redis" in tail.last_error
            fresh_redis.start()  # same port, empty dataset
            await eventually(lambda: tail.connected)
            # The writer's pooled connection died with the server: the first
            # command on it reports that (XADD is not retried blindly).
            with contextlib.suppress(RedisConnectionError):
                await writer.ping()
            after = await log.append("okx", error("after"))
            await eventually(lambda: len(got.entries) >= 2)
            assert got.ids() == [before, after]
            assert tail.retry_in_s is None and tail.reconnects >= 1
    finally:
        await writer.aclose()


async def test_tail_started_while_redis_is_down_misses_nothing_once_it_is_up(
    fresh_redis: RedisServer, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(redis_url=fresh_redis.url)
    fresh_redis.stop()
    tail = ActivityTail(settings, names=fixed("okx", "kraken"))
    await tail.start()
    assert not tail.connected and tail.retry_in_s is not None
    fresh_redis.start()
    writer = connect(settings)
    try:
        # Written after the tail started but possibly before it reconnects.
        first = await ActivityLog(writer, settings).append("okx", error("first"))
        async with collecting(tail) as got:
            await eventually(lambda: tail.connected)
            second = await ActivityLog(writer, settings).append("kraken", error("second"))
            await eventually(lambda: len(got.entries) >= 2)
            assert sorted(got.ids()) == sorted([first, second])
    finally:
        await writer.aclose()


async def test_tail_sets_aside_a_key_that_is_not_a_stream(redis: Redis, settings: Settings) -> None:
    await redis.set(keys.activity_key("broken"), "oops")
    log = ActivityLog(redis, settings)
    tail = ActivityTail(settings, names=fixed("broken", "fine"), names_every_s=0.1)
    async with collecting(tail) as got:
        entry_id = await log.append("fine", error("ok"))
        await eventually(lambda: got.ids() == [entry_id])
        assert tail.last_error is not None and "broken" in tail.last_error
        # Once the key is a stream again it is followed again.
        await redis.delete(keys.activity_key("broken"))
        fixed_id = await log.append("broken", error("back"))
        await eventually(lambda: fixed_id in got.ids("broken"))


async def test_tail_ends_when_closed_from_another_task(redis: Redis, settings: Settings) -> None:
    tail = ActivityTail(settings, names=fixed("coinbase"))
    await tail.start()
    collector = Collector(tail)
    await until_blocked(redis, "xread")
    await tail.aclose()
    await asyncio.wait_for(collector.task, 5)  # ends normally, not cancelled
    assert collector.task.exception() is None
    await tail.aclose()  # idempotent
    assert [entry async for entry in tail] == []


async def test_cancelling_the_consumer_is_clean(redis: Redis, settings: Settings) -> None:
    tail = ActivityTail(settings, names=fixed("coinbase"))
    collector = Collector(tail)
    await until_blocked(redis, "xread")  # started by the first iteration
    collector.task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await collector.task
    await tail.aclose()
    # Nothing of the tail's is left running.
    pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    assert pending == []


async def test_tail_as_context_manager_with_redis_down(
    make_settings: Callable[..., Settings],
) -> None:
    from perseus_cli.apps.redis_server import free_port

    settings = make_settings(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    async with ActivityTail(settings, names=fixed("coinbase")) as tail:
        collector = Collector(tail)
        await eventually(lambda: tail.retry_in_s is not None)
        assert not tail.connected
        assert tail.last_error is not None and "connection refused" in tail.last_error
    await asyncio.wait_for(collector.task, 5)


def _snake(fields: dict[str, str]) -> dict[str, str]:
    from pydantic.alias_generators import to_snake

    return {to_snake(k): v for k, v in fields.items() if k != "event"}
