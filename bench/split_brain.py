"""Split brain under SIGSTOP: two agents for one slot, the holder frozen, the other claims.

Each round freezes the agent that holds the slot (200 ms heartbeat, 600 ms
TTL), waits for its status key to expire, starts the standby and resumes the
frozen agent, which then fences itself. The children tick into files on the
host's monotonic clock, so a run is known to the millisecond from its first
to its last tick (see `tests/faults/split_brain.py`).

Targets: 0 rounds where the two children ran at the same time, and 0 rounds
where the frozen holder's child was still alive when its key expired.

Usage: `.venv/bin/python bench/split_brain.py [--rounds 20]`
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from _common import Report, exactly, median, redis_server, run_async

from tests.faults.split_brain import HEARTBEAT_INTERVAL_MS, HEARTBEAT_TTL_MS, run_rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    report = Report("split_brain")
    with redis_server() as server, tempfile.TemporaryDirectory() as workdir:
        rounds = run_async(lambda: run_rounds(args.rounds, server.url, Path(workdir)))
        report.figures.update(
            rounds=rounds.rounds,
            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
            heartbeat_ttl_ms=HEARTBEAT_TTL_MS,
            overlapping_rounds=rounds.overlaps,
            max_overlap_ms=rounds.max_overlap_ms,
            old_child_alive_at_expiry=rounds.alive_at_expiry,
            gap_ms_min=min(rounds.gaps_ms),
            gap_ms_median=median(rounds.gaps_ms),
            gaps_ms=rounds.gaps_ms,
        )
        report.check(exactly("rounds run", rounds.rounds, args.rounds, "rounds"))
        report.check(exactly("rounds with overlapping children", rounds.overlaps, 0, "rounds"))
        report.check(exactly("max overlap", rounds.max_overlap_ms, 0, "ms"))
        report.check(
            exactly("old child alive when the key expired", rounds.alive_at_expiry, 0, "rounds")
        )
        report.emit(server)


if __name__ == "__main__":
    main()
