"""Generated hostile data against the parsers and the renderers (hypothesis).

The rule every reader follows: parse it or report it, never raise anything
else. Status payloads, catalog values, presence members and commands are
generated as JSON that is mostly right (every wire field, each possibly
replaced by a hostile value) or as arbitrary text; stream entries as
arbitrary field maps. Whatever parses is then rendered by the CLI's table
and log lines and the dashboard's card and feed lines, in zones where years
1 and 9999 overflow: none may raise, and none may let a control character
through.

The suite runs a modest number of examples; `bench/fuzz_hostile.py` runs
many more (`HYPOTHESIS_EXAMPLES`).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perseus_cli.log_cmd import _entry_line
from perseus_cli.status_cmd import status_row
from perseus_core.export.counters import StreamCounters
from perseus_core.notify import build_payload, event_from_entry
from perseus_core.present import status_line
from perseus_core.present.exchange import Timing, clock_time, detail, full_time
from perseus_core.store.network.catalog import parse_catalog_payload
from perseus_core.store.network.reader import parse_status_payload
from perseus_core.store.network.views import assemble
from perseus_core.wire.errors import PayloadError
from perseus_core.wire.models import AgentPresence, Command, parse_entry
from perseus_core.wire.text import clean
from perseus_core.wire.timeutil import parse_ts
from perseus_tui import render
from perseus_tui.widgets.instance_card import card_content
from tests.fuzz.corpus import BAD_TIMESTAMPS, HOSTILE_TEXTS, status_payload
from tests.fuzz.surfaces import RAW_CONTROL

EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
ZONES = (UTC, ZoneInfo("Asia/Tokyo"), ZoneInfo("America/New_York"), ZoneInfo("Pacific/Kiritimati"))
NOW = datetime(2026, 2, 10, 22, 45, tzinfo=UTC)

hostile_text = st.one_of(
    st.text(max_size=80),
    st.sampled_from(sorted(HOSTILE_TEXTS.values(), key=len)[:-1]),  # the megabyte is in the corpus
    st.sampled_from(list(BAD_TIMESTAMPS.values())),
    st.datetimes(timezones=st.sampled_from(ZONES)).map(lambda moment: moment.isoformat()),
)
json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    hostile_text,
)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


def mostly_right(template: dict[str, Any]) -> st.SearchStrategy[str]:
    """`template` as JSON with some fields replaced by hostile values or dropped,
    plus raw tokens (NaN, Infinity) and arbitrary text now and then."""
    fields = sorted(template)
    changed = st.dictionaries(st.sampled_from(fields), json_value, max_size=len(fields))
    dropped = st.sets(st.sampled_from(fields), max_size=3)

    def build(pair: tuple[dict[str, Any], set[str]]) -> str:
        overrides, gone = pair
        payload = {k: v for k, v in {**template, **overrides}.items() if k not in gone}
        return json.dumps(payload)

    built = st.tuples(changed, dropped).map(build)
    tokens = built.map(lambda raw: raw.replace('"symbolCount": 25', '"symbolCount": NaN'))
    return st.one_of(built, tokens, st.text(max_size=200), json_value.map(json.dumps))


STATUS = status_payload(2, "kraken", lastError="x", lastErrorAt="2026-02-10T22:00:00.000Z")
CATALOG = {"id": 2, "name": "kraken", "displayName": "Kraken", "isActive": True}
PRESENCE = {
    "agentId": "h:2:1:1",
    "exchangeId": 2,
    "exchangeName": "kraken",
    "hostname": "h",
    "pid": 1,
    "state": "idle",
    "since": "2026-02-10T22:00:00.000Z",
    "version": "0",
}
COMMAND = {
    "correlationId": "0b9e2a5c-5a55-4a8e-9d1c-3f0c6f1f0c1a",
    "type": "start",
    "timestamp": 1770763500000,
    "priority": 50,
}
ENTRY_FIELDS = (
    "event",
    "instanceId",
    "pid",
    "via",
    "previousInstanceId",
    "previousHostname",
    "previousPid",
    "attempt",
    "startRetries",
    "delayMs",
    "reason",
    "timestamp",
    "fromState",
    "toState",
    "state",
    "error",
    "exchangeId",
    "exchangeName",
    "hostname",
    "ip",
    "command",
    "status",
    "message",
)
entry_fields = st.dictionaries(
    st.one_of(st.sampled_from(ENTRY_FIELDS), st.text(max_size=10)),
    st.one_of(
        hostile_text,
        st.sampled_from(["state_transition", "error", "command", "holder", "restart", "x"]),
    ),
    max_size=10,
)


def shows_nothing_raw(text: str) -> None:
    found = RAW_CONTROL.search(text)
    assert found is None, f"raw {found.group()!r} in {text[:200]!r}"


@FUZZ
@given(hostile_text)
def test_timestamps_parse_or_raise_value_error_and_convert_in_any_zone(text: str) -> None:
    try:
        moment = parse_ts(text)
    except ValueError:
        return
    for zone in ZONES:
        full_time(moment, zone)
        clock_time(moment, zone, NOW)
        moment.astimezone(zone)


@FUZZ
@given(mostly_right(STATUS))
def test_status_payloads_parse_or_report_and_render_safely(raw: str) -> None:
    parsed = parse_status_payload(raw)
    status = None if isinstance(parsed, str) else parsed
    problem = parsed if isinstance(parsed, str) else None
    view = assemble(2, "2", None, None, raw, status, problem)
    shows_nothing_raw(card_content(view, NOW, width=38).plain)
    for zone in ZONES:  # the detail screen's absolute times, in any zone
        detail(view, NOW, zone, Timing())
    row = status_row(status_line(view, NOW, Timing()))
    shows_nothing_raw(" ".join(str(cell) for cell in row))


@FUZZ
@given(mostly_right(CATALOG), mostly_right(PRESENCE), mostly_right(COMMAND))
def test_catalog_presence_and_commands_parse_or_report(
    catalog: str, presence: str, command: str
) -> None:
    parse_catalog_payload(catalog)  # returns the entry or the message; raising fails the test
    for model in (AgentPresence, Command):
        raw = presence if model is AgentPresence else command
        try:
            model.from_json(raw)
        except PayloadError as exc:
            shows_nothing_raw(clean(str(exc)))


@FUZZ
@given(entry_fields, st.sampled_from(["1770763500000-0", "0-1", "99999999999999999999-0"]))
def test_stream_entries_parse_and_render_safely(fields: dict[str, str], entry_id: str) -> None:
    entry = parse_entry(entry_id, fields, "kraken")
    shows_nothing_raw(_entry_line(entry))
    StreamCounters().count(entry)  # counted or skipped, never raising
    event = event_from_entry(entry, now=NOW)
    if event is not None:
        build_payload(event)
    for zone in ZONES:
        for line in render.entry_lines(entry, zone, NOW, 80):
            shows_nothing_raw(line.plain)
