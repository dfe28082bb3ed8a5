"""Command floods: send many commands, then read what became of each one.

Shared by the suite's flood (1,000 commands, `tests/core/test_control.py`)
and `bench/command_flood.py` (10,000): one definition of "answered",
"expired" and "lost".
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from redis.asyncio import Redis

from perseus_core.store.control.sender import ControlClient
from perseus_core.wire import keys
from perseus_core.wire.errors import PayloadError
from perseus_core.wire.models import Command, CommandReply, ReplyStatus

EXPIRED = "Command expired"


async def flood(client: ControlClient, exchange_id: int, count: int) -> list[Command]:
    """Append `count` pings to the exchange's command stream, as fast as one sender can."""
    return [await client.submit(exchange_id, "ping", operator="flood") for _ in range(count)]


async def fates(redis: Redis, commands: Sequence[Command]) -> Counter[str]:
    """What became of each command, from its reply list: `answered` (a final
    success or error), `expired` (`Command expired`), or `lost` (no final reply yet)."""
    async with redis.pipeline(transaction=False) as pipe:
        for command in commands:
            pipe.lrange(keys.replies_key(command.correlation_id), 0, -1)
        lists = await pipe.execute()
    told: Counter[str] = Counter()
    for replies in lists:
        final = None
        for raw in replies:
            try:
                reply = CommandReply.from_json(raw)
            except PayloadError:
                continue
            if reply.status is not ReplyStatus.ACK:
                final = reply
        if final is None:
            told["lost"] += 1
        elif final.message == EXPIRED:
            told["expired"] += 1
        else:
            told["answered"] += 1
    return told
