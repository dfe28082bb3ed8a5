"""The fleet read used by the CLI, the dashboard and the notifier.

- `views`: what the reader hands out (`ExchangeView`, its `kind`, `FleetSnapshot`).
- `catalog`: the catalog (docs/wire-format.md 2.1), parsed and edited.
- `reader`: `FleetReader`, the one read of the fleet: the catalog and every
  status key in one round trip per node, discovery of exchanges outside the
  catalog, last-known info and agents of exchanges without a status, and
  single exchanges.
- `watch`: `StatusWatcher`, which exchanges changed, from keyspace
  notifications, so that a poll re-reads only those (`FleetReader.refresh`).
"""

from perseus_core.store.network.catalog import parse_catalog_payload
from perseus_core.store.network.reader import (
    LAST_KNOWN_SCAN,
    FleetReader,
    parse_status_payload,
)
from perseus_core.store.network.views import (
    ExchangeView,
    FleetSnapshot,
    LastKnown,
    LastSeen,
    ViewKind,
    same_writer,
)
from perseus_core.store.network.watch import StatusWatcher

__all__ = [
    "LAST_KNOWN_SCAN",
    "ExchangeView",
    "FleetReader",
    "FleetSnapshot",
    "LastKnown",
    "LastSeen",
    "StatusWatcher",
    "ViewKind",
    "parse_catalog_payload",
    "parse_status_payload",
    "same_writer",
]
