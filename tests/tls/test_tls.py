"""`rediss://` against a real TLS endpoint: verification on by default, a CA
file, a server name, mutual TLS, and one clear line (exit 3) when the CA is
wrong or the other side does not speak TLS."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from click.testing import CliRunner, Result

from perseus_cli.apps.redis_server import RedisServer
from perseus_cli.main import cli
from perseus_core.instance import Instance
from perseus_core.plumbing.connection import connect, ping_or_raise
from perseus_core.store.lease import HeartbeatResult
from perseus_core.wire.errors import RedisUnavailable
from perseus_core.wire.models import ConnectionState
from perseus_core.wire.settings import Settings
from tests.tls.certs import SERVER_NAME, Certs
from tests.tls.conftest import ping
from tests.tls.proxy import TlsProxy


def _status(env: dict[str, str]) -> Result:
    return CliRunner().invoke(cli, ["status", "--json"], env=env)


def _one_line_exit_3(result: Result) -> str:
    assert result.exit_code == 3, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


async def test_a_claim_and_a_read_over_verified_tls(
    tls_settings: Callable[..., Settings],
) -> None:
    settings = tls_settings()
    redis = connect(settings)
    try:
        await ping_or_raise(redis, settings)
        instance = Instance(redis, settings, exchange_id=7, exchange_name="kraken")
        await instance.claim(heartbeat=False)
        await instance.transition(ConnectionState.STARTING)
        assert await instance.heartbeat.tick() is HeartbeatResult.REFRESHED
        assert '"connectionState":"starting"' in (await redis.get("exchange:7:status") or "")
        assert await instance.release()
    finally:
        await redis.aclose()


def test_status_over_tls_and_a_wrong_ca_is_one_line(
    tls_proxy: TlsProxy, certs: Certs, redis_url: str
) -> None:
    url = f"rediss://perseus:hunter2@localhost:{tls_proxy.port}/0"
    good = _status(
        {
            "PERSEUS_REDIS_URL": url.replace("perseus:hunter2@", ""),
            "PERSEUS_TLS_CA_FILE": str(certs.ca),
        }
    )
    assert good.exit_code == 0, good.output
    line = _one_line_exit_3(
        _status({"PERSEUS_REDIS_URL": url, "PERSEUS_TLS_CA_FILE": str(certs.wrong_ca)})
    )
    assert "TLS certificate not accepted" in line and "PERSEUS_TLS_CA_FILE" in line
    assert "hunter2" not in line
    # Without a CA file the system's CAs decide: they do not know the test CA.
    line = _one_line_exit_3(_status({"PERSEUS_REDIS_URL": url}))
    assert "TLS certificate not accepted" in line


def test_a_plain_text_server_behind_rediss_is_one_line(
    redis_server: RedisServer, certs: Certs
) -> None:
    url = f"rediss://localhost:{redis_server.port}/0"
    env = {
        "PERSEUS_REDIS_URL": url,
        "PERSEUS_TLS_CA_FILE": str(certs.ca),
        "PERSEUS_SOCKET_TIMEOUT_MS": "1000",
    }
    line = _one_line_exit_3(_status(env))
    # Redis answers the TLS greeting with an error once it holds a newline
    # byte, and otherwise waits: both end in the same advice.
    assert "plain-text port" in line and "redis://" in line


def test_plain_text_to_a_tls_port_is_one_line(tls_proxy: TlsProxy) -> None:
    env = {
        "PERSEUS_REDIS_URL": f"redis://localhost:{tls_proxy.port}/0",
        "PERSEUS_SOCKET_TIMEOUT_MS": "1000",
    }
    line = _one_line_exit_3(_status(env))
    assert line.startswith("perseus: cannot reach Redis at redis://localhost")


async def test_the_server_name_setting_checks_the_certificate_for_that_name(
    tls_settings: Callable[..., Settings], tls_proxy: TlsProxy
) -> None:
    by_ip = f"rediss://127.0.0.1:{tls_proxy.port}/0"
    with pytest.raises(RedisUnavailable, match="TLS certificate not accepted"):
        await ping(tls_settings(redis_url=by_ip))
    await ping(tls_settings(redis_url=by_ip, tls_server_name=SERVER_NAME))


async def test_mutual_tls_needs_the_client_certificate(
    tls_settings: Callable[..., Settings], mtls_proxy: TlsProxy, certs: Certs
) -> None:
    url = f"rediss://localhost:{mtls_proxy.port}/0"
    with pytest.raises(RedisUnavailable, match="cannot reach Redis"):
        await ping(tls_settings(redis_url=url))
    client = tls_settings(
        redis_url=url, tls_cert_file=str(certs.client_cert), tls_key_file=str(certs.client_key)
    )
    redis = connect(client)
    try:
        await ping_or_raise(redis, client)
        assert await redis.set("mtls", "yes") and await redis.get("mtls") == "yes"
    finally:
        await redis.aclose()
