"""Timestamps as the wire writes them, and an injectable clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]
"""Returns the current time as an aware UTC datetime; injected for tests."""


def system_clock() -> datetime:
    """The real clock."""
    return datetime.now(UTC)


def format_ts(moment: datetime) -> str:
    """Format like JavaScript's `Date.toISOString()`: `2026-02-10T22:45:00.123Z`."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


MIN_YEAR = 2
MAX_YEAR = 9998
"""Timestamps are accepted from year 2 to year 9998. Python represents years 1
to 9999, but a moment in year 1 or 9999 can overflow when it is converted to
a reader's time zone, so a hostile entry would crash every screen that shows
it; a year of margin at each end makes every accepted moment safe in any zone."""


def _checked(moment: datetime, text: str) -> datetime:
    if not MIN_YEAR <= moment.year <= MAX_YEAR:
        raise ValueError(f"timestamp out of range (years {MIN_YEAR}-{MAX_YEAR}): {text[:40]!r}")
    return moment


def parse_ts(text: str) -> datetime:
    """Parse any ISO-8601 form (Z, offsets, no fraction, micro- or nanoseconds).

    Naive values are taken as UTC. Raises ValueError on anything else,
    including moments outside years `MIN_YEAR`..`MAX_YEAR`.
    """
    if len(text) == 24 and text[23] == "Z" and text[10] == "T":
        # Fast path for the form every writer uses (`Date.toISOString()`):
        # snapshots parse four of these per instance.
        return _checked(datetime.fromisoformat(text), text)
    try:
        return _checked(_parse_any(text), text)
    except OverflowError as exc:  # an offset pushed the moment past year 1 or 9999
        raise ValueError(f"timestamp out of range: {text[:40]!r}") from exc


def _parse_any(text: str) -> datetime:
    value = text.strip()
    if not value:
        raise ValueError("empty timestamp")
    # Python accepts at most 6 fractional digits; trim longer ones (nanoseconds).
    if "." in value:
        head, _, tail = value.partition(".")
        digits = len(tail) - len(tail.lstrip("0123456789"))
        if digits > 6:
            tail = tail[:6] + tail[digits:]
        value = f"{head}.{tail}"
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def parse_ts_or_none(text: str | None) -> datetime | None:
    """`parse_ts`, but None for missing or unparseable input."""
    if not text:
        return None
    try:
        return parse_ts(text)
    except ValueError:
        return None


def id_time(entry_id: str) -> datetime | None:
    """When Redis stored a stream entry (the milliseconds part of its auto ID):
    a fallback for entries whose own `timestamp` is missing or unparseable."""
    ms = entry_id.partition("-")[0]
    if not ms.isdigit():
        return None
    try:
        return datetime.fromtimestamp(int(ms) / 1000, tz=UTC)
    except (OverflowError, ValueError, OSError):  # beyond what datetime can hold
        return None


def to_epoch_ms(moment: datetime) -> int:
    """Milliseconds since the epoch, as command timestamps carry them."""
    return int(moment.timestamp() * 1000)


def format_duration(seconds: float) -> str:
    """A short human duration: `42s`, `5m 12s`, `4h 23m`, `3d 2h`."""
    total = max(0, int(seconds))
    days, rem = divmod(total, 86_400)
    hours, rem = divmod(rem, 3_600)
    minutes, secs = divmod(rem, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes}m"
    if minutes:
        return f"{minutes}m {secs}s"
    return f"{secs}s"
