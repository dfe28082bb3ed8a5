"""The agent's log handler: a stderr nobody reads delays the log, never the agent."""

from __future__ import annotations

import fcntl
import logging
import os
import sys

import pytest

from perseus_cli.agent_log import BackgroundStderr
from tests.waiting import eventually


@pytest.fixture
def logger() -> logging.Logger:
    logger = logging.getLogger("tests.agent_log")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sizes the pipe with fcntl")
async def test_a_full_stderr_drops_and_counts_lines_instead_of_blocking(
    logger: logging.Logger,
) -> None:
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    handler = BackgroundStderr(write_end, backlog=5)
    logger.handlers[:] = [handler]
    try:
        # Far more than the pipe and the backlog hold, with nobody reading:
        # every call returns (a blocking handler would hang this test).
        for n in range(200):
            logger.info("line %03d %s", n, "x" * 100)
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
        logger.info("the last line")

        def caught_up() -> bool:
            read_some()
            return b"the last line" in b"".join(read)

        await eventually(caught_up, what="the writer to write the last line")
        *lines, last = b"".join(read).decode().splitlines()
        assert last == "the last line"
        # Every line in order; each count of dropped ones where they went missing.
        expected, notes = 0, 0
        for line in lines:
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
        logger.handlers.clear()
        os.close(read_end)
        os.close(write_end)


def test_a_closed_stderr_loses_the_lines_quietly(logger: logging.Logger) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # a terminal hung up, a reader gone: EPIPE
    handler = BackgroundStderr(write_end)
    logger.handlers[:] = [handler]
    try:
        logger.info("nobody will see this")
        handler.flush()
        assert handler.dropped == 0
    finally:
        logger.handlers.clear()
        os.close(write_end)
