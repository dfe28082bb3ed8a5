"""A Sentinel-watched pair started from the same redis-server binary: a master,
its replica, and two sentinels (`redis-server sentinel.conf --sentinel`)."""

from __future__ import annotations

import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as sync_redis

from perseus_cli.apps.redis_server import RedisServer, find_redis_server, free_port
from perseus_core.plumbing.processes import parent_death_hook

SERVICE = "perseus-main"


class SentinelProcess:
    """One sentinel on 127.0.0.1 watching `SERVICE` with a quorum of one and
    a one-second down-after, so a switch happens within seconds."""

    def __init__(self, master_port: int) -> None:
        self.port = free_port()
        self._tmp = tempfile.TemporaryDirectory(prefix="perseus-sentinel-")
        config = Path(self._tmp.name) / "sentinel.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {self._tmp.name}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {SERVICE} 1000\n"
            f"sentinel failover-timeout {SERVICE} 5000\n"
        )
        self.process = subprocess.Popen(
            [find_redis_server(), str(config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=parent_death_hook(signal.SIGTERM),  # syscalls only
        )
        self.client = sync_redis.Redis(port=self.port, decode_responses=True)
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client.ping()
                break
            except sync_redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.close()
                    raise
                time.sleep(0.02)

    def master_port(self) -> int:
        """The port of the master this sentinel currently names."""
        return int(self.client.sentinel_get_master_addr_by_name(SERVICE)[1])

    def close(self) -> None:
        self.client.close()
        self.process.terminate()
        self.process.wait(10)
        self._tmp.cleanup()


class SentinelSet:
    """The master, its replica and the sentinels, with the URL naming them."""

    def __init__(self) -> None:
        self.master = RedisServer().start()
        self.replica = RedisServer(
            extra_args=["--replicaof", "127.0.0.1", str(self.master.port)]
        ).start()
        self.sentinels = [SentinelProcess(self.master.port) for _ in range(2)]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def replica_ready(self) -> bool:
        """Whether every sentinel lists the replica, linked to the master: only
        then can a switch promote it."""
        for sentinel in self.sentinels:
            replicas = sentinel.client.sentinel_slaves(SERVICE)
            if not any(r.get("master-link-status") == "ok" for r in replicas):
                return False
        return True

    def close(self) -> None:
        for sentinel in self.sentinels:
            sentinel.close()
        self.replica.close()
        self.master.close()


@pytest.fixture
def sentinel_set() -> Iterator[SentinelSet]:
    pair = SentinelSet()
    try:
        yield pair
    finally:
        pair.close()
