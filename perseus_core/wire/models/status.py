"""The instance status payload (docs/wire-format.md 1.1 and 2.2)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import (
    ConfigDict,
    Field,
)

from perseus_core.wire.errors import PayloadError
from perseus_core.wire.models.base import (
    MAX_COUNT,
    MAX_EXCHANGE_ID,
    MAX_INTERVAL_MS,
    MAX_PID,
    MAX_TTL_MS,
    AbsentWhenInvalid,
    ConnectionState,
    WireModel,
    WireTime,
    load_json_object,
)

LIVERMORE_INTERVAL_MS = 15_000
"""How often every Livermore server heartbeats (docs/wire-format.md part 4);
its payloads carry no `heartbeatIntervalMs`."""

LIVERMORE_TTL_MS = 45_000
"""The status key TTL every Livermore server sets on each heartbeat
(docs/wire-format.md part 4); its payloads carry no `ttlMs`."""

TTL_INTERVALS = 3
"""A TTL of three heartbeat intervals (docs/wire-format.md 1.1): the interval
of a Perseus holder that says its TTL but not its interval."""

HeartbeatIntervalMs = Annotated[int, Field(gt=0, le=MAX_INTERVAL_MS), AbsentWhenInvalid]
"""A holder's heartbeat interval: a hint for readers, so one out of range or
of the wrong type reads as absent and never makes its status unreadable."""


@dataclass(frozen=True, slots=True)
class WriterTiming:
    """The heartbeat timing a status key's holder keeps, as its payload tells it
    (docs/wire-format.md 2.2 and part 4): what readers judge its heartbeat by,
    whatever their own settings are."""

    interval_ms: int
    """How often the holder heartbeats."""
    ttl_ms: int | None
    """The TTL it sets on every heartbeat; None when it does not say (then
    a reader cannot date its heartbeat by the key's PTTL)."""
    livermore: bool = False
    """Livermore's fixed timing (a payload with no `instanceId`), not the payload's own."""


LIVERMORE_TIMING = WriterTiming(LIVERMORE_INTERVAL_MS, LIVERMORE_TTL_MS, livermore=True)
"""The timing of every Livermore server."""


class InstanceStatus(WireModel):
    """The JSON object in `exchange:{id}:status` (docs/wire-format.md 1.1 and 2.2)."""

    # Read 10,000 at a time from JSON, with few repeated strings: pydantic's
    # string cache costs more lookups than it saves allocations. Frozen: a
    # reader shares one set of provided fields among its statuses
    # (`share_fields_set`), and nobody changes a status once read or built.
    model_config = ConfigDict(cache_strings=False, frozen=True)

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
    heartbeat_interval_ms: HeartbeatIntervalMs | None = None
    """How often (ms) the holder heartbeats, so a reader judges its heartbeat
    by the holder's timing instead of its own settings."""

    def writer_timing(self) -> WriterTiming | None:
        """The heartbeat timing of this payload's holder, or None when it says nothing of it.

        A payload's own `heartbeatIntervalMs` and `ttlMs` come first (an
        interval alone leaves the TTL unknown; a TTL alone implies an
        interval of a third of it). A payload with neither and no
        `instanceId` is a Livermore server's: 15 s / 45 s. A Perseus payload
        with neither (an older writer) says nothing: readers fall back to
        their own settings.
        """
        interval, ttl = self.heartbeat_interval_ms, self.ttl_ms
        if interval is not None:
            return WriterTiming(interval, ttl)
        if ttl is not None:
            return WriterTiming(max(1, ttl // TTL_INTERVALS), ttl)
        return LIVERMORE_TIMING if self.instance_id is None else None

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
        for extra in (
            "instanceId",
            "epoch",
            "pid",
            "pidScope",
            "version",
            "ttlMs",
            "heartbeatIntervalMs",
        ):
            if data.get(extra) is None:
                data.pop(extra, None)
        return data

    def to_json(self) -> str:
        """Compact JSON, byte-for-byte the shape the TypeScript writer produces."""
        return json.dumps(self.to_wire(), separators=(",", ":"), ensure_ascii=False)
