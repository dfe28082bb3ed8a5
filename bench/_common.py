"""What every benchmark shares: its own redis-server, figures with targets, one JSON line.

A benchmark is only worth something if it can be rerun anywhere and read at a
glance, so each script starts a private redis-server (never one that is
already running, whose other clients would skew the figures), reports every
figure next to the target it is judged against, and always removes the
server again, also when it fails or is interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import os
import platform
import random
import resource
import signal
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/bench_x.py` from a checkout
    sys.path.insert(0, str(ROOT))

from redis.asyncio import Redis  # noqa: E402

from perseus_cli.apps.redis_server import RedisServer  # noqa: E402
from perseus_core.plumbing.topology import RedisClient  # noqa: E402
from perseus_core.wire import keys  # noqa: E402
from perseus_core.wire.models import (  # noqa: E402
    CatalogEntry,
    CommandEntry,
    ConnectionState,
    ErrorEntry,
    InstanceStatus,
    StateTransitionEntry,
)
from perseus_core.wire.settings import Settings  # noqa: E402
from perseus_core.wire.timeutil import format_ts, to_epoch_ms  # noqa: E402

EXCHANGES = ("coinbase", "kraken", "binance", "bitstamp", "gemini", "okx", "bybit", "kucoin")
_STATES = (ConnectionState.ACTIVE,) * 6 + (ConnectionState.WARMING, ConnectionState.IDLE)


def _raise_exit(signum: int, _frame: FrameType | None) -> None:
    # SIGTERM would otherwise end the interpreter without running `finally`
    # blocks, leaving the benchmark's redis-server behind.
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def redis_server(*args: str) -> Iterator[RedisServer]:
    """A private redis-server for one benchmark, removed however the run ends.

    Extra `args` are applied with CONFIG SET after start (for example
    `("maxmemory-policy", "noeviction")`), keeping RedisServer's own
    invariants (loopback, no persistence, own directory).
    """
    signal.signal(signal.SIGTERM, _raise_exit)
    server = RedisServer()
    try:
        server.start()
        if args:
            import redis as sync_redis

            with sync_redis.Redis.from_url(server.url) as client:
                pairs = list(zip(args[::2], args[1::2], strict=True))
                for name, value in pairs:
                    client.config_set(name, value)
        yield server
    finally:
        server.close()


def exchange_name(exchange_id: int) -> str:
    """A realistic, unique exchange name for a synthetic fleet."""
    return f"{EXCHANGES[exchange_id % len(EXCHANGES)]}-{exchange_id}"


def status_payload(exchange_id: int, now: datetime | None = None) -> str:
    """A realistic status payload, as an agent writes it (every field set)."""
    now = now or datetime.now(UTC)
    state = _STATES[exchange_id % len(_STATES)]
    host = f"trader-{exchange_id % 97:02d}.eu-west.internal"
    return InstanceStatus(
        exchange_id=exchange_id,
        exchange_name=exchange_name(exchange_id),
        hostname=host,
        ip_address=f"203.0.113.{exchange_id % 250 + 1}",
        country_code="DE",
        admin_email="ops@example.com",
        admin_display_name="Ops Team",
        connection_state=state,
        symbol_count=25 + exchange_id % 200,
        connected_at=now - timedelta(hours=4) if state is ConnectionState.ACTIVE else None,
        last_heartbeat=now,
        last_state_change=now - timedelta(hours=4),
        registered_at=now - timedelta(hours=5),
        last_error=None,
        last_error_at=None,
        instance_id=f"{host}:{exchange_id}:4242:1760000000000",
        epoch=3,
        pid=4242,
        version="0.1.0",
    ).to_json()


async def seed_fleet(
    redis: RedisClient, size: int, *, ttl_ms: int = 3_600_000, flush: bool = True
) -> None:
    """A catalog of `size` exchanges (ids 1..size), each with a live status key.

    The keys get a long TTL so they stay online for the whole run without
    anyone heartbeating (which would add its own CPU to the measurement).
    On a cluster the flush empties every master and the pipeline is split
    per node by the client: one key per command, so no slot is crossed.
    """
    if flush:
        await redis.flushall()
    now = datetime.now(UTC)
    batch = 1_000
    for start in range(1, size + 1, batch):
        ids = range(start, min(size, start + batch - 1) + 1)
        async with redis.pipeline(transaction=False) as pipe:
            catalog = {
                str(i): CatalogEntry(
                    id=i,
                    name=exchange_name(i),
                    display_name=f"{EXCHANGES[i % len(EXCHANGES)].title()} #{i}",
                ).to_json()
                for i in ids
            }
            pipe.hset(keys.CATALOG_KEY, mapping=catalog)  # type: ignore[arg-type]
            for i in ids:
                pipe.set(keys.status_key(i), status_payload(i, now), px=ttl_ms)
            await pipe.execute()


async def touch_fleet(
    redis: RedisClient, size: int, *, ttl_ms: int = 3_600_000, now: datetime | None = None
) -> None:
    """Rewrite every status with a new lastHeartbeat (`now`, default the real
    time), as a round of heartbeats would."""
    now = now or datetime.now(UTC)
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(1, size + 1):
            pipe.set(keys.status_key(i), status_payload(i, now), px=ttl_ms)
        await pipe.execute()


RESTART = ("active", "stopping", "stopped", "idle", "starting", "warming", "active")
"""The transitions of an operator's restart: the run ends at `stopped`, a new one warms up."""
FLAP = ("active", "warming", "active")
"""A reconnect: the feed dropped, the instance warmed up again."""
ERRORS = (
    "websocket closed: 1006 abnormal closure",
    "rate limited (429): retry after 2 s",
    "order book checksum mismatch on BTC-USD, resubscribing",
    "REST snapshot timed out after 10000 ms",
)


