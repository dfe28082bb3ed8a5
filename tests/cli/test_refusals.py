"""Every Redis refusal is named, and no value a peer left in Redis takes down a
read of the fleet: a presence member with an out-of-range pid, keys of the
wrong type, a server out of memory, a user without EVAL. Each reaches a person
as one line naming the key and the command, with the documented exit code,
never as `internal error` (README, "Command line")."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis as sync_redis
from click.testing import CliRunner, Result

from perseus_cli.apps.redis_server import RedisServer
from perseus_cli.main import cli
from perseus_core.plumbing.processes import process_scope
from perseus_core.wire import keys
from tests.fuzz.corpus import LIVE_NAME, VICTIM_ID, VICTIM_NAME, presence_member, seed_baseline


def perseus(url: str, *args: str) -> Result:
    result = CliRunner().invoke(cli, [*args, "--redis-url", url])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "internal error" not in result.output
    assert "Traceback" not in result.output
    assert "of pipeline caused error" not in result.output
    return result


def one_line(result: Result) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("perseus: "), result.stderr
    return lines[0]


@pytest.fixture
def baseline(r: sync_redis.Redis) -> sync_redis.Redis:
    seed_baseline(r)
    return r


@pytest.mark.parametrize(
    ("field", "value"),
    [("pid", 2**70), ("pid", -1), ("exchangeId", 10**30)],
)
def test_a_presence_member_out_of_range_is_reported_on_its_key(
    baseline: sync_redis.Redis, redis_url: str, field: str, value: int
) -> None:
    member = presence_member(VICTIM_ID, VICTIM_NAME, pidScope=process_scope(), **{field: value})
    baseline.zadd(keys.agents_key(VICTIM_ID), {json.dumps(member): 10**13})
    for args in (("status",), ("status", "--exchange-id", str(VICTIM_ID))):
        result = perseus(redis_url, *args)
        assert result.exit_code == 0, result.output
        assert keys.agents_key(VICTIM_ID) in result.stdout
        assert field in result.stdout
    listed = perseus(redis_url, "status", "--json")
    assert listed.exit_code == 0
    assert LIVE_NAME in listed.stdout and keys.agents_key(VICTIM_ID) in listed.stdout
    start = perseus(redis_url, "start", str(VICTIM_ID), "--timeout", "1")
    assert start.exit_code == 1
    assert "no agent runs" in one_line(start)


def test_a_status_key_of_the_wrong_type_is_named_by_status_exchange_id(
    baseline: sync_redis.Redis, redis_url: str
) -> None:
    baseline.hset(keys.status_key(VICTIM_ID), "a", "b")
    result = perseus(redis_url, "status", "--exchange-id", str(VICTIM_ID))
    assert result.exit_code == 0, result.output
    assert f"{keys.status_key(VICTIM_ID)} is a hash, not a string" in result.stdout


def test_a_catalog_of_the_wrong_type_is_named_by_status_exchange_id(
    baseline: sync_redis.Redis, redis_url: str
) -> None:
    baseline.delete(keys.CATALOG_KEY)
    baseline.set(keys.CATALOG_KEY, "x")
    result = perseus(redis_url, "status", "--exchange-id", "1")
    assert result.exit_code == 0, result.output
    assert LIVE_NAME in result.stdout and keys.CATALOG_KEY in result.stdout


def test_log_of_a_stream_of_the_wrong_type_names_command_and_key(
    baseline: sync_redis.Redis, redis_url: str
) -> None:
    baseline.set(keys.activity_key(VICTIM_NAME), "x")
    result = perseus(redis_url, "log", "--exchange", VICTIM_NAME)
    assert result.exit_code == 1
    line = one_line(result)
    assert f"XREVRANGE {keys.activity_key(VICTIM_NAME)}" in line and "WRONGTYPE" in line


def test_a_catalog_write_to_a_key_of_the_wrong_type_names_command_and_key(
    r: sync_redis.Redis, redis_url: str
) -> None:
    r.set(keys.CATALOG_KEY, "x")
    result = perseus(redis_url, "catalog", "add", "7", "bitstamp")
    assert result.exit_code == 1
    line = one_line(result)
    assert f"HGET {keys.CATALOG_KEY}" in line and "WRONGTYPE" in line
    removed = perseus(redis_url, "catalog", "remove", "7")
    assert removed.exit_code == 1
    assert f"HDEL {keys.CATALOG_KEY}" in one_line(removed)


@pytest.fixture
def own_server() -> Iterator[RedisServer]:
    """A server of its own: these tests change its memory limit and its users."""
    with RedisServer() as server:
        yield server


def test_out_of_memory_is_named_and_exits_3(own_server: RedisServer) -> None:
    with sync_redis.Redis.from_url(own_server.url) as admin:
        seed_baseline(admin)
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", "1")
        try:
            result = perseus(own_server.url, "catalog", "add", "7", "bitstamp")
            listed = perseus(own_server.url, "status")
        finally:
            admin.config_set("maxmemory", "0")
    assert result.exit_code == 3
    line = one_line(result)
    assert f"HSET {keys.CATALOG_KEY}" in line and "out of memory" in line
    assert listed.exit_code == 0 and LIVE_NAME in listed.stdout  # reads still work


def test_a_viewer_without_eval_still_sees_the_agent(own_server: RedisServer) -> None:
    """The presence read is a script (server time); a user who may not run one
    reads the members plainly instead of being told that no agent runs."""
    with sync_redis.Redis.from_url(own_server.url) as admin:
        seed_baseline(admin)
        member = presence_member(VICTIM_ID, VICTIM_NAME)
        admin.zadd(keys.agents_key(VICTIM_ID), {json.dumps(member): 10**13})
        admin.execute_command(
            "ACL", "SETUSER", "noeval", "on", ">noeval-pw", "~*", "-@all", "+@read",
            "+@connection", "-eval", "-evalsha",
        )  # fmt: skip
    url = f"redis://noeval:noeval-pw@127.0.0.1:{own_server.port}/0"
    result = perseus(url, "status", "--exchange-id", str(VICTIM_ID))
    assert result.exit_code == 0, result.output
    assert "ready" in result.stdout and "agent-host" in result.stdout
    listed = perseus(url, "status")
    assert listed.exit_code == 0 and "agent-host" in listed.stdout
