"""The instance status payload (docs/wire-format.md 1.1 and 2.2)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import (
    ConfigDict,
    Field,
)

from perseus_core.wire.errors import PayloadError
from perseus_core.wire.models.base import (
    MAX_COUNT,
    MAX_EXCHANGE_ID,
    MAX_PID,
    MAX_TTL_MS,
    ConnectionState,
    WireModel,
    WireTime,
    load_json_object,
)


class InstanceStatus(WireModel):
    """The JSON object in `exchange:{id}:status` (docs/wire-format.md 1.1 and 2.2)."""

    # Read 10,000 at a time from JSON, with few repeated strings: pydantic's
    # string cache costs more lookups than it saves allocations.
    model_config = ConfigDict(cache_strings=False)

    exchange_id: int = Field(ge=0, le=MAX_EXCHANGE_ID)
    exchange_name: str
    hostname: str
    ip_address: str | None = None
    country_code: str | None = None
    admin_email: str | None = None
    admin_display_name: str | None = None
    connection_state: ConnectionState
    symbol_count: int = Field(default=0, ge=0, le=MAX_COUNT)
    connected_at: WireTime | None = None
    last_heartbeat: WireTime
    last_state_change: WireTime
    registered_at: WireTime
    last_error: str | None = None
    last_error_at: WireTime | None = None
    # Perseus extras (docs/wire-format.md 2.2): absent in payloads from other writers.
    instance_id: str | None = None
    epoch: int | None = Field(default=None, ge=0, le=MAX_COUNT)
    pid: int | None = Field(default=None, ge=0, le=MAX_PID)
    pid_scope: str | None = Field(default=None, max_length=256)
    """Where `pid` means something (`process_scope()` of the holder): only a
    process of the same scope may conclude from `pid` that the holder is gone."""
    version: str | None = None
    ttl_ms: int | None = Field(default=None, gt=0, le=MAX_TTL_MS)
    """The TTL (ms) the holder gives its status key on every heartbeat, so a
    reader can date the last heartbeat from the key's PTTL on Redis's clock."""

    @classmethod
    def from_json(cls, raw: str | bytes) -> InstanceStatus:
        """Parse a status payload; raise PayloadError saying what is wrong."""
        data = load_json_object(raw, "status payload")
        # The enum is validated from its string value; strict mode would reject it.
        state = data.get("connectionState")
        if isinstance(state, str) and state not in ConnectionState.__members__.values():
            allowed = ", ".join(s.value for s in ConnectionState)
            raise PayloadError(
                f"unknown connectionState {state[:40]!r} (expected one of {allowed})"
            )
        if isinstance(state, str):
            data = {**data, "connectionState": ConnectionState(state)}
        return cls.validated(data, "status payload")

    def to_wire(self) -> dict[str, Any]:
        """The payload as docs/wire-format.md 1.1 writes it: every core field, extras when set."""
        data = self.model_dump(by_alias=True, mode="json")
        for extra in ("instanceId", "epoch", "pid", "pidScope", "version", "ttlMs"):
            if data.get(extra) is None:
                data.pop(extra, None)
        return data

    def to_json(self) -> str:
        """Compact JSON, byte-for-byte the shape the TypeScript writer produces."""
        return json.dumps(self.to_wire(), separators=(",", ":"), ensure_ascii=False)
