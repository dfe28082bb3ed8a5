"""No two children for one slot: the short form of the SIGSTOP rounds (the long
form is `bench/split_brain.py`, 20 rounds)."""

from __future__ import annotations

from pathlib import Path

from tests.faults.split_brain import run_rounds


async def test_a_frozen_holders_child_is_gone_before_anyone_can_claim(
    redis_url: str, tmp_path: Path
) -> None:
    report = await run_rounds(3, redis_url, tmp_path)
    assert report.rounds == 3
    assert report.alive_at_expiry == 0, report
    assert report.overlaps == 0, report
    assert all(gap > 0 for gap in report.gaps_ms), report
