"""Acknowledged means answered: when Redis refuses one of the command server's
writes (a key of the wrong type, out of memory under `noeviction`), the
command is answered with what failed and is never left acknowledged and
silent; and commands are bounded (nesting depth, field sizes), every rejected
one answered. The ACL refusals are in tests/acl/test_command_refusals.py."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from perseus_cli.apps.redis_server import RedisServer
from perseus_core.plumbing.connection import connect
from perseus_core.store.control.records import (
    MAX_OPERATOR_CHARS,
    MAX_PAYLOAD_DEPTH,
    CommandOutcome,
    RedisOutOfMemory,
)
from perseus_core.store.control.sender import ControlClient
from perseus_core.wire import keys
from perseus_core.wire.models import Command, CommandReply, ReplyStatus
from perseus_core.wire.settings import Settings
from tests.agent.conftest import SpawnAgent
from tests.agent.test_agent import perseus, until_listening
from tests.conftest import fast_settings
from tests.core.test_control import EXCHANGE_ID, NAME, FakeExchange, audit, command_json, serving
from tests.waiting import eventually

OUTCOMES = keys.outcomes_key(EXCHANGE_ID)
COMMANDS = keys.commands_key(EXCHANGE_ID)
AUDIT_STREAM = keys.perseus_activity_key(NAME)


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    """A refusal is reported in one line, never as a traceback."""
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []


async def replies(redis: Redis, cid: str) -> list[CommandReply]:
    """The replies still waiting in the command's list (read, not popped)."""
    raw = await redis.lrange(keys.replies_key(cid), 0, -1)  # type: ignore[misc]
    return [CommandReply.from_json(item) for item in raw]


def unanswered_acks(answers: list[CommandReply]) -> int:
    """1 when the command was acknowledged and has no final reply: the count
    this whole module keeps at 0."""
    acked = any(a.status is ReplyStatus.ACK for a in answers)
    final = any(a.status is not ReplyStatus.ACK for a in answers)
    return int(acked and not final)


# -- a key of the wrong type --


