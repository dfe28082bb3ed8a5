"""What every wire model shares: the states, wire timestamps, strict JSON objects and
the error messages a person can act on (docs/wire-format.md 1.1 and 1.2)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Self, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    PlainSerializer,
    ValidationError,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema, from_json

from perseus_core.wire.errors import PayloadError
from perseus_core.wire.timeutil import format_ts, parse_ts

MAX_PAYLOAD_BYTES = 64 * 1024
"""Largest status/command/catalog JSON accepted; anything bigger is reported, not parsed."""

MAX_EXCHANGE_ID = 10**18 - 1
"""Largest exchange id read or written: 18 decimal digits, what a catalog
field or a status key's id may hold (`catalog.field_id`, `keys.parse_status_key`)."""

MAX_PID = 2**31 - 1
"""Largest process id a payload may carry (`pid_t` is a signed 32-bit integer
on every platform Perseus runs on). A bigger one is reported, not parsed: the
pid check (`os.kill`) would raise OverflowError on it, and no process has it."""

MAX_COUNT = 2**63 - 1
"""Largest epoch, count, TTL or epoch-millisecond timestamp a payload may carry:
Redis's own integers (`INCR`, `PEXPIRE`) are signed 64-bit, so anything
beyond was not written by a Perseus or Livermore writer."""

MAX_TTL_MS = 10**12
"""Largest key TTL a payload may carry (`ttlMs`: about 31 years). A reader dates
the last heartbeat as that TTL before now, and a date further back than the
year 1 cannot be represented."""

MAX_INTERVAL_MS = MAX_TTL_MS
"""Largest heartbeat interval a payload may carry (`heartbeatIntervalMs`): no
longer than the longest TTL, so a reader's thresholds stay representable."""

_EXCHANGE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ConnectionState(StrEnum):
    """The six lifecycle states of docs/wire-format.md 1.2."""

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


_CANONICAL_TIME = (
    r"^(?:000[2-9]|00[1-9][0-9]|0[1-9][0-9]{2}|[1-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9])-"
    r"[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,9})?Z$"
)
"""The UTC form every writer uses (`Date.toISOString()`, also with no fraction or
up to nanoseconds), in the years `parse_ts` accepts: the one form pydantic-core
may parse on its own. Years 1 and 9999 take the `parse_ts` path, which rejects
them."""


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


def _absent(_value: Any) -> None:
    return None


class AbsentWhenInvalid:
    """Marks an optional field a reader can do without: a value its own
    constraints reject reads as absent (None) instead of making the whole
    payload invalid. For hints such as a writer's heartbeat timing, where a
    bad value must never hide the status it came with.

    Built as a union of the constrained schema and a fallback, so a valid
    value costs no Python call on the bulk JSON path.
    """

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        checked = handler(source)
        fallback = core_schema.no_info_plain_validator_function(_absent)
        return core_schema.union_schema([checked, fallback], mode="left_to_right")

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        choices = schema.get("choices", [schema])
        first = choices[0]
        return handler(first[0] if isinstance(first, tuple) else first)


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


def load_json_object(raw: str | bytes, what: str) -> dict[str, Any]:
    size = len(raw)
    if size > MAX_PAYLOAD_BYTES:
        raise PayloadError(f"{what} is {size:,} bytes, over the {MAX_PAYLOAD_BYTES:,} byte limit")
    try:
        # pydantic-core's parser bounds nesting depth (a 20,000-deep array is
        # "recursion limit exceeded", not a RecursionError) and rejects invalid
        # UTF-8 with a ValueError, so every bad input ends up as a PayloadError.
        data = from_json(raw)
    except ValueError as exc:
        raise PayloadError(f"{what} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise PayloadError(f"{what} is JSON {type(data).__name__}, expected an object")
    return data


SHARED_FIELD_SETS_MAX = 64
"""How many distinct sets of provided fields `share_fields_set` keeps (a
hostile writer could vary them without end: past this, a model keeps its own)."""

_shared_field_sets: dict[int, list[set[str]]] = {}
"""The sets shared so far, by size."""


def share_fields_set(model: BaseModel) -> None:
    """Point `model`'s set of provided field names at one set shared by every
    model that was given the same fields.

    pydantic gives each validated model a set of its own: about 2 KB for a
    status payload's 22 fields and 700 bytes for a stream entry's 11, which
    was more than half of what a validated status holds. A 10,000-exchange
    fleet keeps 10,000 statuses and up to 20,000 entries (`timeline.KEPT_IN_FLEET`),
    all with one of a few sets. Only for models that are never assigned to:
    pydantic adds a field's name to this set when the field is assigned
    (frozen models refuse it), and copies it in `model_copy`.
    """
    fields = model.__pydantic_fields_set__
    candidates = _shared_field_sets.get(len(fields))
    if candidates is not None:
        for shared in candidates:
            if shared == fields:
                object.__setattr__(model, "__pydantic_fields_set__", shared)
                return
    if sum(map(len, _shared_field_sets.values())) < SHARED_FIELD_SETS_MAX:
        _shared_field_sets.setdefault(len(fields), []).append(fields)


_Model = TypeVar("_Model", bound=BaseModel)


def shared_json_validator(model: type[_Model]) -> Callable[[str], _Model]:
    """pydantic-core's JSON parser straight into `model` (the bulk read's fast
    path), each model it returns sharing its set of provided fields with the
    others (`share_fields_set`): a fleet's reader keeps one per exchange."""
    validate = model.__pydantic_validator__.validate_json

    def validated(raw: str) -> _Model:
        parsed: _Model = validate(raw)
        share_fields_set(parsed)
        return parsed

    return validated


class WireModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        strict=True,
    )

    @classmethod
    def validated(cls, data: dict[str, Any], what: str) -> Self:
        """`data` as this model, or PayloadError `invalid <what>: field: problem`."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise PayloadError(f"invalid {what}: {describe_validation_error(exc)}") from None


def validate_exchange_name(name: str) -> str:
    """Check a name Perseus is about to *write* (catalog, agent): 1-64 of
    letters, digits, `.`, `_`, `-`. Readers accept any name and show it safely."""
    if not _EXCHANGE_NAME_RE.match(name):
        raise ValueError(
            f"invalid exchange name {name[:80]!r}: use 1-64 letters, digits, '.', '_' or '-'"
        )
    return name
