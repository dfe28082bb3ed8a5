"""Reads side by side that end together (`gather_all`)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from perseus_core.plumbing.tasks import gather_all


async def _slow_to_unwind(ended: list[str], name: str) -> str:
    """Waits until cancelled, then takes a few turns on its way out (as a
    read closing its connection does) and says it ended."""
    try:
        await asyncio.Event().wait()
    finally:
        for _ in range(5):
            await asyncio.sleep(0)
        ended.append(name)
    return name


async def test_a_failing_read_is_raised_once_the_others_have_ended() -> None:
    ended: list[str] = []

    async def failing() -> None:
        await asyncio.sleep(0)
        raise ValueError("refused")

    with pytest.raises(ValueError, match="refused"):
        await gather_all(_slow_to_unwind(ended, "beside"), failing())
    assert ended == ["beside"]  # asyncio.gather raises with it still unwinding


async def test_a_cancelled_caller_ends_after_every_read() -> None:
    ended: list[str] = []
    seen: list[list[str]] = []

    async def caller() -> None:
        try:
            await gather_all(_slow_to_unwind(ended, "a"), _slow_to_unwind(ended, "b"))
        finally:
            seen.append(sorted(ended))

    task = asyncio.ensure_future(caller())
    await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert task.cancelled() and seen == [["a", "b"]]


async def test_a_read_cancelled_once_unwinds_whole_beside_one_that_ends_at_once() -> None:
    """The caller is cancelled: `gather` cancels both reads and gives up as the
    quick one ends; the slow one, still unwinding, is not cancelled again
    (that would cut its clean-up short) and has ended when the caller does."""
    ended: list[str] = []
    seen: list[list[str]] = []

    async def quick() -> None:
        await asyncio.Event().wait()

    async def caller() -> None:
        try:
            await gather_all(_slow_to_unwind(ended, "slow"), quick())
        finally:
            seen.append(list(ended))

    task = asyncio.ensure_future(caller())
    await asyncio.sleep(0.01)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert seen == [["slow"]]


async def test_results_come_in_the_order_of_the_reads() -> None:
    async def answer(value: int, turns: int) -> int:
        for _ in range(turns):
            await asyncio.sleep(0)
        return value

    assert await gather_all(answer(1, 3), answer(2, 0)) == [1, 2]
