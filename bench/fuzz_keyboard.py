"""Keyboard fuzz, the long form: random keys into the dashboard for as long as asked.

The suite runs `tests/fuzz/test_keyboard.py`: one seed, four phases of 3 s
(cards and table, each unfiltered and filtered), 100 keys a second, each
phase also opening one of the other screens for a stretch of its keys. This runs
the same driver (`tests/fuzz/keyboard.py`) for any number of seeds and any
phase length, against the same live fleet (a real agent that the keys start
and stop, a Livermore-style writer, every state of the screenshot fleet), on
a private redis-server, and reports what the keys reached and every problem:
an exception escaping the app, a background worker failing, an internal error
shown, or no answer to a key once a burst is over. Target: no problem.

Usage:
`.venv/bin/python bench/fuzz_keyboard.py [--seeds 1604,7,8] [--phase-seconds 60] [--rate 100]`
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from pathlib import Path

from _common import Report, at_least, bench_settings, exactly, redis_server, run_async

from tests.fuzz.keyboard import PHASES, SEED, FuzzReport, binding_keys, fuzz, fuzz_app, live_fleet
from tests.waiting import eventually


async def one_seed(url: str, seed: int, phase_s: float, rate: int, logs: Path) -> FuzzReport:
    """A fresh fleet and dashboard, fuzzed with `seed`."""
    with live_fleet(url, logs):
        app = fuzz_app(bench_settings(url))
        async with app.run_test(size=(120, 40)):
            await eventually(lambda: app.loaded.is_set() and app.history_loaded.is_set())
            report = await fuzz(app, seed=seed, phase_s=phase_s, rate=rate)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default=f"{SEED},1,2", help="comma-separated seeds")
    parser.add_argument("--phase-seconds", type=float, default=60.0)
    parser.add_argument("--rate", type=int, default=100, help="keys per second")
    args = parser.parse_args()
    seeds = [int(seed) for seed in args.seeds.split(",")]
    report = Report("fuzz_keyboard")
    runs: list[FuzzReport] = []
    with redis_server() as server, tempfile.TemporaryDirectory() as logs:
        for seed in seeds:
            runs.append(
                run_async(
                    lambda seed=seed: one_seed(
                        server.url, seed, args.phase_seconds, args.rate, Path(logs)
                    )
                )
            )
        landed: Counter[str] = Counter()
        pressed: Counter[str] = Counter()
        for run in runs:
            landed.update(run.landed_on)
            pressed.update(run.pressed)
        problems = [f"seed {run.seed}: {problem}" for run in runs for problem in run.problems]
        keys_sent = sum(run.keys_sent for run in runs)
        seconds = sum(run.seconds for run in runs)
        report.figures.update(
            seeds=seeds,
            phases=[phase.name for phase in PHASES],
            phase_seconds=args.phase_seconds,
            keys_sent=keys_sent,
            keys_per_second=round(keys_sent / seconds, 1) if seconds else None,
            keys_by_screen=dict(landed.most_common()),
            quits_asked=sum(run.quits_asked for run in runs),
            answer_after_burst_s_max=max((s for run in runs for s in run.drain_s), default=None),
            problems=problems,
        )
        report.check(exactly("problems", len(problems), 0, "problems"))
        report.check(at_least("keys per second", keys_sent / seconds, 0.9 * args.rate, "keys/s"))
        never = sorted(set(binding_keys()) - set(pressed))
        report.check(exactly("bound keys never pressed", len(never), 0, "keys"))
        dashboard_modes = [key for key in landed if key.startswith("dashboard ")]
        report.check(exactly("dashboard modes reached", len(dashboard_modes), 4, "modes"))
        report.emit(server)


if __name__ == "__main__":
    main()