def _hour_of_activity(
    exchange_id: int, start: datetime, span: timedelta
) -> tuple[list[tuple[datetime, dict[str, str]]], list[tuple[datetime, dict[str, str]]]]:
    """One exchange's entries over [start, start + span): (shared stream, Perseus stream).

    The mix, fixed per exchange id (seeded), per hour: one in twenty flaps
    (about 15 reconnects, 30 transitions, and 20 errors), three in twenty are
    restarted by an operator (stop and start commands, each sent and
    answered, the 7 transitions of a restart, a few errors), the rest are
    quiet (0-3 errors, one in four reconnects once). Every exchange also has
    the transition into `active` four hours earlier that tells its state at
    the window's start.
    """
    rng = random.Random(exchange_id)
    name = exchange_name(exchange_id)
    who = {"exchange_id": str(exchange_id), "exchange_name": name,
           "hostname": f"trader-{exchange_id % 97:02d}.eu-west.internal",
           "ip": f"203.0.113.{exchange_id % 250 + 1}"}  # fmt: skip
    hours = span / timedelta(hours=1)
    shared: list[tuple[datetime, dict[str, str]]] = []
    ours: list[tuple[datetime, dict[str, str]]] = []

    def at(fraction: float) -> datetime:
        return start + span * fraction

    def moves(states: Sequence[str], first: datetime, step: timedelta) -> None:
        for index, (src, dst) in enumerate(itertools.pairwise(states)):
            moment = first + step * index
            fields = StateTransitionEntry(
                timestamp=format_ts(moment), from_state=src, to_state=dst, **who
            ).to_fields()
            shared.append((moment, fields))

    def error(moment: datetime, state: str = "active") -> None:
        fields = ErrorEntry(
            timestamp=format_ts(moment), error=rng.choice(ERRORS), state=state, **who
        ).to_fields()
        shared.append((moment, fields))

    moves(("warming", "active"), start - timedelta(hours=4), timedelta(0))
    profile = exchange_id % 20
    if profile == 0:
        for _ in range(round(15 * hours)):
            moves(FLAP, at(rng.uniform(0, 0.95)), timedelta(seconds=rng.uniform(2, 20)))
        for _ in range(round(20 * hours)):
            error(at(rng.random()))
    elif profile <= 3:
        first = at(rng.uniform(0.05, 0.9))
        moves(RESTART, first, timedelta(seconds=3))
        for offset_s, command in ((-1, "stop"), (8, "start")):
            moment = first + timedelta(seconds=offset_s)
            correlation = f"{exchange_id:08x}-{command}-{rng.getrandbits(64):016x}"
            for status, delay_s in (("ack", 0.05), ("success", 0.9)):
                fields = CommandEntry(
                    command=command, correlation_id=correlation, operator="ops@bastion-1",
                    status=status, message="" if status == "ack" else f"{command} done",
                    timestamp=format_ts(moment + timedelta(seconds=delay_s)), **who,
                ).to_fields()  # fmt: skip
                ours.append((moment + timedelta(seconds=delay_s), fields))
        for _ in range(rng.randint(1, 4)):
            error(at(rng.random()))
    else:
        for _ in range(rng.randint(0, 3)):
            error(at(rng.random()))
        if rng.random() < 0.25:
            moves(FLAP, at(rng.uniform(0, 0.95)), timedelta(seconds=rng.uniform(2, 20)))
    return shared, ours


