"""Which command a read-only script goes out with (`read_script_command`):
EVAL_RO where the server has it and the user may run it, else EVAL, decided
once per client from what the server answers."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from perseus_cli.apps.redis_server import RedisServer
from perseus_core.plumbing.connection import connect
from perseus_core.plumbing.scripts import read_script_command
from perseus_core.wire.settings import Settings

pytestmark = pytest.mark.every_major


def version_of(r: sync_redis.Redis) -> tuple[int, int]:
    major, minor = str(r.info("server")["redis_version"]).split(".")[:2]
    return int(major), int(minor)


async def test_eval_ro_where_the_server_has_it_asked_once_per_client(
    redis: Redis, r: sync_redis.Redis
) -> None:
    expected = "EVAL_RO" if version_of(r) >= (7, 0) else "EVAL"
    assert await read_script_command(redis) == expected  # asks the server
    before = int(r.info("stats")["total_commands_processed"])
    for _ in range(3):
        assert await read_script_command(redis) == expected
    after = int(r.info("stats")["total_commands_processed"])
    assert after - before == 1  # the INFO that counted them: nothing was asked again


async def test_a_user_who_may_not_run_eval_ro_gets_eval(
    fresh_redis: RedisServer, make_settings: Callable[..., Settings]
) -> None:
    with sync_redis.Redis(port=fresh_redis.port) as admin:
        # Named rules both versions know: on 7 this is a user of the 6.2 lines.
        admin.execute_command(
            "ACL", "SETUSER", "old-reader", "on", ">pw", "~*", "-@all", "+@connection", "+eval"
        )
    url = f"redis://old-reader:pw@127.0.0.1:{fresh_redis.port}/0"
    client = connect(make_settings(redis_url=url))
    try:
        assert await read_script_command(client) == "EVAL"
        assert await client.execute_command("EVAL", "return 1", 0) == 1
    finally:
        await client.aclose()
