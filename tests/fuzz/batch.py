"""Run hostile cases against the surfaces; in-process, or as a batch in a subprocess.

`check_case` writes one case on a clean database and has each wanted surface
read it. Run as a module (`python -m tests.fuzz.batch URL TZ-LABEL CASE...`),
it checks many cases in one process and prints one JSON object per line:
that is how the suite and the long form run cases under another `TZ`
without paying an interpreter start per case.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterable, Sequence

import redis as sync_redis

from perseus_core.wire.settings import Settings
from tests.fuzz.corpus import LIVE_NAME, VICTIM_NAME, Hostile, build_corpus, seed_baseline
from tests.fuzz.surfaces import (
    CLI_SURFACES,
    SURFACES,
    Reading,
    run_cli,
    run_dashboard,
    run_notify,
)


def fuzz_settings(url: str) -> Settings:
    """Fast settings: a dashboard that polls only when asked."""
    return Settings(
        redis_url=url,
        heartbeat_interval_ms=100,
        heartbeat_ttl_ms=400,
        public_ip="off",
        block_ms=200,
        socket_timeout_ms=1_000,
        refresh_ms=60_000,
    )


def check_case(url: str, case: Hostile, surfaces: Iterable[str] = SURFACES) -> dict[str, list[str]]:
    """Every wanted surface's problems with `case` (empty lists: it held)."""
    wanted = list(surfaces)
    with sync_redis.Redis.from_url(url) as client:
        client.flushdb()
        seed_baseline(client)
        case.write(client)
    readings = [run_cli(url, surface) for surface in CLI_SURFACES if surface in wanted]
    readings += asyncio.run(_async_surfaces(fuzz_settings(url), wanted))
    return {reading.surface: reading.problems(case) for reading in readings}


async def _async_surfaces(settings: Settings, wanted: Sequence[str]) -> list[Reading]:
    readings: list[Reading] = []
    if "notify" in wanted:
        readings.append(await run_notify(settings, [LIVE_NAME, VICTIM_NAME]))
    if "dashboard" in wanted:
        readings.append(await run_dashboard(settings))
    return readings


def main(argv: Sequence[str]) -> None:
    """`URL LABEL CASE...`: check the named cases on every surface, one JSON line each."""
    url, label, *names = argv
    cases = {case.name: case for case in build_corpus()}
    for name in names:
        found = check_case(url, cases[name])
        print(json.dumps({"case": name, "zone": label, "problems": found}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
