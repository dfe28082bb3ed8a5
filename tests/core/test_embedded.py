"""The embedded redis-server used by the demo and the suite is a real, controllable server."""

from __future__ import annotations

import redis as sync_redis

from perseus_core.embedded import RedisServer


def test_start_restart_and_close_leave_nothing_behind() -> None:
    server = RedisServer().start()
    directory = server.dir
    with sync_redis.Redis.from_url(server.url) as client:
        client.set("k", "v")
        assert client.get("k") == b"v"
        version = client.info("server")["redis_version"]
        assert tuple(int(p) for p in version.split(".")[:2]) >= (6, 2)  # MINID needs 6.2
    pid = server.pid
    server.restart()
    assert server.pid is not None and server.pid != pid
    with sync_redis.Redis.from_url(server.url) as client:
        assert client.get("k") is None  # no persistence
    server.close()
    assert server.pid is None
    assert not directory.exists()
