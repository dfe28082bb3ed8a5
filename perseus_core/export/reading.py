"""The exporter's fleet read: one pipelined snapshot, cached and shared.

Prometheus servers scrape on their own schedules, and a fleet is often
scraped by two of them (a pair for redundancy) or more. Each scrape asks
`FleetReadings.latest`, which returns the reading taken within the last
`cache_ms`, or takes a new one; scrapes that arrive while a read is in
flight wait for that same read. So however many servers scrape, Redis sees
at most one fleet read per `cache_ms`.

A reading is the fleet reader's snapshot (`FleetReader.snapshot`: the
catalog and every status key with its PTTL in one pipeline per node, the
agents present of every exchange in one more), and Redis's clock against
this host's.

When Redis cannot be read, the previous reading is kept (Prometheus keeps
seeing the last values), `redis_up` turns False and `redis_errors` counts
the failed reads; the outage is logged once when it starts and once when it
ends, never with a traceback.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from perseus_core.plumbing.connection import describe_redis_error
from perseus_core.plumbing.errors import REDIS_ERRORS
from perseus_core.plumbing.topology import RedisClient
from perseus_core.store.network import FleetReader, FleetSnapshot
from perseus_core.wire.errors import PerseusError
from perseus_core.wire.settings import Settings
from perseus_core.wire.text import clean
from perseus_core.wire.timeutil import Clock, system_clock

log = logging.getLogger(__name__)

READ_ERRORS: tuple[type[BaseException], ...] = (*REDIS_ERRORS, PerseusError)
"""What a fleet read can fail with; anything else is a bug and propagates."""


@dataclass(frozen=True, slots=True)
class FleetReading:
    """One read of the fleet, as every scrape within `cache_ms` sees it.

    Attributes:
        snapshot: the reader's snapshot (its `taken_at` is when the ages are judged).
        agents: exchange id -> agents present (unexpired presence members,
            judged on Redis's clock), for every listed exchange.
        clock_skew_s: Redis's clock minus this host's (positive: Redis is
            ahead), measured at the middle of a `TIME` round trip; None if
            it could not be read.
        read_s: how long the read took.
    """

    snapshot: FleetSnapshot
    agents: dict[int, int] = field(default_factory=dict)
    clock_skew_s: float | None = None
    read_s: float = 0.0


@dataclass(slots=True)
class ReadHealth:
    """How the exporter's reads of Redis are going, for its own metrics."""

    redis_up: bool = False
    """The latest read succeeded."""
    redis_errors: int = 0
    """Fleet reads that failed since the exporter started."""
    reads: int = 0
    """Fleet reads attempted since the exporter started."""
    problem: str | None = None
    """The current outage, as logged (None while reads succeed)."""


class FleetReadings:
    """The latest fleet reading, read again at most every `cache_ms`.

    Concurrent callers share one read in flight; a caller that is cancelled
    (a scraper that hung up) does not cancel the read the others wait for.
    """

    def __init__(
        self,
        redis: RedisClient,
        settings: Settings,
        *,
        cache_ms: int = 1000,
        clock: Clock = system_clock,
        reader: FleetReader | None = None,
    ) -> None:
        """Create the cache; nothing is read until `latest`.

        Args:
            redis: the exporter's client (short commands).
            settings: names the Redis server in log lines.
            cache_ms: how long a reading answers scrapes (0: every scrape reads).
            clock: this host's clock (ages, clock skew).
            reader: the fleet reader to use (one is made on `redis` otherwise).
        """
        self._redis = redis
        self._settings = settings
        self._cache_s = max(0, cache_ms) / 1000
        self._clock = clock
        self._reader = reader or FleetReader(redis, clock=clock)
        self._reading: FleetReading | None = None
        self._read_at: float | None = None
        self._in_flight: asyncio.Task[FleetReading | None] | None = None
        self.health = ReadHealth()

    @property
    def current(self) -> FleetReading | None:
        """The latest successful reading, however old (None before the first)."""
        return self._reading

    async def latest(self) -> FleetReading | None:
        """The reading to answer a scrape with: the cached one while it is
        younger than `cache_ms`, else a new one (shared with concurrent
        callers). When the new read fails, the previous reading (None if
        there was none) and `health` says so."""
        fresh = self._read_at is not None and time.monotonic() - self._read_at < self._cache_s
        if fresh:  # a failed read is cached too: a down Redis is not asked per scraper
            return self._reading
        task = self._in_flight
        if task is None:
            task = self._in_flight = asyncio.create_task(self._read(), name="exporter-read")
            task.add_done_callback(self._done)
        return await asyncio.shield(task)

    def _done(self, task: asyncio.Task[FleetReading | None]) -> None:
        if self._in_flight is task:
            self._in_flight = None

    async def _read(self) -> FleetReading | None:
        """One fleet read; on failure, log the outage once and keep the old reading."""
        health = self.health
        health.reads += 1
        started = time.monotonic()
        try:
            snapshot = await self._reader.snapshot(last_known=False, agents=True)
            skew = await self._clock_skew()
        except READ_ERRORS as exc:
            health.redis_errors += 1
            health.redis_up = False
            self._read_at = time.monotonic()
            problem = clean(self._describe(exc), 300)
            if problem != health.problem:
                log.warning("cannot read the fleet (keeping the last values): %s", problem)
            health.problem = problem
            return self._reading
        if health.problem is not None:
            log.info("reading the fleet again")
        health.redis_up, health.problem = True, None
        self._read_at = time.monotonic()
        agents = {view.exchange_id: len(view.agents) for view in snapshot.exchanges}
        self._reading = FleetReading(snapshot, agents, skew, self._read_at - started)
        return self._reading

    def _describe(self, exc: BaseException) -> str:
        if isinstance(exc, PerseusError):
            return str(exc)
        return describe_redis_error(self._settings, exc)

    async def _clock_skew(self) -> float:
        """Redis's clock minus this host's, judged at the middle of the round trip."""
        before = self._clock().timestamp()
        seconds, micros = await self._redis.time()
        after = self._clock().timestamp()
        return int(seconds) + int(micros) / 1e6 - (before + after) / 2
