"""Every way a verb can be pointed at the wrong thing ends in one line and the
right exit code, never a traceback and never a password: malformed URLs
(exit 2), a port that is not Redis, a wrong password, a missing ACL right, a
TLS mismatch (exit 3), commands that cannot succeed (exit 1, before sending)."""

from __future__ import annotations

import http.server
import json
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as sync_redis
from click.testing import CliRunner, Result

from perseus_cli.apps.redis_server import RedisServer
from perseus_cli.main import cli
from perseus_core.wire.settings import Settings

SECRET = "s3cr#t/pw"
"""A password with the characters that break a URL when not percent-encoded."""

VERB_ARGS = {
    "status": ["status"],
    "log": ["log"],
    "catalog": ["catalog", "list"],
    "start": ["start", "2"],
    "stop": ["stop", "2"],
    "ping": ["ping", "2"],
    "notify": ["notify", "--dry-run"],
    "agent": ["agent", "--exchange-id", "2", "--exchange-name", "kraken"],
    "tui": ["tui"],
}
"""One invocation of every verb that takes a Redis URL."""

MALFORMED = {
    "garbage": "not a Redis URL",
    "redis://[::1": "an IPv6 host is written [addr]",
    "http://localhost:6379": "must specify one of the following schemes",
    f"redis://:{SECRET}@localhost:6379/0": "must be percent-encoded",
    f"redis://user:{SECRET}@localhost:6379/0": "must be percent-encoded",
    "redis://localhost:99999/0": "invalid port",
    "redis://localhost:6379/0?api_token=x": "unknown option 'api_token'",
}


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env)


def assert_one_line(result: Result, code: int, *, contains: str) -> None:
    assert result.exit_code == code, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("perseus: "), result.stderr
    assert contains in lines[0]
    assert "Traceback" not in result.output
    for part in ("s3cr", SECRET, "pw@"):
        assert part not in result.output


@pytest.mark.parametrize("verb", sorted(VERB_ARGS))
@pytest.mark.parametrize("url", sorted(MALFORMED))
def test_a_malformed_url_is_one_line_and_exit_2(verb: str, url: str) -> None:
    result = invoke(*VERB_ARGS[verb], "--redis-url", url)
    assert_one_line(result, 2, contains=MALFORMED[url])


def test_a_malformed_url_from_the_environment_too() -> None:
    result = invoke("status", env={"PERSEUS_REDIS_URL": f"redis://:{SECRET}@h:1/0"})
    assert_one_line(result, 2, contains="must be percent-encoded")


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """Answers every request (here: Redis commands) with an HTTP error, silently."""

    def log_message(self, format: str, *args: object) -> None:  # the base's name
        """Keep the test's stderr for what perseus prints."""


@pytest.fixture(scope="module")
def http_port() -> Iterator[int]:
    """An HTTP server: a port that answers, but not as Redis."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), QuietHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("verb", ["status", "log", "catalog", "start", "ping", "tui"])
def test_a_port_that_is_not_redis_says_so(verb: str, http_port: int) -> None:
    result = invoke(*VERB_ARGS[verb], "--redis-url", f"redis://127.0.0.1:{http_port}/0")
    assert_one_line(result, 3, contains="the server there is not Redis")


def test_an_agent_pointed_at_a_port_that_is_not_redis_exits_3(http_port: int) -> None:
    result = invoke(*VERB_ARGS["agent"], "--redis-url", f"redis://127.0.0.1:{http_port}/0")
    assert result.exit_code == 3
    assert "Traceback" not in result.output
    last = result.stderr.splitlines()[-1]  # after the agent's own log lines
    assert last.startswith("perseus: ") and "the server there is not Redis" in last


@pytest.fixture(scope="module")
def acl_server() -> Iterator[RedisServer]:
    """A server of its own with a password and ACL users: `full` (every right),
    `nosend` (may read, may not XADD), `noreply` (may send, may not BLPOP)."""
    with RedisServer() as server:
        with sync_redis.Redis(port=server.port) as r:
            for user, rules in {
                "full": ["+@all", "~*"],
                "nosend": ["+@all", "-xadd", "~*"],
                "noreply": ["+@all", "-blpop", "~*"],
            }.items():
                r.acl_setuser(user, enabled=True, passwords=[f"+{user}-pw"], reset_keys=True)
                r.execute_command("ACL", "SETUSER", user, *rules)
            r.config_set("requirepass", "default-pw")
        yield server


def url_for(server: RedisServer, userinfo: str) -> str:
    return f"redis://{userinfo}@127.0.0.1:{server.port}/0"


def announce_ready_agent(server: RedisServer, exchange_id: int) -> None:
    """A presence member, so the sender's check lets the command through."""
    with sync_redis.Redis(port=server.port, password="default-pw") as r:
        seconds, _ = r.time()
        member = json.dumps({"agentId": "h:1:1", "exchangeId": exchange_id, "state": "idle"})
        r.zadd(f"perseus:agents:{exchange_id}", {member: (seconds + 60) * 1000})


