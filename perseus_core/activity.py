"""The per-exchange activity stream: append with retention, read pages, tail live."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import cast

from redis.asyncio import Redis

from perseus_core import keys
from perseus_core.models import ActivityEntry, parse_entry
from perseus_core.settings import Settings

DAY_MS = 86_400_000

StreamRows = list[tuple[str, dict[str, str]]]
"""XRANGE/XREVRANGE rows as the decoding client returns them."""


@dataclass(frozen=True, slots=True)
class ActivityPage:
    """Entries newest first, and the cursor to pass as `before` for the next page
    (None when there is nothing older)."""

    entries: list[ActivityEntry] = field(default_factory=list)
    next_cursor: str | None = None


def stream_name(key: str) -> str:
    """The exchange-name part of an activity stream key."""
    return key.removeprefix(keys.ACTIVITY_KEY_PREFIX)


class ActivityLog:
    """Writes and reads `logs:network:{name}` streams (WIRE.md 1.3).

    Appends trim inline with `MINID ~` so retention costs nothing extra. The
    cutoff follows the Redis server's clock, not this host's: a `TIME` per
    append would double the round trips, so the server time is sampled once
    (and again every few minutes) and advanced with the local monotonic clock.
    """

    _RESYNC_S = 300.0

    def __init__(self, redis: Redis, settings: Settings) -> None:
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

        `before` is exclusive: pass the previous page's `next_cursor`.
        """
        key = keys.activity_key(exchange_name)
        maximum = f"({before}" if before else "+"
        rows = cast(
            StreamRows, await self._redis.xrevrange(key, max=maximum, min="-", count=count + 1)
        )
        entries = [parse_entry(eid, fields, stream_name(key)) for eid, fields in rows[:count]]
        cursor = entries[-1].id if len(rows) > count and entries else None
        return ActivityPage(entries, cursor)
