"""State timelines and heartbeat trends against a real Redis: the window read,
the dashboard keeping it from the tail, a late heartbeat drawn as such."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

from perseus_core.present.timeline import History, Presence, SliceKind, build
from perseus_core.present.trace import OFFLINE
from perseus_core.store.activity.windows import read_windows
from perseus_core.wire import keys
from perseus_core.wire.models import (
    CatalogEntry,
    CommandEntry,
    ConnectionState,
    ErrorEntry,
    InstanceStatus,
    StateTransitionEntry,
)
from perseus_core.wire.timeutil import format_ts, to_epoch_ms
from perseus_tui.app import PerseusApp
from perseus_tui.messages import DetailRequested
from perseus_tui.screens.detail import DetailScreen
from perseus_tui.widgets.age_sparkline import AgeSparkline
from perseus_tui.widgets.instance_table import row_cells
from perseus_tui.widgets.timeline_strip import TimelineStrip
from tests.waiting import eventually

AppFactory = Callable[..., PerseusApp]


async def _write(redis: Redis, key: str, at: datetime, fields: dict[str, str]) -> None:
    """XADD with the ID of `at`, as a writer at that moment would have."""
    await redis.xadd(key, fields, id=f"{to_epoch_ms(at)}-0")  # type: ignore[arg-type]


def _move(name: str, src: str, dst: str, at: datetime) -> dict[str, str]:
    return StateTransitionEntry(
        timestamp=format_ts(at), from_state=src, to_state=dst, exchange_id="1",
        exchange_name=name,
    ).to_fields()  # fmt: skip


async def test_a_timeline_read_from_real_streams_matches_cell_by_cell(redis: Redis) -> None:
    """One window read (both streams, the edge before the window) gives the
    timeline the entries say: active across the left edge, an error, a stop
    with its offline gap, a command, and back to active."""
    now = datetime.now(UTC).replace(microsecond=0)
    hours = [now - timedelta(hours=h) for h in range(7)]
    shared, ours = keys.activity_key("tl"), keys.perseus_activity_key("tl")
    edge = hours[6] - timedelta(hours=2)  # before the window
    error_at = hours[5] - timedelta(minutes=30)
    stopped_at = hours[4] + timedelta(minutes=1)
    command_at = hours[2] - timedelta(minutes=5)
    active_at = hours[2] + timedelta(minutes=2)
    failed = ErrorEntry(timestamp=format_ts(error_at), error="boom", state="active")
    start = CommandEntry(timestamp=format_ts(command_at), command="start", status="success")
    writes = [
        (shared, edge, _move("tl", "warming", "active", edge)),
        (shared, error_at, failed.to_fields()),
        (shared, hours[4], _move("tl", "active", "stopping", hours[4])),
        (shared, stopped_at, _move("tl", "stopping", "stopped", stopped_at)),
        (ours, command_at, start.to_fields()),
        (shared, hours[2], _move("tl", "idle", "starting", hours[2])),
        (shared, active_at, _move("tl", "starting", "active", active_at)),
    ]
    for key, at, fields in writes:
        await _write(redis, key, at, fields)

    windows = await read_windows(redis, ["TL"], since=hours[6], count=50)
    window = windows["tl"]
    assert window.error is None and window.known_from is None
    assert len(window.entries) == 7  # six in the window, and the edge before it
    presence = Presence(True, ConnectionState.ACTIVE.value, active_at)
    timeline = build(window.entries, presence, end=now, span=timedelta(hours=6), cells=6)
    kinds = [(piece.kind, piece.state) for piece in timeline.slices]
    active = (SliceKind.STATE, "active")
    assert kinds == [
        active,
        active,
        (SliceKind.OFFLINE, None),
        (SliceKind.OFFLINE, None),
        active,
        active,
    ]
    assert [piece.errors for piece in timeline.slices] == [1, 0, 0, 0, 0, 0]
    assert [piece.commands for piece in timeline.slices] == [0, 0, 0, 1, 0, 0]

    # A read cut short by its count: the time before its oldest entry is unknown.
    short = (await read_windows(redis, ["tl"], since=hours[6], count=2))["tl"]
    assert short.known_from is not None
    history = History()
    history.load(short.entries, known_from=short.known_from)
    cut = history.timeline(presence, end=now, span=timedelta(hours=6), cells=6)
    assert cut.slices[0].kind is SliceKind.UNKNOWN and cut.slices[-1].state == "active"


async def test_the_dashboard_reads_each_window_once_and_follows_the_tail(
    make_app: AppFactory, redis: Redis
) -> None:
    """The table's strip shows the read history, then a transition the tail brings."""
    now = datetime.now(UTC)
    await redis.hset(keys.CATALOG_KEY, "1", CatalogEntry(id=1, name="tl").to_json())
    status = InstanceStatus(
        exchange_id=1, exchange_name="tl", hostname="h", connection_state=ConnectionState.ACTIVE,
        last_heartbeat=now, last_state_change=now - timedelta(minutes=30),
        registered_at=now - timedelta(minutes=31), connected_at=now - timedelta(minutes=30),
    )  # fmt: skip
    await redis.set(keys.status_key(1), status.to_json(), px=60_000)
    at = now - timedelta(minutes=30)
    await _write(redis, keys.activity_key("tl"), at, _move("tl", "warming", "active", at))
    app = make_app()
    async with app.run_test(size=(160, 30)) as pilot:
        history = app.fleet.timelines

        def loaded() -> bool:
            found = history.history("tl")
            return found is not None and found.loaded

        await eventually(loaded)
        await pilot.press("t")
        moment = datetime.now(UTC)
        await redis.xadd(keys.activity_key("tl"), _move("tl", "active", "stopping", moment))  # type: ignore[arg-type]
        await eventually(
            lambda: history.history("tl").transitions_since(moment - timedelta(seconds=5)) == 1
        )  # type: ignore[union-attr]
        found = history.history("tl")
        assert found is not None and len(found.entries) == 2  # the read, then the tail; once each
        fleet = app.fleet
        view = fleet.views[1]
        cells = row_cells(view, datetime.now(UTC), fleet.timing, timelines=fleet.timelines)
        strip = next(cell for cell in cells if "█" in cell.plain)
        assert len(strip.plain) == 12 and strip.plain.startswith(
            "█"
        )  # the hour, held from the edge