async def seed_history(
    redis: Redis, size: int, *, end: datetime, span: timedelta = timedelta(hours=1)
) -> int:
    """Fill the two activity streams of exchanges 1..size with `span` of
    realistic activity ending at `end` (`_hour_of_activity`), each entry under
    a stream ID of its own time, as its writer would have added it. Returns
    how many entries were written."""
    written = 0
    batch = 100
    for first in range(1, size + 1, batch):
        async with redis.pipeline(transaction=False) as pipe:
            for exchange_id in range(first, min(size, first + batch - 1) + 1):
                shared, ours = _hour_of_activity(exchange_id, end - span, span)
                name = exchange_name(exchange_id)
                for key, entries in ((keys.activity_key(name), shared),
                                     (keys.perseus_activity_key(name), ours)):  # fmt: skip
                    last_ms, seq = -1, 0
                    for moment, fields in sorted(entries, key=lambda pair: pair[0]):
                        stamp = to_epoch_ms(min(moment, end))
                        seq = seq + 1 if stamp == last_ms else 0
                        last_ms = stamp
                        pipe.xadd(key, fields, id=f"{stamp}-{seq}")  # type: ignore[arg-type]
                        written += 1
            await pipe.execute()
    return written


def bench_settings(url: str, **overrides: Any) -> Settings:
    """Settings for a benchmark run: no public IP lookups, generous timeouts."""
    values: dict[str, Any] = {
        "redis_url": url,
        "public_ip": "off",
        "socket_timeout_ms": 30_000,
    }
    values.update(overrides)
    return Settings(**values)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (p99 of 200 samples is the 198th smallest)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def median(values: Sequence[float]) -> float:
    """Median, NaN for no values."""
    return statistics.median(values) if values else math.nan


def rss_bytes() -> int:
    """Current resident set size of this process (not the peak)."""
    try:
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        # No /proc: fall back to the peak, the best portable figure there is.
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(peak if sys.platform == "darwin" else peak * 1024)


def cpu_seconds() -> float:
    """CPU time (user + system) used by this process so far, all threads."""
    return time.process_time()


def ms(seconds: float) -> float | None:
    """Seconds to milliseconds, rounded for display; None for no figure (NaN)."""
    if math.isnan(seconds):
        return None
    return round(seconds * 1000, 3)


def _figure(value: float | None) -> float:
    return math.nan if value is None else float(value)


