"""The per-exchange activity streams: append with retention (`log`), read pages
(`pages`, cursors in `cursors`), follow live (`tail`)."""

from perseus_core.store.activity.cursors import (
    CURSOR_SEPARATOR,
    StreamRows,
    exchange_stream_keys,
    format_cursor,
    parse_cursor,
    parse_stream_id,
    stream_label,
    stream_name,
)
from perseus_core.store.activity.log import DAY_MS, ActivityLog
from perseus_core.store.activity.pages import ActivityPage
from perseus_core.store.activity.tail import ActivityTail, NamesProvider

__all__ = [
    "CURSOR_SEPARATOR",
    "DAY_MS",
    "ActivityLog",
    "ActivityPage",
    "ActivityTail",
    "NamesProvider",
    "StreamRows",
    "exchange_stream_keys",
    "format_cursor",
    "parse_cursor",
    "parse_stream_id",
    "stream_label",
    "stream_name",
]
