"""`perseus doctor` against a plain server, a TLS endpoint and a viewer user:
a table (or JSON) of what it found, exit 0 when Perseus will work, 1 with the
reasons otherwise, 3 when Redis cannot be reached; with `--json`, one JSON
document whatever happens. The documented roles, each version's lines, are
in tests/acl/test_doctor_roles.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import redis as sync_redis
from click.testing import CliRunner, Result

from perseus_cli.apps.redis_server import free_port
from perseus_cli.main import cli
from perseus_core.store.doctor import checks
from perseus_core.wire.timeutil import format_ts
from tests.acl.conftest import AclServer, acl, acl_module_server  # noqa: F401 - fixtures
from tests.tls.certs import Certs
from tests.tls.conftest import certs, tls_proxy  # noqa: F401 - fixtures
from tests.tls.proxy import TlsProxy


def doctor(url: str, *args: str, **env: str) -> Result:
    return CliRunner().invoke(cli, ["doctor", *args], env={"PERSEUS_REDIS_URL": url, **env})


def seed_writer(url: str, *, clock_behind_s: float) -> None:
    """Exchange 1, heartbeating now on Redis's clock, from a writer whose own
    clock is `clock_behind_s` behind; and its activity stream."""
    moment = format_ts(datetime.now(UTC) - timedelta(seconds=clock_behind_s))
    payload = {
        "exchangeId": 1, "exchangeName": "coinbase", "hostname": "skewed-host",
        "ipAddress": None, "adminEmail": None, "adminDisplayName": None,
        "connectionState": "active", "symbolCount": 1, "connectedAt": moment,
        "lastHeartbeat": moment, "lastStateChange": moment, "registeredAt": moment,
        "lastError": None, "lastErrorAt": None,
    }  # fmt: skip
    with sync_redis.Redis.from_url(url) as admin:
        admin.set("exchange:1:status", json.dumps(payload), px=45_000)
        admin.xadd("logs:network:coinbase", {"event": "state_transition", "toState": "active"})


def test_a_plain_server_that_works(redis_url: str) -> None:
    seed_writer(redis_url, clock_behind_s=30)
    result = doctor(redis_url, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    checks = {c["check"]: c for c in report["checks"]}
    assert report["ok"] is True and report["reasons"] == [] and report["exitCode"] == 0
    assert checks["mode"]["value"] == "standalone"
    assert checks["TLS"]["value"] == "off (redis://)"
    # The default user may do anything: Redis 7 says so command by command
    # (from a script), 6.2 by the user's flags (ACL GETUSER).
    assert report["facts"]["roles"] == ["viewer", "operator", "agent"]
    assert report["facts"]["rights"]["method"] in ("redis.acl_check_cmd", "ACL GETUSER")
    assert checks["role: agent"]["value"] == "can run the agent of exchange 1 (coinbase)"
    assert checks["memory"]["ok"] is True
    # One blocking read follows every stream on a single server: it never polls.
    assert checks["live tail"]["value"].startswith("blocks: one XREAD BLOCK")
    assert report["facts"]["version"].startswith(("6.", "7.", "8."))
    assert set(report["facts"]["latency_ms"]) == {"p50", "p99"}
    # The writer's clock is 30 s behind: named, with its host.
    assert any("skewed-host" in s and "behind Redis" for s in report["facts"]["skewed_writers"])
    assert report["facts"]["streams"]["logs:network:coinbase"] == 1
    table = doctor(redis_url)
    assert table.exit_code == 0 and "Perseus will work with this Redis." in table.output
    assert "skewed-host" in table.output


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ("", "blocks: one XREAD BLOCK of all 2 streams, each key sent again every turn: "
         "notify-keyspace-events lacks K and t on the server"),
        ("Kt", "wakes on keyspace notifications (2 streams; the server sends them)"),
    ],
    ids=["without-notifications", "keyspace-notifications"],
)  # fmt: skip
def test_the_live_tail_of_a_large_fleet_on_one_server(
    redis_url: str, flags: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past `BLOCKING_STREAMS_MAX` streams (here 1) the doctor says whether
    keyspace notifications let the tail read only the streams written."""
    monkeypatch.setattr(checks, "BLOCKING_STREAMS_MAX", 1)
    seed_writer(redis_url, clock_behind_s=0)
    with sync_redis.Redis.from_url(redis_url) as admin:
        admin.config_set("notify-keyspace-events", flags)
        try:
            result = doctor(redis_url, "--json")
        finally:
            admin.config_set("notify-keyspace-events", "")
    assert result.exit_code == 0, result.output
    tail = next(c for c in json.loads(result.stdout)["checks"] if c["check"] == "live tail")
    assert tail["value"] == expected