@dataclass
class Check:
    """One figure judged against its target."""

    name: str
    value: float
    unit: str
    target: str
    met: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready, value rounded so the output stays readable."""
        value: float | bool | None = None if math.isnan(self.value) else round(self.value, 3)
        if self.target == "true":
            value = bool(self.value)
        return {
            "name": self.name,
            "value": value,
            "unit": self.unit,
            "target": self.target,
            "met": self.met,
        }


def at_most(name: str, value: float | None, limit: float, unit: str) -> Check:
    """A figure that must stay below `limit` (no figure: not met)."""
    number = _figure(value)
    return Check(
        name, number, unit, f"< {limit:g} {unit}", not math.isnan(number) and number < limit
    )


def at_least(name: str, value: float | None, floor: float, unit: str) -> Check:
    """A figure that must reach `floor` (no figure: not met)."""
    number = _figure(value)
    return Check(
        name, number, unit, f">= {floor:g} {unit}", not math.isnan(number) and number >= floor
    )


def exactly(name: str, value: float | None, expected: float, unit: str) -> Check:
    """A figure that must equal `expected`."""
    number = _figure(value)
    return Check(name, number, unit, f"= {expected:g} {unit}".strip(), number == expected)


def holds(name: str, ok: bool) -> Check:
    """A property that must hold (reported as 1 or 0)."""
    return Check(name, float(ok), "", "true", ok)


@dataclass
class Report:
    """The one JSON object a benchmark prints: environment, figures, checks, verdict."""

    benchmark: str
    figures: dict[str, Any] = field(default_factory=dict)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def check(self, item: Check) -> Check:
        """Add a judged figure."""
        self.checks.append(item)
        return item

    def as_dict(self, server: RedisServer | None = None) -> dict[str, Any]:
        """The whole report; `met` is true only if every check is."""
        out: dict[str, Any] = {
            "benchmark": self.benchmark,
            "environment": environment(server),
            "figures": self.figures,
            "checks": [c.as_dict() for c in self.checks],
            "met": bool(self.checks) and all(c.met for c in self.checks),
        }
        if self.notes:
            out["notes"] = self.notes
        return out

    def emit(self, server: RedisServer | None = None, *, one_line: bool = False) -> None:
        """Print the report as one JSON object; `one_line` prints it on one
        line, so runs collected in one file stay one line each."""
        indent = None if one_line else 2
        print(json.dumps(_json_safe(self.as_dict(server)), indent=indent, allow_nan=False))


def _json_safe(value: Any) -> Any:
    """NaN and infinities (no figure, never happened) become null: strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def environment(server: RedisServer | None = None) -> dict[str, Any]:
    """What the figures depend on: CPUs, Python, redis-py parser, Redis version."""
    env: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
        "cpus": os.cpu_count(),
    }
    try:
        import hiredis  # noqa: F401

        env["redis_py_parser"] = "hiredis"
    except ImportError:
        env["redis_py_parser"] = "python"
    if server is not None and server.pid is not None:
        import redis as sync_redis

        with sync_redis.Redis.from_url(server.url) as client:
            env["redis_version"] = client.info("server").get("redis_version")
    return env


async def wait_until(condition: Callable[[], bool], limit_s: float, step_s: float = 0.01) -> bool:
    """Poll `condition` until it holds (True) or `limit_s` passed (False).

    For conditions nothing signals (an app's state between frames); the poll
    costs the benchmark a little CPU, never the measured cycle.
    """
    deadline = time.perf_counter() + limit_s
    while not condition():
        if time.perf_counter() > deadline:
            return False
        await asyncio.sleep(step_s)
    return True


def run_async(main: Callable[[], Any]) -> Any:
    """asyncio.run with the event loop's debug mode off, whatever the environment says."""
    os.environ.pop("PYTHONASYNCIODEBUG", None)
    return asyncio.run(main())


def summary_ms(values: Sequence[float]) -> dict[str, Any]:
    """Median, p90, p99 and max of durations in seconds, as milliseconds."""
    return {
        "median_ms": ms(median(values)),
        "p90_ms": ms(percentile(values, 90)),
        "p99_ms": ms(percentile(values, 99)),
        "max_ms": ms(max(values)) if values else None,
        "samples": len(values),
    }


