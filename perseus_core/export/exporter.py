"""`Exporter`: the fleet's metrics for Prometheus, served from one event loop.

Three parts share the loop: the cached fleet read (`FleetReadings`), the
activity tail that feeds the stream counters (`StreamCounters`), and the
HTTP server (`MetricsServer`). A scrape waits for the (cached, shared) fleet
read in the loop, copies the counters, and renders the page with
prometheus_client from a per-scrape `FleetCollector` in a worker thread: the
text of a large fleet takes long enough to build that the loop, which also
runs the tail and answers other scrapes, must not wait for it. The
collector holds only immutable data and copies, so the thread never touches
Redis or anything the loop changes.

A rendered page is kept until the next fleet read (or read attempt), so
scrapes within one `cache_ms` share the rendering too.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable

from prometheus_client.exposition import choose_encoder
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from perseus_core.export.collector import ExporterHealth, FleetCollector
from perseus_core.export.counters import StreamCounters
from perseus_core.export.http import MetricsServer, parse_listen
from perseus_core.export.reading import FleetReadings
from perseus_core.plumbing.connection import connect
from perseus_core.present import Timing
from perseus_core.store.activity import ActivityTail
from perseus_core.store.network import FleetReader
from perseus_core.wire.errors import PerseusError
from perseus_core.wire.settings import Settings
from perseus_core.wire.text import clean
from perseus_core.wire.timeutil import Clock, system_clock

log = logging.getLogger(__name__)


class Exporter:
    """Serves the fleet's metrics on `/metrics` until stopped.

    Usage::

        exporter = Exporter(settings)
        await exporter.start()      # listening; exporter.url says where
        ...
        await exporter.aclose()

    or `await exporter.run()`, which starts, waits for `stop()` and closes.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        listen: str | None = None,
        cache_ms: int | None = None,
        clock: Clock = system_clock,
    ) -> None:
        """Create an exporter; nothing is connected until `start`.

        Args:
            settings: Redis target, timings, and the defaults of the two below.
            listen: HOST:PORT to serve on (default `settings.exporter_listen`).
            cache_ms: how long one fleet read answers scrapes (default
                `settings.exporter_cache_ms`).
            clock: this host's clock (heartbeat ages, clock skew).

        Raises:
            ValueError: `listen` is not HOST:PORT.
        """
        self._settings = settings
        self._host, self._port = parse_listen(listen or settings.exporter_listen)
        self._cache_ms = settings.exporter_cache_ms if cache_ms is None else cache_ms
        self._clock = clock
        self._timing = Timing.from_settings(settings)
        self.counters = StreamCounters()
        self._stop = asyncio.Event()
        self._redis = connect(settings, retry=Retry(NoBackoff(), 0))
        self._names_redis = connect(settings, retry=Retry(NoBackoff(), 0))
        self.readings = FleetReadings(self._redis, settings, cache_ms=self._cache_ms, clock=clock)
        self._tail = ActivityTail(settings, FleetReader(self._names_redis).exchange_names)
        self._server = MetricsServer(self.render, self._host, self._port)
        self._tasks: list[asyncio.Task[None]] = []
        self._pages: dict[str, asyncio.Task[bytes]] = {}
        self._pages_of = -1

    @property
    def url(self) -> str:
        """Where the metrics are served (`http://127.0.0.1:9464/metrics`)."""
        return self._server.url

    async def start(self) -> None:
        """Start tailing the activity streams (from their end, now) and listen.

        Redis being down is no reason to fail: the tail retries and scrapes
        answer with `perseus_exporter_redis_up 0`.

        Raises:
            PerseusError: the address cannot be listened on.
        """
        try:
            await self._server.start()
        except OSError as exc:
            await self.aclose()
            reason = clean(exc.strerror or str(exc), 200)
            raise PerseusError(f"cannot listen on {self._host}:{self._port}: {reason}") from None
        await self._tail.start()
        self._tasks.append(asyncio.create_task(self._count(), name="exporter-tail"))

    async def run(self, ready: Callable[[], None] | None = None) -> None:
        """`start`, call `ready` (the URL is known then), serve until
        `stop()`, then close."""
        await self.start()
        try:
            if ready is not None:
                ready()
            await self._stop.wait()
        finally:
            await self.aclose()

    def stop(self) -> None:
        """Ask `run` to finish; safe from a signal handler."""
        self._stop.set()

    async def aclose(self) -> None:
        """Stop serving and tailing; close the connections."""
        await self._server.aclose()
        await self._tail.aclose()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, *self._pages.values(), return_exceptions=True)
        self._tasks.clear()
        await self._redis.aclose()
        await self._names_redis.aclose()

    async def _count(self) -> None:
        async for entry in self._tail:
            self.counters.count(entry)

    async def render(self, accept: str = "") -> tuple[bytes, str]:
        """The metrics page for a scrape whose Accept header is `accept`
        (the Prometheus text format, or OpenMetrics when asked), and its
        content type. Scrapes after the same fleet read share one page."""
        started = time.monotonic()
        await self.readings.latest()
        waited = time.monotonic() - started
        content_type = choose_encoder(accept)[1]
        generation = self.readings.health.reads
        if generation != self._pages_of:
            self._pages_of, self._pages = generation, {}
        page = self._pages.get(content_type)
        if page is None:
            reads = dataclasses.replace(self.readings.health)  # a copy for the thread
            health = ExporterHealth(reads, waited, self._tail.connected)
            collector = FleetCollector(
                self.readings.current, self.counters.copy(), health, self._timing
            )
            page = asyncio.create_task(asyncio.to_thread(collector.page, accept))
            self._pages[content_type] = page
        return await asyncio.shield(page), content_type
