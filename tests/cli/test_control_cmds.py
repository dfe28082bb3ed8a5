"""`perseus start|stop|ping` against a real Redis, with a command server
running in a background thread (its own event loop), as an agent would."""

from __future__ import annotations

import asyncio
import getpass
import json
import socket
import threading
from collections.abc import Iterator
from unittest.mock import patch

import pytest
import redis as sync_redis
from click.testing import CliRunner

from perseus_cli.apps.redis_server import free_port
from perseus_cli.main import cli
from perseus_core.store.control.server import CommandServer, HandlerResult
from perseus_core.wire.errors import CommandRejected
from perseus_core.wire.models import CatalogEntry, Command, ReplyStatus
from perseus_core.wire.settings import Settings
from tests.helpers import invoke

HOST = "host-a"


class Exchange:
    """The handler behind the background server: records what it ran."""

    def __init__(self) -> None:
        self.state = "idle"
        self.calls: list[Command] = []
        self.delay = 0.0

    async def __call__(self, command: Command) -> HandlerResult:
        self.calls.append(command)
        if self.delay:
            await asyncio.sleep(self.delay)
        if command.type == "start":
            self.state = "active"
            return ReplyStatus.SUCCESS, "coinbase is active", None
        if command.type == "stop":
            if self.state == "idle":
                raise CommandRejected("cannot stop coinbase: it is idle")
            self.state = "idle"
            return ReplyStatus.SUCCESS, "coinbase is idle", None
        return ReplyStatus.SUCCESS, f"coinbase is {self.state}", {"state": self.state}


@pytest.fixture
def exchange(settings: Settings) -> Iterator[Exchange]:
    """Serve exchange 1 in a thread until the test ends."""
    handler = Exchange()
    started = threading.Event()
    state: dict[str, object] = {}

    async def serve() -> None:
        stop = asyncio.Event()
        state["loop"], state["stop"] = asyncio.get_running_loop(), stop
        server = CommandServer(settings, 1, "coinbase", handler, identity=lambda: (HOST, None))
        await server.start()
        started.set()
        await stop.wait()
        await server.stop()

    announce_agent(settings, 1)
    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert started.wait(10)
    try:
        yield handler
    finally:
        loop = state["loop"]
        assert isinstance(loop, asyncio.AbstractEventLoop)
        loop.call_soon_threadsafe(state["stop"].set)  # type: ignore[attr-defined]
        thread.join(10)
        assert not thread.is_alive()


def announce_agent(settings: Settings, exchange_id: int, state: str = "idle") -> None:
    """An agent's presence member, so the sender's check sees one ready."""
    member = json.dumps({"agentId": f"{HOST}:1:1", "exchangeId": exchange_id, "state": state})
    with sync_redis.Redis.from_url(settings.redis_url) as r:
        seconds, _ = r.time()
        r.zadd(f"perseus:agents:{exchange_id}", {member: (seconds + 60) * 1000})


def test_start_prints_sent_ack_and_result_and_exits_0(
    settings: Settings, exchange: Exchange
) -> None:
    code, out, err = invoke(settings, "start", "1", "--operator", "ops@example.com")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith("sent start to exchange 1 (correlation id ")
    assert lines[1:] == [f"ack: acknowledged by {HOST}", "success: coinbase is active"]
    assert [(c.type, c.operator) for c in exchange.calls] == [("start", "ops@example.com")]


def test_operator_defaults_to_user_at_host(settings: Settings, exchange: Exchange) -> None:
    code, _out, _err = invoke(settings, "ping", "1")
    assert code == 0
    assert exchange.calls[0].operator == f"{getpass.getuser()}@{socket.gethostname()}"


def test_ping_prints_the_state(settings: Settings, exchange: Exchange) -> None:
    code, out, _err = invoke(settings, "ping", "1")
    assert code == 0
    assert out.splitlines()[-2:] == ["success: coinbase is idle", "  state: idle"]


def test_an_error_reply_exits_1_with_its_message_on_stderr(
    settings: Settings, exchange: Exchange
) -> None:
    status = {"exchangeId": 1, "exchangeName": "coinbase", "connectionState": "active"}
    status["instanceId"] = f"{HOST}:1:1"  # a Perseus agent holds it
    now = "2026-02-10T19:22:04.000Z"
    status.update(lastHeartbeat=now, lastStateChange=now, registeredAt=now, hostname=HOST)
    with sync_redis.Redis.from_url(settings.redis_url) as r:
        r.set("exchange:1:status", json.dumps(status), px=60_000)
    code, out, err = invoke(settings, "stop", "1")
    assert code == 1
    assert err == "perseus: cannot stop coinbase: it is idle\n"
    assert f"ack: acknowledged by {HOST}" in out


def test_no_result_in_time_exits_1(settings: Settings, exchange: Exchange) -> None:
    exchange.delay = 1.0
    code, _out, err = invoke(settings, "start", "1", "--timeout", "0.1")
    assert code == 1
    assert "acknowledged, but no result within 0.1 s" in err