async def test_an_audit_stream_of_the_wrong_type_is_answered_not_run(
    redis: Redis, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    await redis.set(AUDIT_STREAM, "not a stream")
    handler = FakeExchange()
    async with serving(settings, handler):
        outcome = await ControlClient(redis, settings).send(EXCHANGE_ID, "start", operator="ops")
    assert outcome.status is ReplyStatus.ERROR
    assert not outcome.acked  # never acknowledged: it was not taken
    assert outcome.message is not None
    assert outcome.message.startswith(
        f"audit append refused (XADD {AUDIT_STREAM}): WRONGTYPE Operation against a key"
    )
    assert "command not run" in outcome.message
    assert handler.calls == []
    # Recorded: the same command read again is answered, not run.
    record = json.loads(await redis.hget(OUTCOMES, outcome.correlation_id))  # type: ignore[misc]
    assert (record["state"], record["status"]) == ("done", "error")
    no_tracebacks(caplog)


async def test_an_outcomes_hash_of_the_wrong_type_is_answered_naming_it(
    redis: Redis, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    await redis.set(OUTCOMES, "not a hash")
    handler = FakeExchange()
    async with serving(settings, handler) as server:
        client = ControlClient(redis, settings)
        for kind in ("ping", "start"):
            outcome = await client.send(EXCHANGE_ID, kind, operator="ops")
            assert outcome.status is ReplyStatus.ERROR, kind
            assert outcome.message == (
                f"command claim refused (HSETNX {OUTCOMES}): WRONGTYPE Operation against a "
                "key holding the wrong kind of value; command not run"
            )
            assert unanswered_acks(await replies(redis, outcome.correlation_id)) == 0
        assert server.handled == 2
    assert handler.calls == []
    no_tracebacks(caplog)


async def test_an_outcomes_hash_turned_wrong_type_mid_run_still_gets_the_result(
    redis: Redis, settings: Settings
) -> None:
    """The command ran: its sender gets its result, and what could not be recorded."""
    handler = FakeExchange(delay=0.5)

    def spoil(_reply: CommandReply) -> None:
        with sync_redis.Redis.from_url(settings.redis_url) as admin:
            admin.delete(OUTCOMES)
            admin.set(OUTCOMES, "not a hash")

    async with serving(settings, handler):
        outcome = await ControlClient(redis, settings).send(
            EXCHANGE_ID, "start", operator="ops", on_ack=spoil
        )
    assert outcome.status is ReplyStatus.SUCCESS
    assert outcome.message is not None
    assert outcome.message.startswith(f"{NAME} is active; outcome record refused (HSET {OUTCOMES})")
    assert [c.type for c in handler.calls] == ["start"]


async def test_a_real_agent_reports_a_wrong_type_outcomes_hash_to_the_cli(
    spawn_agent: SpawnAgent, redis: Redis, redis_url: str
) -> None:
    """Not exit 4 "no agent answered" while the agent logs tracebacks: the
    agent answers, naming the key, and the CLI prints it (exit 1)."""
    agent = spawn_agent()
    await until_listening(agent)
    await redis.set(OUTCOMES, "not a hash")
    pinged = await perseus(redis_url, "ping", "1")
    assert pinged.returncode == 1, pinged.stderr
    assert pinged.stderr == (
        f"perseus: command claim refused (HSETNX {OUTCOMES}): WRONGTYPE Operation against a "
        "key holding the wrong kind of value; command not run\n"
    )
    await agent.wait_log("command claim refused")
    assert "Traceback" not in agent.log()


# -- out of memory under noeviction --


@pytest.fixture
def tight() -> Iterator[RedisServer]:
    """A server of the test's own, where the test sets maxmemory."""
    with RedisServer() as server:
        with sync_redis.Redis.from_url(server.url) as admin:
            admin.config_set("maxmemory-policy", "noeviction")
        yield server


@pytest.fixture
async def tight_redis(tight: RedisServer) -> AsyncIterator[Redis]:
    client = connect(fast_settings(tight.url))
    try:
        yield client
    finally:
        await client.aclose()


async def send_then_fill_memory(redis: Redis, command: str) -> None:
    """Append a command and leave Redis out of memory in one step (MULTI), so
    the server reads the command only once every write of its would be refused:
    the borderline case of a command that fitted and nothing after it."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.xadd(COMMANDS, {"command": command})
        pipe.config_set("maxmemory", 1)
        await pipe.execute()


async def free_memory(redis: Redis) -> None:
    await redis.config_set("maxmemory", 0)


async def test_out_of_memory_the_command_waits_and_runs_once_memory_is_freed(
    tight: RedisServer, tight_redis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    settings = fast_settings(tight.url, ack_timeout_ms=1_000)
    handler = FakeExchange()
    client = ControlClient(tight_redis, settings)
    async with serving(settings, handler) as server:
        await send_then_fill_memory(tight_redis, command_json("start", cid="oom-1"))
        # The sender is told what happened, not "no agent answered".
        with pytest.raises(RedisOutOfMemory, match="Redis is out of memory"):
            await client.wait(EXCHANGE_ID, "oom-1")
        assert "OOM" in (server.last_error or "")
        assert handler.calls == []
        await free_memory(tight_redis)
        # The server retries with backoff (up to 2 s): it acknowledges within that.
        outcome = await client.wait(EXCHANGE_ID, "oom-1", ack_timeout_ms=5_000)
    assert outcome == CommandOutcome("oom-1", True, ReplyStatus.SUCCESS, f"{NAME} is active", None)
    assert [c.type for c in handler.calls] == ["start"]
    entries = await audit(tight_redis, settings)
    assert [e.status for e in entries] == ["ack", "success"]
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert refusals, "the refusal is reported while it lasts"
    assert all("command claim refused" in m and "OOM" in m for m in refusals)
    no_tracebacks(caplog)


async def test_out_of_memory_past_the_expiry_the_command_expires_with_a_reply(
    tight: RedisServer, tight_redis: Redis
) -> None:
    settings = fast_settings(tight.url, command_expiry_ms=1_500)
    handler = FakeExchange()
    client = ControlClient(tight_redis, settings)
    async with serving(settings, handler) as server:
        await send_then_fill_memory(tight_redis, command_json("start", cid="oom-2"))
        await eventually(lambda: "OOM" in (server.last_error or ""), what="the refusal")
        await asyncio.sleep(1.6)  # the command's expiry passes while Redis refuses
        await free_memory(tight_redis)
        outcome = await client.wait(EXCHANGE_ID, "oom-2")
    assert outcome.status is ReplyStatus.ERROR
    assert not outcome.acked
    assert outcome.message is not None
    assert outcome.message.startswith(
        f"Command expired: not run, command claim refused (HSETNX {OUTCOMES}): OOM command "
        "not allowed when used memory > 'maxmemory'"
    )
    assert handler.calls == []


async def test_out_of_memory_while_running_the_result_still_reaches_the_sender(
    tight: RedisServer, tight_redis: Redis
) -> None:
    """The case that lost a stop: acknowledged, then every write refused."""
    settings = fast_settings(tight.url)
    handler = FakeExchange(delay=0.3)
    client = ControlClient(tight_redis, settings)
    async with serving(settings, handler) as server:

        def fill(_reply: CommandReply) -> None:
            with sync_redis.Redis.from_url(tight.url) as admin:
                admin.config_set("maxmemory", 1)

        sending = asyncio.create_task(
            client.send(EXCHANGE_ID, "start", operator="ops", on_ack=fill)
        )
        await eventually(lambda: "OOM" in (server.last_error or ""), what="the refusal")
        assert not sending.done()
        await free_memory(tight_redis)
        outcome = await sending
    assert (outcome.acked, outcome.status, outcome.message) == (
        True,
        ReplyStatus.SUCCESS,
        f"{NAME} is active",
    )
    assert [e.status for e in await audit(tight_redis, settings)] == ["ack", "success"]


async def test_a_sender_refused_for_memory_is_told_the_command_was_not_sent(
    tight_redis: Redis, settings: Settings
) -> None:
    await tight_redis.set("ballast", "x" * 100_000)
    await tight_redis.config_set("maxmemory", 1)
    client = ControlClient(tight_redis, fast_settings(settings.redis_url))
    with pytest.raises(Exception, match=f"Redis refused XADD {COMMANDS}: OOM .*not sent"):
        await client.submit(EXCHANGE_ID, "stop", operator="ops")


# -- bounded commands --


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


@pytest.mark.parametrize(
    ("label", "payload", "problem"),
    [
        ("too deep to parse", '{"a":' + deep(20_000) + "}", "not valid JSON"),
        ("too deep to run", json.dumps({"a": json.loads(deep(20))}), "nested deeper than"),
        ("too large", json.dumps({"operator": "o" * 100_000}), "byte limit"),
        ("operator too long", json.dumps({"operator": "o" * 1_000}), "operator name is 1,000"),
    ],
)
async def test_every_unbounded_command_is_answered_with_an_error(
    redis: Redis,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    label: str,
    payload: str,
    problem: str,
) -> None:
    caplog.set_level(logging.WARNING)
    cid = f"bounded-{label.replace(' ', '-')}"
    base = json.loads(command_json("ping", cid=cid))
    raw = json.dumps({k: v for k, v in base.items() if k != "payload"})[:-1]
    raw += f',"payload":{payload}}}'
    handler = FakeExchange()
    async with serving(settings, handler) as server:
        await redis.xadd(COMMANDS, {"command": raw})
        outcome = await ControlClient(redis, settings).wait(EXCHANGE_ID, cid)
        await eventually(lambda: server.handled == 1, what="the entry handled")
    assert outcome.status is ReplyStatus.ERROR
    assert problem in (outcome.message or "")
    assert handler.calls == []
    no_tracebacks(caplog)


def test_the_limits_leave_room_for_real_commands() -> None:
    operator = "o" * MAX_OPERATOR_CHARS
    command = Command(correlation_id="c", type="start", payload={"operator": operator}, timestamp=1)
    assert len(command.operator) == MAX_OPERATOR_CHARS
    assert MAX_PAYLOAD_DEPTH >= 2  # {"operator": ..., "exchange": ...} plus one level