def test_keys_of_the_wrong_type_fail_with_the_reason(redis_url: str) -> None:
    with sync_redis.Redis.from_url(redis_url) as admin:
        admin.set("logs:network:kraken", "not a stream")
        admin.set("perseus:exchanges", "not a hash")
    result = doctor(redis_url)
    assert result.exit_code == 1, result.output
    assert "logs:network:kraken is a string, not a stream" in result.output
    assert "perseus:exchanges is a string, not a hash" in result.output
    assert "Perseus will not work with this Redis:" in result.output


def test_the_tls_endpoint(tls_proxy: TlsProxy, certs: Certs, redis_url: str) -> None:  # noqa: F811
    url = f"rediss://localhost:{tls_proxy.port}/0"
    result = doctor(url, PERSEUS_TLS_CA_FILE=str(certs.ca))
    assert result.exit_code == 0, result.output
    assert "on, certificate verified against the CA file" in result.output
    wrong = doctor(url, PERSEUS_TLS_CA_FILE=str(certs.wrong_ca))
    assert wrong.exit_code == 3 and "TLS certificate not accepted" in wrong.output


def test_a_viewer_user(acl: AclServer) -> None:  # noqa: F811
    result = doctor(acl.viewer, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    operator = next(c for c in report["checks"] if c["check"] == "role: operator")
    assert report["facts"]["roles"] == ["viewer"]
    assert any("may not XADD perseus:commands:1" in d for d in operator["details"])
    assert "viewer-pw" not in result.output


def test_a_full_server_refusing_writes_is_not_fit(redis_url: str) -> None:
    with sync_redis.Redis.from_url(redis_url) as admin:
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)
        try:
            result = doctor(redis_url, "--json")
        finally:
            admin.config_set("maxmemory", 0)
    assert result.exit_code == 1, result.output
    report = json.loads(result.stdout)
    memory = next(c for c in report["checks"] if c["check"] == "memory")
    assert memory["ok"] is False
    assert memory["value"].startswith("full: used_memory ")
    assert "over maxmemory 1, policy noeviction; Redis refuses every write" in memory["value"]
    assert report["reasons"] == [f"memory: {memory['value']}"]
    table = doctor(redis_url)
    assert table.exit_code == 0 and "Perseus will work with this Redis." in table.output


def test_unreachable_is_one_line_and_exit_3() -> None:
    result = doctor(f"redis://127.0.0.1:{free_port()}/0")
    assert result.exit_code == 3
    assert len(result.output.strip().splitlines()) == 1 and "connection refused" in result.output


def test_json_is_json_whatever_happens(redis_url: str) -> None:
    unreachable = doctor(f"redis://127.0.0.1:{free_port()}/0", "--json")
    assert unreachable.exit_code == 3
    report = json.loads(unreachable.stdout)
    assert report["ok"] is False and report["exitCode"] == 3
    assert "connection refused" in report["error"] and report["reasons"] == [report["error"]]
    for args, code, words in [
        (("--json", "--role", "nobody"), 2, "usage: Invalid value for '--role'"),
        (("--json", "--redis-url-file", "/nonexistent/url"), 2, "cannot read --redis-url-file"),
        (("--json", "--redis-url", "redis://host:port/0"), 2, "invalid port in the Redis URL"),
    ]:
        result = doctor(redis_url, *args)
        assert result.exit_code == code, result.output
        assert result.stderr == ""
        report = json.loads(result.stdout)
        assert report["exitCode"] == code and report["error"].startswith(words), report
