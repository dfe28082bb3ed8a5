"""Control messages: commands and replies (docs/wire-format.md 1.5 and 2.3)."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import (
    Field,
)

from perseus_core.wire.models.base import (
    MAX_COUNT,
    WireModel,
    load_json_object,
)


class CommandType(StrEnum):
    """Commands an agent understands."""

    START = "start"
    STOP = "stop"
    PING = "ping"


class ReplyStatus(StrEnum):
    """The three reply kinds: `ack` first, then `success` or `error`."""

    ACK = "ack"
    SUCCESS = "success"
    ERROR = "error"


class Command(WireModel):
    """A control command. `type` stays a plain string so that an unknown type
    parses and can be answered with a clear error instead of being dropped."""

    correlation_id: str = Field(min_length=1, max_length=128)
    type: str = Field(max_length=64)
    payload: dict[str, Any] | None = None
    timestamp: int = Field(ge=0, le=MAX_COUNT)
    priority: int = Field(default=50, ge=1, le=100)

    @property
    def operator(self) -> str:
        """Who sent it (Perseus puts this in the payload), or empty."""
        value = (self.payload or {}).get("operator", "")
        return value if isinstance(value, str) else ""

    @classmethod
    def from_json(cls, raw: str | bytes) -> Command:
        """Parse a command; raise PayloadError saying what is wrong."""
        return cls.validated(load_json_object(raw, "command"), "command")

    def to_json(self) -> str:
        """Compact JSON for the command stream."""
        return self.model_dump_json(by_alias=True, exclude_none=True)


class CommandReply(WireModel):
    """A reply to a command: `ack`, then `success` or `error`."""

    correlation_id: str
    status: ReplyStatus
    message: str | None = None
    data: dict[str, Any] | None = None
    timestamp: int = Field(ge=0, le=MAX_COUNT)

    @classmethod
    def from_json(cls, raw: str | bytes) -> CommandReply:
        """Parse a reply; raise PayloadError saying what is wrong."""
        data = load_json_object(raw, "reply")
        status = data.get("status")
        if isinstance(status, str) and status in ReplyStatus.__members__.values():
            data["status"] = ReplyStatus(status)
        return cls.validated(data, "reply")

    def to_json(self) -> str:
        """Compact JSON for the reply list."""
        return self.model_dump_json(by_alias=True, exclude_none=True)
