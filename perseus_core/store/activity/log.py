"""Appending to and paging through the per-exchange activity streams."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from perseus_core.store.activity.cursors import StreamRows, stream_name
from perseus_core.store.activity.pages import ActivityPage, read_merged_page, read_page
from perseus_core.wire import keys
from perseus_core.wire.models import ActivityEntry, HolderEntry, parse_entry
from perseus_core.wire.settings import Settings

DAY_MS = 86_400_000

HOLDER_LOOKBACK = 500
"""How many of the newest entries of `perseus:activity:{name}` a claimant
searches for the last holder on record (docs/wire-format.md 2.7)."""

SHARED_EVENTS = frozenset({"state_transition", "error"})
"""The entry kinds the TypeScript servers' readers understand: the only ones
written to `logs:network:{name}` (docs/wire-format.md 2.3)."""


class ActivityLog:
    """Writes and reads the activity streams of exchanges (docs/wire-format.md
    1.3 and 2.3): `logs:network:{name}`, shared with the TypeScript servers,
    and `perseus:activity:{name}`, for every entry only Perseus reads. Reads
    merge both.

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

    async def append(self, exchange_name: str, entry: ActivityEntry, *, holder: bool = True) -> str:
        """Append one entry; returns its stream ID.

        Transitions and errors of the slot's holder go to the shared stream;
        everything else (command audit, a refused claim, a fenced agent's
        note: `holder=False`) to the Perseus-only stream, so the TypeScript
        servers' admin feed and last-known holder stay theirs. `holder` is
        the writer's word that it holds the status key right now: an
        `Instance` passes its lease's `held` (its `Publisher` decides it),
        an agent's run that does not hold it passes False.

        XADD with an auto ID is not idempotent: callers must not blindly retry
        after a lost reply (an entry could be written twice); they record the
        failure instead.
        """
        cutoff = max(0, await self._server_now_ms() - self._retention_ms)
        entry_id = await self._redis.xadd(
            self.stream_key(exchange_name, entry, holder=holder),
            entry.to_fields(),  # type: ignore[arg-type]
            minid=f"{cutoff}-0",
            approximate=True,
        )
        return str(entry_id)

    @staticmethod
    def stream_key(exchange_name: str, entry: ActivityEntry, *, holder: bool = True) -> str:
        """The stream `append` writes `entry` to (see there)."""
        if holder and entry.event in SHARED_EVENTS:
            return keys.activity_key(exchange_name)
        return keys.perseus_activity_key(exchange_name)

    async def shared_since(
        self, exchange_name: str, within_ms: float, *, count: int = 20
    ) -> list[ActivityEntry]:
        """The newest entries (at most `count`, newest first) of the shared
        stream `logs:network:{name}` written within the last `within_ms` by
        the Redis server's clock (the clock of stream IDs): what other writers
        of the slot, Livermore servers included, said meanwhile.

        Raises:
            redis errors: the stream could not be read.
        """
        key = keys.activity_key(exchange_name)
        oldest = max(0, await self._server_now_ms() - int(within_ms))
        rows = cast(StreamRows, await self._redis.xrevrange(key, "+", f"{oldest}-0", count=count))
        return [parse_entry(i, fields, stream_name(key), key) for i, fields in rows]

    async def last_holder(
        self, exchange_name: str, *, count: int = HOLDER_LOOKBACK
    ) -> HolderEntry | None:
        """The newest `holder` entry among the newest `count` entries of the
        exchange's Perseus stream: the last Perseus holder on record, or None.

        Raises:
            redis errors: the stream could not be read.
        """
        key = keys.perseus_activity_key(exchange_name)
        rows = cast(StreamRows, await self._redis.xrevrange(key, "+", "-", count=count))
        for entry_id, fields in rows:
            entry = parse_entry(entry_id, fields, stream_name(key), key)
            if isinstance(entry, HolderEntry):
                return entry
        return None

    async def page(
        self, exchange_name: str, *, count: int = 50, before: str | None = None
    ) -> ActivityPage:
        """One page of one exchange's entries, newest first.

        `before` is exclusive: pass the previous page's `next_cursor`. A merged
        page's cursor is accepted too (its ID part is used).

        Raises:
            ValueError: a malformed cursor.
        """
        return await read_page(self._redis, exchange_name, count=count, before=before)

    async def merged_page(
        self, exchange_names: Iterable[str], *, count: int = 50, before: str | None = None
    ) -> ActivityPage:
        """One page across several exchanges' streams, newest first.

        Entries are ordered by (ID, stream name), both descending; `before` is
        the previous page's `next_cursor` (`{id}@{stream}`, see
        `perseus_core.store.activity.cursors`) or a plain stream ID. One round
        trip: a pipeline of one XREVRANGE per stream, each asking for
        `count + 1` entries older than the cursor (on Redis Cluster the
        pipeline is split per node; no command touches more than one key).

        A stream that cannot be read (a key of another type) is left out and
        named in `ActivityPage.errors` rather than failing the whole page.

        Raises:
            ValueError: `count` < 1 or a malformed cursor.
        """
        return await read_merged_page(self._redis, exchange_names, count=count, before=before)
