"""`perseus output ID` against a real Redis: the stream seeded as an agent writes
it (docs/wire-format.md 2.5), hostile values included; `--follow` as a real
process, ended with Ctrl-C."""

from __future__ import annotations

import json

import redis as sync_redis

from tests.cli.test_read_cmds import ESCAPE_CHARS, HOSTILE, catalog, invoke
from tests.helpers import LineReader, following, interrupt_cleanly

KEY = "perseus:output:1"


def seed(r: sync_redis.Redis, lines: int = 5) -> None:
    catalog(r, 1, "coinbase")
    r.xadd(
        KEY,
        {"stream": "perseus", "line": "child starting (epoch 3)", "at": "2026-02-10T22:44:59.000Z"},
    )
    for n in range(lines):
        stream = "stderr" if n % 2 else "stdout"
        r.xadd(KEY, {"stream": stream, "line": f"line {n}", "at": "2026-02-10T22:45:00.123Z"})


def test_the_last_lines_oldest_first_marked(r: sync_redis.Redis, redis_url: str) -> None:
    seed(r)
    result = invoke(redis_url, "output", "1", "--lines", "3")
    assert result.exit_code == 0, result.output
    rows = result.stdout.splitlines()
    assert [row.split("  ", 1)[1] for row in rows] == [
        "stdout   line 2",
        "stderr   line 3",
        "stdout   line 4",
    ]


def test_json_is_raw_and_complete(r: sync_redis.Redis, redis_url: str) -> None:
    seed(r, lines=2)
    r.xadd(
        KEY, {"stream": "perseus", "line": "7 lines of output dropped", "at": "x", "dropped": "7"}
    )
    result = invoke(redis_url, "output", "1", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["exchangeId"] == 1
    assert [(x["stream"], x["line"]) for x in data["lines"]] == [
        ("perseus", "child starting (epoch 3)"),
        ("stdout", "line 0"),
        ("stderr", "line 1"),
        ("perseus", "7 lines of output dropped"),
    ]
    assert data["lines"][-1]["dropped"] == 7
    assert "dropped" not in data["lines"][0]


def test_hostile_lines_are_shown_as_plain_text(r: sync_redis.Redis, redis_url: str) -> None:
    catalog(r, 1, "coinbase")
    r.xadd(KEY, {"stream": HOSTILE, "line": HOSTILE, "at": HOSTILE})
    result = invoke(redis_url, "output", "1")
    assert result.exit_code == 0, result.output
    assert not any(char in result.stdout for char in ESCAPE_CHARS)
    assert "[bold red]boom[/]" in result.stdout  # markup shown literally
    assert result.stdout.startswith("????-??-?? ??:??:??")


def test_an_unknown_exchange_is_one_line_exit_1(redis_url: str) -> None:
    result = invoke(redis_url, "output", "9")
    assert result.exit_code == 1
    assert result.stderr == (
        "perseus: no exchange 9: not in the catalog, not online, no agent, no activity\n"
    )


def test_a_known_exchange_without_output_says_so(r: sync_redis.Redis, redis_url: str) -> None:
    catalog(r, 1, "coinbase")
    result = invoke(redis_url, "output", "1")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert result.stderr.startswith("no output kept for exchange 1 (")
    assert json.loads(invoke(redis_url, "output", "1", "--json").stdout)["lines"] == []


def test_an_exchange_by_its_name(r: sync_redis.Redis, redis_url: str) -> None:
    """As start, stop and ping: the name in any case; an unknown one is one
    line naming the closest, exit 1."""
    seed(r, lines=2)
    by_id = invoke(redis_url, "output", "1")
    by_name = invoke(redis_url, "output", "Coinbase")
    assert by_name.exit_code == 0, by_name.output
    assert by_name.stdout == by_id.stdout
    unknown = invoke(redis_url, "output", "coinbse")
    assert unknown.exit_code == 1
    assert unknown.stderr.startswith("perseus: no exchange named 'coinbse'")
    assert "did you mean 'coinbase'" in unknown.stderr


def test_bad_arguments_exit_2(redis_url: str) -> None:
    assert invoke(redis_url, "output", "-x").exit_code == 2
    assert invoke(redis_url, "output", "1", "--lines", "0").exit_code == 2


def test_follow_prints_new_lines_until_ctrl_c(r: sync_redis.Redis, redis_url: str) -> None:
    seed(r, lines=2)
    with following("output", "1", "--follow", "--json", "--redis-url", redis_url) as proc:
        out = LineReader(proc.stdout)
        first = out.wait_for('"line 1"')
        assert json.loads(first[0])["line"] == "child starting (epoch 3)"
        r.xadd(KEY, {"stream": "stderr", "line": "fresh one", "at": "2026-02-10T22:46:00.000Z"})
        [fresh] = out.wait_for("fresh one")
        assert json.loads(fresh)["stream"] == "stderr"
        interrupt_cleanly(proc)