@dataclass
class RedisTarget:
    """Where a benchmark's Redis runs: one server, or every node of a local cluster."""

    url: str
    servers: list[RedisServer]
    cluster: bool

    def cpu_seconds(self) -> float:
        """used_cpu_sys + used_cpu_user (INFO cpu) summed over every server.

        Every node counts, replicas included: a replica applies what its
        master writes, and a cluster's nodes ping each other on their own.
        """
        import redis as sync_redis

        total = 0.0
        for server in self.servers:
            with sync_redis.Redis.from_url(server.url) as client:
                info = client.info("cpu")
            total += float(info["used_cpu_sys"]) + float(info["used_cpu_user"])
        return total


@contextlib.contextmanager
def redis_target(*, cluster: bool, keyspace_events: str = "") -> Iterator[RedisTarget]:
    """One private redis-server, or a local Redis Cluster of 3 masters and 3
    replicas, with `notify-keyspace-events` set to `keyspace_events`; removed
    however the run ends (SIGTERM included), like `redis_server`."""
    if not cluster:
        config = ("notify-keyspace-events", keyspace_events) if keyspace_events else ()
        with redis_server(*config) as server:
            yield RedisTarget(server.url, [server], cluster=False)
        return
    from perseus_cli.apps.redis_cluster import RedisClusterNodes

    signal.signal(signal.SIGTERM, _raise_exit)
    with RedisClusterNodes(keyspace_events=keyspace_events) as nodes:
        yield RedisTarget(nodes.url, list(nodes.nodes), cluster=True)


# --- activity producers (each in its own process) ------------------------------------

_PRODUCER_TICK_S = 0.01
_PRODUCER_MAXLEN = 500
"""Approximate length each stream is trimmed to, so a long run's streams do not
fill Redis's memory (an agent trims by age instead; the dashboard reads the same)."""


def produce_activity(
    url: str, *, cluster: bool, rate: float, seconds: float, exchanges: int, part: int, parts: int
) -> dict[str, Any]:
    """Append `rate` entries/s to the activity streams of exchanges 1..`exchanges`
    for `seconds` (or until SIGTERM), pipelined on a 10 ms schedule. A producer
    that falls behind still stops after `seconds`: the rate it reaches is
    reported, not stretched over a longer run.

    Producer `part` of `parts` writes every `parts`-th entry of the sequence
    that cycles over the fleet, so several processes together spread their
    entries evenly over every stream. Entries alternate between errors and
    transitions (the only kinds `logs:network:*` holds); each entry's fields
    come from a template built once per exchange, so the producer's own cost
    stays small next to Redis's.
    """
    import redis as sync_redis
    from redis.cluster import RedisCluster

    stopping = False

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)  # Ctrl-C reaches the producers too: the parent ends them
    templates: dict[int, tuple[str, dict[str, str], dict[str, str]]] = {}

    def template(exchange_id: int) -> tuple[str, dict[str, str], dict[str, str]]:
        if exchange_id not in templates:
            name = exchange_name(exchange_id)
            host, ip = "trader-01.eu-west.internal", "203.0.113.7"
            error = ErrorEntry(
                timestamp="", error="", state="active", exchange_id=str(exchange_id),
                exchange_name=name, hostname=host, ip=ip,
            ).to_fields()  # fmt: skip
            move = StateTransitionEntry(
                timestamp="", from_state="warming", to_state="active",
                exchange_id=str(exchange_id), exchange_name=name, hostname=host, ip=ip,
            ).to_fields()  # fmt: skip
            templates[exchange_id] = (keys.activity_key(name), error, move)
        return templates[exchange_id]

    per_tick = max(1, round(rate * _PRODUCER_TICK_S))
    total = int(rate * seconds)
    sent = 0
    late_ticks = 0
    client: sync_redis.Redis | RedisCluster = (
        RedisCluster.from_url(url, decode_responses=True)
        if cluster
        else sync_redis.Redis.from_url(url, decode_responses=True)
    )
    start = time.perf_counter()
    try:
        tick = 0
        while sent < total and not stopping and time.perf_counter() - start < seconds:
            delay = start + tick * _PRODUCER_TICK_S - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            elif delay < -_PRODUCER_TICK_S:
                late_ticks += 1
            stamp = format_ts(datetime.now(UTC))
            pipe = client.pipeline(transaction=False)
            for _ in range(int(min(per_tick, total - sent))):
                sequence = sent * parts + part
                key, error, move = template(sequence % exchanges + 1)
                if sequence % 2:
                    fields = {**error, "timestamp": stamp, "error": f"load-{sequence:08d} lag"}
                else:
                    fields = {**move, "timestamp": stamp}
                pipe.xadd(key, fields, maxlen=_PRODUCER_MAXLEN, approximate=True)  # type: ignore[arg-type]
                sent += 1
            pipe.execute()
            tick += 1
    finally:
        client.close()
    elapsed = time.perf_counter() - start
    return {
        "sent": sent,
        "seconds": round(elapsed, 3),
        "rate_per_s": round(sent / elapsed, 1) if elapsed else None,
        "late_ticks": late_ticks,
    }


