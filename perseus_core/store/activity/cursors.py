"""Stream IDs and page cursors of the activity streams.

Pages are newest first and a cursor is exclusive: the next page holds only
entries strictly older than the cursor. For one stream the cursor is the last
entry's stream ID. A merged page spans several streams, where two entries in
different streams can carry the same ID (IDs come from each stream's own
clock); merged pages order entries by (ID, stream label), both descending, and
their cursor is `{id}@{label}` (for example `1770763324511-0@coinbase`), so a
tie is split exactly at the cursor and no entry is skipped or repeated. A plain
ID is accepted as a merged cursor too and means "older than this ID in every
stream".

Every exchange has two streams, merged on every read: `logs:network:{name}`
(label `{name}`, shared with the TypeScript servers) and
`perseus:activity:{name}` (label `perseus:activity:{name}`, Perseus-only
entries). The two labels differ, so a tie between an exchange's own two
streams is split exactly too.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from perseus_core.plumbing.streams import StreamRow
from perseus_core.wire import keys

StreamRows = list[StreamRow]
"""XRANGE/XREVRANGE rows as the decoding client returns them."""

CURSOR_SEPARATOR = "@"
"""Separates the stream ID from the stream name in a merged-page cursor (stream
IDs never contain it)."""

_ID_RE = re.compile(r"^(\d{1,20})(?:-(\d{1,20}))?$")
_MAX_SEQ = 2**64 - 1


def stream_name(key: str) -> str:
    """The exchange-name part of an activity stream key (either kind)."""
    for prefix in keys.ACTIVITY_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix) :]
    return key


def stream_label(key: str) -> str:
    """The name of one stream in cursors and resume points: the exchange name
    for the shared stream (as before there was a second one), the whole key
    for the Perseus-only stream."""
    return key.removeprefix(keys.ACTIVITY_KEY_PREFIX)


def label_key(label: str) -> str:
    """The stream key a label (or a bare exchange name) stands for."""
    if label.startswith(keys.ACTIVITY_PREFIXES):
        return label
    return keys.activity_key(label)


def exchange_stream_keys(names: Iterable[str]) -> list[str]:
    """Both streams of every named exchange, sorted and without repeats."""
    both = (keys.activity_key, keys.perseus_activity_key)
    return sorted({key_of(name) for name in names for key_of in both})


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


def id_order(entry_id: str) -> tuple[int, int]:
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


def just_before(ms: int) -> str:
    """The largest stream ID below `ms-0`: XREAD after it returns every entry
    written at or after that millisecond."""
    return f"{ms - 1}-{_MAX_SEQ}" if ms > 0 else "0-0"
