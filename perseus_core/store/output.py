"""A child's last lines of output in Redis (docs/wire-format.md 2.5): written
by its agent without ever holding the child up, read by `perseus output` and
the dashboard.

The agent drains the child's pipes continuously (`perseus_core.runtime.output`)
and hands every line to `OutputWriter.add`, which only appends to a bounded
queue: the child never waits for Redis. A background task sends the queue in
pipelined batches (`XADD ... MAXLEN ~ N`, then `PEXPIRE`). When Redis is slow
or away the queue fills and further lines are dropped and counted; once there
is room again, the count goes into the stream as an entry of its own, where
the lines would have been. A batch whose write failed is counted the same way:
its XADDs may or may not have landed, and re-sending them could write them
twice. A user whose ACL rights do not cover the key (lines older than the
key) is told once in the agent's log, and the writer stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

from redis.exceptions import ResponseError

from perseus_core.plumbing.connection import (
    connect_blocking,
    describe_redis_error,
    describe_refusal,
    is_acl_denial,
)
from perseus_core.plumbing.errors import REDIS_ERRORS, TRANSIENT_ERRORS
from perseus_core.plumbing.streams import StreamRow, xread_rows
from perseus_core.plumbing.tasks import raise_if_cancelling, wait_event
from perseus_core.plumbing.topology import RedisClient
from perseus_core.store.activity.guard import Closed, CloseGuard
from perseus_core.wire import keys
from perseus_core.wire.settings import Settings
from perseus_core.wire.text import clean
from perseus_core.wire.timeutil import Clock, format_ts, system_clock

log = logging.getLogger(__name__)

LINE_CHARS = 1000
"""Longest line kept (characters, after cleaning); a longer one is cut with an ellipsis."""

QUEUED_LINES = 1000
"""Lines waiting for Redis at most; more are dropped and counted."""

BATCH_LINES = 200
"""Lines sent in one pipeline."""

AGENT = "perseus"
"""The `stream` of entries the agent writes itself (a run starting, lines dropped)."""

STREAMS = ("stdout", "stderr", AGENT)

_RETRY_MIN_S = 0.2
_RETRY_MAX_S = 5.0


@dataclass(frozen=True, slots=True)
class OutputLine:
    """One entry of an output stream, as read (every value cleaned).

    Attributes:
        id: the stream entry's ID.
        stream: `stdout`, `stderr`, or `perseus` for the agent's own notes.
        line: the text, one printable line (no escapes or control characters).
        at: when the agent read it (ISO-8601), or "" when missing.
        dropped: on a `perseus` entry that counts dropped lines, how many.
    """

    id: str
    stream: str
    line: str
    at: str
    dropped: int | None = None

    @classmethod
    def from_fields(cls, entry_id: str, fields: dict[str, str]) -> OutputLine:
        """An entry read from Redis: untrusted, so every value is cleaned and bounded."""
        stream = fields.get("stream", "")
        dropped = fields.get("dropped", "")
        return cls(
            id=entry_id,
            stream=stream if stream in STREAMS else clean(stream, 20) or "?",
            line=clean(fields.get("line", ""), LINE_CHARS),
            at=clean(fields.get("at", ""), 40),
            dropped=int(dropped) if dropped.isdigit() and len(dropped) < 19 else None,
        )

    def to_json(self) -> dict[str, object]:
        """`{"id", "stream", "line", "at"}` (and `"dropped"` when set), for scripts."""
        data: dict[str, object] = {
            "id": self.id,
            "stream": self.stream,
            "line": self.line,
            "at": self.at,
        }
        if self.dropped is not None:
            data["dropped"] = self.dropped
        return data


def clean_line(raw: bytes) -> str:
    """A line of a child's output as it is kept: decoded (bad bytes replaced),
    escape sequences and control characters removed, at most `LINE_CHARS`."""
    return clean(raw.decode(errors="replace"), LINE_CHARS)


class OutputWriter:
    """Keeps a child's lines in `perseus:output:{exchangeId}`, never blocking the caller.

    `add` is called from the pipe drain; `run` is the background task that
    writes; `close` lets `run` send what is queued and return.

    Args:
        redis: the agent's client for short commands.
        settings: `output_lines` (MAXLEN ~) and `output_keep_days` (expiry).
        exchange_id: whose output this is.
        clock: source of the `at` stamps.
        max_queued: lines waiting for Redis at most.
    """

    def __init__(
        self,
        redis: RedisClient,
        settings: Settings,
        exchange_id: int,
        *,
        clock: Clock = system_clock,
        max_queued: int = QUEUED_LINES,
    ) -> None:
        self._redis = redis
        self._settings = settings
        self.key = keys.output_key(exchange_id)
        self._clock = clock
        self._max_queued = max_queued
        self._maxlen = settings.output_lines
        self._keep_ms = int(settings.output_keep_days * 86_400_000)
        self._queue: deque[dict[str, str]] = deque()
        self._wake = asyncio.Event()
        self._closed = asyncio.Event()
        self._closing = False
        self._uncounted = 0
        self.dropped = 0
        """Lines dropped in all (the queue was full, or their write failed)."""
        self.written = 0
        """Entries Redis confirmed."""

    def add(self, stream: str, raw: bytes) -> None:
        """Queue one line of the child's `stream`; drop it (counted) when the queue is full."""
        if self._closing:
            return
        if len(self._queue) >= self._max_queued - (1 if self._uncounted else 0):
            if not self._uncounted:
                log.warning("%s: Redis is not keeping up; dropping lines of output", self.key)
            self._uncounted += 1
            self.dropped += 1
            return
        self._mark_drops()
        self._queue.append({"stream": stream, "line": clean_line(raw), "at": self._now()})
        self._wake.set()

    def note(self, text: str) -> None:
        """Queue a line of the agent's own (`stream` = `perseus`): a run starting, ending."""
        if self._closing:
            return
        self._mark_drops()
        self._queue.append({"stream": AGENT, "line": clean(text, LINE_CHARS), "at": self._now()})
        self._wake.set()

    def close(self) -> None:
        """No more lines: `run` sends what is queued (and the count of drops) and returns."""
        self._closing = True
        self._closed.set()
        self._wake.set()

    def _now(self) -> str:
        return format_ts(self._clock())

    def _mark_drops(self) -> None:
        """Queue the count of lines dropped since the last count, where they would have been."""
        if not self._uncounted:
            return
        count, self._uncounted = self._uncounted, 0
        log.warning("%s: %d lines of output dropped", self.key, count)
        self._queue.append(
            {
                "stream": AGENT,
                "line": f"{count} lines of output dropped: Redis was slow or unreachable",
                "at": self._now(),
                "dropped": str(count),
            }
        )

    async def run(self) -> None:
        """Send the queue in batches until `close` and an empty queue (or cancellation)."""
        delay = _RETRY_MIN_S
        while True:
            if not self._queue:
                if self._uncounted:
                    self._mark_drops()
                    continue
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            batch = [self._queue.popleft() for _ in range(min(BATCH_LINES, len(self._queue)))]
            try:
                await self._send(batch)
            except REDIS_ERRORS as exc:
                raise_if_cancelling()  # a cancellation redis-py turned into an error
                if isinstance(exc, ResponseError) and is_acl_denial(exc):
                    self._refuse(exc)
                    return
                lost = sum(int(entry.get("dropped", "1")) for entry in batch)
                self._uncounted += lost
                self.dropped += sum(1 for entry in batch if "dropped" not in entry)
                log.warning(
                    "%s: %d lines of output not written: %s",
                    self.key,
                    lost,
                    describe_redis_error(self._settings, exc),
                )
                if self._closing:
                    return
                await wait_event(self._closed, delay)
                delay = min(_RETRY_MAX_S, delay * 2)
                continue
            delay = _RETRY_MIN_S
            self.written += len(batch)

    def _refuse(self, exc: ResponseError) -> None:
        """This user may not write the key: say so once, and keep no more lines."""
        self._closing = True
        self._queue.clear()
        log.error(
            "%s: the child's output stays in the agent's log only"
            " (docs/production-redis.md lists the agent's rights)",
            describe_refusal(exc, "XADD", self.key),
        )

    async def _send(self, batch: list[dict[str, str]]) -> None:
        async with self._redis.pipeline(transaction=False) as pipe:
            for fields in batch:
                pipe.xadd(self.key, fields, maxlen=self._maxlen, approximate=True)  # type: ignore[arg-type]
            pipe.pexpire(self.key, self._keep_ms)
            await pipe.execute()