@pytest.mark.parametrize("verb", ["status", "start", "tui"])
def test_wrong_and_missing_passwords_have_their_own_lines(
    verb: str, acl_server: RedisServer
) -> None:
    wrong = invoke(*VERB_ARGS[verb], "--redis-url", url_for(acl_server, "full:wrong-pw"))
    assert_one_line(wrong, 3, contains="authentication failed: wrong user name or password")
    missing = invoke(*VERB_ARGS[verb], "--redis-url", f"redis://127.0.0.1:{acl_server.port}/0")
    assert_one_line(missing, 3, contains="authentication required: the URL gives no password")


def test_a_user_who_may_not_send_is_told_which_command_and_key(
    acl_server: RedisServer,
) -> None:
    announce_ready_agent(acl_server, 2)
    result = invoke("start", "2", "--redis-url", url_for(acl_server, "nosend:nosend-pw"))
    assert_one_line(result, 3, contains="this user may not XADD perseus:commands:2")
    assert result.stdout == ""


def test_a_user_who_may_not_read_replies_is_told_the_command_went_out(
    acl_server: RedisServer,
) -> None:
    announce_ready_agent(acl_server, 2)
    # A READY exchange's agent answers start and stop (a stop keeps it from
    # starting on its own): both go out, and neither outcome can be read.
    for verb in ("start", "stop"):
        result = invoke(verb, "2", "--redis-url", url_for(acl_server, "noreply:noreply-pw"))
        assert_one_line(
            result, 3, contains="the command was sent, but its outcome cannot be read: this user"
        )
        assert "may not BLPOP perseus:replies:" in result.stderr
        assert result.stdout.startswith(f"sent {verb} to exchange 2")


def test_tls_to_a_plain_server_says_tls(redis_url: str) -> None:
    url = redis_url.replace("redis://", "rediss://")
    env = {"PERSEUS_SOCKET_TIMEOUT_MS": "300"}
    for verb in ("status", "start"):
        result = invoke(*VERB_ARGS[verb], "--redis-url", url, env=env)
        assert_one_line(result, 3, contains="TLS")


