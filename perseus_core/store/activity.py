"""The per-exchange activity stream: append with retention, read pages, tail live.

Cursors. Pages are newest first and a cursor is exclusive: the next page holds
only entries strictly older than the cursor. For one stream the cursor is the
last entry's stream ID. A merged page spans several streams, where two entries
in different streams can carry the same ID (IDs come from each stream's own
clock); merged pages order entries by (ID, stream name), both descending, and
their cursor is `{id}@{stream}` (for example `1770763324511-0@coinbase`), so a
tie is split exactly at the cursor and no entry is skipped or repeated. A
plain ID is accepted as a merged cursor too and means "older than this ID in
every stream".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError, ResponseError

from perseus_core.plumbing.connection import (
    connect,
    connect_blocking,
    describe_redis_error,
)
from perseus_core.plumbing.errors import TRANSIENT_ERRORS
from perseus_core.wire import keys
from perseus_core.wire.errors import PerseusError
from perseus_core.wire.models import ActivityEntry, parse_entry
from perseus_core.wire.settings import Settings

if TYPE_CHECKING:  # network reads streams through this module: import it lazily at run time
    from perseus_core.store.network import NetworkReader

log = logging.getLogger(__name__)

DAY_MS = 86_400_000

StreamRows = list[tuple[str, dict[str, str]]]
"""XRANGE/XREVRANGE rows as the decoding client returns them."""


@dataclass(frozen=True, slots=True)
class ActivityPage:
    """Entries newest first, and the cursor to pass as `before` for the next page
    (None when there is nothing older)."""

    entries: list[ActivityEntry] = field(default_factory=list)
    next_cursor: str | None = None
    errors: dict[str, str] = field(default_factory=dict)
    """Streams that could not be read (exchange name -> reason), e.g. a key
    of the wrong type; the other streams' entries are still returned."""


def stream_name(key: str) -> str:
    """The exchange-name part of an activity stream key."""
    return key.removeprefix(keys.ACTIVITY_KEY_PREFIX)


_ID_RE = re.compile(r"^(\d{1,20})(?:-(\d{1,20}))?$")
_MAX_SEQ = 2**64 - 1
CURSOR_SEPARATOR = "@"
"""Separates the stream ID from the stream name in a merged-page cursor (stream
IDs never contain it)."""


def parse_stream_id(value: str) -> tuple[int, int]:
    """A stream ID as a sortable (milliseconds, sequence) pair.

    Accepts `ms-seq` and a bare `ms` (sequence 0). Raises ValueError otherwise.
    """
    match = _ID_RE.match(value.strip())
    if match is None:
        raise ValueError(f"not a stream ID: {value[:60]!r} (expected e.g. 1770763324511-0)")
    ms, seq = int(match.group(1)), int(match.group(2) or 0)
    if ms > _MAX_SEQ or seq > _MAX_SEQ:
        raise ValueError(f"stream ID out of range: {value[:60]!r}")
    return ms, seq


def _id_order(entry_id: str) -> tuple[int, int]:
    """Sort key of an ID read from Redis (always well formed; never raises)."""
    try:
        return parse_stream_id(entry_id)
    except ValueError:
        return (0, 0)


def format_cursor(entry_id: str, stream: str) -> str:
    """The merged-page cursor pointing at one entry: `{id}@{stream}`."""
    return f"{entry_id}{CURSOR_SEPARATOR}{stream}"


def parse_cursor(cursor: str) -> tuple[str, str | None]:
    """Split a cursor into a normalised `ms-seq` ID and the stream name
    (lower-cased; None for a plain ID). Raises ValueError for anything else."""
    entry_id, sep, stream = cursor.strip().partition(CURSOR_SEPARATOR)
    ms, seq = parse_stream_id(entry_id)
    if sep and not stream:
        raise ValueError(f"cursor {cursor[:80]!r} has no stream name after {CURSOR_SEPARATOR!r}")
    return f"{ms}-{seq}", (stream.lower() if sep else None)


def _just_before(ms: int) -> str:
    """The largest stream ID below `ms-0`: XREAD after it returns every entry
    written at or after that millisecond."""
    return f"{ms - 1}-{_MAX_SEQ}" if ms > 0 else "0-0"


