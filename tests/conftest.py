"""Fixtures shared by the whole suite: real redis-server processes, fast settings.

No fake or mocked Redis anywhere: every behaviour Redis decides (TTL expiry,
NX, streams, blocking reads, Lua) is exercised on a real server started here.
"""

from __future__ import annotations

import gc
import os
import random
import socket
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from perseus_cli.apps import redis_cluster, redis_server
from perseus_cli.apps.redis_server import RedisServer
from perseus_core.plumbing.connection import connect
from perseus_core.wire.settings import Settings

PURE_FIXTURES = frozenset(
    {
        "request",
        "pytestconfig",
        "tmp_path",
        "tmp_path_factory",
        "monkeypatch",
        "capsys",
        "capfd",
        "caplog",
        "recwarn",
        "event_loop_policy",
    }
)
"""Fixtures that start nothing. A test that uses only these (and plugins'
private `_` fixtures), in a module that starts no process of its own, is a
`unit` test; any other fixture counts as needing Redis or a process."""

PROCESS_MODULES = frozenset(
    {"test_demo.py", "test_readme.py", "test_embedded.py", "test_probes.py"}
)
"""Modules that start processes or servers without a fixture."""

EVERY_MAJOR_DIRECTORIES = frozenset({"cluster", "sentinel", "tls", "livermore"})
"""Test directories whose every test `make test` runs on both Redis majors
(tests/other_major.py); single tests elsewhere carry `every_major` themselves."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the pure-logic tests `unit` and the version-dependent ones
    `every_major`, keep the cluster's tests on one worker, and start the slow
    ones first.

    `pytest -m unit` then runs, in seconds, every test that needs no Redis and
    no process; under xdist (`--dist loadgroup`) every test of tests/cluster
    runs on the worker that started the session's cluster, instead of each
    worker starting six nodes of its own; and a test marked `slow` (the
    keyboard fuzz) runs while the rest are spread over the other
    workers, instead of being handed out last and running alone at the end.
    """
    for item in items:
        path = Path(str(item.fspath))
        if "cluster" in path.parts:
            item.add_marker(pytest.mark.xdist_group("cluster"))
        if EVERY_MAJOR_DIRECTORIES.intersection(path.parts):
            item.add_marker(pytest.mark.every_major)
        callspec = getattr(item, "callspec", None)
        parameters = set(callspec.params) if callspec is not None else set()
        fixtures = {
            name
            for name in getattr(item, "fixturenames", ())
            if not name.startswith("_") and name not in parameters
        }
        if (
            fixtures <= PURE_FIXTURES
            and path.name not in PROCESS_MODULES
            and item.get_closest_marker("slow") is None
        ):
            item.add_marker(pytest.mark.unit)
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)  # stable


PORTS_ENV = "PERSEUS_TEST_PORTS"
"""`low-high`: the ports this session's servers take; `make test` runs the other
major's session beside the suite's, each in a range of its own (tests/other_major.py)."""

SUITE_PORTS = "12000-19000"
"""The suite's range. A cluster node's bus port is its port + 10,000, so the
suite's bus ports (22,000-29,000) and the other major's ports (19,000-22,000)
and bus ports (29,000-32,000) never meet either."""


def _partitioned_free_port() -> int:
    """A free loopback port that no other xdist worker of this run, nor of the
    session beside it, can be handed.

    Each worker keeps to the ports of its session's range (`PORTS_ENV`) whose
    number modulo the worker count is its own index, so two workers starting
    servers at the same moment never race for one port (a redis-server that
    loses that race exits at start). The ranges are narrower than 10,000, so
    no cluster node's bus port is ever another server's port. Ports are below
    Linux's ephemeral range (32768+), where outgoing connections take their
    source ports, and bind(0) is no use here: the kernel hands it only ports
    of one parity.
    """
    index = int(os.environ["PYTEST_XDIST_WORKER"].removeprefix("gw"))
    count = int(os.environ["PYTEST_XDIST_WORKER_COUNT"])
    low, high = (int(bound) for bound in os.environ.get(PORTS_ENV, SUITE_PORTS).split("-"))
    while True:
        port = random.randrange(low + index, high, count)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port


if "PYTEST_XDIST_WORKER" in os.environ:
    redis_server.free_port = _partitioned_free_port
    redis_cluster.free_port = _partitioned_free_port


@pytest.fixture(autouse=True)
def _leaks_fail_the_test_that_made_them() -> Iterator[None]:
    """Collect garbage after every test, so an unclosed socket is that test's error.

    Without this, a client a test forgot to close is finalised whenever the
    collector next runs, and its ResourceWarning fails some later, innocent
    test (pyproject.toml turns ResourceWarning and unraisable exceptions into
    errors; pytest reports them in the phase in which they surface).

    What survives the collection is still referenced (caches, session
    fixtures) and is frozen with the rest, so the next test's collection walks
    only what that test made. Without the freeze every collection walked all
    that earlier tests left alive, and the collections took a quarter of the
    suite's CPU (about 130 ms after each test by the end of a run).
    """
    yield
    gc.collect()
    gc.freeze()


def pytest_collection_finish(session: pytest.Session) -> None:
    """Freeze what collection built (every module, Textual, hypothesis...).

    The collection after each test then walks only what tests made since,
    a few milliseconds instead of a few hundred: a leaked client is still
    made by a test, after the freeze, so it is still found (and each test's
    collection freezes what survives it: `_leaks_fail_the_test_that_made_them`).
    """
    gc.collect()
    gc.freeze()


@pytest.fixture
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """A proxy from the environment must not see (or break) requests to 127.0.0.1.

    Modules that serve HTTP on loopback ask for it with
    `pytestmark = pytest.mark.usefixtures("_no_proxy")`; it starts nothing, so
    their pure tests stay `unit`.
    """
    for name in (
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One server for the session; `redis_url` flushes it before each test."""
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of a clean database on the shared server."""
    if redis_server.pid is None:  # a previous test may have killed it
        redis_server.start()
    with sync_redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def r(redis_url: str) -> Iterator[sync_redis.Redis]:
    """A synchronous client for seeding and checking, on the clean database."""
    with sync_redis.Redis.from_url(redis_url, decode_responses=True) as client:
        yield client


@pytest.fixture
def fresh_redis() -> Iterator[RedisServer]:
    """A server of this test's own, for tests that stop, kill or pause it, or
    change its configuration (keyspace notifications are the server's setting)."""
    with RedisServer() as server:
        yield server


def fast_settings(redis_url: str, **overrides: object) -> Settings:
    """Settings for `redis_url` with the heartbeat and timeouts at test speed."""
    values: dict[str, object] = {
        "redis_url": redis_url,
        "heartbeat_interval_ms": 100,
        "heartbeat_ttl_ms": 400,
        "public_ip": "off",
        "block_ms": 200,
        "socket_timeout_ms": 1_000,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def make_settings(redis_url: str) -> Callable[..., Settings]:
    """Settings pointing at the test server, heartbeat at test speed."""

    def factory(**overrides: object) -> Settings:
        return fast_settings(str(overrides.pop("redis_url", redis_url)), **overrides)

    return factory


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    """Default fast settings on a clean database."""
    return make_settings()


@pytest.fixture
def long_ttl(make_settings: Callable[..., Settings]) -> Settings:
    """Fast settings with a TTL long enough that no key expires by accident."""
    return make_settings(heartbeat_ttl_ms=10_000)


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    """An async client on the clean test database, closed after the test."""
    client = connect(settings)
    try:
        yield client
    finally:
        await client.aclose()
