"""Catalog entries and agent presence (docs/wire-format.md 2.1 and 2.4)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import (
    ConfigDict,
    Field,
)

from perseus_core.wire.models.base import (
    MAX_EXCHANGE_ID,
    MAX_PID,
    ConnectionState,
    WireModel,
    WireTime,
    load_json_object,
)


class CatalogEntry(WireModel):
    """One known exchange in the `perseus:exchanges` hash."""

    model_config = ConfigDict(cache_strings=False, frozen=True)  # as InstanceStatus

    id: int = Field(ge=0, le=MAX_EXCHANGE_ID)
    name: str = Field(min_length=1, max_length=256)
    display_name: str = ""
    is_active: bool = True
    livermore_sub: str | None = Field(default=None, min_length=1, max_length=256)
    """The owner identity of the TypeScript (Livermore) servers that run this
    exchange: with it, start and stop reach them over their own channel
    (docs/wire-format.md, "Sharing Redis with Livermore"). Optional."""

    @classmethod
    def from_json(cls, raw: str | bytes) -> CatalogEntry:
        """Parse a catalog value; raise PayloadError saying what is wrong."""
        return cls.validated(load_json_object(raw, "catalog entry"), "catalog entry")

    def to_json(self) -> str:
        """Compact JSON for the catalog hash (`livermoreSub` only when set)."""
        return self.model_dump_json(by_alias=True, exclude_none=True)

    @property
    def label(self) -> str:
        """The name to show: the display name, else the name."""
        return self.display_name or self.name


FATAL_NOTE_PREFIX = "FATAL: "
"""How an agent's presence note starts while its restart policy has given up."""


class AgentPresence(WireModel):
    """One running agent, as it announces itself in `perseus:agents:{exchangeId}`.

    An idle agent holds no status key, so without this the dashboard could not
    tell an exchange that `start` would bring up from one nobody runs. Only
    `agentId` and `exchangeId` are required: every other field is shown when
    present, so a member written by an older or newer Perseus still reads.
    """

    agent_id: str = Field(min_length=1, max_length=256)
    exchange_id: int = Field(ge=0, le=MAX_EXCHANGE_ID)
    exchange_name: str = ""
    hostname: str = ""
    pid: int | None = Field(default=None, ge=0, le=MAX_PID)
    state: str = ConnectionState.IDLE.value
    since: WireTime | None = None
    version: str | None = None
    note: str | None = None
    """What keeps the agent from doing what it was asked, for a person (e.g.
    an `--autostart` refused because another agent holds the slot, being
    retried); None when nothing does."""
    pid_scope: str | None = Field(default=None, max_length=256)
    """Where `pid` means something (kernel boot id and pid namespace): a
    reader in the same scope checks the pid and does not list an agent whose
    process is gone (killed with -9), without waiting for its expiry."""

    @property
    def fatal(self) -> bool:
        """Whether its restart policy has given up (FATAL) until an operator's
        start: its note says so first (docs/wire-format.md 2.4)."""
        return self.note is not None and self.note.startswith(FATAL_NOTE_PREFIX)

    @classmethod
    def from_json(cls, raw: str | bytes) -> AgentPresence:
        """Parse a presence member; raise PayloadError saying what is wrong."""
        return cls.validated(load_json_object(raw, "agent presence"), "agent presence")

    def to_wire(self) -> dict[str, Any]:
        """The member as docs/wire-format.md 2.4 writes it (every field, nulls included)."""
        return self.model_dump(by_alias=True, mode="json")

    def to_json(self) -> str:
        """Compact JSON: the sorted-set member. Byte-identical for identical
        presence, so a refresh that changes nothing only moves the score."""
        return json.dumps(self.to_wire(), separators=(",", ":"), ensure_ascii=False)
