"""The read side used by the CLI and the dashboard: catalog, statuses, last-known info.

- `views`: what a reader hands out (`ExchangeView`, its `kind`, `NetworkSnapshot`).
- `parsing`: untrusted payloads validated, or the message saying what is wrong.
- `catalog`: the catalog (docs/wire-format.md 2.1), parsed and edited.
- `snapshot`: the catalog and every status key, one pipelined round trip per node.
- `offline`: last-known info and agents of exchanges without a valid status.
- `reader`: `NetworkReader`, the facade over all of it.
"""

from perseus_core.store.network.catalog import RedisClient
from perseus_core.store.network.history import SCAN_COUNT
from perseus_core.store.network.offline import LAST_KNOWN_SCAN, MAX_AGENTS
from perseus_core.store.network.parsing import parse_catalog_payload, parse_status_payload
from perseus_core.store.network.reader import NetworkReader
from perseus_core.store.network.reads import MGET_CHUNK
from perseus_core.store.network.snapshot import CATALOG_SLICE
from perseus_core.store.network.views import (
    ExchangeView,
    LastKnown,
    LastSeen,
    NetworkSnapshot,
    ViewKind,
)

__all__ = [
    "CATALOG_SLICE",
    "LAST_KNOWN_SCAN",
    "MAX_AGENTS",
    "MGET_CHUNK",
    "SCAN_COUNT",
    "ExchangeView",
    "LastKnown",
    "LastSeen",
    "NetworkReader",
    "NetworkSnapshot",
    "RedisClient",
    "ViewKind",
    "parse_catalog_payload",
    "parse_status_payload",
]
