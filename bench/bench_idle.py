"""Idle: the dashboard watching 10 quiet exchanges, CPU as a share of one core.

Ten real instances (`perseus_core.instance.Instance`, active, heartbeating at
the production 15 s interval) run in a helper process, so their status keys
change the way a real fleet's do. The dashboard polls every 5 s (its default),
follows the streams with blocking reads and repaints the heartbeat ages every
second. Nothing else happens.

Measured twice, over the same number of seconds after a 5 s settle:

- headless: the real app in this process (`App.run_test`), CPU from
  `time.process_time()`;
- terminal: `perseus --redis-url ...` as a subprocess on a pseudo-terminal
  (120x40, xterm-256color), so writing frames to a terminal is included; CPU
  from the kernel's accounting of that process (/proc/PID/stat).

Target: under 2% of one core (both).

Usage: `.venv/bin/python bench/bench_idle.py [--seconds 60]`
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path
from typing import Any

from _common import Report, at_most, bench_settings, exchange_name, redis_server, run_async

from perseus_core.plumbing.connection import connect
from perseus_core.wire import keys
from perseus_core.wire.models import CatalogEntry, ConnectionState
from perseus_core.wire.settings import Settings

FLEET = 10
SETTLE_S = 5.0
TARGET_PERCENT = 2.0


# --- the fleet (runs in its own process) ---------------------------------------------


async def run_fleet(url: str, size: int) -> None:
    """Ten active instances heartbeating at production settings until SIGTERM."""
    settings = bench_settings(url)  # production heartbeat: 15 s / 45 s
    redis = connect(settings)
    from perseus_core.instance import Instance

    instances = []
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        for exchange_id in range(1, size + 1):
            name = exchange_name(exchange_id)
            entry = CatalogEntry(id=exchange_id, name=name, display_name=name.title())
            await redis.hset(keys.CATALOG_KEY, str(exchange_id), entry.to_json())
            instance = Instance(
                redis,
                settings,
                exchange_id=exchange_id,
                exchange_name=name,
                hostname=f"trader-{exchange_id:02d}.eu-west.internal",
                admin_email="ops@example.com",
                admin_display_name="Ops Team",
                symbol_count=25 + exchange_id,
            )
            await instance.claim()
            for state in (
                ConnectionState.STARTING,
                ConnectionState.WARMING,
                ConnectionState.ACTIVE,
            ):
                await instance.transition(state)
            instances.append(instance)
        print("ready", flush=True)
        await stop.wait()
    finally:
        for instance in instances:
            await instance.close()
        await redis.aclose()


@contextlib.contextmanager
def fleet_process(url: str) -> Any:
    """The fleet in a subprocess, stopped (SIGTERM, then SIGKILL) however we leave."""
    proc = subprocess.Popen(
        [sys.executable, __file__, "--fleet", url, str(FLEET)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the fleet did not start: {line!r}")
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


# --- measurements -----------------------------------------------------------------------


async def headless(settings: Settings, seconds: float) -> dict[str, Any]:
    """CPU share of the real app in this process, headless."""
    from _tui import running_dashboard

    async with running_dashboard(settings) as (app, _pilot):
        await asyncio.sleep(SETTLE_S)
        online = sum(1 for view in app.views.values() if view.online)
        cpu0, wall0 = time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return {
        "seconds": round(wall, 1),
        "cpu_s": round(cpu, 3),
        "cpu_percent_of_one_core": round(cpu / wall * 100, 2),
        "exchanges_online_on_screen": online,
    }


def _process_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def terminal(url: str, seconds: float) -> dict[str, Any]:
    """CPU share of `perseus` on a pseudo-terminal, from the kernel's accounting."""
    if not Path("/proc/self/stat").exists():
        return {"skipped": "needs /proc to read another process's CPU time"}
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSEUS_")}
    env["TERM"] = "xterm-256color"
    proc = subprocess.Popen(
        [sys.executable, "-c", "from perseus_cli.main import main; main()", "--redis-url", url],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,
    )
    os.close(slave)
    written = 0
    stop_reading = threading.Event()

    def drain() -> None:
        nonlocal written
        while not stop_reading.is_set():
            try:
                chunk = os.read(master, 65536)
            except OSError:
                return
            if not chunk:
                return
            written += len(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        time.sleep(SETTLE_S)
        if proc.poll() is not None:
            raise RuntimeError(f"perseus exited with {proc.returncode} during start-up")
        cpu0, wall0, bytes0 = _process_cpu_s(proc.pid), time.perf_counter(), written
        time.sleep(seconds)
        cpu, wall = _process_cpu_s(proc.pid) - cpu0, time.perf_counter() - wall0
        out_bytes = written - bytes0
        os.write(master, b"q")
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.terminate()
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        stop_reading.set()
        with contextlib.suppress(OSError):
            os.close(master)
        reader.join(2)
    return {
        "seconds": round(wall, 1),
        "cpu_s": round(cpu, 3),
        "cpu_percent_of_one_core": round(cpu / wall * 100, 2),
        "terminal_output_bytes_per_s": round(out_bytes / wall, 1),
        "terminal": "120x40 xterm-256color pty",
        "cpu_resolution_s": round(1 / os.sysconf("SC_CLK_TCK"), 3),
    }


def main() -> None:
    """Parse arguments, run both measurements, print the JSON report (or be the fleet)."""
    if len(sys.argv) > 1 and sys.argv[1] == "--fleet":
        run_async(lambda: run_fleet(sys.argv[2], int(sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured window, each")
    args = parser.parse_args()
    report = Report("idle")
    with redis_server() as server, fleet_process(server.url):
        settings = bench_settings(server.url)
        report.figures["exchanges"] = FLEET
        report.figures["dashboard_refresh_ms"] = settings.refresh_ms
        report.figures["fleet_heartbeat_interval_ms"] = settings.heartbeat_interval_ms
        report.figures["headless"] = run_async(lambda: headless(settings, args.seconds))
        report.figures["terminal"] = terminal(server.url, args.seconds)
        report.check(
            at_most(
                "idle CPU, headless",
                report.figures["headless"]["cpu_percent_of_one_core"],
                TARGET_PERCENT,
                "% of one core",
            )
        )
        if "cpu_percent_of_one_core" in report.figures["terminal"]:
            report.check(
                at_most(
                    "idle CPU, on a terminal",
                    report.figures["terminal"]["cpu_percent_of_one_core"],
                    TARGET_PERCENT,
                    "% of one core",
                )
            )
        report.emit(server)


if __name__ == "__main__":
    main()