class ActivityLog:
    """Writes and reads `logs:network:{name}` streams (WIRE.md 1.3).

    Appends trim inline with `MINID ~` so retention costs nothing extra. The
    cutoff follows the Redis server's clock, not this host's: a `TIME` per
    append would double the round trips, so the server time is sampled once
    (and again every few minutes) and advanced with the local monotonic clock.
    """

    _RESYNC_S = 300.0

    def __init__(self, redis: Redis | RedisCluster, settings: Settings) -> None:
        self._redis = redis
        self._retention_ms = int(settings.retention_days * DAY_MS)
        self._server_base_ms = 0
        self._local_base: float | None = None

    async def _server_now_ms(self) -> int:
        now = time.monotonic()
        if self._local_base is None or now - self._local_base > self._RESYNC_S:
            seconds, micros = await self._redis.time()
            self._server_base_ms = int(seconds) * 1000 + int(micros) // 1000
            self._local_base = now
        return self._server_base_ms + int((now - self._local_base) * 1000)

    async def append(self, exchange_name: str, entry: ActivityEntry) -> str:
        """Append one entry; returns its stream ID.

        XADD with an auto ID is not idempotent: callers must not blindly retry
        after a lost reply (an entry could be written twice); they record the
        failure instead.
        """
        cutoff = max(0, await self._server_now_ms() - self._retention_ms)
        entry_id = await self._redis.xadd(
            keys.activity_key(exchange_name),
            entry.to_fields(),  # type: ignore[arg-type]
            minid=f"{cutoff}-0",
            approximate=True,
        )
        return str(entry_id)

    async def page(
        self, exchange_name: str, *, count: int = 50, before: str | None = None
    ) -> ActivityPage:
        """One page of one exchange's entries, newest first.

        `before` is exclusive: pass the previous page's `next_cursor`. A merged
        page's cursor is accepted too (its ID part is used).

        Raises:
            ValueError: a malformed cursor.
        """
        key = keys.activity_key(exchange_name)
        maximum = f"({parse_cursor(before)[0]}" if before else "+"
        rows = cast(
            StreamRows, await self._redis.xrevrange(key, max=maximum, min="-", count=count + 1)
        )
        entries = [parse_entry(eid, fields, stream_name(key)) for eid, fields in rows[:count]]
        cursor = entries[-1].id if len(rows) > count and entries else None
        return ActivityPage(entries, cursor)

    async def merged_page(
        self, exchange_names: Iterable[str], *, count: int = 50, before: str | None = None
    ) -> ActivityPage:
        """One page across several exchanges' streams, newest first.

        Entries are ordered by (ID, stream name), both descending; `before` is
        the previous page's `next_cursor` (`{id}@{stream}`, see the module
        docstring) or a plain stream ID. One round trip: a pipeline of one
        XREVRANGE per stream, each asking for `count + 1` entries older than
        the cursor (on Redis Cluster the pipeline is split per node; no
        command touches more than one key).

        A stream that cannot be read (a key of another type) is left out and
        named in `ActivityPage.errors` rather than failing the whole page.

        Raises:
            ValueError: `count` < 1 or a malformed cursor.
        """
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        cursor_id, cursor_stream = parse_cursor(before) if before else (None, None)
        stream_keys = sorted({keys.activity_key(name) for name in exchange_names})
        if not stream_keys:
            return ActivityPage()
        async with self._redis.pipeline(transaction=False) as pipe:
            for key in stream_keys:
                pipe.xrevrange(
                    key, max=_page_max(stream_name(key), cursor_id, cursor_stream), min="-",
                    count=count + 1,
                )  # fmt: skip
            results = await pipe.execute(raise_on_error=False)
        rows: list[tuple[tuple[int, int], str, str, dict[str, str]]] = []
        errors: dict[str, str] = {}
        for key, result in zip(stream_keys, results, strict=True):
            name = stream_name(key)
            if isinstance(result, Exception):
                errors[name] = str(result)
                log.warning("activity stream %r unreadable: %s", key[:80], result)
                continue
            for entry_id, fields in cast(StreamRows, result):
                rows.append((_id_order(entry_id), name, entry_id, fields or {}))
        rows.sort(key=lambda row: (row[0], row[1]), reverse=True)
        entries = [parse_entry(eid, fields, name) for _, name, eid, fields in rows[:count]]
        cursor = None
        if len(rows) > count:
            last = entries[-1]
            cursor = format_cursor(last.id, last.stream)
        return ActivityPage(entries, cursor, errors)


