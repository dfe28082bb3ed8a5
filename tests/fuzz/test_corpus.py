"""The hostile corpus against the eight reader surfaces, on a real Redis.

Every case is read by the six CLI surfaces (in-process, through click's
CliRunner); a sample covering every family of the corpus is also read by the
notifier and the dashboard (both take a good part of a second per case to
start and settle). The out-of-range timestamps are read by every surface in two
subprocesses whose `TZ` is Asia/Tokyo and America/New_York, where a year-1 or
year-9999 moment overflows when converted. `bench/fuzz_hostile.py` runs every
case on every surface in several zones.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from perseus_cli.apps.redis_server import RedisServer
from tests.fuzz.batch import check_case
from tests.fuzz.corpus import Hostile, build_corpus
from tests.fuzz.surfaces import CLI_SURFACES, SURFACES

CORPUS = build_corpus()
ROOT = Path(__file__).resolve().parents[2]

SAMPLE_MARKERS = (
    "type-",
    "markup-action",
    "deep",
    "osc-hyperlink",
    "bidi-override",
    "ansi-clear",
    "overflow",
    "superscript",
)
"""Cases whose names hold one of these are read by all eight surfaces in the suite."""

ZONE_CASES = [c.name for c in CORPUS if "ts-year" in c.name]
ZONES = ("Asia/Tokyo", "America/New_York")


def in_sample(case: Hostile) -> bool:
    """Whether the suite reads `case` on every surface (else on the CLI ones)."""
    return any(marker in case.name for marker in SAMPLE_MARKERS)


def test_the_corpus_covers_what_the_issue_lists() -> None:
    names = " ".join(case.name for case in CORPUS)
    assert len(CORPUS) >= 57
    for family in ("markup", "ansi", "osc", "bidi", "megabyte", "invalid-utf8", "nan", "infinity"):
        assert family in names, family
    for family in ("state-unknown", "deep-nesting", "ts-year1", "ts-year9999", "type-catalog"):
        assert family in names, family
    for family in ("type-stream", "type-status", "type-presence", "empty", "huge-id", "negative"):
        assert family in names, family
    for family in (
        "presence-pid-overflow",
        "status-pid-overflow",
        "outcome-",
        "type-perseus:outcomes",
    ):
        assert family in names, family


@pytest.mark.parametrize("case", CORPUS, ids=lambda case: case.name)
def test_every_reader_holds(case: Hostile, redis_server: RedisServer) -> None:
    if redis_server.pid is None:
        redis_server.start()
    surfaces = SURFACES if in_sample(case) else tuple(CLI_SURFACES)
    found = check_case(redis_server.url, case, surfaces)
    assert set(found) == set(surfaces)
    failures = {surface: problems for surface, problems in found.items() if problems}
    assert not failures, failures


def test_out_of_range_timestamps_in_other_time_zones(redis_server: RedisServer) -> None:
    """Each zone in its own process (the zone is read once per process), in parallel."""
    if redis_server.pid is None:
        redis_server.start()
    processes = []
    for db, zone in enumerate(ZONES, start=1):
        url = redis_server.url.rsplit("/", 1)[0] + f"/{db}"
        env = {k: v for k, v in os.environ.items() if not k.startswith("PERSEUS_")}
        env["TZ"] = zone
        argv = [sys.executable, "-m", "tests.fuzz.batch", url, zone, *ZONE_CASES]
        processes.append(
            subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
            )
        )
    for zone, process in zip(ZONES, processes, strict=True):
        out, err = process.communicate(timeout=50)
        assert process.returncode == 0, err[-2000:]
        assert "Traceback" not in err, err[-2000:]
        results = [json.loads(line) for line in out.splitlines()]
        assert [r["case"] for r in results] == ZONE_CASES
        for result in results:
            assert set(result["problems"]) == set(SURFACES)
            failures = {s: p for s, p in result["problems"].items() if p}
            assert not failures, (zone, result["case"], failures)