async def recent_output(redis: RedisClient, exchange_id: int, count: int) -> list[OutputLine]:
    """The last `count` entries of an exchange's output, oldest first."""
    found = await redis.xrevrange(keys.output_key(exchange_id), "+", "-", count=count)
    rows = cast(list[StreamRow], found or [])
    return [OutputLine.from_fields(str(i), dict(f or {})) for i, f in reversed(rows)]


class OutputFollower:
    """New entries of an exchange's output as they arrive (a blocking XREAD on
    a connection of its own), across outages: a failed read is retried with
    backoff and `last_error` says why meanwhile. `aclose`, from any task,
    interrupts a read in flight and ends the iteration.

    Args:
        settings: the Redis target and block time.
        exchange_id: whose output.
        after: the ID to read after (`$`: only what is written from now on).
    """

    def __init__(self, settings: Settings, exchange_id: int, after: str = "$") -> None:
        self._settings = settings
        self._key = keys.output_key(exchange_id)
        self._after = after
        self._redis: RedisClient | None = None
        self._guard = CloseGuard()
        self.last_error: str | None = None

    @property
    def connected(self) -> bool:
        """The last read succeeded (or none has failed yet)."""
        return self.last_error is None

    async def __aiter__(self) -> AsyncIterator[OutputLine]:
        delay = _RETRY_MIN_S
        try:
            while True:
                try:
                    reply = await self._guard.run(self._read)
                except Closed:
                    return
                except TRANSIENT_ERRORS as exc:
                    raise_if_cancelling()  # a cancellation redis-py turned into an error
                    if self._guard.closed:
                        return
                    self.last_error = describe_redis_error(self._settings, exc)
                    await self._drop_client()  # a fresh connection on the next try
                    await self._guard.sleep(delay)
                    delay = min(_RETRY_MAX_S, delay * 2)
                    continue
                delay = _RETRY_MIN_S
                self.last_error = None
                for _key, rows in xread_rows(reply):
                    for entry_id, fields in rows:
                        self._after = entry_id
                        yield OutputLine.from_fields(entry_id, fields)
        finally:
            await self._drop_client()

    async def _read(self) -> object:
        if self._redis is None:
            self._redis = connect_blocking(self._settings)
        if self._after == "$":  # pin the position now, or a reconnect would skip lines
            last = await self._redis.xrevrange(self._key, "+", "-", count=1)
            self._after = str(last[0][0]) if last else "0-0"
        return await self._redis.xread(
            {self._key: self._after}, count=500, block=self._settings.block_ms
        )

    async def _drop_client(self) -> None:
        redis, self._redis = self._redis, None
        if redis is not None:
            with contextlib.suppress(Exception):
                await redis.aclose()

    async def aclose(self) -> None:
        """Stop following: a read in flight is interrupted, the connection closed."""
        await self._guard.close()
        await self._drop_client()
