"""A Redis password never shows, wherever the URL carries it and wherever the URL is shown.

Every surface that names the Redis target is given a URL with a secret in
the userinfo, in `?password=` (which redis-py honours) and in another
secret-looking query parameter, pointing at a port nothing listens on: the
error line, the notifier's banner, the agent's log and the dashboard's
header and banner must all name the target without any of the secrets.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from click.testing import CliRunner

from perseus_cli.apps.redis_server import free_port
from perseus_cli.apps.screenshots import screen_text
from perseus_cli.main import cli
from perseus_core.wire.settings import Settings, redact_url
from perseus_tui.app import create_app
from tests.helpers import AGENT_ARGV
from tests.waiting import eventually

SECRETS = ("userSecret1", "querySecret2", "tokenSecret3")


def hostile_url() -> str:
    """A URL to nowhere with a secret in each place redis-py reads a password
    from (it rejects query parameters it does not know, so no others here)."""
    port = free_port()
    return f"redis://ops:{SECRETS[0]}@127.0.0.1:{port}/0?password={SECRETS[1]}&client_name=perseus"


def assert_no_secret(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, text


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:userSecret1@h:6379/0", "redis://***@h:6379/0"),
        ("redis://ops:userSecret1@h/0", "redis://ops:***@h/0"),
        ("redis://h/0?password=querySecret2", "redis://h/0?password=***"),
        (
            "redis://h/0?db=1&pwd=querySecret2&auth=tokenSecret3",
            "redis://h/0?db=1&pwd=***&auth=***",
        ),
        ("redis://h/0?secret=querySecret2&key=tokenSecret3", "redis://h/0?secret=***&key=***"),
        ("redis://:user#Secret1@h:6379/0", "redis://***@h:6379/0"),
        ("redis://:user/Secret1@h/0", "redis://***@h/0"),
        ("redis://:u?Secret1@h/0?password=querySecret2", "redis://***@h/0?password=***"),
        (
            "redis+sentinel://:userSecret1@s1:26379,s2:26379/m?password=querySecret2",
            "redis+sentinel://***@s1:26379,s2:26379/m?password=***",
        ),
        ("redis://h:6379/0?client_name=perseus", "redis://h:6379/0?client_name=perseus"),
    ],
)
def test_redact_url_hides_every_place_a_password_can_be(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "Secret" not in redact_url(url)


def test_cli_error_line_and_notify_banner() -> None:
    url = hostile_url()
    status = CliRunner().invoke(cli, ["status", "--redis-url", url])
    assert status.exit_code == 3
    assert "127.0.0.1" in status.stderr and len(status.stderr.splitlines()) == 1
    assert_no_secret(status.stdout + status.stderr)
    notify = CliRunner().invoke(cli, ["notify", "--dry-run", "--redis-url", url])
    assert notify.exit_code == 3
    assert "password=***" in notify.stderr  # the banner names the redacted target
    assert_no_secret(notify.stdout + notify.stderr)


def test_agent_log() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSEUS_")}
    env.update(PERSEUS_REDIS_URL=hostile_url(), PERSEUS_PUBLIC_IP="off")
    argv = [*AGENT_ARGV]
    argv += ["--exchange-id", "1"]
    argv += ["--exchange-name", "coinbase", "--startup-timeout", "0.3"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 3, done.stderr
    assert "password=***" in done.stderr  # the start-up line names the redacted target
    assert "Traceback" not in done.stderr
    assert_no_secret(done.stdout + done.stderr)


async def test_dashboard_header_and_banner() -> None:
    settings = Settings(redis_url=hostile_url(), socket_timeout_ms=500, public_ip="off")
    app = create_app(settings, operator="tester@ci")
    async with app.run_test(size=(160, 40)):

        def banner_shown() -> str:
            text = screen_text(app)
            return text if "unreachable" in text.lower() else ""

        screen = await eventually(banner_shown, within=10)
        assert "127.0.0.1" in screen and "password=***" in screen
        assert_no_secret(screen)
        assert_no_secret(app.target)
