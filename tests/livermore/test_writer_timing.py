"""Each writer is judged by its own heartbeat timing, end to end on a real Redis:
a Livermore server (15 s / 45 s, its payload says nothing) whose heartbeat is
10 s old is fresh with its uptime running, and a Perseus agent heartbeating
every 5 s whose heartbeat is 12 s old is overdue with its uptime stopped,
whatever interval the dashboard or `perseus status` is configured with."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import redis as sync_redis
from click.testing import CliRunner

from perseus_cli.main import cli
from perseus_core.present import Tone
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import format_ts
from perseus_tui import render
from perseus_tui.app import PerseusApp
from perseus_tui.widgets.instance_table import row_cells
from perseus_tui.widgets.status_panel import status_lines
from tests.cli.test_read_cmds import catalog, status_payload
from tests.helpers import StepClock
from tests.livermore.shapes import LivermoreWriter
from tests.tui.test_dashboard import card_text
from tests.waiting import eventually

LIVERMORE_ID, PERSEUS_ID = 2, 9
ONE_HOUR = timedelta(hours=1)


def seed(r: sync_redis.Redis, now: datetime) -> None:
    """Both writers active for an hour at `now`: the Livermore server's last
    heartbeat 10 s old (its key's PTTL says so too), the 5 s Perseus agent's 12 s old.

    The agent's key lives longer than its `ttlMs`, so it is dated by its
    `lastHeartbeat` (docs/wire-format.md part 4): the test's clock, not the
    wall clock, decides its age, and the key cannot expire under a slow run.
    """
    catalog(r, LIVERMORE_ID, "binance", "Binance")
    catalog(r, PERSEUS_ID, "bitfinex", "Bitfinex")
    writer = LivermoreWriter(r, LIVERMORE_ID, "binance", "lm-host-02", "203.0.113.9")
    assert writer.claim()
    writer.bring_up()
    writer.payload["connectedAt"] = format_ts(now - ONE_HOUR)
    writer.heartbeat_ago(10, now)
    agent = status_payload(
        PERSEUS_ID, "bitfinex", hostname="bfx-01", connectionState="active",
        connectedAt=format_ts(now - ONE_HOUR), lastHeartbeat=format_ts(now - timedelta(seconds=12)),
        instanceId="bfx-01:9:4242:1770700000000", pid=4242, version="0.1.0",
        ttlMs=15_000, heartbeatIntervalMs=5_000,
    )  # fmt: skip
    r.set(f"exchange:{PERSEUS_ID}:status", agent, px=600_000)


def beat_style(app: PerseusApp, exchange_id: int) -> str:
    """The style of a card's heartbeat age (its `♥` line)."""
    card = app.dashboard.grid.card(exchange_id)
    assert card is not None
    line = next(row for row in card.render().split("\n") if row.plain.startswith("♥"))
    return " ".join(str(span.style) for span in line.spans if "text-" in str(span.style))


@pytest.mark.parametrize(
    "reader", [{"heartbeat_interval_ms": 300, "heartbeat_ttl_ms": 900}, {}], ids=["300ms", "15s"]
)
async def test_the_dashboard_judges_each_writer_by_its_own_timing(
    make_app: Callable[..., PerseusApp],
    make_settings: Callable[..., Settings],
    r: sync_redis.Redis,
    reader: dict[str, int],
) -> None:
    """On a dashboard at 300 ms the Livermore server is not `no heartbeat for
    10s` in red; on one at 15 s the dead 5 s agent is not green."""
    clock = StepClock(datetime.now(UTC))
    seed(r, clock.now)
    settings = make_settings(
        refresh_ms=60_000,
        **({"heartbeat_interval_ms": 15_000, "heartbeat_ttl_ms": 45_000} | reader),
    )
    app = make_app(settings=settings, clock=clock)
    async with app.run_test(size=(120, 40)):
        await eventually(lambda: "ACTIVE" in card_text(app, PERSEUS_ID))
        await eventually(lambda: "ACTIVE" in card_text(app, LIVERMORE_ID))
        livermore = card_text(app, LIVERMORE_ID)
        assert "s ago" in livermore and "no heartbeat" not in livermore, livermore
        assert "Running for 1h 0m" in livermore, livermore
        assert render.TONE_TEXT[Tone.SUCCESS] in beat_style(app, LIVERMORE_ID)
        perseus = card_text(app, PERSEUS_ID)
        assert "no heartbeat for 12s" in perseus and "Running" not in perseus, perseus
        assert f"bold {render.TONE_TEXT[Tone.ERROR]}" in beat_style(app, PERSEUS_ID)
        # The table row and the detail screen say the same, uptime included.
        fleet = app.fleet
        views, now = fleet.views, clock.now
        cells = [cell.plain for cell in row_cells(views[LIVERMORE_ID], now, fleet.timing)]
        assert "1h 0m" in cells and not any("no heartbeat" in cell for cell in cells), cells
        cells = [cell.plain for cell in row_cells(views[PERSEUS_ID], now, fleet.timing)]
        assert "no heartbeat for 12s" in cells and "59m 48s" in cells, cells  # stopped
        detail = [line.plain for line in status_lines(views[PERSEUS_ID], now, UTC, fleet.timing)]
        assert "heartbeat timing  every 5s, TTL 15s  its own" in detail, detail
        assert "thresholds        fresh to 6s, overdue after 10s" in detail, detail
        detail = [line.plain for line in status_lines(views[LIVERMORE_ID], now, UTC, fleet.timing)]
        assert "heartbeat timing  every 15s, TTL 45s  Livermore's" in detail, detail
        assert "thresholds        fresh to 18s, overdue after 30s" in detail, detail


def status_rows(redis_url: str, *args: str, **env: str) -> dict[str, str]:
    """`perseus status` with `env`: each exchange's row by its id."""
    result = CliRunner().invoke(
        cli, ["status", *args, "--redis-url", redis_url], env=env, catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    return {line.split()[0]: line for line in result.stdout.splitlines()[1:] if line.strip()}


def test_perseus_status_judges_each_writer_by_its_own_timing(
    r: sync_redis.Redis, redis_url: str
) -> None:
    seed(r, datetime.now(UTC))
    fast = {"PERSEUS_HEARTBEAT_INTERVAL_MS": "300", "PERSEUS_HEARTBEAT_TTL_MS": "900"}
    for env in (fast, {}):  # a CLI configured for 300 ms, and for the default 15 s
        rows = status_rows(redis_url, **env)
        livermore, perseus = rows[str(LIVERMORE_ID)], rows[str(PERSEUS_ID)]
        assert "s ago" in livermore and "no heartbeat" not in livermore, livermore
        assert "1h 0m" in livermore, livermore  # running
        assert "no heartbeat for 1" in perseus, perseus  # 12 s, or a little more
        assert "59m 4" in perseus, perseus  # stopped at its last heartbeat
    # An explicit threshold still wins over the holder's own timing.
    relaxed = status_rows(redis_url, PERSEUS_HEARTBEAT_OVERDUE_MS="60000")[str(PERSEUS_ID)]
    assert "no heartbeat" not in relaxed and "s ago" in relaxed, relaxed


def test_perseus_status_json_says_how_each_heartbeat_is_judged(
    r: sync_redis.Redis, redis_url: str
) -> None:
    seed(r, datetime.now(UTC))
    result = CliRunner().invoke(
        cli,
        ["status", "--json", "--redis-url", redis_url],
        env={"PERSEUS_HEARTBEAT_INTERVAL_MS": "300", "PERSEUS_HEARTBEAT_TTL_MS": "900"},
        catch_exceptions=False,
    )
    by_id = {item["exchangeId"]: item for item in json.loads(result.stdout)["instances"]}
    livermore = by_id[LIVERMORE_ID]["heartbeat"]
    assert (livermore["health"], livermore["timing"]) == ("fresh", "livermore")
    assert (livermore["intervalMs"], livermore["freshMs"], livermore["overdueMs"]) == (
        15_000,
        18_000,
        30_000,
    )
    assert 10_000 <= livermore["ageMs"] < 18_000
    perseus = by_id[PERSEUS_ID]["heartbeat"]
    assert (perseus["health"], perseus["timing"]) == ("overdue", "own")
    assert (perseus["intervalMs"], perseus["freshMs"], perseus["overdueMs"]) == (
        5_000,
        6_000,
        10_000,
    )
    assert by_id[PERSEUS_ID]["status"]["heartbeatIntervalMs"] == 5_000
