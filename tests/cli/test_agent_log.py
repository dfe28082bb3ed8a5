"""The agent's log handler: a stderr nobody reads delays the log, never the agent."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sys

import pytest

from perseus_cli.agent_log import BackgroundStderr
from tests.waiting import eventually


def log(handler: logging.Handler, message: str, *args: object) -> None:
    """One INFO record straight to `handler`: what a logger would hand it, but
    whatever the process-wide logging state (levels, `logging.disable`) that
    earlier tests in this process may have left."""
    handler.handle(logging.makeLogRecord({"levelno": logging.INFO, "levelname": "INFO",
                                           "msg": message, "args": args}))  # fmt: skip


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sizes the pipe with fcntl")
async def test_a_full_stderr_drops_and_counts_lines_instead_of_blocking() -> None:
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    # Full before the first line, so the writer waits from its first write
    # on, whatever room the kernel would have found for a few more lines.
    os.set_blocking(write_end, False)
    with contextlib.suppress(BlockingIOError):
        while True:
            os.write(write_end, b"prefill\n")
    os.set_blocking(write_end, True)
    handler = BackgroundStderr(write_end, backlog=5)
    try:
        # Far more than the pipe and the backlog hold, with nobody reading:
        # every call returns (a blocking handler would hang this test).
        for n in range(200):
            log(handler, "line %03d %s", n, "x" * 100)
        assert handler.dropped > 0  # the backlog was full at once

        os.set_blocking(read_end, False)
        read: list[bytes] = []

        def read_some() -> None:
            try:
                read.append(os.read(read_end, 65536))
            except BlockingIOError:
                pass

        def backlog_written() -> bool:
            read_some()
            return handler.pending == 0

        await eventually(backlog_written, what="the writer to write its backlog")
        log(handler, "the last line")

        def caught_up() -> bool:
            read_some()
            return b"the last line" in b"".join(read)

        await eventually(caught_up, what="the writer to write the last line")
        *lines, last = b"".join(read).decode().splitlines()
        assert last == "the last line"
        # Every line in order; each count of dropped ones where they went missing.
        expected, notes = 0, 0
        for line in lines:
            if line == "prefill":
                continue
            words = line.split()
            if words[0] == "line":
                assert int(words[1]) == expected, line
                expected += 1
            else:
                assert line == f"{words[0]} lines of this log were dropped: stderr was not read"
                expected += int(words[0])
                notes += 1
        assert expected == 200 and notes >= 1
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_closed_stderr_loses_the_lines_quietly() -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # a terminal hung up, a reader gone: EPIPE
    handler = BackgroundStderr(write_end)
    try:
        log(handler, "nobody will see this")
        handler.flush()
        assert handler.dropped == 0
    finally:
        os.close(write_end)
