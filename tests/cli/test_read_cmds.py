"""`perseus status`, `perseus log` and `perseus catalog` against a real Redis.

Data is seeded with a plain synchronous client, much of it exactly as the
existing TypeScript writer produces it (docs/wire-format.md section 3), plus
corrupt and hostile values. Commands run through click's CliRunner (which calls
`asyncio.run` itself, so these are plain sync tests) or, where a real process
matters (`--follow` and Ctrl-C, the unreachable-Redis message on the real
stderr), as a subprocess.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis as sync_redis
from click.testing import CliRunner, Result
from rich.cells import cell_len

from perseus_cli.apps.redis_server import RedisServer, free_port
from perseus_cli.main import cli
from perseus_core.wire import keys
from perseus_core.wire.timeutil import format_ts
from tests.helpers import LineReader, following, interrupt_cleanly, perseus_argv
from tests.wire_examples import WIRE_ERROR, WIRE_STATUS, WIRE_TRANSITION

HOSTILE = "\x1b[31mEVIL\x1b[0m[bold red]boom[/]\x1b]0;pwned\x07\u202eev\r\nil\x9b2J"
ESCAPE_CHARS = ("\x1b", "\x07", "\x9b", "\u202e", "\r")


# --- helpers ------------------------------------------------------------------


def invoke(redis_url: str, *args: str) -> Result:
    """Run `perseus ARGS --redis-url URL` in-process."""
    return CliRunner().invoke(cli, [*args, "--redis-url", redis_url], catch_exceptions=False)


def xadd(r: sync_redis.Redis, name: str, fields: list[tuple[str, str]], entry_id: str) -> None:
    """XADD with fields in exactly the given order (as the wire writer does)."""
    flat = [part for pair in fields for part in pair]
    r.execute_command("XADD", f"logs:network:{name}", entry_id, *flat)


def catalog(r: sync_redis.Redis, exchange_id: int, name: str, display: str = "") -> None:
    entry = {"id": exchange_id, "name": name, "displayName": display, "isActive": True}
    r.hset("perseus:exchanges", str(exchange_id), json.dumps(entry))


def status_payload(exchange_id: int, name: str, **fields: Any) -> str:
    now = datetime.now(UTC)
    data: dict[str, Any] = {
        "exchangeId": exchange_id,
        "exchangeName": name,
        "hostname": f"{name}-host",
        "ipAddress": None,
        "adminEmail": None,
        "adminDisplayName": None,
        "connectionState": "idle",
        "symbolCount": 0,
        "connectedAt": None,
        "lastHeartbeat": format_ts(now),
        "lastStateChange": format_ts(now),
        "registeredAt": format_ts(now),
        "lastError": None,
        "lastErrorAt": None,
    }
    data.update(fields)
    return json.dumps(data)


def seed_wire(r: sync_redis.Redis) -> None:
    """Exchange 1 online exactly as docs/wire-format.md section 3 shows it (no countryCode)."""
    catalog(r, 1, "coinbase", "Coinbase")
    r.set("exchange:1:status", WIRE_STATUS, px=60_000)
    xadd(r, "coinbase", list(WIRE_TRANSITION.items()), "1770747724511-0")
    xadd(r, "coinbase", list(WIRE_ERROR.items()), "1770750191870-0")


def assert_clean(text: str) -> None:
    for char in ESCAPE_CHARS:
        assert char not in text, f"{char!r} reached the terminal"


def local(ts: str) -> str:
    return datetime.fromisoformat(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S")


# --- status -----------------------------------------------------------------


def test_status_json_reads_the_wire_example(r: sync_redis.Redis, redis_url: str) -> None:
    seed_wire(r)
    result = invoke(redis_url, "status", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert list(data) == ["instances"]
    (inst,) = data["instances"]
    assert inst["exchangeId"] == 1
    assert inst["exchangeName"] == "coinbase"
    assert inst["displayName"] == "Coinbase"
    assert inst["online"] is True
    assert inst["error"] is None
    assert inst["lastKnown"] is None
    expected = json.loads(WIRE_STATUS)
    assert {k: inst["status"][k] for k in expected} == expected
    assert inst["status"]["countryCode"] is None  # missing on the wire reads as null


def test_status_table_of_the_wire_example(r: sync_redis.Redis, redis_url: str) -> None:
    seed_wire(r)
    result = invoke(redis_url, "status")
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "STATE", "HOST", "IP", "HEARTBEAT", "UPTIME", "INFO"]
    assert row.split()[:5] == ["1", "coinbase", "active", "DESKTOP-ABC", "203.0.113.7"]
    assert "no heartbeat for " in row  # the example's heartbeat is long past


def test_status_heartbeat_age_and_uptime(r: sync_redis.Redis, redis_url: str) -> None:
    now = datetime.now(UTC)
    catalog(r, 2, "kraken")
    payload = status_payload(
        2,
        "kraken",
        connectionState="active",
        connectedAt=format_ts(now - timedelta(hours=2, minutes=5)),
        lastHeartbeat=format_ts(now - timedelta(seconds=3)),
        ipAddress="198.51.100.2",
    )
    r.set("exchange:2:status", payload, px=60_000)
    row = invoke(redis_url, "status").stdout.splitlines()[1]
    assert re.search(r"\b\d+s ago\b", row), row
    assert "2h 5m" in row


def test_status_json_carries_the_verdict_the_table_shows(
    r: sync_redis.Redis, redis_url: str
) -> None:
    """A script reads the heartbeat's age, health, tone and words, the state's
    word and tone, and the uptime from `--json`: it never judges a status
    itself (that they are the table's words is checked in tests/core). The
    wire example's heartbeat is long overdue (its uptime stopped at it);
    kraken is healthy."""
    seed_wire(r)
    now = datetime.now(UTC)
    catalog(r, 2, "kraken")
    payload = status_payload(
        2,
        "kraken",
        connectionState="active",
        connectedAt=format_ts(now - timedelta(hours=2, minutes=5)),
        heartbeatIntervalMs=15_000,
        instanceId="kraken-host:1:2:3",
    )
    r.set("exchange:2:status", payload, px=45_000)
    catalog(r, 3, "okx")  # offline, never seen
    instances = json.loads(invoke(redis_url, "status", "--json").stdout)["instances"]
    coinbase, kraken, okx = instances
    assert (kraken["state"], kraken["tone"]) == ("active", "success")
    beat = kraken["heartbeat"]
    assert (beat["health"], beat["tone"]) == ("fresh", "success")
    assert beat["text"].endswith("s ago") and beat["ageMs"] < 15_000
    assert 2 * 3600_000 + 5 * 60_000 <= kraken["uptimeMs"] < 2 * 3600_000 + 7 * 60_000
    assert kraken["uptime"].startswith("2h ")
    assert coinbase["heartbeat"]["tone"] == "error"
    assert coinbase["heartbeat"]["text"].startswith("no heartbeat for ")
    wire = json.loads(WIRE_STATUS)
    stopped_at = datetime.fromisoformat(wire["lastHeartbeat"]) - datetime.fromisoformat(
        wire["connectedAt"]
    )
    assert coinbase["uptimeMs"] == round(stopped_at.total_seconds() * 1000)
    assert (okx["state"], okx["tone"], okx["heartbeat"], okx["uptimeMs"]) == (
        "offline",
        "error",
        None,
        None,
    )


def test_status_offline_shows_last_known_from_the_stream(
    r: sync_redis.Redis, redis_url: str
) -> None:
    catalog(r, 1, "coinbase")
    xadd(r, "coinbase", list(WIRE_TRANSITION.items()), "1770747724511-0")
    xadd(r, "coinbase", list(WIRE_ERROR.items()), "1770750191870-0")
    data = json.loads(invoke(redis_url, "status", "--json").stdout)
    (inst,) = data["instances"]
    assert inst["online"] is False
    assert inst["status"] is None
    last = inst["lastKnown"]
    assert {k: last[k] for k in ("hostname", "ip", "state", "timestamp", "event")} == {
        "hostname": "DESKTOP-ABC",
        "ip": "",
        "state": "active",
        "timestamp": "2026-02-10T19:03:11.870Z",
        "event": "error",
    }
    row = invoke(redis_url, "status").stdout.splitlines()[1]
    assert row.split()[:4] == ["1", "coinbase", "offline", "DESKTOP-ABC"]
    assert "last entry" in row
    assert "(active)" in row


def test_status_offline_without_history(r: sync_redis.Redis, redis_url: str) -> None:
    catalog(r, 5, "okx")
    row = invoke(redis_url, "status").stdout.splitlines()[1]
    assert row.split()[:3] == ["5", "okx", "offline"]
    assert "never seen" in row


def agent_presence(r: sync_redis.Redis, exchange_id: int, host: str, pid: int) -> dict[str, Any]:
    """A live agent's presence member (docs/wire-format.md section 2.4), as
    `perseus agent` writes it."""
    since = datetime.now(UTC) - timedelta(minutes=5, seconds=3)
    member = {
        "agentId": f"{host}:{pid}:1770700000000",
        "exchangeId": exchange_id,
        "exchangeName": "okx",
        "hostname": host,
        "pid": pid,
        "state": "idle",
        "since": format_ts(since),
        "version": "0.1.0",
    }
    seconds, _ = r.time()
    key = f"perseus:agents:{exchange_id}"
    r.zadd(key, {json.dumps(member, separators=(",", ":")): (seconds + 60) * 1000})
    r.pexpire(key, 60_000)
    return member


def test_status_of_an_exchange_whose_agent_waits_is_ready(
    r: sync_redis.Redis, redis_url: str
) -> None:
    catalog(r, 5, "okx")
    xadd(r, "okx", [("event", "state_transition"), ("toState", "idle"), ("hostname", "a")], "1-0")
    xadd(r, "okx", [("event", "command"), ("command", "stop"), ("status", "success")], "2-0")
    first = agent_presence(r, 5, "okx-a", 4242)
    second = agent_presence(r, 5, "okx-b", 4343)
    row = invoke(redis_url, "status").stdout.splitlines()[1]
    assert row.split()[:4] == ["5", "okx", "ready", "okx-a"]  # the dashboard's word too
    assert "agent pid 4242 ready for 5m" in row
    assert "2 agents ready (also okx-b)" in row
    assert "last idle" in row  # from the transition, not the newer command entry
    (inst,) = json.loads(invoke(redis_url, "status", "--json").stdout)["instances"]
    assert inst["online"] is False
    shown = {"note": None, "pidScope": None}  # fields these members left out
    assert inst["agents"] == [{**first, **shown}, {**second, **shown}]
    assert inst["lastKnown"]["state"] == "idle"


def test_status_corrupt_payload_is_reported_not_fatal(r: sync_redis.Redis, redis_url: str) -> None:
    seed_wire(r)
    catalog(r, 3, "binance")
    r.set("exchange:3:status", "{not json", px=60_000)
    catalog(r, 6, "bitfinex")
    r.set("exchange:6:status", '{"exchangeId":6,"connectionState":"flying"}', px=60_000)
    result = invoke(redis_url, "status", "--json")
    assert result.exit_code == 0, result.output
    by_id = {i["exchangeId"]: i for i in json.loads(result.stdout)["instances"]}
    assert by_id[1]["status"] is not None
    for exchange_id in (3, 6):
        assert by_id[exchange_id]["online"] is True
        assert by_id[exchange_id]["status"] is None
        assert by_id[exchange_id]["error"]
    assert "JSON" in by_id[3]["error"]
    assert "flying" in by_id[6]["error"]
    table = invoke(redis_url, "status")
    assert table.exit_code == 0
    rows = {line.split()[0]: line for line in table.stdout.splitlines()[1:]}
    assert "unreadable" in rows["3"]
    assert "error:" in rows["3"]


def test_status_never_prints_escapes_from_redis(r: sync_redis.Redis, redis_url: str) -> None:
    payload = status_payload(
        4,
        "evil",
        hostname=HOSTILE,
        connectionState="warming",
        lastError=HOSTILE,
        lastErrorAt=format_ts(datetime.now(UTC)),
        ipAddress=HOSTILE,
    )
    r.set("exchange:4:status", payload, px=60_000)
    r.hset(
        "perseus:exchanges",
        "8",
        json.dumps({"id": 8, "name": HOSTILE, "displayName": HOSTILE, "isActive": True}),
    )
    xadd(r, HOSTILE, [("event", "error"), ("hostname", HOSTILE), ("ip", HOSTILE)], "1-0")
    result = invoke(redis_url, "status")
    assert result.exit_code == 0, result.output
    assert_clean(result.output)
    assert "EVIL[bold red]boom[/]" in result.stdout  # shown as plain text, not markup
    assert "not in catalog" in result.stdout
    # JSON is raw data: the value survives intact, every control char escaped.
    as_json = invoke(redis_url, "status", "--json")
    assert_clean(as_json.stdout)
    by_id = {i["exchangeId"]: i for i in json.loads(as_json.stdout)["instances"]}
    assert by_id[4]["status"]["hostname"] == HOSTILE


def test_status_exchange_id_restricts_to_one(r: sync_redis.Redis, redis_url: str) -> None:
    seed_wire(r)
    catalog(r, 2, "kraken")
    data = json.loads(invoke(redis_url, "status", "--json", "--exchange-id", "2").stdout)
    assert [i["exchangeId"] for i in data["instances"]] == [2]
    assert data["instances"][0]["online"] is False
    table = invoke(redis_url, "status", "--exchange-id", "1").stdout.splitlines()
    assert len(table) == 2
    assert table[1].split()[:3] == ["1", "coinbase", "active"]
    for args in (["--json"], []):
        unknown = invoke(redis_url, "status", *args, "--exchange-id", "99")
        assert (unknown.exit_code, unknown.stdout) == (1, "")
        assert unknown.stderr == (
            "perseus: no exchange 99: not in the catalog, not online, no agent, no activity\n"
        )


def test_status_columns_stay_aligned_with_wide_characters(
    r: sync_redis.Redis, redis_url: str
) -> None:
    """A CJK name or hostname takes two terminal cells per character: the table
    pads by cells, so every column still starts under its header."""
    catalog(r, 1, "coinbase")
    r.set("exchange:1:status", status_payload(1, "coinbase", hostname="東京-feed"), px=60_000)
    r.set("exchange:2:status", status_payload(2, "東京-feed", hostname="plain-host"), px=60_000)
    catalog(r, 3, "kraken")
    result = invoke(redis_url, "status")
    assert result.exit_code == 0, result.output
    header, *rows = result.stdout.splitlines()
    assert any("東京-feed" in row for row in rows)

    columns = word_starts(header)
    for row in rows:
        # ID, NAME, STATE, HOST and IP are one word each, and HEARTBEAT starts
        # with one: each begins at the cell where its header does.
        assert word_starts(row)[:6] == columns[:6], (header, row)


def word_starts(line: str) -> list[int]:
    """The terminal cell at which each space-separated word of `line` begins."""
    offsets: list[int] = []
    cells, previous = 0, " "
    for char in line:
        if char != " " and previous == " ":
            offsets.append(cells)
        cells += cell_len(char)
        previous = char
    return offsets


def test_status_into_a_closed_pipe_ends_quietly(r: sync_redis.Redis, redis_url: str) -> None:
    """`perseus status | head -1`: the reader is gone before the table is
    written; the command still exits 0 without a word on stderr."""
    seed_wire(r)
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            perseus_argv("status", "--redis-url", redis_url),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def test_status_with_nothing_known(redis_url: str) -> None:
    assert json.loads(invoke(redis_url, "status", "--json").stdout) == {"instances": []}
    result = invoke(redis_url, "status")
    assert result.exit_code == 0
    assert "no exchanges known" in result.stdout


# --- log --------------------------------------------------------------------


def seed_history(r: sync_redis.Redis) -> None:
    seed_wire(r)
    catalog(r, 2, "kraken")
    xadd(r, "kraken", [("event", "state_transition"), ("toState", "stopped")], "1770748000000-0")
    xadd(r, "kraken", [("event", "martian"), ("foo", "bar")], "1770749000000-0")
    xadd(r, "kraken", [("nothing", "here")], "1770751000000-0")
    command = [
        ("event", "command"),
        ("command", "stop"),
        ("correlationId", "c-1"),
        ("operator", "alice"),
        ("status", "success"),
        ("message", "stopped"),
        ("timestamp", "2026-02-10T19:30:00.000Z"),
        ("exchangeId", "2"),
        ("exchangeName", "kraken"),
        ("hostname", "kraken-box"),
        ("ip", ""),
    ]
    xadd(r, "kraken", command, "1770751800000-0")
    # An exchange in neither catalog nor status keys, only in history.
    xadd(r, "orphan", [("event", "error"), ("error", "gone")], "1770746000000-0")


ALL_IDS = [
    "1770751800000-0",
    "1770751000000-0",
    "1770750191870-0",
    "1770749000000-0",
    "1770748000000-0",
    "1770747724511-0",
    "1770746000000-0",
]


def test_log_json_merges_all_exchanges_newest_first(r: sync_redis.Redis, redis_url: str) -> None:
    seed_history(r)
    result = invoke(redis_url, "log", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data) == {"entries", "nextCursor"}
    assert data["nextCursor"] is None
    assert [e["id"] for e in data["entries"]] == ALL_IDS
    by_id = {e["id"]: e for e in data["entries"]}
    for entry_id, fields in (("1770747724511-0", WIRE_TRANSITION), ("1770750191870-0", WIRE_ERROR)):
        assert {k: by_id[entry_id][k] for k in fields} == fields
        assert by_id[entry_id]["stream"] == "coinbase"
    assert by_id["1770749000000-0"]["event"] == "martian"
    assert by_id["1770749000000-0"]["foo"] == "bar"
    assert by_id["1770751000000-0"]["nothing"] == "here"


def test_log_json_pages_with_the_cursor(r: sync_redis.Redis, redis_url: str) -> None:
    seed_history(r)
    seen: list[str] = []
    before: list[str] = []
    for _ in range(10):
        data = json.loads(invoke(redis_url, "log", "--json", "--count", "3", *before).stdout)
        seen += [e["id"] for e in data["entries"]]
        if data["nextCursor"] is None:
            break
        before = ["--before", data["nextCursor"]]
    assert seen == ALL_IDS


def test_log_single_exchange(r: sync_redis.Redis, redis_url: str) -> None:
    seed_history(r)
    first = json.loads(
        invoke(redis_url, "log", "--json", "--exchange", "Kraken", "--count", "2").stdout
    )
    assert [e["id"] for e in first["entries"]] == ["1770751800000-0", "1770751000000-0"]
    assert first["nextCursor"] == "1770751000000-0@kraken"
    rest = json.loads(
        invoke(
            redis_url, "log", "--json", "--exchange", "kraken", "--before", first["nextCursor"]
        ).stdout
    )
    assert [e["id"] for e in rest["entries"]] == ["1770749000000-0", "1770748000000-0"]
    assert rest["nextCursor"] is None


def test_log_plain_lines(r: sync_redis.Redis, redis_url: str) -> None:
    seed_history(r)
    result = invoke(redis_url, "log")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == len(ALL_IDS)
    by_text = "\n".join(lines)
    transition = next(line for line in lines if "warming -> active" in line)
    assert transition.startswith(local("2026-02-10T18:22:04.511+00:00"))
    assert "coinbase" in transition
    assert "DESKTOP-ABC" in transition
    assert "error: websocket closed (1006) (while active)" in by_text
    assert "command stop: success by alice - stopped" in by_text
    assert "? -> stopped" in by_text  # missing fromState
    assert "martian foo=bar" in by_text  # unknown event, shown generically
    assert "(no event) nothing=here" in by_text  # no event at all
    # An entry without a timestamp is dated by its stream ID.
    no_ts = next(line for line in lines if "martian" in line)
    expected = datetime.fromtimestamp(1770749000, UTC).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert no_ts.startswith(expected)


def test_log_never_prints_escapes_from_redis(r: sync_redis.Redis, redis_url: str) -> None:
    fields = [
        ("event", "error"),
        ("error", HOSTILE),
        ("hostname", HOSTILE),
        ("exchangeName", HOSTILE),
        ("state", HOSTILE),
    ]
    xadd(r, "evil", fields, "5-0")
    xadd(r, "evil", [("event", HOSTILE), (HOSTILE, HOSTILE)], "6-0")
    xadd(r, "evil", [("event", "command"), ("operator", HOSTILE), ("message", HOSTILE)], "7-0")
    result = invoke(redis_url, "log")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.splitlines()) == 3
    assert_clean(result.output)
    as_json = invoke(redis_url, "log", "--json")
    assert_clean(as_json.stdout)
    assert json.loads(as_json.stdout)["entries"][-1]["error"] == HOSTILE


def test_log_skips_a_key_that_is_not_a_stream(r: sync_redis.Redis, redis_url: str) -> None:
    seed_wire(r)
    r.set("logs:network:broken", "a string, not a stream")
    result = invoke(redis_url, "log", "--json")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.stdout)["entries"]) == 2
    single = invoke(redis_url, "log", "--exchange", "broken")
    assert single.exit_code == 1
    assert "perseus: Redis refused XREVRANGE logs:network:broken: " in single.stderr
    assert "(WRONGTYPE)" in single.stderr
    assert len(single.stderr.splitlines()) == 1


def test_log_empty(redis_url: str) -> None:
    assert json.loads(invoke(redis_url, "log", "--json").stdout) == {
        "entries": [],
        "nextCursor": None,
    }
    assert invoke(redis_url, "log").stdout == ""


def test_log_follow_prints_new_entries_until_ctrl_c(r: sync_redis.Redis, redis_url: str) -> None:
    seed_wire(r)
    with following("log", "--follow", "--redis-url", redis_url) as proc:
        out = LineReader(proc.stdout)
        # The page first, oldest first so new entries land below it.
        first = out.wait_for("websocket closed")
        assert "warming -> active" in first[0]
        r.xadd("logs:network:coinbase", {"event": "error", "error": "fresh one"})
        out.wait_for("fresh one")
        # An exchange added to the catalog after the tail started is picked up.
        catalog(r, 9, "latecomer")
        deadline = time.monotonic() + 15
        while True:
            r.xadd("logs:network:latecomer", {"event": "error", "error": "late hello"})
            try:
                out.wait_for("late hello", timeout=1.0)
                break
            except AssertionError:
                if time.monotonic() > deadline:
                    raise
        interrupt_cleanly(proc)


def test_log_bad_arguments_exit_2(redis_url: str) -> None:
    for args in (
        ["log", "--count", "0"],
        ["log", "--count", "many"],
        ["log", "--before", "yesterday"],
        ["log", "--follow", "--before", "1-0"],
        ["log", "--exchange", " "],
        ["status", "--exchange-id", "abc"],
        ["status", "--exchange-id", "-1"],
        ["status", "--bogus"],
    ):
        result = invoke(redis_url, *args)
        assert result.exit_code == 2, (args, result.output)
        assert "Usage:" in result.stderr, args


# --- catalog ----------------------------------------------------------------


def test_catalog_add_list_remove(r: sync_redis.Redis, redis_url: str) -> None:
    added = invoke(redis_url, "catalog", "add", "1", "coinbase", "--display-name", "Coinbase Pro")
    assert added.exit_code == 0, added.output
    assert added.stdout.startswith("added 1 coinbase")
    assert json.loads(r.hget("perseus:exchanges", "1") or "") == {
        "id": 1,
        "name": "coinbase",
        "displayName": "Coinbase Pro",
        "isActive": True,
    }
    again = invoke(redis_url, "catalog", "add", "1", "coinbase")
    assert again.stdout.startswith("updated 1 coinbase")
    invoke(redis_url, "catalog", "add", "2", "kraken", "--display-name", "Kraken")
    listed = invoke(redis_url, "catalog", "list")
    assert listed.exit_code == 0
    assert [line.split() for line in listed.stdout.splitlines()] == [
        ["ID", "NAME", "DISPLAY", "ACTIVE"],
        ["1", "coinbase", "Coinbase", "yes"],
        ["2", "kraken", "Kraken", "yes"],
    ]
    as_json = json.loads(invoke(redis_url, "catalog", "list", "--json").stdout)
    assert [e["name"] for e in as_json["exchanges"]] == ["coinbase", "kraken"]
    assert as_json["errors"] == {}
    removed = invoke(redis_url, "catalog", "remove", "1")
    assert removed.exit_code == 0
    assert r.hkeys("perseus:exchanges") == ["2"]
    missing = invoke(redis_url, "catalog", "remove", "1")
    assert missing.exit_code == 1
    assert missing.stderr == "perseus: exchange 1 is not in the catalog\n"


def test_catalog_add_of_a_listed_id_under_another_name_is_refused_unless_renamed(
    r: sync_redis.Redis, redis_url: str
) -> None:
    """`catalog add 7 NAME` silently renamed whatever 7 was: a typo in the id
    renamed another exchange. Now it says what 7 is, and --rename renames."""
    invoke(redis_url, "catalog", "add", "7", "bitstamp", "--display-name", "Bitstamp EU")
    before = r.hget("perseus:exchanges", "7")
    refused = invoke(redis_url, "catalog", "add", "7", "kraken")
    assert (refused.exit_code, refused.stdout) == (1, "")
    assert refused.stderr == (
        "perseus: exchange 7 is already in the catalog as bitstamp (Bitstamp EU): add --rename"
        " to rename it to kraken, or choose another ID (`perseus catalog list`)\n"
    )
    assert r.hget("perseus:exchanges", "7") == before
    same = invoke(redis_url, "catalog", "add", "7", "BITSTAMP")  # the same name, any case
    assert same.exit_code == 0 and same.stdout == "updated 7 BITSTAMP (Bitstamp)\n"
    renamed = invoke(redis_url, "catalog", "add", "7", "kraken", "--rename")
    assert renamed.exit_code == 0
    assert renamed.stdout == "renamed 7 from BITSTAMP to kraken (Kraken)\n"
    assert json.loads(r.hget("perseus:exchanges", "7") or "")["name"] == "kraken"


def test_catalog_add_replaces_an_unreadable_entry_saying_so(
    r: sync_redis.Redis, redis_url: str
) -> None:
    r.hset("perseus:exchanges", "7", "not json")
    result = invoke(redis_url, "catalog", "add", "7", "kraken")
    assert result.exit_code == 0
    assert result.stdout.startswith("updated 7 kraken (Kraken); the entry it replaces was")
    assert json.loads(r.hget("perseus:exchanges", "7") or "")["name"] == "kraken"


@pytest.mark.parametrize(
    "args",
    [
        ["catalog", "add", "1", "bad name"],
        ["catalog", "add", "1", "\x1b[31mred"],
        ["catalog", "add", "1", "x" * 65],
        ["catalog", "add", "1", "ok", "--display-name", "bell\x07"],
        ["catalog", "add", "-1", "ok"],
        ["catalog", "add", "one", "ok"],
        ["catalog", "add", "1"],
        ["catalog", "remove", "x"],
        ["catalog", "frobnicate"],
    ],
)
def test_catalog_bad_arguments_exit_2(r: sync_redis.Redis, redis_url: str, args: list[str]) -> None:
    result = invoke(redis_url, *args)
    assert result.exit_code == 2, result.output
    assert "Usage:" in result.stderr
    assert r.exists("perseus:exchanges") == 0


def test_catalog_bad_name_says_why(redis_url: str) -> None:
    result = invoke(redis_url, "catalog", "add", "3", "no spaces")
    assert result.exit_code == 2
    assert "invalid exchange name 'no spaces'" in result.stderr


def test_catalog_list_reports_corrupt_entries(r: sync_redis.Redis, redis_url: str) -> None:
    catalog(r, 1, "coinbase")
    r.hset("perseus:exchanges", "7", "not json \x1b[2J")
    result = invoke(redis_url, "catalog", "list")
    assert result.exit_code == 0
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["ID", "1"]
    assert "catalog field '7'" in result.stderr
    assert_clean(result.output)
    as_json = json.loads(invoke(redis_url, "catalog", "list", "--json").stdout)
    assert list(as_json["errors"]) == ["7"]


def test_catalog_empty(redis_url: str) -> None:
    result = invoke(redis_url, "catalog", "list")
    assert result.exit_code == 0
    assert "the catalog is empty" in result.stdout


def test_catalog_discover_imports_online_exchanges_once(
    r: sync_redis.Redis, redis_url: str
) -> None:
    seed_wire(r)  # exchange 1: online and in the catalog
    r.set("exchange:4:status", status_payload(4, "bitstamp"), px=60_000)
    r.set("exchange:5:status", "{corrupt", px=60_000)
    r.set("exchange:6:status", status_payload(6, "bad name"), px=60_000)
    result = invoke(redis_url, "catalog", "discover")
    assert result.exit_code == 0, result.output
    assert result.stdout == "added 4 bitstamp\n"
    assert sorted(r.hkeys("perseus:exchanges")) == ["1", "4"]
    assert json.loads(r.hget("perseus:exchanges", "1") or "")["displayName"] == "Coinbase"
    again = invoke(redis_url, "catalog", "discover")
    assert again.exit_code == 0
    assert "nothing to add" in again.stdout


# --- Redis unreachable --------------------------------------------------------

COMMANDS = [
    ["status"],
    ["status", "--json"],
    ["log"],
    ["log", "--follow"],
    ["log", "--exchange", "coinbase"],
    ["catalog", "list"],
    ["catalog", "add", "1", "coinbase"],
    ["catalog", "remove", "1"],
    ["catalog", "discover"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a))
def test_unreachable_redis_is_one_line_exit_3(args: list[str]) -> None:
    port = free_port()
    url = f"redis://ops:hunter2@127.0.0.1:{port}/0"
    result = CliRunner().invoke(cli, [*args, "--redis-url", url])
    assert result.exit_code == 3, result.output
    assert result.stdout == ""
    assert result.stderr == (
        f"perseus: cannot reach Redis at redis://ops:***@127.0.0.1:{port}/0: connection refused\n"
    )


def test_unreachable_redis_in_a_real_process() -> None:
    port = free_port()
    env = {**os.environ, "PERSEUS_REDIS_URL": f"redis://:s3cret@127.0.0.1:{port}/0"}
    proc = subprocess.run(
        perseus_argv("status"), capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 3
    assert proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"perseus: cannot reach Redis at redis://***@127.0.0.1:{port}/0: connection refused"
    ]
    assert "s3cret" not in proc.stderr
    assert "Traceback" not in proc.stderr


def test_log_follow_survives_a_redis_restart(fresh_redis: RedisServer) -> None:
    url = fresh_redis.url
    with sync_redis.Redis.from_url(url, decode_responses=True) as client:
        seed_wire(client)
    with following("log", "--follow", "--redis-url", url) as proc:
        out, err = LineReader(proc.stdout), LineReader(proc.stderr)
        out.wait_for("websocket closed")
        fresh_redis.stop()
        err.wait_for("; retrying")
        fresh_redis.start()
        err.wait_for("reconnected")
        with sync_redis.Redis.from_url(url, decode_responses=True) as client:
            client.xadd("logs:network:coinbase", {"event": "error", "error": "after restart"})
        out.wait_for("after restart")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=15)
        err_lines = err.drain()
    assert proc.returncode == 0
    assert not [line for line in err_lines if "Traceback" in line or "ResourceWarning" in line]


def test_log_follow_into_a_closed_pipe_exits_quietly(r: sync_redis.Redis, redis_url: str) -> None:
    """`perseus log -f | head -1`: the reader goes away; the command ends at
    once (not at the next entry), with no error about Redis."""
    seed_wire(r)
    with following("log", "--follow", "--redis-url", redis_url) as proc:
        assert proc.stdout is not None
        assert "warming -> active" in proc.stdout.readline()
        proc.stdout.close()  # as `head -1` does after its line
        # No entry follows: the reader going away alone ends the command.
        proc.wait(timeout=15)
        assert proc.stderr is not None
        stderr = proc.stderr.read()
    assert proc.returncode == 0, stderr
    assert stderr == ""


def test_log_reads_an_exchange_known_only_by_its_perseus_stream(
    r: sync_redis.Redis, redis_url: str
) -> None:
    r.xadd(keys.perseus_activity_key("mexc"), {"event": "claim_refused"}, id="1770746500000-0")
    result = invoke(redis_url, "log", "--json")
    assert result.exit_code == 0, result.output
    entries = json.loads(result.stdout)["entries"]
    assert [(e["stream"], e["id"], e["event"]) for e in entries] == [
        ("mexc", "1770746500000-0", "claim_refused")
    ]