class Producers:
    """Producer processes appending activity together at a combined rate.

    Separate processes, so the measured dashboard shares nothing with them
    but the machine. Used as an async context manager, which kills any
    producer still running on the way out, however the block ends; `stop`
    ends them early and collects what they sent. A producer also ends by
    itself after its `seconds`, so none outlives a benchmark killed outright
    for long.
    """

    PER_PROCESS_RATE = 5_000
    """Entries/s one producer is asked for at most; above it, more processes."""

    def __init__(self, target: RedisTarget, rate: float, seconds: float, exchanges: int) -> None:
        self.target = target
        self.rate = rate
        self.seconds = seconds
        self.exchanges = exchanges
        self.parts = max(1, math.ceil(rate / self.PER_PROCESS_RATE))
        self._processes: list[asyncio.subprocess.Process] = []
        self.started = 0.0

    async def start(self) -> Producers:
        """Start every producer process."""
        self.started = time.perf_counter()
        for part in range(self.parts):
            self._processes.append(
                await asyncio.create_subprocess_exec(
                    sys.executable, __file__, "produce", self.target.url,
                    "cluster" if self.target.cluster else "single",
                    str(self.rate / self.parts), str(self.seconds),
                    str(self.exchanges), str(part), str(self.parts),
                    stdout=asyncio.subprocess.PIPE,
                )
            )  # fmt: skip
        return self

    @property
    def running(self) -> bool:
        """Whether any producer is still appending."""
        return any(process.returncode is None for process in self._processes)

    async def stop(self, *, limit_s: float = 30.0) -> dict[str, Any]:
        """Ask every producer to stop (SIGTERM), collect what each sent, and
        kill any that does not end within `limit_s`. The combined figures."""
        outputs: list[dict[str, Any]] = []
        for process in self._processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()
        for process in self._processes:
            try:
                out, _ = await asyncio.wait_for(process.communicate(), limit_s)
            except TimeoutError:
                process.kill()
                await process.wait()
                continue
            lines = out.decode().strip().splitlines()
            if lines:
                outputs.append(json.loads(lines[-1]))
        self._processes.clear()
        sent = sum(output["sent"] for output in outputs)
        seconds = max((output["seconds"] for output in outputs), default=0.0)
        return {
            "asked_rate_per_s": self.rate,
            "processes": self.parts,
            "processes_reporting": len(outputs),
            "sent": sent,
            "seconds": seconds,
            "achieved_rate_per_s": round(sent / seconds, 1) if seconds else None,
            "late_ticks": sum(output["late_ticks"] for output in outputs),
        }

    async def __aenter__(self) -> Producers:
        return await self.start()

    async def __aexit__(self, *_exc: object) -> None:
        # Whatever happened: no producer outlives the measurement.
        for process in self._processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()


if __name__ == "__main__" and sys.argv[1:2] == ["produce"]:
    _url, _mode, _rate, _seconds, _exchanges, _part, _parts = sys.argv[2:9]
    print(
        json.dumps(
            produce_activity(
                _url, cluster=_mode == "cluster", rate=float(_rate), seconds=float(_seconds),
                exchanges=int(_exchanges), part=int(_part), parts=int(_parts),
            )
        ),
        flush=True,
    )  # fmt: skip
