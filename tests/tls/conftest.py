"""A TLS endpoint in front of the session's redis-server, with certificates
made for this run; one that requires a client certificate (mutual TLS)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from perseus_cli.apps.redis_server import RedisServer
from perseus_core.plumbing.connection import connect, ping_or_raise
from perseus_core.wire.settings import Settings
from tests.tls.certs import Certs, make_certs
from tests.tls.proxy import TlsProxy


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(Path(tmp_path_factory.mktemp("certs")))


@pytest.fixture(scope="session")
def tls_proxy(certs: Certs, redis_server: RedisServer) -> Iterator[TlsProxy]:
    with TlsProxy(certs, redis_server.port, require_client_cert=False) as proxy:
        yield proxy


@pytest.fixture(scope="session")
def mtls_proxy(certs: Certs, redis_server: RedisServer) -> Iterator[TlsProxy]:
    with TlsProxy(certs, redis_server.port, require_client_cert=True) as proxy:
        yield proxy


@pytest.fixture
def tls_settings(
    make_settings: Callable[..., Settings], tls_proxy: TlsProxy, certs: Certs
) -> Callable[..., Settings]:
    """Settings on the TLS endpoint (trusting the test CA), with overrides."""

    def factory(**overrides: object) -> Settings:
        values: dict[str, object] = {
            "redis_url": f"rediss://localhost:{tls_proxy.port}/0",
            "tls_ca_file": str(certs.ca),
        }
        values.update(overrides)
        return make_settings(**values)

    return factory


async def ping(settings: Settings) -> None:
    """PING through a client made from `settings`, closed afterwards."""
    redis = connect(settings)
    try:
        await ping_or_raise(redis, settings)
    finally:
        await redis.aclose()
