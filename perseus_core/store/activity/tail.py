"""A live feed of every exchange's activity stream, in arrival order.

Where it starts. With `start="$"` only entries appended after `start()`
(or the first iteration) are yielded: a stream that exists then starts
after its newest entry. The tail also notes the Redis server's time when
it starts; a stream that does not exist yet, or that belongs to an
exchange the names provider reports only later, starts from that moment,
so entries written after the tail started are not missed even when the
exchange is noticed a few seconds late, and older history (which
`ActivityLog.page` serves) is not replayed. With `start={name: id}` the
named streams resume after the given IDs (for example a previous tail's
`positions`); other streams behave as with "$".

Which streams. Each exchange's shared stream and its Perseus-only stream
(`perseus:activity:{name}`), merged into one feed. The names provider (for
every catalog and online exchange, `FleetReader.exchange_names`) is asked
again at most every `names_every_s`, checked on every loop. Streams are added, never dropped:
an exchange that leaves the catalog or goes offline writes its last
entries (stopping, stopped) around that moment, and they must not be lost.

Connection loss. The tail reads on after a reconnect from exactly the last
ID it read per stream (see `StreamPositions`). It retries with
exponential backoff (see `TailHealth`), exposing `connected`,
`last_error` and `retry_in_s` for the UI. A key that is not a
stream is set aside (and named in `last_error`) instead of breaking the
read of every other stream.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from perseus_core.plumbing.connection import connect_blocking, describe_redis_error
from perseus_core.plumbing.errors import REDIS_ERRORS, TRANSIENT_ERRORS
from perseus_core.plumbing.streams import xread_rows
from perseus_core.plumbing.tasks import raise_if_cancelling
from perseus_core.plumbing.topology import RedisClient
from perseus_core.store.activity.cursors import (
    exchange_stream_keys,
    id_order,
    just_before,
    stream_label,
    stream_name,
)
from perseus_core.store.activity.guard import Closed, CloseGuard
from perseus_core.store.activity.health import TailHealth
from perseus_core.store.activity.positions import StreamPositions, parse_start
from perseus_core.store.activity.reads import StreamReader, stream_reader, time_and_newest
from perseus_core.wire.errors import PerseusError
from perseus_core.wire.models import ActivityEntry, parse_entry
from perseus_core.wire.settings import Settings

log = logging.getLogger(__name__)

NamesProvider = Callable[[], Awaitable[list[str]]]
"""Returns the exchange names whose streams a tail should follow."""

_PROVIDER_ERRORS: tuple[type[BaseException], ...] = (*REDIS_ERRORS, PerseusError)


class ActivityTail(TailHealth):
    """A live feed of every exchange's activity stream, in arrival order.

    Reads with `XREAD BLOCK` on a dedicated client (`connect_blocking`, whose
    socket timeout exceeds the block time) and yields `ActivityEntry` objects
    as they are appended::

        async with ActivityTail(settings, names) as tail:
            async for entry in tail:
                ...

    See the module docstring for where it starts, which streams it follows
    and how it survives a connection loss.

    On a Redis Cluster, where one XREAD may not span slots, the streams are
    read per slot group or per node instead (see `reads`).

    Close it with `aclose()` (or `async with`); `aclose()` may be called from
    another task, and the iteration then simply ends. Cancelling the task that
    iterates is clean as well. One consumer at a time.
    """

    def __init__(
        self,
        settings: Settings,
        names: NamesProvider,
        start: str | Mapping[str, str] = "$",
        *,
        count: int = 500,
        names_every_s: float = 3.0,
        max_backoff_s: float = 1.0,
    ) -> None:
        """Create a tail; nothing is connected until `start()` or iteration.

        Args:
            settings: Redis target; `block_ms` is the XREAD block time.
            names: the exchange names to follow (the caller decides which:
                this layer does not know the catalog).
            start: "$" for new entries only, or a mapping of exchange name (or
                stream key) to the last ID already seen ("$" as a value means
                "new only" for that stream).
            count: most entries read per stream per call; large, so a burst is
                drained in few round trips. Over many streams the reader
                shares out fewer (`reads.per_stream`), so one reply stays small.
            names_every_s: how often the names provider is asked again.
            max_backoff_s: cap of the reconnect backoff. One connection
                attempt a second costs Redis nothing, and a tail that waits
                longer misses the moment a replica takes over (a cluster
                failover is over in about 2 s).

        Raises:
            ValueError: `start` is neither "$" nor a mapping of valid IDs.
        """
        super().__init__(settings, max_backoff_s)
        self._names_provider = names
        self._count = count
        self._names_every_s = names_every_s
        self._block_ms = settings.block_ms
        self._streams = StreamPositions(parse_start(start))
        self._client: RedisClient | None = None
        self._reader: StreamReader | None = None
        self._buffer: deque[tuple[str, dict[str, str], str]] = deque()
        """Rows read and not yet delivered: (entry ID, fields, stream key), each
        parsed only as it is delivered, so a reply of thousands of entries
        never holds the event loop for the time it takes to parse them all."""
        self._floor_guessed_at: float | None = None
        self._names_at: float | None = None
        self._started = False
        self._guard = CloseGuard()

    # --- state for the UI (see also `TailHealth`) ----------------------------

    @property
    def streams(self) -> list[str]:
        """Exchange names (lower-cased) of every stream being followed."""
        return self._streams.names()

    @property
    def positions(self) -> dict[str, str]:
        """Per stream label (the exchange name for its shared stream,
        `perseus:activity:{name}` for its Perseus-only one), the ID to resume after: the last entry
        yielded, or where the stream started if none was. Pass it as `start`
        of a new tail to continue without gap or duplicate."""
        return self._streams.resume_points()

    # --- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Fix the starting point now (idempotent; iteration calls it too).

        Entries appended after this returns are guaranteed to be yielded. If
        Redis cannot be reached, this host's clock stands in for the server's
        and the iteration keeps retrying.
        """
        if self._started or self._guard.closed:
            return
        self._started = True
        client = self._client = connect_blocking(self._settings)
        # Our own loop retries with backoff and reports it; the client's
        # built-in retries would only hide an outage for seconds.
        client.set_retry(Retry(NoBackoff(), 0))
        self._reader = stream_reader(client)
        streams = self._streams
        try:
            names = await self._read_names()
            wanted = dict.fromkeys([*streams.start_ids, *exchange_stream_keys(names or [])])
            unresolved = [k for k in wanted if streams.start_ids.get(k) is None]

            try:
                results = await self._guard.run(lambda: time_and_newest(client, unresolved))
                if isinstance(results[0], Exception):
                    raise results[0]
                seconds, micros = results[0]
                streams.floor = just_before(int(seconds) * 1000 + int(micros) // 1000)
                self._succeeded()
            except REDIS_ERRORS as exc:
                raise_if_cancelling()  # a cancellation redis-py turned into an error
                streams.floor = just_before(int(time.time() * 1000))
                self._floor_guessed_at = time.monotonic()
                results = [None] + [[] for _ in unresolved]
                self._failed(exc)
            newest = dict(zip(unresolved, results[1:], strict=True))
            for key in wanted:
                explicit = streams.start_ids.get(key)
                found = newest.get(key)
                if isinstance(found, ResponseError):
                    streams.follow(key, streams.floor)
                    self._exclude(key, str(found))
                elif explicit is not None:
                    streams.follow(key, explicit)
                else:
                    streams.follow(key, found[0][0] if found else streams.floor)
        except Closed:
            return

    async def aclose(self) -> None:
        """Stop: interrupt any read in flight and close the connection.

        Safe to call more than once and from another task than the one
        iterating (whose loop then ends). The connections are closed even when
        this close is itself cancelled while it waits for the read in flight
        (a second cancellation at shutdown): a client left open would be
        finalised after its event loop is gone.
        """
        try:
            await self._guard.close()
        finally:
            try:
                if self._reader is not None:
                    await self._reader.aclose()
            finally:
                client, self._client = self._client, None
                if client is not None:
                    await client.aclose()

    async def __aenter__(self) -> ActivityTail:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __aiter__(self) -> ActivityTail:
        return self

    async def __anext__(self) -> ActivityEntry:
        try:
            while not self._buffer:
                if self._guard.closed:
                    raise StopAsyncIteration
                if not self._started:
                    await self.start()
                    continue
                await self._read_once()
        except Closed:
            raise StopAsyncIteration from None
        if self._guard.closed:
            raise StopAsyncIteration
        eid, fields, key = self._buffer.popleft()
        entry = parse_entry(eid, fields, stream_name(key), key)
        self._streams.delivered(entry)
        return entry

    # --- the loop ----------------------------------------------------------

    async def _read_once(self) -> None:
        """One turn: wait out a backoff, refresh names when due, one XREAD."""
        await self._guard.sleep(self._retry_wait_s())
        if self._guard.closed:
            raise Closed
        if self._floor_guessed_at is not None:
            await self._settle_floor()
        if self._names_at is None or time.monotonic() - self._names_at >= self._names_every_s:
            await self._refresh_names()
        streams = self._streams.readable()
        if not streams:
            await self._guard.sleep(min(self._names_every_s, self._block_ms / 1000))
            return
        reader = self._reader
        assert reader is not None  # set by start()
        try:
            response = await self._guard.run(
                lambda: reader.read(streams, count=self._count, block_ms=self._block_ms)
            )
        except ResponseError as exc:
            if "WRONGTYPE" in str(exc):
                await self._set_aside_wrong_types(list(streams))
            else:
                self._failed(exc)
            return
        except TRANSIENT_ERRORS as exc:
            raise_if_cancelling()  # a cancellation redis-py turned into an error
            self._failed(exc)
            return
        self._succeeded()
        batch: list[tuple[tuple[int, int], str, str, str, dict[str, str]]] = []
        for key, rows in xread_rows(response):
            if not rows:
                continue
            label = stream_label(key)
            batch.extend((id_order(eid), label, key, eid, fields) for eid, fields in rows)
            self._streams.reading[key] = rows[-1][0]
        # Within one reply, order across streams by ID: the order they were written.
        batch.sort(key=lambda row: (row[0], row[1]))
        self._buffer.extend((eid, fields, key) for _, _, key, eid, fields in batch)

    async def _refresh_names(self) -> None:
        for key in exchange_stream_keys(await self._read_names() or []):
            self._streams.follow_new(key)
        if self._streams.excluded:
            await self._readmit()

    async def _read_names(self) -> list[str] | None:
        """Ask the provider; a failure keeps the current streams and is shown."""
        self._names_at = time.monotonic()
        try:
            names = await self._guard.run(self._names_provider)
        except _PROVIDER_ERRORS as exc:
            raise_if_cancelling()  # a cancellation redis-py turned into an error
            reason = (
                describe_redis_error(self._settings, exc)
                if isinstance(exc, REDIS_ERRORS)
                else str(exc)
            )
            self._last_error = f"cannot list exchanges: {reason}"
            return None
        return [n for n in names if isinstance(n, str) and n]

    async def _settle_floor(self) -> None:
        """Replace a start time taken from this host's clock (Redis was down
        at start) by the server's: its clock is the one stream IDs follow.

        The server's time at our start is estimated as its time now minus
        the time elapsed here; the earlier of the two estimates wins, so a
        clock skew can only make the tail deliver a little more, never less.
        """
        client = self._client
        guessed_at = self._floor_guessed_at
        assert client is not None and guessed_at is not None
        try:
            seconds, micros = await self._guard.run(client.time)
        except REDIS_ERRORS as exc:
            raise_if_cancelling()  # a cancellation redis-py turned into an error
            self._failed(exc)
            return
        elapsed_ms = int((time.monotonic() - guessed_at) * 1000)
        server_start_ms = int(seconds) * 1000 + int(micros) // 1000 - elapsed_ms
        self._streams.settle_floor(just_before(server_start_ms))
        self._floor_guessed_at = None

    def _exclude(self, key: str, reason: str) -> None:
        self._streams.excluded[key] = reason
        self._last_error = f"not following {key[:80]!r}: {reason}"
        log.warning("activity tail: not following %r: %s", key[:80], reason)

    async def _set_aside_wrong_types(self, stream_keys: list[str]) -> None:
        """One key of another type fails the whole XREAD: find and drop it."""
        client = self._client
        assert client is not None
        try:
            kinds = await self._guard.run(lambda: key_types(client, stream_keys))
        except TRANSIENT_ERRORS as exc:
            raise_if_cancelling()  # a cancellation redis-py turned into an error
            self._failed(exc)
            return
        for key, kind in zip(stream_keys, kinds, strict=True):
            if kind not in ("stream", "none"):
                self._exclude(key, f"it holds a {kind}, not a stream")

    async def _readmit(self) -> None:
        """Follow set-aside keys again once they are streams (or gone)."""
        client = self._client
        assert client is not None
        excluded = list(self._streams.excluded)
        try:
            kinds = await self._guard.run(lambda: key_types(client, excluded))
        except TRANSIENT_ERRORS:
            raise_if_cancelling()  # a cancellation redis-py turned into an error
            return  # the next XREAD reports the outage
        for key, kind in zip(excluded, kinds, strict=True):
            if kind in ("stream", "none"):
                del self._streams.excluded[key]


async def key_types(client: RedisClient, stream_keys: list[str]) -> list[Any]:
    """TYPE of each key, in one round trip."""
    async with client.pipeline(transaction=False) as pipe:
        for key in stream_keys:
            pipe.type(key)
        return await pipe.execute()
