"""Activity stream entries (docs/wire-format.md 1.3, 2.3, 2.7 and 2.8)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
)
from pydantic.alias_generators import to_camel

from perseus_core.wire.models.base import share_fields_set
from perseus_core.wire.timeutil import id_time, parse_ts_or_none

NO_EXCHANGE_NAME = "unknown"
"""The exchange name of entries that belong to no exchange: a Livermore server
whose start fails before it knows its exchange logs into
`logs:network:unknown`, with `exchangeId` 0."""


def names_no_exchange(exchange_id: str, exchange_name: str) -> bool:
    """Whether an entry's `exchangeId` and `exchangeName` (raw, as stored) say
    it belongs to no exchange: id 0, or the name `unknown` (any case).

    No exchange has slot 0 (Livermore's ids start at 1), and no reader may
    invent one from such an entry: it is shown as an entry, never listed as
    an exchange (docs/wire-format.md 2.1).
    """
    number = exchange_id.strip()
    if number.isascii() and number.isdecimal() and int(number) == 0:
        return True
    return exchange_name.strip().lower() == NO_EXCHANGE_NAME


def _natural(value: str) -> int | None:
    """A count or id written as a string, or None if it is not one: only
    ASCII digits, at most 18 of them (`isdigit` alone would let `²` through,
    which `int` rejects, and a huge string would make a huge integer)."""
    if value.isascii() and value.isdecimal() and len(value) <= 18:
        return int(value)
    return None


class _EntryBase(BaseModel):
    """Fields every activity entry may carry; all strings, all optional on read.

    `id` (the stream ID), `stream` (the exchange name from the key) and `key`
    (the stream key: an exchange has a shared and a Perseus-only stream) are
    not wire fields: they say where the entry was read from.
    """

    # Frozen: the entries read share their sets of provided fields (`share_fields_set`).
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )

    id: str = Field(default="", exclude=True)
    stream: str = Field(default="", exclude=True)
    key: str = Field(default="", exclude=True)
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
    def moment(self) -> datetime | None:
        """When the entry happened, as every reader orders entries: its own
        timestamp, else when Redis stored it (its stream ID); None if neither
        says."""
        return parse_ts_or_none(self.timestamp) or id_time(self.id)

    @property
    def exchange_id_int(self) -> int | None:
        """The exchange id as an integer, or None if missing or not an id
        (`_natural`)."""
        return _natural(self.exchange_id)

    @property
    def names_no_exchange(self) -> bool:
        """This entry belongs to no exchange (`names_no_exchange`; its stream's
        name counts too: `logs:network:unknown`)."""
        in_unknown_stream = self.stream.lower() == NO_EXCHANGE_NAME
        return in_unknown_stream or names_no_exchange(self.exchange_id, self.exchange_name)

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


def holder_process(instance_id: str) -> str:
    """The process part of a holder token `{hostname}:{exchangeId}:{pid}:{startMs}`:
    all but its `startMs`.

    An agent makes a new token for every run (a new `startMs`) in the same
    process, so two tokens that differ only there name one holder re-claiming
    its exchange, not a change of holder (docs/wire-format.md 2.7). A token
    without a colon is its own process part.
    """
    return instance_id.rsplit(":", 1)[0]


class HolderEntry(_EntryBase):
    """`event=holder`: a Perseus instance claimed the exchange, and the last
    holder on record was another process (or none was on record).

    `hostname`, `ip`, `instanceId`, `pid` and `epoch` are the new holder's;
    the `previous*` fields the holder it followed, empty when none was on
    record; `via` says how the slot was taken: `claim` (the key was free) or
    `takeover` (the holder's process was proven gone and its key replaced).
    """

    _wire_order = (
        "event", "timestamp", "exchangeId", "exchangeName", "hostname", "ip", "instanceId",
        "pid", "epoch", "via", "previousInstanceId", "previousHostname", "previousPid",
    )  # fmt: skip

    event: Literal["holder"] = "holder"
    instance_id: str = ""
    pid: str = ""
    epoch: str = ""
    via: str = ""
    previous_instance_id: str = ""
    previous_hostname: str = ""
    previous_pid: str = ""

    @property
    def changed(self) -> bool:
        """Whether it names a previous holder that was another process: a
        holder change, not the first holder on record. A previous holder
        named only by its host (no token: not a Perseus writer) is another."""
        previous = self.previous_instance_id
        if not previous:
            return bool(self.previous_hostname)
        return holder_process(previous) != holder_process(self.instance_id)


class RestartEntry(_EntryBase):
    """`event=restart`: an agent's restart policy scheduled an automatic
    restart after a run ended on its own (docs/wire-format.md 2.8).

    `attempt` is the quick failures in a row so far (0 after a run that
    lasted, or one that ended well under `--restart always`), `startRetries`
    how many of them make the policy give up (FATAL), `delayMs` the wait
    before the restart, `reason` how the run ended. Read from Redis, any of
    them may be missing or malformed: the properties then read None.
    """

    _wire_order = (
        "event", "timestamp", "exchangeId", "exchangeName", "hostname", "ip",
        "attempt", "startRetries", "delayMs", "reason",
    )  # fmt: skip

    event: Literal["restart"] = "restart"
    attempt: str = ""
    start_retries: str = ""
    delay_ms: str = ""
    reason: str = ""

    @property
    def attempt_count(self) -> int | None:
        """The quick failures in a row, or None if missing or not a count."""
        return _natural(self.attempt)

    @property
    def retries_count(self) -> int | None:
        """The quick failures that make the policy give up, or None."""
        return _natural(self.start_retries)

    @property
    def delay_s(self) -> float | None:
        """The wait before the restart in seconds, or None if missing or not
        a number of milliseconds."""
        ms = _natural(self.delay_ms)
        return None if ms is None else ms / 1000


def restart_words(
    delay_s: float | None, attempt: int | None, retries: int | None, reason: str
) -> str:
    """How a scheduled restart reads, said once for the agent's presence note
    and for every surface that shows a restart entry: `restarting in 1.4s
    (quick failure 2 of 5): child command exited with code 2`. A restart
    after a run that lasted (attempt 0 or None) names no failure count; an
    unknown delay or retry count is left out, never guessed."""
    text = "restarting" if delay_s is None else f"restarting in {delay_s:.1f}s"
    if attempt:
        text += f" (quick failure {attempt}" + (f" of {retries})" if retries else ")")
    return f"{text}: {reason}" if reason else text


class OtherEntry(_EntryBase):
    """Any other event (or none): kept whole so it can be shown generically."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="allow", frozen=True
    )

    @property
    def extra_fields(self) -> dict[str, str]:
        """Fields beyond the common ones, in stream order."""
        return {k: str(v) for k, v in (self.model_extra or {}).items()}


_KNOWN_EVENTS = ("state_transition", "error", "command", "holder", "restart")


def _entry_tag(value: Any) -> str:
    event = value.get("event") if isinstance(value, dict) else getattr(value, "event", None)
    return event if event in _KNOWN_EVENTS else "other"


ActivityEntry = Annotated[
    Annotated[StateTransitionEntry, Tag("state_transition")]
    | Annotated[ErrorEntry, Tag("error")]
    | Annotated[CommandEntry, Tag("command")]
    | Annotated[HolderEntry, Tag("holder")]
    | Annotated[RestartEntry, Tag("restart")]
    | Annotated[OtherEntry, Tag("other")],
    Discriminator(_entry_tag),
]
"""Any activity entry; unknown events become `OtherEntry`."""

_ENTRY_ADAPTER: TypeAdapter[ActivityEntry] = TypeAdapter(ActivityEntry)


def parse_entry(
    entry_id: str, fields: dict[str, str], stream: str = "", key: str = ""
) -> ActivityEntry:
    """Build an entry from raw stream fields. Never raises: a field that is
    missing reads as an empty string, and an unknown event as `OtherEntry`."""
    data: dict[str, Any] = {k: v if isinstance(v, str) else str(v) for k, v in fields.items()}
    data["id"] = entry_id
    data["stream"] = stream
    data["key"] = key
    entry = _ENTRY_ADAPTER.validate_python(data)
    share_fields_set(entry)
    return entry
