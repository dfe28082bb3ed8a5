"""Command flood: 10,000 commands to one real agent; every one answered or expired.

A `perseus agent` (no child) serves exchange 1 on a private redis-server; one
sender appends 10,000 pings to its command stream as fast as it can, then
reads each command's reply list until every command has a final reply or
nothing has changed for the wait. The stream is trimmed by age, never by
length, so no unread command is dropped: each is answered, or answered
`Command expired` when the agent reads it past the 30 s expiry.

Targets: 0 commands lost (no final reply), every command answered or expired.

Usage: `.venv/bin/python bench/command_flood.py [--commands 10000]`
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import Report, bench_settings, exactly, redis_server, run_async
from redis.asyncio import Redis

from perseus_core.store.control.sender import ControlClient
from tests.faults.flood import fates, flood

EXCHANGE_ID = 1
AGENT_ARGV = [sys.executable, "-c", "from perseus_cli.main import main; main()", "agent"]


def start_agent(url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSEUS_")}
    env.update(PERSEUS_REDIS_URL=url, PERSEUS_PUBLIC_IP="off", PERSEUS_BLOCK_MS="200")
    argv = [*AGENT_ARGV, "--exchange-id", str(EXCHANGE_ID), "--exchange-name", "coinbase"]
    with open(log, "wb") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)


def _text(log: Path) -> str:
    return log.read_text(errors="replace")


async def measure(url: str, count: int, log: Path, settle_s: float) -> dict[str, Any]:
    settings = bench_settings(url)
    redis = Redis.from_url(url, decode_responses=True)
    agent = start_agent(url, log)
    try:
        while "listening for commands" not in _text(log):
            if agent.poll() is not None:
                raise SystemExit(f"the agent exited: {_text(log)}")
            await asyncio.sleep(0.05)
        started = time.monotonic()
        sent = await flood(ControlClient(redis, settings), EXCHANGE_ID, count)
        sent_s = time.monotonic() - started
        told = await fates(redis, sent)
        last_change = time.monotonic()
        while told["lost"] and time.monotonic() - last_change < settle_s:
            await asyncio.sleep(0.5)
            now = await fates(redis, sent)
            if now != told:
                told, last_change = now, time.monotonic()
        return {
            "commands": count,
            "send_seconds": round(sent_s, 2),
            "all_final_seconds": round(time.monotonic() - started, 2),
            "answered": told["answered"],
            "expired": told["expired"],
            "lost": told["lost"],
            "stream_length_after": await redis.xlen(f"perseus:commands:{EXCHANGE_ID}"),
        }
    finally:
        agent.terminate()
        agent.wait(20)
        await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commands", type=int, default=10_000)
    parser.add_argument("--settle", type=float, default=10.0, metavar="SECONDS")
    args = parser.parse_args()
    report = Report("command_flood")
    with redis_server() as server, tempfile.TemporaryDirectory() as workdir:
        log = Path(workdir) / "agent.log"
        figures = run_async(lambda: measure(server.url, args.commands, log, args.settle))
        report.figures.update(figures)
        report.check(exactly("commands lost (no final reply)", figures["lost"], 0, "commands"))
        report.check(
            exactly(
                "commands answered or expired",
                figures["answered"] + figures["expired"],
                args.commands,
                "commands",
            )
        )
        report.emit(server)


if __name__ == "__main__":
    main()
