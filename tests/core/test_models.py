"""The wire models read exactly what docs/wire-format.md describes and reject the rest clearly."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from pydantic import ValidationError

from perseus_core.store.network.catalog import validate_catalog_json
from perseus_core.store.network.reader import validate_status_json
from perseus_core.wire.errors import PayloadError
from perseus_core.wire.models import (
    LIVERMORE_INTERVAL_MS,
    LIVERMORE_TTL_MS,
    MAX_PAYLOAD_BYTES,
    AgentPresence,
    CatalogEntry,
    Command,
    CommandEntry,
    CommandReply,
    ConnectionState,
    ErrorEntry,
    InstanceStatus,
    OtherEntry,
    ReplyStatus,
    RestartEntry,
    StateTransitionEntry,
    WriterTiming,
    parse_entry,
    validate_exchange_name,
)
from perseus_core.wire.models import base as base_models
from perseus_core.wire.timeutil import format_duration, format_ts, parse_ts
from tests.wire_examples import WIRE_STATUS


def test_reads_the_typescript_example_without_country_code() -> None:
    status = InstanceStatus.from_json(WIRE_STATUS)
    assert status.exchange_id == 1
    assert status.connection_state is ConnectionState.ACTIVE
    assert status.country_code is None
    assert status.instance_id is None and status.epoch is None
    assert status.last_heartbeat == datetime(2026, 2, 10, 22, 45, 0, 123000, tzinfo=UTC)


def test_writes_every_core_field_in_typescript_format() -> None:
    status = InstanceStatus.from_json(WIRE_STATUS)
    data = json.loads(status.to_json())
    original = json.loads(WIRE_STATUS)
    assert {k: v for k, v in data.items() if k != "countryCode"} == original
    assert data["countryCode"] is None
    assert "instanceId" not in data  # extras only when set


def test_extras_round_trip() -> None:
    status = InstanceStatus.from_json(WIRE_STATUS).model_copy(
        update={"instance_id": "h:1:42:1000", "epoch": 3, "pid": 42, "version": "0.1.0"}
    )
    again = InstanceStatus.from_json(status.to_json())
    assert (again.instance_id, again.epoch, again.pid, again.version) == (
        "h:1:42:1000",
        3,
        42,
        "0.1.0",
    )


def test_unknown_fields_are_ignored() -> None:
    data = json.loads(WIRE_STATUS) | {"somethingNew": [1, 2]}
    assert InstanceStatus.from_json(json.dumps(data)).exchange_name == "coinbase"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: "{not json", "not valid JSON"),
        (lambda d: "[1, 2]", "expected an object"),
        (lambda d: json.dumps(d | {"connectionState": "running"}), "unknown connectionState"),
        (lambda d: json.dumps(d | {"symbolCount": "25"}), "symbolCount"),
        (lambda d: json.dumps(d | {"exchangeId": True}), "exchangeId"),
        (lambda d: json.dumps({k: v for k, v in d.items() if k != "hostname"}), "hostname"),
        (lambda d: json.dumps(d | {"lastHeartbeat": "yesterday"}), "lastHeartbeat"),
        (lambda d: json.dumps(d | {"hostname": "x" * MAX_PAYLOAD_BYTES}), "byte limit"),
    ],
)
def test_invalid_payloads_raise_payload_error(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PayloadError, match=message):
        InstanceStatus.from_json(mutate(json.loads(WIRE_STATUS)))


@pytest.mark.parametrize(
    "text",
    [
        "2026-02-10T22:45:00.123Z",
        "2026-02-10T22:45:00Z",
        "2026-02-10T23:45:00.123+01:00",
        "2026-02-10T22:45:00.123456Z",
        "2026-02-10T22:45:00.123456789Z",
        "2026-02-10T22:45:00.123",
    ],
)
def test_timestamps_in_any_iso_form(text: str) -> None:
    moment = parse_ts(text)
    assert moment.tzinfo is not None
    assert format_ts(moment)[:19] == "2026-02-10T22:45:00"


def test_format_ts_is_javascript_iso() -> None:
    assert (
        format_ts(datetime(2026, 2, 10, 22, 45, 0, 123999, tzinfo=UTC))
        == "2026-02-10T22:45:00.123Z"
    )


def test_entries_parse_by_event_and_tolerate_missing_fields() -> None:
    transition = parse_entry(
        "1-0",
        {"event": "state_transition", "fromState": "warming", "toState": "active"},
        "coinbase",
    )
    assert isinstance(transition, StateTransitionEntry)
    assert (transition.from_state, transition.to_state, transition.hostname) == (
        "warming",
        "active",
        "",
    )
    assert transition.time is None and transition.exchange_id_int is None
    assert isinstance(parse_entry("1-1", {"event": "error", "error": "boom"}), ErrorEntry)
    assert isinstance(parse_entry("1-2", {"event": "command", "command": "start"}), CommandEntry)
    other = parse_entry("1-3", {"event": "rebalance", "weight": "3"})
    assert isinstance(other, OtherEntry)
    assert other.extra_fields == {"weight": "3"}
    assert isinstance(parse_entry("1-4", {}), OtherEntry)


def test_entry_fields_follow_wire_order() -> None:
    entry = StateTransitionEntry(timestamp="t", from_state="a", to_state="b", exchange_id="1")
    assert list(entry.to_fields()) == [
        "event", "timestamp", "fromState", "toState", "exchangeId",
        "exchangeName", "hostname", "ip", "adminEmail",
    ]  # fmt: skip
    assert all(isinstance(v, str) for v in entry.to_fields().values())


def test_restart_entries_round_trip_and_read_bad_counts_as_none() -> None:
    entry = RestartEntry(timestamp="t", exchange_id="1", attempt="2", start_retries="5",
                         delay_ms="1400", reason="exited with code 2")  # fmt: skip
    assert list(entry.to_fields()) == [
        "event", "timestamp", "exchangeId", "exchangeName", "hostname", "ip",
        "attempt", "startRetries", "delayMs", "reason",
    ]  # fmt: skip
    read = parse_entry("1-0", entry.to_fields())
    assert read == entry.model_copy(update={"id": "1-0"})
    assert (read.attempt_count, read.retries_count, read.delay_s) == (2, 5, 1.4)  # type: ignore[union-attr]
    for bad in ("", "-1", "1.5", "²", "9" * 19, "NaN"):
        odd = parse_entry("1-1", {"event": "restart", "attempt": bad, "delayMs": bad})
        assert isinstance(odd, RestartEntry)
        assert odd.attempt_count is None and odd.delay_s is None


def test_command_and_reply_round_trip_and_reject_bad_input() -> None:
    cmd = Command(correlation_id="c1", type="start", timestamp=5, payload={"operator": "ops@h"})
    again = Command.from_json(cmd.to_json())
    assert again.operator == "ops@h" and again.priority == 50
    assert Command.from_json('{"correlationId":"c","type":"launch","timestamp":1}').type == "launch"
    bad_commands = [
        '{"type":"start","timestamp":1}',
        '{"correlationId":"c","type":"start","timestamp":"x"}',
        '{"correlationId":"c","type":"start","timestamp":1,"priority":101}',
        "nope",
    ]
    for bad in bad_commands:
        with pytest.raises(PayloadError):
            Command.from_json(bad)
    reply = CommandReply(correlation_id="c1", status=ReplyStatus.ACK, timestamp=1)
    assert CommandReply.from_json(reply.to_json()).status is ReplyStatus.ACK
    with pytest.raises(PayloadError):
        CommandReply.from_json('{"correlationId":"c","status":"maybe","timestamp":1}')


def test_catalog_entry() -> None:
    entry = CatalogEntry.from_json(
        '{"id": 2, "name": "kraken", "displayName": "Kraken", "isActive": true}'
    )
    assert entry.label == "Kraken"
    assert CatalogEntry.from_json(entry.to_json()) == entry
    with pytest.raises(PayloadError):
        CatalogEntry.from_json('{"id": "2", "name": "kraken"}')


def test_agent_presence_reads_what_is_there_and_rejects_garbage() -> None:
    presence = AgentPresence(
        agent_id="bfx-01:5150:1770700000000",
        exchange_id=9,
        exchange_name="bitfinex",
        hostname="bfx-01",
        pid=5150,
        state="idle",
        since=datetime(2026, 2, 10, 22, 30, tzinfo=UTC),
        version="0.1.0",
    )
    wire = json.loads(presence.to_json())
    assert list(wire) == [
        "agentId", "exchangeId", "exchangeName", "hostname", "pid", "state", "since", "version",
        "note", "pidScope",
    ]  # fmt: skip
    assert wire["since"] == "2026-02-10T22:30:00.000Z"
    assert wire["note"] is None  # nothing holds the agent back
    assert AgentPresence.from_json(presence.to_json()) == presence
    # Only the identity is required; unknown fields and states are kept or ignored.
    sparse = AgentPresence.from_json('{"agentId": "a", "exchangeId": 1, "state": "x", "new": 1}')
    assert (sparse.hostname, sparse.pid, sparse.since, sparse.state) == ("", None, None, "x")
    for bad, why in [
        ("{", "not valid JSON"),
        ("[1]", "expected an object"),
        ('{"exchangeId": 1}', "agentId"),
        ('{"agentId": "", "exchangeId": 1}', "agentId"),
        ('{"agentId": "a", "exchangeId": "1"}', "exchangeId"),
        ('{"agentId": "a", "exchangeId": 1, "since": "soon"}', "since"),
        ("x" * (MAX_PAYLOAD_BYTES + 1), "byte limit"),
    ]:
        with pytest.raises(PayloadError, match=why):
            AgentPresence.from_json(bad)


def test_validate_exchange_name() -> None:
    assert validate_exchange_name("coinbase-pro.v2") == "coinbase-pro.v2"
    for bad in ["", "has space", "x" * 65, "[b]bold[/b]", "\x1b[31m"]:
        with pytest.raises(ValueError):
            validate_exchange_name(bad)


def test_format_duration() -> None:
    assert format_duration(42) == "42s"
    assert format_duration(312) == "5m 12s"
    assert format_duration(4 * 3600 + 23 * 60 + 5) == "4h 23m"
    assert format_duration(3 * 86400 + 7200) == "3d 2h"
    assert format_duration(-5) == "0s"


# --- timestamps read from JSON -----------------------------------------------------

_TIMESTAMP_FORMS = [
    "2026-02-10T22:45:00.123Z",
    "2026-02-10T22:45:00Z",
    "2026-02-10T22:45:00.1Z",
    "2026-02-10T22:45:00.12345Z",
    "2026-02-10T22:45:00.123456Z",
    "2026-02-10T22:45:00.123456789Z",
    "2026-02-10T22:45:00.1234567891Z",
    "2026-02-10T22:45:00.123",
    "2026-02-10T22:45:00",
    "2026-02-10T23:45:00.123+01:00",
    "2026-02-10T17:15:00.123-05:30",
    "2026-02-10T22:45:00+00:00",
    "2026-02-10T22:45:00.123+0100",
    "2026-02-10 22:45:00Z",
    "2026-02-10T22:45Z",
    "2026-02-10",
    "2026-02-10t22:45:00z",
    "2026-02-10T22:45:00.123z",
    "1770000000",
    "1770000000.5",
    "2026-02-29T00:00:00Z",
    "2026-13-01T00:00:00Z",
    "2026-02-10T24:00:00Z",
    "2026-02-10T22:60:00Z",
    "2026-02-10T22:45:60Z",
    "0000-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999999Z",
    "2026-02-10T22:45:00.Z",
    "\u0662026-02-10T22:45:00Z",  # a non-ASCII digit
    " 2026-02-10T22:45:00Z",
    "",
    "yesterday",
]


@pytest.mark.parametrize("text", _TIMESTAMP_FORMS)
def test_json_and_python_reads_accept_the_same_timestamps(text: str) -> None:
    """`model_validate_json` lets pydantic-core parse the canonical UTC form
    itself; every other string takes the same path as `from_json`, so both
    accept exactly the same strings, as the same instants, always in UTC."""
    payload = json.dumps(json.loads(WIRE_STATUS) | {"lastHeartbeat": text, "connectedAt": text})
    try:
        expected: InstanceStatus | None = InstanceStatus.from_json(payload)
    except PayloadError:
        expected = None
    try:
        got: InstanceStatus | None = InstanceStatus.model_validate_json(payload)
    except ValidationError:
        got = None
    assert got == expected
    if got is not None:
        for moment in (got.last_heartbeat, got.connected_at):
            assert moment is not None and moment.utcoffset() == timedelta(0)


def test_timestamps_from_json_in_detail() -> None:
    def read(text: str) -> datetime:
        payload = json.dumps(json.loads(WIRE_STATUS) | {"lastHeartbeat": text})
        return InstanceStatus.model_validate_json(payload).last_heartbeat

    # Naive means UTC (docs/wire-format.md), offsets are converted, nanoseconds truncated.
    assert read("2026-02-10T22:45:00.123") == datetime(2026, 2, 10, 22, 45, 0, 123000, tzinfo=UTC)
    assert read("2026-02-10T22:45:00.123").tzinfo is not None
    assert read("2026-02-10T23:45:00.5+01:00") == datetime(
        2026, 2, 10, 22, 45, 0, 500000, tzinfo=UTC
    )
    assert read("2026-02-10T23:45:00.5+01:00").utcoffset() == timedelta(0)
    assert read("2026-02-10T22:45:00.123456789Z").microsecond == 123456
    # The canonical form written back byte for byte.
    status = InstanceStatus.model_validate_json(WIRE_STATUS)
    assert json.loads(status.to_json())["lastHeartbeat"] == "2026-02-10T22:45:00.123Z"
    assert status == InstanceStatus.from_json(WIRE_STATUS)


def test_python_input_still_goes_through_the_lenient_parser() -> None:
    data = json.loads(WIRE_STATUS) | {"connectionState": ConnectionState.ACTIVE}
    status = InstanceStatus.model_validate(data | {"lastHeartbeat": "2026-02-10T23:45:00+01:00"})
    assert status.last_heartbeat == datetime(2026, 2, 10, 22, 45, tzinfo=UTC)
    with pytest.raises(ValidationError, match="not an ISO-8601 timestamp"):
        InstanceStatus.model_validate(data | {"lastHeartbeat": "1770000000"})
    with pytest.raises(PayloadError, match="since"):
        AgentPresence.from_json('{"agentId": "a", "exchangeId": 1, "since": "1770000000"}')


def test_timestamp_json_schema_is_a_date_time_string() -> None:
    schema = InstanceStatus.model_json_schema()["properties"]
    assert schema["lastHeartbeat"] == {
        "format": "date-time",
        "title": "Lastheartbeat",
        "type": "string",
    }
    assert {"format": "date-time", "type": "string"} in schema["connectedAt"]["anyOf"]


def test_canonical_timestamps_read_alike_on_both_paths_at_the_edges() -> None:
    """The canonical form goes to pydantic-core's parser on the JSON path and
    to `parse_ts` on the Python path: both must agree on every date and time,
    including impossible ones (Feb 30, hour 24, second 60, year 0)."""
    rng = random.Random(20260210)
    texts = []
    for _ in range(3_000):
        year = rng.choice([0, 1, 1970, 2000, 2024, 2026, 2100, 9999])
        month, day = rng.randint(0, 13), rng.randint(0, 32)
        hour, minute, second = rng.randint(0, 25), rng.randint(0, 61), rng.randint(0, 61)
        fraction = "".join(rng.choice("0123456789") for _ in range(rng.randint(0, 10)))
        text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
        texts.append(f"{text}.{fraction}Z" if fraction else f"{text}Z")
    accepted = 0
    for text in texts:
        payload = json.dumps(json.loads(WIRE_STATUS) | {"lastHeartbeat": text})
        try:
            expected: datetime | None = InstanceStatus.from_json(payload).last_heartbeat
        except PayloadError:
            expected = None
        try:
            got: datetime | None = InstanceStatus.model_validate_json(payload).last_heartbeat
        except ValidationError:
            got = None
        assert got == expected, text
        accepted += got is not None
    assert 0 < accepted < len(texts)  # both kinds were exercised


@pytest.mark.parametrize(
    "text",
    [
        "0001-01-01T00:00:00+01:00",
        "0001-01-01T00:00:00Z",
        "0001-01-01T00:00:00.000Z",
        "9999-12-31T23:59:59.999Z",
        "9999-12-31T23:59:59-05:00",
    ],
)
def test_timestamps_no_time_zone_can_show_are_bad_timestamps(text: str) -> None:
    """Year 1 and 9999 overflow in some reader's zone: they are rejected as
    timestamps (ValueError), never an OverflowError that would take a reader down."""
    with pytest.raises(ValueError, match="out of range"):
        parse_ts(text)
    payload = json.loads(WIRE_STATUS)
    payload["lastHeartbeat"] = text
    with pytest.raises(PayloadError, match="lastHeartbeat"):
        InstanceStatus.from_json(json.dumps(payload))
    with pytest.raises(ValidationError):  # the bulk (JSON) path agrees
        InstanceStatus.model_validate_json(json.dumps(payload))
    entry = parse_entry("1-0", {"event": "error", "timestamp": text, "error": "x"})
    assert entry.time is None


def test_every_accepted_moment_shows_in_any_time_zone() -> None:
    for text in ("0002-01-01T00:00:00Z", "9998-12-31T23:59:59.999Z"):
        moment = parse_ts(text)
        almost_a_day = timedelta(hours=24) - timedelta(microseconds=1)
        for offset in (-almost_a_day, almost_a_day):
            moment.astimezone(timezone(offset))


@pytest.mark.parametrize("model", [InstanceStatus, CatalogEntry, AgentPresence, Command])
def test_deep_nesting_is_a_payload_error(model: Any) -> None:
    deep = "[" * 20_000 + "]" * 20_000
    with pytest.raises(PayloadError, match="not valid JSON"):
        model.from_json(deep)
    nested_field = '{"a": ' + "[" * 20_000 + "]" * 20_000 + "}"
    with pytest.raises(PayloadError):
        model.from_json(nested_field)


@pytest.mark.parametrize(
    ("model", "field", "value"),
    [
        (AgentPresence, "pid", 2**70),
        (AgentPresence, "pid", -1),
        (AgentPresence, "exchangeId", 10**18),
        (InstanceStatus, "pid", 2**31),
        (InstanceStatus, "epoch", 2**63),
        (InstanceStatus, "ttlMs", 10**12 + 1),
        (InstanceStatus, "symbolCount", 2**63),
    ],
)
def test_an_integer_out_of_range_is_a_payload_error_naming_its_field(
    model: type[AgentPresence] | type[InstanceStatus], field: str, value: int
) -> None:
    """A pid past `pid_t` overflowed the pid check; a TTL past the year 1
    overflowed the heartbeat dating: each is reported, never parsed."""
    if model is AgentPresence:
        data: dict[str, object] = {"agentId": "h:1:1", "exchangeId": 2}
    else:
        data = json.loads(WIRE_STATUS)
    data[field] = value
    with pytest.raises(PayloadError, match=field):
        model.from_json(json.dumps(data))


@pytest.mark.parametrize(
    "value", [0, -1, 10**12 + 1, 2**70, 5000.0, "5000", True, [5000], {"ms": 5000}, None]
)
def test_a_bad_heartbeat_interval_reads_as_absent_and_keeps_the_status(value: object) -> None:
    """`heartbeatIntervalMs` is a hint for judging the heartbeat: out of range
    or of the wrong type it is ignored (the holder is then judged as if it did
    not say), on both parsing paths, and every other field is kept."""
    data = json.loads(WIRE_STATUS) | {"instanceId": "h:1:1:1", "ttlMs": 15_000}
    raw = json.dumps(data | {"heartbeatIntervalMs": value})
    for status in (InstanceStatus.from_json(raw), InstanceStatus.model_validate_json(raw)):
        assert status.heartbeat_interval_ms is None
        assert (status.hostname, status.ttl_ms) == ("DESKTOP-ABC", 15_000)
        assert status.writer_timing() == WriterTiming(5_000, 15_000)  # a third of its TTL
        assert "heartbeatIntervalMs" not in status.to_wire()


def test_whose_timing_a_payload_says() -> None:
    """Its own fields first; Livermore's 15 s / 45 s without `instanceId`;
    nothing for an older Perseus payload (the reader's settings apply)."""
    livermore = json.loads(WIRE_STATUS)
    perseus = livermore | {"instanceId": "h:1:1:1"}

    def timing(data: dict[str, Any]) -> WriterTiming | None:
        return InstanceStatus.from_json(json.dumps(data)).writer_timing()

    assert timing(livermore) == WriterTiming(LIVERMORE_INTERVAL_MS, LIVERMORE_TTL_MS, True)
    assert (LIVERMORE_INTERVAL_MS, LIVERMORE_TTL_MS) == (15_000, 45_000)
    assert timing(perseus) is None
    both = perseus | {"heartbeatIntervalMs": 5_000, "ttlMs": 15_000}
    assert timing(both) == WriterTiming(5_000, 15_000)
    assert timing(perseus | {"heartbeatIntervalMs": 5_000}) == WriterTiming(5_000, None)
    assert timing(perseus | {"ttlMs": 900}) == WriterTiming(300, 900)
    written = InstanceStatus.from_json(json.dumps(both)).to_json()
    assert json.loads(written)["heartbeatIntervalMs"] == 5_000


def test_an_entry_id_of_other_digits_is_no_id() -> None:
    entry = parse_entry("1-0", {"event": "error", "exchangeId": "\u00b2"})
    assert entry.exchange_id_int is None
    assert parse_entry("1-0", {"exchangeId": "7"}).exchange_id_int == 7


def test_statuses_and_entries_read_share_their_sets_of_provided_fields() -> None:
    """A fleet's reader keeps one status per exchange and thousands of entries:
    each read one points at one set of provided field names, shared by every
    one read with the same fields, instead of a set of its own (2 KB a status)."""
    livermore = json.loads(WIRE_STATUS)
    perseus = {**livermore, "instanceId": "h:1:42:1", "epoch": 1, "pid": 42, "version": "0"}
    read = [
        validate_status_json(json.dumps({**payload, "exchangeId": exchange_id}))
        for exchange_id in range(1, 4)
        for payload in (livermore, perseus)
    ]
    livermore_sets = {id(status.__pydantic_fields_set__) for status in read[::2]}
    perseus_sets = {id(status.__pydantic_fields_set__) for status in read[1::2]}
    assert len(livermore_sets) == len(perseus_sets) == 1
    assert livermore_sets != perseus_sets
    fields = InstanceStatus.model_fields
    assert read[1].model_fields_set == {name for name in fields if fields[name].alias in perseus}
    # Nobody can add to a shared set: what is read cannot be assigned to.
    with pytest.raises(ValidationError, match="frozen"):
        read[0].hostname = "elsewhere"  # type: ignore[misc]
    copied = read[0].model_copy(update={"hostname": "elsewhere"})
    assert copied.__pydantic_fields_set__ is not read[0].__pydantic_fields_set__

    raw = {"event": "error", "error": "x", "exchangeId": "1"}
    entries = [parse_entry(f"{n}-0", raw, "coinbase", "logs:network:coinbase") for n in (1, 2)]
    assert entries[0].__pydantic_fields_set__ is entries[1].__pydantic_fields_set__
    with pytest.raises(ValidationError, match="frozen"):
        entries[0].error = "y"  # type: ignore[misc]

    entry_json = CatalogEntry(id=1, name="coinbase").to_json()
    assert (
        validate_catalog_json(entry_json).__pydantic_fields_set__
        is validate_catalog_json(entry_json).__pydantic_fields_set__
    )


def test_a_writer_varying_its_fields_without_end_cannot_grow_the_shared_sets() -> None:
    """Past `SHARED_FIELD_SETS_MAX` distinct sets a model keeps its own: a
    hostile writer cannot make every reader keep what it invents."""
    most = base_models.SHARED_FIELD_SETS_MAX
    for n in range(most + 20):
        parse_entry(f"{n}-0", {"event": "other", **{f"f{n}x{i}": "v" for i in range(n % 7)}})
    shared = base_models._shared_field_sets
    assert sum(map(len, shared.values())) == most
