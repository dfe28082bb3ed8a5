"""Pydantic models of the wire format (WIRE.md), one per payload kind.

Every value read from Redis is untrusted: parsing never raises anything but
`PayloadError`, whose message says what is wrong in words a person can act on.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainSerializer,
    Tag,
    TypeAdapter,
    ValidationError,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema

from perseus_core.wire.errors import PayloadError
from perseus_core.wire.timeutil import format_ts, parse_ts, parse_ts_or_none

MAX_PAYLOAD_BYTES = 64 * 1024
"""Largest status/command/catalog JSON accepted; anything bigger is reported, not parsed."""

_EXCHANGE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ConnectionState(StrEnum):
    """The six lifecycle states of WIRE.md 1.2."""

    IDLE = "idle"
    STARTING = "starting"
    WARMING = "warming"
    ACTIVE = "active"
    STOPPING = "stopping"
    STOPPED = "stopped"


def _parse_wire_time(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return parse_ts(value)
        except ValueError as exc:
            raise ValueError(f"not an ISO-8601 timestamp: {value[:40]!r}") from exc
    return value


_CANONICAL_TIME = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?Z$"
"""The UTC form every writer uses (`Date.toISOString()`, also with no fraction or
up to nanoseconds): the one form pydantic-core may parse on its own."""


class _WireTimeSchema:
    """How a `WireTime` is validated.

    Python input (`model_validate`, constructors, `from_json`) goes through
    `parse_ts`, which reads any ISO-8601 form and makes the result UTC. JSON
    input (`model_validate_json`, the bulk read path) first tries
    pydantic-core's own parser, without a Python call, but only on a string
    in the canonical UTC form above; anything else takes the `parse_ts` path,
    so both inputs accept exactly the same strings with the same instants
    (pydantic-core alone would also take a number in a string as a Unix time
    and keep a naive or non-UTC value as it is). Stored values are aware and
    UTC either way; the canonical path's `tzinfo` is pydantic-core's UTC,
    equal to `datetime.UTC`.
    """

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        lenient = core_schema.no_info_before_validator_function(_parse_wire_time, handler(source))
        canonical = core_schema.chain_schema(
            [
                core_schema.str_schema(strict=True, pattern=_CANONICAL_TIME),
                core_schema.datetime_schema(strict=False),
            ]
        )
        return core_schema.json_or_python_schema(
            json_schema=core_schema.union_schema([canonical, lenient], mode="left_to_right"),
            python_schema=lenient,
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {"type": "string", "format": "date-time"}


WireTime = Annotated[
    datetime,
    _WireTimeSchema,
    PlainSerializer(format_ts, return_type=str),
]
"""A timestamp read in any ISO-8601 form and written as `Date.toISOString()` does."""


def describe_validation_error(exc: ValidationError, limit: int = 3) -> str:
    """A one-line summary of a pydantic error: `field: problem; field: problem`."""
    parts = []
    for err in exc.errors()[:limit]:
        loc = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{loc}: {err['msg']}")
    more = len(exc.errors()) - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


def _load_json_object(raw: str | bytes, what: str) -> dict[str, Any]:
    size = len(raw)
    if size > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"{what} is {size:,} bytes, over the {MAX_PAYLOAD_BYTES:,} byte limit")
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PayloadError(f"{what} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise PayloadError(f"{what} is JSON {type(data).__name__}, expected an object")
    return data


class _WireModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        strict=True,
    )


class InstanceStatus(_WireModel):
    """The JSON object in `exchange:{id}:status` (WIRE.md 1.1 and 2.2)."""

    # Read 10,000 at a time from JSON, with few repeated strings: pydantic's
    # string cache costs more lookups than it saves allocations.
    model_config = ConfigDict(cache_strings=False)

    exchange_id: int = Field(ge=0)
    exchange_name: str
    hostname: str
    ip_address: str | None = None
    country_code: str | None = None
    admin_email: str | None = None
    admin_display_name: str | None = None
    connection_state: ConnectionState
    symbol_count: int = Field(default=0, ge=0)
    connected_at: WireTime | None = None
    last_heartbeat: WireTime
    last_state_change: WireTime
    registered_at: WireTime
    last_error: str | None = None
    last_error_at: WireTime | None = None
    # Perseus extras (WIRE.md 2.2): absent in payloads from other writers.
    instance_id: str | None = None
    epoch: int | None = None
    pid: int | None = None
    version: str | None = None

    @classmethod
    def from_json(cls, raw: str | bytes) -> InstanceStatus:
        """Parse a status payload; raise PayloadError saying what is wrong."""
        data = _load_json_object(raw, "status payload")
        # The enum is validated from its string value; strict mode would reject it.
        state = data.get("connectionState")
        if isinstance(state, str) and state not in ConnectionState.__members__.values():
            allowed = ", ".join(s.value for s in ConnectionState)
            raise PayloadError(
                f"unknown connectionState {state[:40]!r} (expected one of {allowed})"
            )
        try:
            return cls.model_validate(
                {**data, "connectionState": ConnectionState(state)}
                if isinstance(state, str)
                else data
            )
        except ValidationError as exc:
            raise PayloadError(
                f"invalid status payload: {describe_validation_error(exc)}"
            ) from None

    def to_wire(self) -> dict[str, Any]:
        """The payload as WIRE.md 1.1 writes it: every core field, extras when set."""
        data = self.model_dump(by_alias=True, mode="json")
        for extra in ("instanceId", "epoch", "pid", "version"):
            if data.get(extra) is None:
                data.pop(extra, None)
        return data

    def to_json(self) -> str:
        """Compact JSON, byte-for-byte the shape the TypeScript writer produces."""
        return json.dumps(self.to_wire(), separators=(",", ":"), ensure_ascii=False)


# --- activity stream entries (WIRE.md 1.3 and 2.3) ---------------------------


class _EntryBase(BaseModel):
    """Fields every activity entry may carry; all strings, all optional on read.

    `id` (the stream ID) and `stream` (the exchange name from the key) are not
    wire fields: they say where the entry was read from.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    id: str = Field(default="", exclude=True)
    stream: str = Field(default="", exclude=True)
    event: str = ""
    timestamp: str = ""
    exchange_id: str = ""
    exchange_name: str = ""
    hostname: str = ""
    ip: str = ""

    @property
    def time(self) -> datetime | None:
        """The entry's timestamp, or None if missing or unparseable."""
        return parse_ts_or_none(self.timestamp)

    @property
    def exchange_id_int(self) -> int | None:
        """The exchange id as an integer, or None if missing or not a number."""
        return int(self.exchange_id) if self.exchange_id.isdigit() else None

    _wire_order: ClassVar[tuple[str, ...]] = ()

    def to_fields(self) -> dict[str, str]:
        """The field/value pairs written to the stream (all strings), in the
        order the TypeScript writer uses for the known events."""
        data = {k: str(v) for k, v in self.model_dump(by_alias=True).items()}
        ordered = {k: data.pop(k) for k in self._wire_order if k in data}
        ordered.update(data)
        return ordered