def test_no_agent_exits_4_and_says_what_to_check(settings: Settings) -> None:
    announce_agent(settings, 9)  # present, but not answering
    code, out, err = invoke(settings, "start", "9", "--ack-timeout", "0.2")
    assert code == 4
    assert out.startswith("sent start to exchange 9")
    assert err == (
        "perseus: no agent answered in 0.2 s: check that an agent for exchange 9 is running\n"
    )


def test_an_outcomes_hash_of_the_wrong_type_is_named_not_no_agent(
    settings: Settings, exchange: Exchange
) -> None:
    with sync_redis.Redis.from_url(settings.redis_url) as r:
        r.set("perseus:outcomes:1", "not a hash")
    code, out, err = invoke(settings, "ping", "1")
    assert code == 1
    assert out.startswith("sent ping to exchange 1")
    assert err == (
        "perseus: command claim refused (HSETNX perseus:outcomes:1): WRONGTYPE Operation "
        "against a key holding the wrong kind of value; command not run\n"
    )
    assert exchange.calls == []


def test_a_command_stream_of_the_wrong_type_names_the_key_and_the_command(
    settings: Settings,
) -> None:
    announce_agent(settings, 1)
    with sync_redis.Redis.from_url(settings.redis_url) as r:
        r.set("perseus:commands:1", "not a stream")
    code, out, err = invoke(settings, "ping", "1")
    assert (code, out) == (1, "")
    assert err == (
        "perseus: Redis refused XADD perseus:commands:1: WRONGTYPE Operation against a key "
        "holding the wrong kind of value; the command was not sent\n"
    )


def test_a_reply_list_of_the_wrong_type_says_the_command_was_sent(
    settings: Settings, exchange: Exchange
) -> None:
    cid = "00000000-0000-4000-8000-000000000001"
    with sync_redis.Redis.from_url(settings.redis_url) as r:
        r.set(f"perseus:replies:{cid}", "not a list")
    with patch("perseus_core.store.control.sender.uuid.uuid4", return_value=cid):
        code, out, err = invoke(settings, "ping", "1")
    assert code == 1
    assert out.startswith(f"sent ping to exchange 1 (correlation id {cid})")
    assert err.startswith(
        "perseus: the command was sent, but its outcome cannot be read: Redis refused BLPOP "
        f"perseus:replies:{cid}: WRONGTYPE"
    )


def test_unreachable_redis_exits_3() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    result = CliRunner().invoke(cli, ["stop", "1", "--redis-url", url])
    assert result.exit_code == 3
    assert result.stderr.startswith(f"perseus: cannot reach Redis at {url}: connection refused")
    assert "the command was not sent" in result.stderr
    assert result.stdout == ""


def test_bad_arguments_are_usage_errors(settings: Settings) -> None:
    for args in (["start", ""], ["start", "-1"], ["stop", "1", "--timeout", "0"]):
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 2, args


def add_to_catalog(settings: Settings, exchange_id: int, name: str, display: str = "") -> None:
    entry = CatalogEntry(id=exchange_id, name=name, display_name=display or name.title())
    with sync_redis.Redis.from_url(settings.redis_url) as r:
        r.hset("perseus:exchanges", str(exchange_id), entry.to_json())


@pytest.mark.parametrize("named", ["coinbase", "COINBASE", "Coinbase Pro"])
def test_an_exchange_is_named_by_its_name_or_display_name(
    settings: Settings, exchange: Exchange, named: str
) -> None:
    """`perseus start coinbase` answered "'coinbase' is not a valid integer range"."""
    add_to_catalog(settings, 1, "coinbase", "Coinbase Pro")
    add_to_catalog(settings, 2, "kraken")
    code, out, err = invoke(settings, "start", named)
    assert (code, err) == (0, "")
    assert out.startswith("sent start to exchange 1 (correlation id ")
    assert [c.type for c in exchange.calls] == ["start"]


def test_an_unknown_name_is_refused_with_the_closest_names(settings: Settings) -> None:
    add_to_catalog(settings, 1, "coinbase")
    code, out, err = invoke(settings, "start", "coinbsae")
    assert (code, out) == (1, "")
    assert err == (
        "perseus: no exchange named 'coinbsae' in the catalog, online or with history"
        " (did you mean 'coinbase'?): give its id, or a name `perseus status` lists\n"
    )
    with sync_redis.Redis.from_url(settings.redis_url) as r:
        assert not r.exists("perseus:commands:1")


def test_a_name_several_exchanges_have_is_refused_naming_them(settings: Settings) -> None:
    add_to_catalog(settings, 1, "coinbase")
    add_to_catalog(settings, 9, "CoinBase")
    code, out, err = invoke(settings, "stop", "coinbase")
    assert (code, out) == (1, "")
    assert err == (
        "perseus: 'coinbase' names 2 exchanges: 1 (coinbase), 9 (CoinBase); give the id\n"
    )
