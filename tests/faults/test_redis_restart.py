"""Redis killed and restarted, empty or with its data, while commands are in flight:
every command is answered or reported "outcome unknown" (or "not sent"), none runs twice."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from perseus_cli.apps.redis_server import RedisServer
from perseus_core.plumbing.connection import connect
from perseus_core.store.control.records import NoAgentAnswered, OutcomeUnknown
from perseus_core.store.control.sender import ControlClient
from perseus_core.store.control.server import CommandServer, HandlerResult
from perseus_core.wire.errors import RedisUnavailable
from perseus_core.wire.models import Command, ReplyStatus
from perseus_core.wire.settings import Settings
from tests.waiting import eventually

EXCHANGE_ID = 1


class Counting:
    """A handler that records every correlation id it runs."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    async def __call__(self, command: Command) -> HandlerResult:
        self.ran.append(command.correlation_id)
        await asyncio.sleep(0.02)  # a command takes a moment: some are in flight at the kill
        return ReplyStatus.SUCCESS, "done", None


def fault_settings(server: RedisServer) -> Settings:
    return Settings(
        redis_url=server.url,
        public_ip="off",
        block_ms=200,
        socket_timeout_ms=1_000,
        ack_timeout_ms=3_000,
        result_timeout_ms=5_000,
    )


async def _send(client: ControlClient, n: int) -> str:
    """What the sender of command `c-n` was told."""
    try:
        outcome = await client.send(EXCHANGE_ID, "ping", operator="o", correlation_id=f"c-{n}")
    except OutcomeUnknown:
        return "outcome unknown"
    except RedisUnavailable:
        return "not sent"
    except NoAgentAnswered:
        return "no agent answered"
    return "answered" if outcome.status is not None else "no result"


@pytest.mark.parametrize("keep_data", [False, True], ids=["empty", "with-data"])
async def test_commands_in_flight_survive_a_redis_restart(
    keep_data: bool, fresh_redis: RedisServer
) -> None:
    settings = fault_settings(fresh_redis)
    handler = Counting()
    redis = connect(settings)
    server = CommandServer(settings, EXCHANGE_ID, "coinbase", handler)
    await server.start()
    try:
        client = ControlClient(redis, settings)
        before = [asyncio.create_task(_send(client, n)) for n in range(20)]
        await eventually(lambda: len(handler.ran) >= 5, what="some commands to run")
        if keep_data:
            await redis.save()  # the restarted server loads this snapshot
        fresh_redis.restart()
        after = [asyncio.create_task(_send(client, n)) for n in range(20, 30)]
        told = Counter(await asyncio.gather(*before, *after))
    finally:
        await server.stop()
        await redis.aclose()
    assert set(told) <= {"answered", "outcome unknown", "not sent"}, told
    assert told["answered"] >= 10, told  # those sent after the restart at least
    runs = Counter(handler.ran)
    assert max(runs.values()) == 1, [cid for cid, n in runs.items() if n > 1]


async def test_a_reply_lost_with_the_connection_is_outcome_unknown(
    fresh_redis: RedisServer,
) -> None:
    settings = fault_settings(fresh_redis)
    redis = connect(settings)
    try:
        client = ControlClient(redis, settings)
        command = await client.submit(EXCHANGE_ID, "stop", operator="o")
        fresh_redis.kill()  # sent, and then Redis is gone before any reply
        with pytest.raises(OutcomeUnknown) as caught:
            await client.wait(EXCHANGE_ID, command.correlation_id, ack_timeout_ms=1_000)
    finally:
        await redis.aclose()
    assert str(caught.value).startswith("sent, outcome unknown (Redis connection lost): ")
    assert command.correlation_id in str(caught.value)