async def test_a_late_heartbeat_shows_in_the_trend_and_the_detail_sparkline(
    make_app: AppFactory, redis: Redis
) -> None:
    """A status whose key says its last heartbeat was 25 s ago (TTL 45 s, 20 s
    left): the trace records a late age, the table's trend bar takes the late
    tone, and the detail sparkline names the worst age."""
    now = datetime.now(UTC)
    await redis.hset(keys.CATALOG_KEY, "1", CatalogEntry(id=1, name="late").to_json())
    status = InstanceStatus(
        exchange_id=1, exchange_name="late", hostname="h", connection_state=ConnectionState.ACTIVE,
        last_heartbeat=now - timedelta(seconds=25), last_state_change=now - timedelta(minutes=5),
        registered_at=now - timedelta(minutes=5), connected_at=now - timedelta(minutes=5),
        ttl_ms=45_000, heartbeat_interval_ms=15_000,
    )  # fmt: skip
    await redis.set(keys.status_key(1), status.to_json(), px=20_000)
    await redis.hset(keys.CATALOG_KEY, "2", CatalogEntry(id=2, name="gone").to_json())
    app = make_app()
    async with app.run_test(size=(160, 40)) as pilot:
        await eventually(app.loaded.is_set)

        def recorded() -> list[float]:
            trace = app.fleet.traces.trace(1, app.clock())
            return trace.values() if trace is not None else []

        await eventually(lambda: any(v >= 25 for v in recorded()))
        gone = app.fleet.traces.trace(2, app.clock())
        assert gone is not None and set(gone.values()) == {OFFLINE}
        fleet = app.fleet
        cells = row_cells(fleet.views[1], datetime.now(UTC), fleet.timing, traces=fleet.traces)
        trend = next(cell for cell in cells if any(c in cell.plain for c in "▁▂▃▄▅▆▇█"))
        assert any("warning" in str(span.style) for span in trend.spans), trend.spans

        app.post_message(DetailRequested(1))
        await eventually(lambda: isinstance(app.screen, DetailScreen))
        await pilot.pause()
        sparkline = app.screen.query_one(AgeSparkline)
        said = sparkline.render().plain
        assert "late from 18s" in said and "overdue from 30s" in said and "worst 2" in said, said
        strip = app.screen.query_one(TimelineStrip)
        strip.focus()
        await pilot.press("left", "left")
        assert strip.cursor == len(strip.timeline.slices) - 3