class StateTransitionEntry(_EntryBase):
    """`event=state_transition`: one lifecycle transition."""

    _wire_order = (
        "event", "timestamp", "fromState", "toState", "exchangeId",
        "exchangeName", "hostname", "ip", "adminEmail",
    )  # fmt: skip

    event: Literal["state_transition"] = "state_transition"
    from_state: str = ""
    to_state: str = ""
    admin_email: str = ""


class ErrorEntry(_EntryBase):
    """`event=error`: an error, with the state the instance was in."""

    _wire_order = (
        "event", "timestamp", "error", "exchangeId", "exchangeName", "hostname", "ip", "state",
    )  # fmt: skip

    event: Literal["error"] = "error"
    error: str = ""
    state: str = ""


class CommandEntry(_EntryBase):
    """`event=command`: a control command and its outcome (the audit trail)."""

    _wire_order = (
        "event", "command", "correlationId", "operator", "status", "message", "timestamp",
        "exchangeId", "exchangeName", "hostname", "ip",
    )  # fmt: skip

    event: Literal["command"] = "command"
    command: str = ""
    correlation_id: str = ""
    operator: str = ""
    status: str = ""
    message: str = ""


class OtherEntry(_EntryBase):
    """Any other event (or none): kept whole so it can be shown generically."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    @property
    def extra_fields(self) -> dict[str, str]:
        """Fields beyond the common ones, in stream order."""
        return {k: str(v) for k, v in (self.model_extra or {}).items()}


_KNOWN_EVENTS = ("state_transition", "error", "command")


def _entry_tag(value: Any) -> str:
    event = value.get("event") if isinstance(value, dict) else getattr(value, "event", None)
    return event if event in _KNOWN_EVENTS else "other"


ActivityEntry = Annotated[
    Annotated[StateTransitionEntry, Tag("state_transition")]
    | Annotated[ErrorEntry, Tag("error")]
    | Annotated[CommandEntry, Tag("command")]
    | Annotated[OtherEntry, Tag("other")],
    Discriminator(_entry_tag),
]
"""Any activity entry; unknown events become `OtherEntry`."""

_ENTRY_ADAPTER: TypeAdapter[ActivityEntry] = TypeAdapter(ActivityEntry)


def parse_entry(entry_id: str, fields: dict[str, str], stream: str = "") -> ActivityEntry:
    """Build an entry from raw stream fields. Never raises: a field that is
    missing reads as an empty string, and an unknown event as `OtherEntry`."""
    data: dict[str, Any] = {k: v if isinstance(v, str) else str(v) for k, v in fields.items()}
    data["id"] = entry_id
    data["stream"] = stream
    return _ENTRY_ADAPTER.validate_python(data)


# --- control messages (WIRE.md 1.5) -----------------------------------------


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


class Command(_WireModel):
    """A control command. `type` stays a plain string so that an unknown type
    parses and can be answered with a clear error instead of being dropped."""

    correlation_id: str = Field(min_length=1, max_length=128)
    type: str = Field(max_length=64)
    payload: dict[str, Any] | None = None
    timestamp: int
    priority: int = Field(default=50, ge=1, le=100)

    @property
    def operator(self) -> str:
        """Who sent it (Perseus puts this in the payload), or empty."""
        value = (self.payload or {}).get("operator", "")
        return value if isinstance(value, str) else ""

    @classmethod
    def from_json(cls, raw: str | bytes) -> Command:
        """Parse a command; raise PayloadError saying what is wrong."""
        data = _load_json_object(raw, "command")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise PayloadError(f"invalid command: {describe_validation_error(exc)}") from None

    def to_json(self) -> str:
        """Compact JSON for the command stream."""
        return self.model_dump_json(by_alias=True, exclude_none=True)


class CommandReply(_WireModel):
    """A reply to a command: `ack`, then `success` or `error`."""

    correlation_id: str
    status: ReplyStatus
    message: str | None = None
    data: dict[str, Any] | None = None
    timestamp: int

    @classmethod
    def from_json(cls, raw: str | bytes) -> CommandReply:
        """Parse a reply; raise PayloadError saying what is wrong."""
        data = _load_json_object(raw, "reply")
        status = data.get("status")
        if isinstance(status, str) and status in ReplyStatus.__members__.values():
            data["status"] = ReplyStatus(status)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise PayloadError(f"invalid reply: {describe_validation_error(exc)}") from None

    def to_json(self) -> str:
        """Compact JSON for the reply list."""
        return self.model_dump_json(by_alias=True, exclude_none=True)


# --- catalog (WIRE.md 2.1) ----------------------------------------------------


class CatalogEntry(_WireModel):
    """One known exchange in the `perseus:exchanges` hash."""

    model_config = ConfigDict(cache_strings=False)  # as InstanceStatus

    id: int = Field(ge=0)
    name: str = Field(min_length=1, max_length=256)
    display_name: str = ""
    is_active: bool = True

    @classmethod
    def from_json(cls, raw: str | bytes) -> CatalogEntry:
        """Parse a catalog value; raise PayloadError saying what is wrong."""
        data = _load_json_object(raw, "catalog entry")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise PayloadError(f"invalid catalog entry: {describe_validation_error(exc)}") from None

    def to_json(self) -> str:
        """Compact JSON for the catalog hash."""
        return self.model_dump_json(by_alias=True)

    @property
    def label(self) -> str:
        """The name to show: the display name, else the name."""
        return self.display_name or self.name


# --- agent presence (WIRE.md 2.4) ----------------------------------------------


class AgentPresence(_WireModel):
    """One running agent, as it announces itself in `perseus:agents:{exchangeId}`.

    An idle agent holds no status key, so without this the dashboard could not
    tell an exchange that `start` would bring up from one nobody runs. Only
    `agentId` and `exchangeId` are required: every other field is shown when
    present, so a member written by an older or newer Perseus still reads.
    """

    agent_id: str = Field(min_length=1, max_length=256)
    exchange_id: int = Field(ge=0)
    exchange_name: str = ""
    hostname: str = ""
    pid: int | None = None
    state: str = ConnectionState.IDLE.value
    since: WireTime | None = None
    version: str | None = None

    @classmethod
    def from_json(cls, raw: str | bytes) -> AgentPresence:
        """Parse a presence member; raise PayloadError saying what is wrong."""
        data = _load_json_object(raw, "agent presence")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise PayloadError(
                f"invalid agent presence: {describe_validation_error(exc)}"
            ) from None

    def to_wire(self) -> dict[str, Any]:
        """The member as WIRE.md 2.4 writes it (every field, nulls included)."""
        return self.model_dump(by_alias=True, mode="json")

    def to_json(self) -> str:
        """Compact JSON: the sorted-set member. Byte-identical for identical
        presence, so a refresh that changes nothing only moves the score."""
        return json.dumps(self.to_wire(), separators=(",", ":"), ensure_ascii=False)


def validate_exchange_name(name: str) -> str:
    """Check a name Perseus is about to *write* (catalog, agent): 1-64 of
    letters, digits, `.`, `_`, `-`. Readers accept any name and show it safely."""
    if not _EXCHANGE_NAME_RE.match(name):
        raise ValueError(
            f"invalid exchange name {name[:80]!r}: use 1-64 letters, digits, '.', '_' or '-'"
        )
    return name
