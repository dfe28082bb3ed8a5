"""Following a stream on the terminal (`perseus log -f`, `perseus output -f`)
until Ctrl-C, or until whoever reads our stdout goes away."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import sys
from collections.abc import AsyncIterable, AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Protocol, TypeVar

import click

from perseus_core.wire.text import clean

T_co = TypeVar("T_co", covariant=True)


class Closable(Protocol):
    """A follower: closing it ends the loop that iterates over it."""

    async def aclose(self) -> None: ...


class Follower(Closable, AsyncIterable[T_co], Protocol):
    """What `follow` prints from: items as they arrive, and how its
    connection fares meanwhile."""

    @property
    def connected(self) -> bool: ...

    @property
    def last_error(self) -> str | None: ...


async def follow(follower: Follower[T_co], show: Callable[[T_co], None]) -> None:
    """Show every item `follower` yields until Ctrl-C or until our stdout's
    reader leaves; then close it. Losing Redis and getting it back are said
    on stderr meanwhile."""
    watchers = [
        asyncio.create_task(_report_connection(follower)),
        asyncio.create_task(close_when_stdout_closes(follower)),
    ]
    async with stop_on_ctrl_c(follower):
        try:
            async for item in follower:
                show(item)
        finally:
            for watcher in watchers:
                watcher.cancel()
            await asyncio.gather(*watchers, return_exceptions=True)
            await follower.aclose()


async def _report_connection(follower: Follower[object]) -> None:
    """While the follower retries, nothing arrives, and silence would look
    like a quiet fleet (or child): say when Redis is lost and when it is back.
    A failed call leaves `connected` false with `last_error` set, which also
    covers Redis going away before the follower's first call."""
    lost = False
    while True:
        await asyncio.sleep(0.2)
        if follower.connected:
            if lost:
                click.echo("perseus: reconnected", err=True)
                lost = False
        elif follower.last_error is not None and not lost:
            click.echo(f"perseus: {clean(follower.last_error, 300)}; retrying", err=True)
            lost = True


async def close_when_stdout_closes(tail: Closable) -> None:
    """End the tail as soon as the reader of our stdout pipe goes away
    (`perseus log -f | head -1`), rather than at the next entry's write, which
    on a quiet fleet may never come.

    The write end of a pipe never becomes readable; the poller reports it
    (as an error) only once the read end is closed. A terminal or a file is
    not watched: nothing can close it under us that way.
    """
    loop = asyncio.get_running_loop()
    closed = asyncio.Event()
    try:
        fd = sys.stdout.fileno()
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            return
        loop.add_reader(fd, closed.set)
    except (OSError, ValueError):  # stdout captured in-process, or a poller that refuses it
        return
    try:
        await closed.wait()
    finally:
        loop.remove_reader(fd)
    await tail.aclose()


@asynccontextmanager
async def stop_on_ctrl_c(tail: Closable) -> AsyncIterator[None]:
    """Ctrl-C closes the tail, so the loop over it simply ends (exit 0).

    Cancelling the task that iterates, which is what `asyncio.run` does on
    Ctrl-C, is not reliable here: on Python 3.11 redis-py sends commands under
    `asyncio.wait_for`, which loses a cancellation that lands just as the send
    completes, and the follow loop would then run on. `aclose()` stops the
    tail whatever the in-flight read does. A second Ctrl-C cancels the task
    outright. Where the loop cannot take over SIGINT (not the main thread, or
    no signal support), `asyncio.run`'s own handling stays in place.
    """
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    closers: set[asyncio.Task[None]] = set()

    def on_sigint() -> None:
        if not closers:
            closers.add(loop.create_task(tail.aclose()))
        elif main is not None:
            main.cancel()

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    except (NotImplementedError, RuntimeError, ValueError):
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        # Let the close finish: asyncio.run would cancel it half-way and
        # leave a connection open.
        await asyncio.gather(*closers, return_exceptions=True)
