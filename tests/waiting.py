"""The one way tests wait: for a real condition, with a deadline, never a guessed sleep."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from redis.asyncio import Redis

POLL_S = 0.02


async def eventually(
    check: Callable[[], Awaitable[Any] | Any], within: float = 10.0, what: str = ""
) -> Any:
    """Poll `check` (sync or async) until it returns something truthy, and return that.

    Fails the test with `timed out after Ns waiting for <what>` at the deadline.
    """
    deadline = time.monotonic() + within
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what or check}")
        await asyncio.sleep(POLL_S)


async def blocked_clients(redis: Redis, command: str) -> int:
    """How many clients are blocked in `command` (`xread`, `blpop`...), from CLIENT LIST.

    Waiting for this is how a test knows a reader is parked in its blocking
    read before it writes, instead of sleeping "long enough".
    """
    clients = await redis.client_list()
    return sum(1 for c in clients if c.get("cmd") == command.lower() and "b" in c.get("flags", ""))


async def until_blocked(redis: Redis, command: str, count: int = 1, within: float = 10.0) -> None:
    """Wait until at least `count` clients are blocked in `command`."""

    async def enough() -> bool:
        return await blocked_clients(redis, command) >= count

    await eventually(enough, within=within, what=f"{count} client(s) blocked in {command}")


@contextlib.asynccontextmanager
async def commands_naming(url: str, key: str) -> AsyncIterator[list[str]]:
    """Every command a client sends that names `key` (the ones scripts run
    are left out), from MONITOR, as Redis runs them.

    How a test knows another process went through N more rounds (a notifier
    polling a status key, say) when that process shows no count of its own:
    wait until the list is long enough, then check what did not happen.
    """
    seen: list[str] = []
    client = Redis.from_url(url, decode_responses=True)  # no socket timeout: MONITOR idles

    async def watch() -> None:
        async with client.monitor() as monitor:
            while True:
                info = await monitor.next_command()
                if info["client_type"] != "lua" and key in info["command"].split():
                    seen.append(info["command"])

    watching = asyncio.create_task(watch())
    try:
        yield seen
    finally:
        watching.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watching
        await client.aclose()
