"""Reading activity streams a page at a time, newest first (cursors: see `cursors`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from perseus_core.plumbing.connection import refused
from perseus_core.store.activity.cursors import (
    StreamRows,
    exchange_stream_keys,
    format_cursor,
    id_order,
    parse_cursor,
    stream_label,
    stream_name,
)
from perseus_core.wire.errors import PerseusError
from perseus_core.wire.models import ActivityEntry, parse_entry

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ActivityPage:
    """Entries newest first, and the cursor to pass as `before` for the next page
    (None when there is nothing older)."""

    entries: list[ActivityEntry] = field(default_factory=list)
    next_cursor: str | None = None
    errors: dict[str, str] = field(default_factory=dict)
    """Streams that could not be read (exchange name -> the refusal, naming
    command and key), e.g. a key of the wrong type; the other streams'
    entries are still returned."""


async def read_page(
    redis: Redis | RedisCluster, exchange_name: str, *, count: int, before: str | None
) -> ActivityPage:
    """One page of one exchange's entries, newest first (see `ActivityLog.page`):
    its shared and its Perseus-only stream, merged.

    Raises:
        RedisRefused: one of the two streams cannot be read (a key of another
            type), named with the command: a page of half the history would
            pass for all of it.
        AccessDenied: this user may not read one of them.
    """
    page, refusals = await _read_streams(redis, [exchange_name], count=count, before=before)
    for refusal in refusals:
        raise refusal
    return page


async def read_merged_page(
    redis: Redis | RedisCluster,
    exchange_names: Iterable[str],
    *,
    count: int,
    before: str | None,
) -> ActivityPage:
    """One page across several exchanges' streams (see `ActivityLog.merged_page`)."""
    page, _ = await _read_streams(redis, exchange_names, count=count, before=before)
    for label, reason in page.errors.items():
        log.warning("activity stream %r unreadable: %s", label[:80], reason)
    return page


async def _read_streams(
    redis: Redis | RedisCluster,
    exchange_names: Iterable[str],
    *,
    count: int,
    before: str | None,
) -> tuple[ActivityPage, list[PerseusError]]:
    """Both streams of every named exchange, merged into one page, and what
    Redis refused to read (each naming its command and key, as in `errors`)."""
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    cursor_id, cursor_stream = parse_cursor(before) if before else (None, None)
    stream_keys = exchange_stream_keys(exchange_names)
    if not stream_keys:
        return ActivityPage(), []
    async with redis.pipeline(transaction=False) as pipe:
        for key in stream_keys:
            pipe.xrevrange(
                key, max=_page_max(stream_label(key), cursor_id, cursor_stream), min="-",
                count=count + 1,
            )  # fmt: skip
        results = await pipe.execute(raise_on_error=False)
    rows: list[tuple[tuple[int, int], str, str, str, dict[str, str]]] = []
    errors: dict[str, str] = {}
    refusals: list[PerseusError] = []
    for key, result in zip(stream_keys, results, strict=True):
        label = stream_label(key)
        if isinstance(result, ResponseError):
            refusals.append(refused(result, "XREVRANGE", key))
            errors[label] = str(refusals[-1])
            continue
        if isinstance(result, Exception):
            raise result
        for entry_id, fields in cast(StreamRows, result):
            rows.append((id_order(entry_id), label, key, entry_id, fields or {}))
    rows.sort(key=lambda row: (row[0], row[1]), reverse=True)
    entries = [
        parse_entry(eid, fields, stream_name(key), key) for _, _, key, eid, fields in rows[:count]
    ]
    cursor = None
    if len(rows) > count:
        last = entries[-1]
        cursor = format_cursor(last.id, stream_label(last.key))
    return ActivityPage(entries, cursor, errors), refusals


def _page_max(stream: str, cursor_id: str | None, cursor_stream: str | None) -> str:
    """XREVRANGE upper bound of one stream for a merged cursor.

    The page continues with the entries that come after (cursor_id,
    cursor_stream) in (ID, stream label) descending order. In a stream whose name
    is smaller than the cursor's, an entry with exactly the cursor's ID comes
    after it (inclusive bound); in every other stream only smaller IDs do
    (exclusive bound).
    """
    if cursor_id is None:
        return "+"
    if cursor_stream is not None and stream < cursor_stream:
        return cursor_id
    return f"({cursor_id}"
