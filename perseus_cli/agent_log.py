"""The agent's log on stderr, written so that nothing reading it slowly can freeze the agent.

A plain `StreamHandler` writes from the event loop's thread: when stderr is a
pipe nobody reads (a stalled SSH session, `2>&1 | a-pager`), the write that
finds it full blocks, and the agent stops with it, heartbeat and all, until
its status key expires. Here the event loop only queues each line; a thread
of its own writes them. A log nobody reads then delays the log, never the
agent: past a bounded backlog, lines are dropped and counted, and the count
is written where they went missing, as soon as there is room.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import sys
import threading
import time

_LOG_FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)-7s %(message)s"
_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
BACKLOG = 1000
"""Lines kept waiting for a slow stderr; the ones past it are dropped and counted."""
_FLUSH_S = 1.0
"""How long `flush` (at exit) waits for the backlog to be written."""


class BackgroundStderr(logging.Handler):
    """A handler that formats in the caller's thread and writes from its own.

    Args:
        fd: the file descriptor written to (stderr's).
        backlog: lines kept while the writer waits for the reader.
    """

    def __init__(self, fd: int = 2, backlog: int = BACKLOG) -> None:
        super().__init__()
        self._fd = fd
        self._lines: queue.Queue[bytes] = queue.Queue(backlog)
        self.dropped = 0
        """Lines dropped since the last count was queued."""
        self._writer = threading.Thread(target=self._write_lines, name="log writer", daemon=True)
        self._writer.start()

    def emit(self, record: logging.LogRecord) -> None:
        # Called under the handler's lock: one emitter at a time.
        try:
            line = (self.format(record) + "\n").encode(errors="replace")
            if self.dropped:
                # The count goes where the lines went missing, before this one.
                self._lines.put_nowait(self._note(self.dropped))
                self.dropped = 0
            self._lines.put_nowait(line)
        except queue.Full:
            self.dropped += 1
        except Exception:
            self.handleError(record)

    def _note(self, dropped: int) -> bytes:
        note = logging.makeLogRecord(
            {
                "levelno": logging.WARNING,
                "levelname": "WARNING",
                "msg": "%d lines of this log were dropped: stderr was not read",
                "args": (dropped,),
            }
        )
        return (self.format(note) + "\n").encode()

    @property
    def pending(self) -> int:
        """Lines queued or being written."""
        return self._lines.unfinished_tasks

    def flush(self) -> None:
        """Wait a moment for the backlog to be written (never for ever)."""
        deadline = time.monotonic() + _FLUSH_S
        while self.pending and time.monotonic() < deadline:
            time.sleep(0.01)

    def _write_lines(self) -> None:
        while True:
            self._write(self._lines.get())
            self._lines.task_done()

    def _write(self, data: bytes) -> None:
        """All of `data`, waiting as long as the reader makes us; a closed or
        broken stderr (a terminal hung up) loses it."""
        while data:
            try:
                data = data[os.write(self._fd, data) :]
            except BlockingIOError:  # someone made stderr non-blocking: wait for room
                select.select([], [self._fd], [])
            except OSError:
                return


def configure_logging(verbose: bool) -> None:
    """One timestamped (UTC) line per event on stderr: what an operator tails or a
    service manager collects, the child's output lines included (the child
    never writes to the agent's stdout or stderr itself)."""
    handler: logging.Handler
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # not a file: run in-process (tests)
        handler = logging.StreamHandler(sys.stderr)
    else:
        sys.stderr.flush()
        handler = BackgroundStderr(fd)
    formatter = logging.Formatter(_LOG_FORMAT, _DATE_FORMAT)
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # Libraries' own chatter (HTTP requests of the IP detection) is not the agent's story.
    for noisy in ("httpx", "httpcore", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def flush_log() -> None:
    """Write out the log's backlog: an agent's last lines come before the one
    line of its verdict (`perseus: ...` on the way out), never after it."""
    for handler in logging.getLogger().handlers:
        handler.flush()
