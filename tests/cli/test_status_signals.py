"""`perseus status` colours and words a heartbeat with the dashboard's presenter: overdue
past two intervals (or the configured threshold), with the uptime stopped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import redis as sync_redis
from click.testing import CliRunner

from perseus_cli.main import cli
from perseus_core.wire.timeutil import format_ts
from tests.cli.test_read_cmds import catalog, status_payload


def _status_row(redis_url: str, **env: str) -> str:
    result = CliRunner().invoke(
        cli, ["status", "--redis-url", redis_url], env=env, catch_exceptions=False
    )
    return result.stdout.splitlines()[1]


def test_an_overdue_heartbeat_says_so_and_stops_the_uptime(
    r: sync_redis.Redis, redis_url: str
) -> None:
    now = datetime.now(UTC)
    catalog(r, 2, "kraken")
    payload = status_payload(
        2, "kraken", connectionState="active",
        connectedAt=format_ts(now - timedelta(hours=2)),
        lastHeartbeat=format_ts(now - timedelta(seconds=32)),
    )  # fmt: skip
    r.set("exchange:2:status", payload, px=45_000 - 32_000)  # as the TTL says: 32 s old
    row = _status_row(redis_url)
    assert "no heartbeat for 3" in row, row  # 32 s, or 33 s on a slow run
    assert "1h 59m" in row, row  # the uptime stopped at the last heartbeat, not 2h
    relaxed = _status_row(redis_url, PERSEUS_HEARTBEAT_OVERDUE_MS="60000")
    assert "no heartbeat" not in relaxed and "s ago" in relaxed, relaxed
    assert "2h 0m" in relaxed, relaxed