def _page_max(stream: str, cursor_id: str | None, cursor_stream: str | None) -> str:
    """XREVRANGE upper bound of one stream for a merged cursor.

    The page continues with the entries that come after (cursor_id,
    cursor_stream) in (ID, stream) descending order. In a stream whose name
    is smaller than the cursor's, an entry with exactly the cursor's ID comes
    after it (inclusive bound); in every other stream only smaller IDs do
    (exclusive bound).
    """
    if cursor_id is None:
        return "+"
    if cursor_stream is not None and stream < cursor_stream:
        return cursor_id
    return f"({cursor_id}"


# --- live tail ---------------------------------------------------------------

NamesProvider = Callable[[], Awaitable[list[str]]]
"""Returns the exchange names whose streams a tail should follow."""

_T = TypeVar("_T")


_REDIS_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, RedisError)
_PROVIDER_ERRORS: tuple[type[BaseException], ...] = (*_REDIS_ERRORS, PerseusError)


class _Closed(Exception):
    """Raised inside the tail when `aclose()` interrupted an operation."""


def _xread_rows(response: Any) -> list[tuple[str, StreamRows]]:
    """XREAD's reply as (key, rows) pairs, whichever shape the client parsed
    it into (RESP2 list, RESP3 dict, with or without an extra list level)."""
    if not response:
        return []
    pairs = response.items() if isinstance(response, dict) else response
    out: list[tuple[str, StreamRows]] = []
    for key, value in pairs:
        rows: list[Any] = list(value or [])
        if rows and all(isinstance(part, list) for part in rows):
            rows = [row for part in rows for row in part]
        out.append((str(key), [(r[0], r[1] or {}) for r in rows if r and r[0] is not None]))
    return out


