"""The `perseus` group: verbs are imported only when they run."""

from __future__ import annotations

import json
import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from perseus_cli.main import VERBS, cli

HEAVY = ("textual", "httpx", "redis", "pydantic", "rich", "perseus_core.runtime")
"""What starting `perseus` must not import before a verb needs it."""

_PROBE = """
import json, sys
from perseus_cli.main import main
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


def modules_loaded_by(*args: str) -> set[str]:
    """Every module a real `perseus ARGS` process had imported when it finished."""
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stderr.splitlines()[-1]))


@pytest.mark.parametrize("args", [["--version"], ["--help"]], ids=" ".join)
def test_version_and_help_import_no_verb(args: list[str]) -> None:
    loaded = modules_loaded_by(*args)
    heavy = sorted(m for m in loaded if any(m == h or m.startswith(f"{h}.") for h in HEAVY))
    assert heavy == []


@pytest.mark.parametrize("name", sorted(VERBS))
def test_each_verb_is_what_the_help_says(name: str) -> None:
    """The static help line of each verb is its command's own first paragraph."""
    command = cli.get_command(click.Context(cli), name)
    assert isinstance(command, click.Command)
    assert command.name == name
    assert command.help is not None
    first = " ".join(command.help.split("\n\n")[0].split())
    assert first == VERBS[name].summary


def test_help_lists_every_verb() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert result.exit_code == 0
    lines = result.stdout.split("Commands:")[1].splitlines()
    assert [line.split()[0] for line in lines if line.strip()] == sorted(VERBS)


def test_an_unknown_verb_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli, ["frobnicate"])
    assert result.exit_code == 2
    assert "No such command 'frobnicate'" in result.stderr


@pytest.mark.parametrize(
    ("args", "typed", "suggested"),
    [
        (["stauts"], "stauts", "'status' or 'start'"),
        (["strat", "1"], "strat", "'start' or 'status'"),
        (["catalog", "lsit"], "lsit", "'list'"),
    ],
    ids=["stauts", "strat", "catalog lsit"],
)
def test_a_mistyped_verb_is_told_the_closest_one(
    args: list[str], typed: str, suggested: str
) -> None:
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2
    assert f"No such command '{typed}'. Did you mean {suggested}?" in result.stderr


def test_a_mistyped_verb_imports_no_verb() -> None:
    """Naming the closest verbs reads their names only."""
    loaded = modules_loaded_by("stauts")
    assert not any(name.startswith("perseus_cli.") and name.endswith("_cmd") for name in loaded)
