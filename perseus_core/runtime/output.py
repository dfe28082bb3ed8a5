"""A child's stdout and stderr: pipes of their own, drained for as long as they are open.

A child that shared the agent's stdout could freeze the agent: with the pipe
unread, the child's writes fill it, and the agent's next line of its own
blocks it, heartbeat and all. So the child writes into pipes that only the
agent reads (`OutputDrain`), without blocking and in bounded memory: every
line is handed on as it comes, (stream name, bytes), and what keeps it is the
callback's business. `OutputLog` puts the lines into the agent's log, at most
so many a second, with a count of the ones left out; `ChildOutput`, the
callback the agent uses, hands them to that log, to the exchange's output
stream in Redis (`perseus_core.store.output`, unless turned off) and keeps
the last lines of stderr for the error entry of a crash.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import deque
from collections.abc import Callable

from perseus_core.store.output import OutputWriter
from perseus_core.wire.text import clean

log = logging.getLogger(__name__)

MAX_LINE_BYTES = 16 * 1024
"""Longest line handed on whole; a longer one is handed on in pieces of this size."""

OnLine = Callable[[str, bytes], None]
"""Called with the stream's name (`stdout`, `stderr`) and one line, without its newline."""


class _LineSplitter(asyncio.Protocol):
    """One pipe: bytes in, lines out, never more than one partial line kept."""

    def __init__(self, name: str, on_line: OnLine, closed: asyncio.Future[None]) -> None:
        self._name = name
        self._on_line = on_line
        self._closed = closed
        self._partial = b""

    def data_received(self, data: bytes) -> None:
        *lines, partial = (self._partial + data).split(b"\n")
        for line in lines:
            self._hand_on(line)
        while len(partial) >= MAX_LINE_BYTES:
            self._on_piece(partial[:MAX_LINE_BYTES])
            partial = partial[MAX_LINE_BYTES:]
        self._partial = partial

    def eof_received(self) -> bool | None:
        if self._partial:
            self._hand_on(self._partial)
            self._partial = b""
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._closed.done():
            self._closed.set_result(None)

    def _hand_on(self, line: bytes) -> None:
        """One line, in pieces of `MAX_LINE_BYTES` if it is longer."""
        for start in range(0, max(1, len(line)), MAX_LINE_BYTES):
            self._on_piece(line[start : start + MAX_LINE_BYTES])

    def _on_piece(self, line: bytes) -> None:
        try:
            self._on_line(self._name, line)
        except Exception:  # a failing consumer must not stop the drain (a full pipe would follow)
            log.exception("handling a line of the child's %s failed", self._name)


class OutputDrain:
    """Reads named pipes (a child's stdout and stderr) until each is closed by
    every process that holds it, and hands each line to `on_line`.

    Reading never waits for the consumer, and nothing but one partial line per
    pipe (`MAX_LINE_BYTES` at most) is kept here: a child that writes without
    pause costs the agent CPU, never memory, and never blocks it.

    Args:
        on_line: called with (stream name, line) for every line, in order per stream.
        on_end: called once every pipe is closed (or the drain was).
    """

    def __init__(self, on_line: OnLine, *, on_end: Callable[[], None] | None = None) -> None:
        self._on_line = on_line
        self._on_end = on_end
        self._transports: list[asyncio.ReadTransport] = []
        self._closed: list[asyncio.Future[None]] = []
        self._open = 0

    def _pipe_closed(self, _closed: asyncio.Future[None]) -> None:
        self._open -= 1
        if self._open == 0 and self._on_end is not None:
            self._on_end()

    async def attach(self, name: str, fd: int) -> None:
        """Start draining the pipe `fd` (its read end; the drain owns it from now on)."""
        loop = asyncio.get_running_loop()
        closed: asyncio.Future[None] = loop.create_future()
        pipe = os.fdopen(fd, "rb", buffering=0)
        try:
            transport, _ = await loop.connect_read_pipe(
                lambda: _LineSplitter(name, self._on_line, closed), pipe
            )
        except BaseException:
            pipe.close()
            raise
        self._transports.append(transport)
        self._closed.append(closed)
        self._open += 1
        closed.add_done_callback(self._pipe_closed)

    async def wait_closed(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for every pipe to reach its end; True if they all did."""
        if not self._closed:
            return True
        done, _ = await asyncio.wait(self._closed, timeout=timeout_s)
        return len(done) == len(self._closed)

    def close(self) -> None:
        """Stop reading at once (what is still in the pipes is lost)."""
        for transport in self._transports:
            transport.close()


class OutputLog:
    """The `on_line` the agent uses: each line of the child's output becomes a
    line of the agent's log, at most `rate` a second on average (`burst` at
    once); the lines over that are counted, and the count is logged with the
    next line that fits, or by `flush`.

    Args:
        name: the exchange's name, which starts every line.
        rate: lines a second, on average.
        burst: lines at once after a quiet spell.
        max_chars: longest line logged; longer ones are cut.
        clock: monotonic seconds (tests give their own).
    """

    def __init__(
        self,
        name: str,
        *,
        rate: float = 50.0,
        burst: int = 200,
        max_chars: int = 1000,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = log,
    ) -> None:
        self._name = name
        self._rate = rate
        self._burst = burst
        self._max_chars = max_chars
        self._clock = clock
        self._log = logger
        self._tokens = float(burst)
        self._refilled = clock()
        self.dropped = 0
        """Lines not logged since the last count was."""

    def __call__(self, stream: str, line: bytes) -> None:
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now
        if self._tokens < 1:
            self.dropped += 1
            return
        self._tokens -= 1
        self.flush()
        text = clean(line.decode(errors="replace"), self._max_chars)
        self._log.info("%s: child %s: %s", self._name, stream, text)

    def flush(self) -> None:
        """Log how many lines were left out, if any, and start counting again."""
        if self.dropped:
            self._log.warning(
                "%s: %d lines of the child's output not logged (more than %g a second)",
                self._name,
                self.dropped,
                self._rate,
            )
            self.dropped = 0


LAST_STDERR_LINES = 3
"""Lines of stderr an error entry about a crash quotes."""

LAST_STDERR_CHARS = 200
"""Longest stderr line quoted in an error entry."""


class ChildOutput:
    """The `on_line` of one child: each line to the agent's log (`OutputLog`),
    to the exchange's output stream (`writer`, None when turned off), and the
    last few lines of stderr kept for the error entry of a crash.

    Nothing here waits: the log is rate-limited, the writer only queues.
    """

    def __init__(self, lines: OutputLog, writer: OutputWriter | None) -> None:
        self._lines = lines
        self.writer = writer
        self._stderr: deque[str] = deque(maxlen=LAST_STDERR_LINES)

    def __call__(self, stream: str, line: bytes) -> None:
        self._lines(stream, line)
        if self.writer is not None:
            self.writer.add(stream, line)
        if stream == "stderr":
            text = clean(line.decode(errors="replace"), LAST_STDERR_CHARS).strip()
            if text:
                self._stderr.append(text)

    @property
    def last_stderr(self) -> list[str]:
        """The child's last (non-blank) stderr lines, oldest first, cleaned and bounded."""
        return list(self._stderr)

    def ended(self) -> None:
        """Every pipe is closed: log the count of lines left out, let the writer finish."""
        self._lines.flush()
        if self.writer is not None:
            self.writer.close()
