"""Entries that belong to no exchange: a Livermore start that fails before it
knows its exchange logs into `logs:network:unknown` with exchangeId 0. No
surface lists a "0 unknown" exchange for them; the feed shows the entries,
and `perseus doctor` counts them."""

from __future__ import annotations

import json
from collections.abc import Callable

import redis as sync_redis
from click.testing import CliRunner
from redis.asyncio import Redis

from perseus_cli.main import cli
from perseus_core.store.network import FleetReader
from perseus_core.wire.settings import Settings
from perseus_tui.app import PerseusApp
from tests.livermore.shapes import LivermoreWriter
from tests.waiting import eventually


def failed_starts(r: sync_redis.Redis) -> None:
    """Two early failures of a Livermore server, and a dead kucoin it ran
    before (history only: listed offline as exchange 5)."""
    writer = LivermoreWriter(r, 5, "kucoin", "lm-host-05")
    assert writer.claim()
    writer.bring_up()
    writer.deregister()
    writer.fail_early("Missing exchange configuration")
    writer.fail_early("Missing exchange configuration")


def no_phantom(ids_and_names: list[tuple[int, str]]) -> bool:
    return all(i != 0 and n.lower() != "unknown" for i, n in ids_and_names)


async def test_the_reader_lists_no_exchange_for_them(r: sync_redis.Redis, redis: Redis) -> None:
    failed_starts(r)
    # A stream of a real name whose newest entry names slot 0: its older
    # entries still name the exchange.
    r.xadd("logs:network:mexc", {"event": "state_transition", "exchangeId": "6"})
    r.xadd("logs:network:mexc", {"event": "error", "exchangeId": "0", "exchangeName": "mexc"})
    reader = FleetReader(redis)
    listed = [(v.exchange_id, v.exchange_name) for v in (await reader.snapshot()).exchanges]
    assert listed == [(5, "kucoin"), (6, "mexc")]
    assert [e.name for e in await reader.discover()] == ["kucoin", "mexc"]
    assert await reader.streams_of_no_exchange() == {"logs:network:unknown": 2}
    # The live feed still follows the stream (a fresh reader scans at once).
    assert "unknown" in await FleetReader(redis).exchange_names()


def test_status_shows_no_row_and_doctor_counts_them(
    r: sync_redis.Redis, settings: Settings
) -> None:
    failed_starts(r)
    env = {"PERSEUS_REDIS_URL": settings.redis_url}
    status = CliRunner().invoke(cli, ["status", "--json"], env=env)
    assert status.exit_code == 0, status.output
    rows = [(i["exchangeId"], i["exchangeName"]) for i in json.loads(status.stdout)["instances"]]
    assert rows == [(5, "kucoin")]
    table = CliRunner().invoke(cli, ["status"], env=env)
    assert "unknown" not in table.stdout and "kucoin" in table.stdout

    report = json.loads(CliRunner().invoke(cli, ["doctor", "--json"], env=env).stdout)
    assert report["facts"]["streams_of_no_exchange"] == {"logs:network:unknown": 2}
    [check] = [c for c in report["checks"] if c["check"] == "entries of no exchange"]
    assert check["value"] == "2 entries in 1 stream (exchangeId 0 or exchange unknown)"
    assert check["ok"] is None and report["ok"] is True  # worth knowing, not a failure
    doctor = CliRunner().invoke(cli, ["doctor"], env=env)
    assert "entries of no exchange" in doctor.stdout and "logs:network:unknown: 2" in doctor.stdout


async def test_the_dashboard_shows_the_entries_but_no_card(
    make_app: Callable[..., PerseusApp], r: sync_redis.Redis
) -> None:
    failed_starts(r)
    app = make_app()
    async with app.run_test(size=(120, 40)):
        await eventually(lambda: 5 in app.fleet.views, what="kucoin's card")
        await eventually(
            lambda: any(e.stream == "unknown" for e in app.dashboard.feed.entries),
            what="the failed starts in the feed",
        )
        # A new failure while the dashboard runs: an entry, still no exchange.
        LivermoreWriter(r, 5, "kucoin", "lm-host-05").fail_early("Missing exchange configuration")
        await eventually(
            lambda: sum(e.stream == "unknown" for e in app.dashboard.feed.entries) == 3,
            what="the new entry in the feed",
        )
        views = [(v.exchange_id, v.exchange_name) for v in app.fleet.views.values()]
        assert views == [(5, "kucoin")] and no_phantom(views)
        assert app.dashboard.grid.card(0) is None
