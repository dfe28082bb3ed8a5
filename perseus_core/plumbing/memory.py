"""How full a Redis server is, from its `INFO memory`: the one reading of
`used_memory` against `maxmemory` for every caller (the command sender that
finds no agent answered, and `perseus doctor`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from perseus_core.wire.text import clean


@dataclass(frozen=True, slots=True)
class MemoryUse:
    """One server's memory against its limit.

    Attributes:
        used: `used_memory`, bytes.
        limit: `maxmemory`, bytes; 0 means no limit.
        policy: `maxmemory_policy` (`noeviction`, `allkeys-lru`, ...).
    """

    used: int
    limit: int
    policy: str

    @property
    def over(self) -> bool:
        """Whether the server is over its limit. Redis tries to evict before
        every command, so a server still over it after that (INFO itself was
        such a command) could not free enough: under `noeviction`, or with
        nothing its policy may evict, it refuses every write (`OOM command
        not allowed`) until memory is freed."""
        return bool(self.limit) and self.used > self.limit

    def describe(self) -> str:
        """`used_memory 1,234 bytes over maxmemory 1,000, policy noeviction`,
        or how far below the limit it is."""
        if not self.limit:
            return f"used_memory {self.used:,} bytes, no maxmemory"
        relation = "over" if self.over else "of"
        return (
            f"used_memory {self.used:,} bytes {relation} maxmemory {self.limit:,},"
            f" policy {self.policy}"
        )


def memory_use(info: Mapping[str, Any]) -> MemoryUse | None:
    """The memory figures of one server's `INFO memory` reply, or None when
    they are missing or unreadable (a cluster client's per-node answer)."""
    try:
        used, limit = int(info["used_memory"]), int(info["maxmemory"])
    except (KeyError, TypeError, ValueError):
        return None
    return MemoryUse(used, limit, clean(info.get("maxmemory_policy"), 40) or "unknown")