@pytest.fixture(scope="module")
def tls_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A TLS-only endpoint (Python's ssl, a throw-away certificate from openssl)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("needs the openssl command to make a certificate")
    directory = tmp_path_factory.mktemp("tls")
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
        + ["-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost"],
        check=True,
        capture_output=True,
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # closed at teardown
                return
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(64)
            except (ssl.SSLError, OSError):  # a plain-text client: the handshake fails
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()


def test_plain_text_to_a_tls_port_suggests_rediss(tls_port: int) -> None:
    result = invoke("status", "--redis-url", f"redis://127.0.0.1:{tls_port}/0")
    assert_one_line(result, 3, contains="rediss://")


def seed_active(settings: Settings, exchange_id: int, *, perseus: bool) -> None:
    now = "2026-02-10T19:22:04.000Z"
    status = {
        "exchangeId": exchange_id,
        "exchangeName": "kraken",
        "hostname": "host-b",
        "connectionState": "active",
        "lastHeartbeat": now,
        "lastStateChange": now,
        "registeredAt": now,
    }
    if perseus:
        status["instanceId"] = "host-b:1:1"
    with sync_redis.Redis.from_url(settings.redis_url) as r:
        r.set(f"exchange:{exchange_id}:status", json.dumps(status), px=60_000)
        r.hset("perseus:exchanges", str(exchange_id), json.dumps({"id": 4, "name": "kraken"}))


@pytest.mark.parametrize(
    ("args", "seed", "message"),
    [
        (["start", "999"], None, "cannot start exchange 999: no such exchange"),
        (["stop", "999"], None, "cannot stop exchange 999: no such exchange"),
        (["start", "4"], "perseus", "cannot start exchange 4: it is already active"),
        (["start", "4"], "other", "the slot is held by host-b (not a Perseus agent)"),
        (["stop", "4"], "catalog", "cannot stop exchange 4: no instance of it is running"),
        (["ping", "999"], None, "cannot ping exchange 999: no such exchange"),
        (["ping", "4"], "catalog", "cannot ping exchange 4: no agent runs for it"),
    ],
)
def test_a_command_that_cannot_succeed_is_refused_before_sending(
    settings: Settings, args: list[str], seed: str | None, message: str
) -> None:
    if seed in ("perseus", "other"):
        seed_active(settings, 4, perseus=seed == "perseus")
    elif seed == "catalog":
        with sync_redis.Redis.from_url(settings.redis_url) as r:
            r.hset("perseus:exchanges", "4", json.dumps({"id": 4, "name": "kraken"}))
    result = invoke(*args, "--redis-url", settings.redis_url)
    assert_one_line(result, 1, contains=message)
    assert result.stdout == ""
    with sync_redis.Redis.from_url(settings.redis_url) as r:
        assert r.keys("perseus:commands:*") == []


def test_log_of_an_unknown_exchange_exits_1(settings: Settings) -> None:
    result = invoke("log", "--exchange", "nosuch", "--redis-url", settings.redis_url)
    assert_one_line(result, 1, contains="no exchange named 'nosuch'")
    with sync_redis.Redis.from_url(settings.redis_url) as r:
        r.hset("perseus:exchanges", "4", json.dumps({"id": 4, "name": "kraken"}))
    known = invoke("log", "--exchange", "kraken", "--redis-url", settings.redis_url)
    assert (known.exit_code, known.output) == (0, "")


def test_an_error_naming_its_state_does_not_repeat_it(settings: Settings) -> None:
    with sync_redis.Redis.from_url(settings.redis_url) as r:
        r.xadd(
            "logs:network:kraken",
            {
                "event": "error",
                "timestamp": "2026-02-10T19:22:04.000Z",
                "error": "child command exited 1 while active",
                "state": "active",
            },
        )
    result = invoke("log", "--redis-url", settings.redis_url)
    assert result.exit_code == 0
    assert "while active" in result.stdout
    assert "(while active)" not in result.stdout


def test_a_missing_or_unusable_child_command_is_one_line_and_exit_2(tmp_path: Path) -> None:
    script = tmp_path / "feed.sh"
    script.write_text("#!/bin/sh\n")  # not executable
    cases = {
        "no-such-feed-binary": "child command not found on PATH: no-such-feed-binary",
        str(tmp_path / "missing"): "child command not found:",
        str(script): "child command is not executable:",
        str(tmp_path): "child command is a directory:",
    }
    for program, message in cases.items():
        result = invoke(*VERB_ARGS["agent"], "--", program, "--flag")
        assert_one_line(result, 2, contains=message)


def test_an_unexpected_error_is_one_line_naming_it(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    """A bug (here: a reader that raises what nobody expects) reaches a
    person as one line and exit 1; PERSEUS_TRACEBACK=1 shows the traceback."""
    code = (
        "import sys\n"
        "from perseus_core.store.network import FleetReader\n"
        "async def broken(self): raise RuntimeError('a bug\\nsecond line')\n"
        "FleetReader.snapshot = broken\n"
        "from perseus_cli.main import main\n"
        f"sys.argv = ['perseus', 'status', '--redis-url', {redis_url!r}]\n"
        "main()\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert proc.stderr == (
        "perseus: internal error (RuntimeError: a bug); set PERSEUS_TRACEBACK=1 for the"
        " details, and please report it\n"
    )
    monkeypatch.setenv("PERSEUS_TRACEBACK", "1")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1
    assert "Traceback" in proc.stderr
