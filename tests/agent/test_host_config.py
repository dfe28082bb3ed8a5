"""The host file of `perseus agent --config`, checked before anything runs (no Redis needed)."""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import tomllib
from pathlib import Path

import pytest

from perseus_core.runtime.host_config import HostConfigInvalid, parse_host_config
from perseus_core.runtime.options import AgentOptions
from perseus_core.wire.settings import Settings
from tests.helpers import invoke

EXAMPLE = Path(__file__).parents[2] / "docs" / "host.example.toml"


def problems(text: str) -> list[str]:
    with pytest.raises(HostConfigInvalid) as caught:
        parse_host_config(text, "host.toml")
    return caught.value.lines()


def test_slots_take_the_defaults_and_a_command_string_is_split_as_a_shell_would() -> None:
    slots = parse_host_config(
        "[defaults]\nwarmup_s = 5\nsymbol_count = 3\n"
        '[[slot]]\nexchange_id = 1\nexchange_name = "coinbase"\n'
        "command = \"sleep '30'\"\nwarmup_s = 1\n"
        '[[slot]]\nexchange_id = 4\nexchange_name = "kraken"\ncommand = ["sleep", "31"]\n'
    )
    assert slots == (
        AgentOptions(1, "coinbase", command=("sleep", "30"), warmup_s=1, symbol_count=3),
        AgentOptions(4, "kraken", command=("sleep", "31"), warmup_s=5, symbol_count=3),
    )


def test_every_problem_is_reported_at_once_with_its_line() -> None:
    text = """\
[defaults]
warmup = 3
exchange_id = 7

[[slot]]
exchange_id = "1"
exchange_name = "coinbase"

[[slot]]
exchange_name = "kraken"
symbol_count = -2
command = ["sleep", 3]

[[slot]]
exchange_id = 4
exchange_name = "bad name!"
command = "no-such-program-anywhere --flag"

[[slot]]
exchange_id = 5
exchange_name = "kraken"

[[slot]]
exchange_id = 5
exchange_name = "KRAKEN"
autostart = "yes"

[network]
redis_url = "redis://elsewhere"
"""
    assert problems(text) == [
        "host.toml:2: [defaults]: unknown key warmup (did you mean warmup_s?)",
        "host.toml:3: [defaults]: exchange_id names one slot: set it in each [[slot]]",
        "host.toml:6: slot 1 (coinbase): exchange_id = '1': input should be a valid integer",
        "host.toml:9: slot 2 (kraken): exchange_id is missing",
        "host.toml:11: slot 2 (kraken): symbol_count = -2: must not be negative",
        "host.toml:12: slot 2 (kraken): command[1] = ['sleep', 3]: input should be a valid string",
        "host.toml:16: slot 3 (bad name!): exchange_name = 'bad name!': use 1-64 letters,"
        " digits, '.', '_' or '-'",
        "host.toml:17: slot 3 (bad name!): child command not found on PATH:"
        " no-such-program-anywhere",
        "host.toml:21: slot 4 (kraken): exchange_name kraken is slot 2's too",
        "host.toml:24: slot 5 (KRAKEN): exchange_id 5 is slot 4's too",
        "host.toml:25: slot 5 (KRAKEN): exchange_name KRAKEN is slot 2's too",
        "host.toml:26: slot 5 (KRAKEN): autostart = 'yes': input should be a valid boolean",
        "host.toml:28: unknown table network: a host file has [defaults] and [[slot]]"
        " tables (Redis settings come from the environment)",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[[slot]]\nexchange_id = 1\nexchange_name = "a\n', "host.toml:3: invalid TOML:"),
        ("[[slot]]\nexchange_id = 1\nexchange_id = 2\n", "host.toml:3: invalid TOML:"),
        ("[defaults]\nwarmup_s = 1\n", "host.toml: no [[slot]] table: nothing to run"),
        ('[[slot]]\nexchange_id = 1\nexchange_name = "a"\nwarmup_s = inf\n', "host.toml:4:"),
        ("slot = 3\n", "host.toml:1: slot must be written as [[slot]] tables"),
        ('[[slot]]\nexchange_id = 1\nexchange_name = "a"\ncommand = "x \'y"\n', "no closing"),
    ],
)
def test_a_file_that_is_not_a_host_file_is_one_line(text: str, expected: str) -> None:
    [line] = problems(text)
    assert line.startswith(expected) or expected in line, line


def test_every_option_of_the_agent_is_a_key() -> None:
    """Keys and types come from AgentOptions: each field with a default takes a
    value of its default's type (what a new option gets without any change here)."""
    written = {
        f.name: f.default
        for f in dataclasses.fields(AgentOptions)
        if f.default is not dataclasses.MISSING and f.default is not None and f.name != "command"
    }
    body = "".join(f"{key} = {_toml(value)}\n" for key, value in written.items())
    [options] = parse_host_config(f'[[slot]]\nexchange_id = 1\nexchange_name = "a"\n{body}')
    assert {key: getattr(options, key) for key in written} == written


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if not isinstance(value, str) else f'"{value}"'


def test_the_shipped_example_is_valid_and_names_every_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = EXAMPLE.read_text()
    for field in dataclasses.fields(AgentOptions):
        assert re.search(rf"^#? ?{field.name} = ", text, re.M), f"{field.name} not in the example"
    # Its commands stand for the operator's programs: stubs on PATH stand in.
    for table in tomllib.loads(text)["slot"]:
        command = table.get("command")
        program = (command.split() if isinstance(command, str) else command or [None])[0]
        if program is not None:
            stub = tmp_path / Path(program).name
            stub.write_text("#!/bin/sh\n")
            stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.chdir(tmp_path)
    assert len(parse_host_config(text)) >= 2


def test_the_command_line_shows_every_problem_and_exits_2(
    tmp_path: Path, settings: Settings
) -> None:
    config = tmp_path / "host.toml"
    config.write_text('[[slot]]\nexchange_id = 1\nexchange_nme = "a"\n')
    code, _, err = invoke(settings, "agent", "--config", str(config))
    assert code == 2
    assert err.splitlines() == [
        f"perseus: {config}:1: slot 1: exchange_name is missing",
        f"perseus: {config}:3: slot 1: unknown key exchange_nme (did you mean exchange_name?)",
    ]
    code, _, err = invoke(settings, "agent", "--config", str(tmp_path / "none.toml"))
    assert code == 2 and "none.toml: cannot read: No such file or directory" in err


def test_slot_options_beside_config_are_refused(tmp_path: Path, settings: Settings) -> None:
    code, _, err = invoke(
        settings, "agent", "--config", "host.toml", "--warmup", "3", "--", "sleep", "1"
    )
    assert code == 2
    assert "perseus: --warmup describes one slot: with --config, set it in the file" in err
    assert "perseus: COMMAND describes one slot" in err