class ActivityTail:
    """A live feed of every exchange's activity stream, in arrival order.

    Reads with `XREAD BLOCK` on a dedicated client (`connect_blocking`, whose
    socket timeout exceeds the block time) and yields `ActivityEntry` objects
    as they are appended::

        async with ActivityTail(settings) as tail:
            async for entry in tail:
                ...

    Where it starts. With `start="$"` only entries appended after `start()`
    (or the first iteration) are yielded: a stream that exists then starts
    after its newest entry. The tail also notes the Redis server's time when
    it starts; a stream that does not exist yet, or that belongs to an
    exchange the names provider reports only later (added to the catalog or
    come online after the tail started), starts from that moment, so entries
    written after the tail started are not missed even when the exchange is
    noticed a few seconds late, and older history (which `ActivityLog.page`
    serves) is not replayed. With `start={name: id}` the named streams resume
    after the given IDs (for example a previous tail's `positions`); other
    streams behave as with "$".

    Which streams. The names provider (default: every catalog exchange plus
    every online exchange found by `NetworkReader.exchange_names`) is asked
    again at most every `names_every_s`, checked on every loop. Streams are
    added, never dropped: an exchange that leaves the catalog or goes offline
    writes its last entries (stopping, stopped) around that moment, and they
    must not be lost.

    Connection loss. The tail keeps the last ID it read per stream and only
    advances it when a read succeeded, so after a reconnect it reads on from
    exactly there: no gap, no duplicate. It retries with exponential backoff
    (0.1 s doubling up to `max_backoff_s`, 5 s by default), exposing
    `connected`, `last_error` and `retry_in_s` for the UI. A key that is not a
    stream is set aside (and named in `last_error`) instead of breaking the
    read of every other stream.

    The tail works against a single Redis: XREAD over many streams is one
    multi-key command, which Redis Cluster only allows within one hash slot.

    Close it with `aclose()` (or `async with`); `aclose()` may be called from
    another task, and the iteration then simply ends. Cancelling the task that
    iterates is clean as well. One consumer at a time.
    """

    def __init__(
        self,
        settings: Settings,
        names: NamesProvider | None = None,
        start: str | Mapping[str, str] = "$",
        *,
        count: int = 500,
        names_every_s: float = 3.0,
        max_backoff_s: float = 5.0,
    ) -> None:
        """Create a tail; nothing is connected until `start()` or iteration.

        Args:
            settings: Redis target; `block_ms` is the XREAD block time.
            names: the exchange names to follow; None for every catalog and
                online exchange.
            start: "$" for new entries only, or a mapping of exchange name (or
                stream key) to the last ID already seen ("$" as a value means
                "new only" for that stream).
            count: most entries read per stream per call; large, so a burst is
                drained in few round trips.
            names_every_s: how often the names provider is asked again.
            max_backoff_s: cap of the reconnect backoff.

        Raises:
            ValueError: `start` is neither "$" nor a mapping of valid IDs.
        """
        self._settings = settings
        self._names_provider = names
        self._count = count
        self._names_every_s = names_every_s
        self._max_backoff_s = max_backoff_s
        self._block_ms = settings.block_ms
        self._start_ids: dict[str, str | None] = {}
        if isinstance(start, str):
            if start != "$":
                raise ValueError(f'start must be "$" or a mapping of stream IDs, got {start!r}')
        else:
            for name, entry_id in start.items():
                key = name if name.startswith(keys.ACTIVITY_KEY_PREFIX) else keys.activity_key(name)
                if entry_id == "$":
                    self._start_ids[key] = None
                else:
                    ms, seq = parse_stream_id(entry_id)
                    self._start_ids[key] = f"{ms}-{seq}"
        self._client: Redis | None = None
        self._names_client: Redis | None = None
        self._names_reader: NetworkReader | None = None
        self._positions: dict[str, str] = {}
        self._start_positions: dict[str, str] = {}
        self._delivered: dict[str, str] = {}
        self._excluded: dict[str, str] = {}
        self._buffer: deque[ActivityEntry] = deque()
        self._floor = "0-0"
        self._floor_guessed_at: float | None = None
        self._names_at: float | None = None
        self._retry_at = 0.0
        self._backoff_s = 0.0
        self._started = False
        self._closed = False
        self._closing = asyncio.Event()
        self._inflight: asyncio.Future[Any] | None = None
        self._connected = False
        self._last_error: str | None = None
        self._retry_in_s: float | None = None
        self._reconnects = 0

    # --- state for the UI -------------------------------------------------

    @property
    def connected(self) -> bool:
        """The last Redis call succeeded."""
        return self._connected

    @property
    def last_error(self) -> str | None:
        """The most recent problem (connection, provider, unreadable stream);
        kept after recovery, so read it together with `connected`."""
        return self._last_error

    @property
    def retry_in_s(self) -> float | None:
        """The current reconnect delay while disconnected, else None."""
        return self._retry_in_s

    @property
    def reconnects(self) -> int:
        """How many times the tail recovered from a connection failure."""
        return self._reconnects

    @property
    def streams(self) -> list[str]:
        """Exchange names (lower-cased) of every stream being followed."""
        return sorted(stream_name(key) for key in self._positions)

    @property
    def positions(self) -> dict[str, str]:
        """Per stream (exchange name), the ID to resume after: the last entry
        yielded, or where the stream started if none was. Pass it as `start`
        of a new tail to continue without gap or duplicate."""
        return {
            stream_name(key): self._delivered.get(stream_name(key), self._start_positions[key])
            for key in self._positions
        }

    # --- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Fix the starting point now (idempotent; iteration calls it too).

        Entries appended after this returns are guaranteed to be yielded. If
        Redis cannot be reached, this host's clock stands in for the server's
        and the iteration keeps retrying.
        """
        if self._started or self._closed:
            return
        self._started = True
        client = connect_blocking(self._settings)
        # Our own loop retries with backoff and reports it; the client's
        # built-in retries would only hide an outage for seconds.
        client.set_retry(Retry(NoBackoff(), 0))
        self._client = client
        try:
            names = await self._read_names()
            wanted = dict.fromkeys([*self._start_ids, *(keys.activity_key(n) for n in names or [])])
            unresolved = [k for k in wanted if self._start_ids.get(k) is None]
            try:

                async def resolve() -> list[Any]:
                    async with client.pipeline(transaction=False) as pipe:
                        pipe.time()
                        for key in unresolved:
                            pipe.xrevrange(key, max="+", min="-", count=1)
                        return await pipe.execute(raise_on_error=False)

                results = await self._guarded(resolve)
                if isinstance(results[0], Exception):
                    raise results[0]
                seconds, micros = results[0]
                self._floor = _just_before(int(seconds) * 1000 + int(micros) // 1000)
                self._succeeded()
            except _REDIS_ERRORS as exc:
                self._floor = _just_before(int(time.time() * 1000))
                self._floor_guessed_at = time.monotonic()
                results = [None] + [[] for _ in unresolved]
                self._failed(exc)
            newest = dict(zip(unresolved, results[1:], strict=True))
            for key in wanted:
                explicit = self._start_ids.get(key)
                found = newest.get(key)
                if isinstance(found, ResponseError):
                    self._follow(key, self._floor)
                    self._exclude(key, str(found))
                elif explicit is not None:
                    self._follow(key, explicit)
                else:
                    self._follow(key, found[0][0] if found else self._floor)
        except _Closed:
            return

    async def aclose(self) -> None:
        """Stop: interrupt any read in flight and close both connections.

        Safe to call more than once and from another task than the one
        iterating (whose loop then ends).
        """
        self._closed = True
        self._closing.set()
        inflight = self._inflight
        if inflight is not None and not inflight.done():
            inflight.cancel()
            await asyncio.wait({inflight})
        client, self._client = self._client, None
        names_client, self._names_client = self._names_client, None
        self._names_reader = None
        if client is not None:
            await client.aclose()
        if names_client is not None:
            await names_client.aclose()

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
                if self._closed:
                    raise StopAsyncIteration
                if not self._started:
                    await self.start()
                    continue
                await self._read_once()
        except _Closed:
            raise StopAsyncIteration from None
        if self._closed:
            raise StopAsyncIteration
        entry = self._buffer.popleft()
        self._delivered[entry.stream] = entry.id
        return entry

    # --- the loop ----------------------------------------------------------

    async def _read_once(self) -> None:
        """One turn: wait out a backoff, refresh names when due, one XREAD."""
        await self._sleep(self._retry_at - time.monotonic())
        if self._closed:
            raise _Closed
        if self._floor_guessed_at is not None:
            await self._settle_floor()
        if self._names_due():
            await self._refresh_names()
        streams = {k: v for k, v in self._positions.items() if k not in self._excluded}
        if not streams:
            await self._sleep(min(self._names_every_s, self._block_ms / 1000))
            return
        client = self._client
        assert client is not None  # set by start(), cleared only by aclose()
        try:
            response = await self._guarded(
                lambda: client.xread(
                    streams,  # type: ignore[arg-type]
                    count=self._count,
                    block=self._block_ms,
                )
            )
        except ResponseError as exc:
            if "WRONGTYPE" in str(exc):
                await self._set_aside_wrong_types(list(streams))
            else:
                self._failed(exc)
            return
        except TRANSIENT_ERRORS as exc:
            self._failed(exc)
            return
        self._succeeded()
        batch: list[tuple[tuple[int, int], str, str, dict[str, str]]] = []
        for key, rows in _xread_rows(response):
            if not rows:
                continue
            name = stream_name(key)
            batch.extend((_id_order(eid), name, eid, fields) for eid, fields in rows)
            self._positions[key] = rows[-1][0]
        # Within one reply, order across streams by ID: the order they were written.
        batch.sort(key=lambda row: (row[0], row[1]))
        self._buffer.extend(parse_entry(eid, fields, name) for _, name, eid, fields in batch)

    def _names_due(self) -> bool:
        return self._names_at is None or time.monotonic() - self._names_at >= self._names_every_s

    async def _refresh_names(self) -> None:
        names = await self._read_names()
        for name in names or []:
            key = keys.activity_key(name)
            if key not in self._positions:
                start = self._start_ids.get(key)
                self._follow(key, start if start is not None else self._floor)
        if self._excluded:
            await self._readmit()

    async def _read_names(self) -> list[str] | None:
        """Ask the provider; a failure keeps the current streams and is shown."""
        self._names_at = time.monotonic()
        provider = self._names_provider or self._default_names
        try:
            names = await self._guarded(provider)
        except _PROVIDER_ERRORS as exc:
            reason = (
                describe_redis_error(self._settings, exc)
                if isinstance(exc, _REDIS_ERRORS)
                else str(exc)
            )
            self._last_error = f"cannot list exchanges: {reason}"
            return None
        return [n for n in names if isinstance(n, str) and n]

    async def _default_names(self) -> list[str]:
        from perseus_core.store.network import NetworkReader  # noqa: PLC0415 - see the TYPE_CHECKING import

        reader = self._names_reader
        if reader is None:
            client = self._names_client = connect(self._settings)
            # A failed listing is simply retried on the next refresh.
            client.set_retry(Retry(NoBackoff(), 0))
            reader = self._names_reader = NetworkReader(client, self._settings)
        return await reader.exchange_names()

    async def _settle_floor(self) -> None:
        """Replace a start time taken from this host's clock (Redis was down
        at start) by the server's: its clock is the one stream IDs follow.

        The server's time at our start is estimated as its time now minus
        the time elapsed here; the earlier of the two estimates wins, so a
        clock skew can only make the tail deliver a little more, never less.
        Streams still waiting at the guessed floor move to the settled one.
        """
        client = self._client
        assert client is not None
        guessed_at = self._floor_guessed_at
        assert guessed_at is not None
        try:
            seconds, micros = await self._guarded(client.time)
        except _REDIS_ERRORS as exc:
            self._failed(exc)
            return
        elapsed_ms = int((time.monotonic() - guessed_at) * 1000)
        server_start_ms = int(seconds) * 1000 + int(micros) // 1000 - elapsed_ms
        settled = min(self._floor, _just_before(server_start_ms), key=_id_order)
        old, self._floor, self._floor_guessed_at = self._floor, settled, None
        for key, position in self._positions.items():
            if position == old:
                self._positions[key] = settled
                if self._start_positions.get(key) == old:
                    self._start_positions[key] = settled

    def _follow(self, key: str, position: str) -> None:
        self._positions[key] = position
        self._start_positions[key] = position

    def _exclude(self, key: str, reason: str) -> None:
        self._excluded[key] = reason
        self._last_error = f"not following {key[:80]!r}: {reason}"
        log.warning("activity tail: not following %r: %s", key[:80], reason)

    async def _set_aside_wrong_types(self, stream_keys: list[str]) -> None:
        """One key of another type fails the whole XREAD: find and drop it."""
        client = self._client
        assert client is not None
        try:

            async def types() -> list[Any]:
                async with client.pipeline(transaction=False) as pipe:
                    for key in stream_keys:
                        pipe.type(key)
                    return await pipe.execute()

            kinds = await self._guarded(types)
        except TRANSIENT_ERRORS as exc:
            self._failed(exc)
            return
        for key, kind in zip(stream_keys, kinds, strict=True):
            if kind not in ("stream", "none"):
                self._exclude(key, f"it holds a {kind}, not a stream")

    async def _readmit(self) -> None:
        """Follow set-aside keys again once they are streams (or gone)."""
        client = self._client
        assert client is not None
        excluded = list(self._excluded)
        try:

            async def types() -> list[Any]:
                async with client.pipeline(transaction=False) as pipe:
                    for key in excluded:
                        pipe.type(key)
                    return await pipe.execute()

            kinds = await self._guarded(types)
        except TRANSIENT_ERRORS:
            return  # the next XREAD reports the outage
        for key, kind in zip(excluded, kinds, strict=True):
            if kind in ("stream", "none"):
                del self._excluded[key]

    # --- plumbing ------------------------------------------------------------

    async def _guarded(self, operation: Callable[[], Awaitable[_T]]) -> _T:
        """Run one Redis operation so that `aclose()` can interrupt it.

        It runs as its own task: `aclose()` cancels that task, and the
        iterating task sees `_Closed` instead of a cancellation that is not
        its own. A cancellation of the iterating task itself propagates.
        """
        if self._closed:
            raise _Closed

        async def run() -> _T:
            return await operation()

        current = asyncio.current_task()
        cancelling_before = current.cancelling() if current is not None else 0
        task = asyncio.ensure_future(run())
        self._inflight = task
        try:
            result = await task
        except asyncio.CancelledError:
            if self._closed and current is not None and current.cancelling() == 0:
                raise _Closed from None
            raise
        finally:
            self._inflight = None
        # On Python 3.11 redis-py's internal `wait_for` can swallow the
        # cancellation it forwards to the inner task, which then returns
        # normally: re-raise it here so Ctrl-C and task.cancel() still stop us.
        if current is not None and current.cancelling() > cancelling_before:
            raise asyncio.CancelledError
        return result

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when the tail is closed."""
        if seconds <= 0 or self._closed:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._closing.wait(), seconds)

    def _failed(self, exc: BaseException) -> None:
        self._connected = False
        self._last_error = describe_redis_error(self._settings, exc)
        self._backoff_s = min(self._max_backoff_s, max(0.1, self._backoff_s * 2))
        self._retry_in_s = self._backoff_s
        self._retry_at = time.monotonic() + self._backoff_s
        log.info("activity tail: %s; retrying in %.1f s", self._last_error, self._backoff_s)

    def _succeeded(self) -> None:
        if self._backoff_s:
            self._reconnects += 1
        self._connected = True
        self._backoff_s = 0.0
        self._retry_in_s = None
