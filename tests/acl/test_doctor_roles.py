"""`perseus doctor` as each documented role, on each version's lines
(tests/acl/conftest.py): it reports what every role can and cannot do, exits
0 for a user fit for its purpose, 1 with a one-line reason for one that is
not (a right taken away, a full server), and changes nothing while it asks.

What it says a user may run is what Redis does when the command is run for
real: checked command by command for every role's commands, as each user."""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis as sync_redis
from click.testing import CliRunner, Result

from perseus_cli.main import cli
from perseus_core.plumbing.connection import connect
from perseus_core.store.doctor import Method, Target, probe_roles
from perseus_core.wire import keys
from perseus_core.wire.models import CatalogEntry
from perseus_core.wire.settings import Settings
from tests.acl.conftest import PASSWORDS, USERS, AclServer, Denial, documented_acl_lines
from tests.acl.test_role_commands import ALLOWED, REFUSED, run_as

AGENT, OPERATOR, VIEWER = USERS
FIT = {AGENT: ["agent"], OPERATOR: ["viewer", "operator"], VIEWER: ["viewer"]}
"""The roles each documented user is fit for."""


async def doctor(url: str, *args: str) -> Result:
    """`perseus doctor --json` as the user of `url` (in a thread: the CLI runs its own loop)."""
    env = {"PERSEUS_REDIS_URL": url, "PERSEUS_SOCKET_TIMEOUT_MS": "5000"}
    return await asyncio.to_thread(CliRunner().invoke, cli, ["doctor", "--json", *args], env=env)


def report_of(result: Result, exit_code: int) -> dict[str, Any]:
    assert result.exit_code == exit_code, result.output
    assert "Traceback" not in result.output
    report: dict[str, Any] = json.loads(result.stdout)
    return report


def check(report: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(c for c in report["checks"] if c["check"] == name)
    return found


def url_of(acl: AclServer, user: str) -> str:
    return {AGENT: acl.agent, OPERATOR: acl.operator, VIEWER: acl.viewer}[user]


def expected_method(acl: AclServer) -> Method:
    """Redis 7 answers the documented roles from inside a script; 6.2 is probed."""
    return Method.SCRIPT if acl.version >= (7, 0) else Method.PROBES


def seed(acl: AclServer) -> dict[bytes, bytes]:
    """Exchange 1 coinbase in the catalog, held and logging; every key's dump."""
    with acl.admin() as admin:
        admin.hset(keys.CATALOG_KEY, "1", CatalogEntry(id=1, name="coinbase").to_json())
        admin.hset(keys.CATALOG_KEY, "2", CatalogEntry(id=2, name="binance").to_json())
        admin.set(keys.status_key(1), "{}", px=600_000)
        admin.xadd(keys.activity_key("coinbase"), {"event": "state_transition"})
    return dumps(acl)


def dumps(acl: AclServer) -> dict[bytes, bytes]:
    """Every key's serialized value (binary: `acl.admin()` decodes)."""
    with sync_redis.Redis(port=acl.server.port) as admin:
        return {key: admin.dump(key) for key in sorted(admin.keys("*"))}  # type: ignore[misc]


@pytest.mark.parametrize("user", USERS)
async def test_each_documented_role_is_fit_for_its_purpose_and_told_the_rest(
    acl: AclServer, user: str
) -> None:
    before = seed(acl)
    role = {AGENT: "agent", OPERATOR: "operator", VIEWER: "viewer"}[user]
    report = report_of(await doctor(url_of(acl, user), "--role", role, "--exchange-id", "1"), 0)
    assert report["ok"] is True and report["facts"]["role"] == role
    assert report["facts"]["roles"] == FIT[user]
    assert report["facts"]["rights"]["method"] == expected_method(acl).value
    rows = {r: check(report, f"role: {r}") for r in ("viewer", "operator", "agent")}
    assert rows[role]["ok"] is True
    for other in set(rows) - set(FIT[user]):
        assert rows[other]["ok"] is None and rows[other]["value"].startswith("cannot ")
    if user == AGENT:
        assert rows["agent"]["value"] == "can run the agent of exchange 1 (coinbase)"
        # It may not read the fleet: said, and the fleet's checks are not made.
        assert report["facts"]["summary"].startswith(
            "This user can run the agent of exchange 1 (coinbase); it cannot list the"
            " exchanges, read every exchange's status"
        )
        assert any("MGET exchange:2:status" in d for d in rows["viewer"]["details"])
        assert check(report, "key types")["value"] == "not checked: this user cannot read the fleet"
    else:
        assert check(report, "key types")["ok"] is True
    # Nothing was written, nothing deleted (the probes' refusals changed nothing).
    assert dumps(acl) == before
    if acl.version >= (7, 0) and user != AGENT:
        # Asked from a read-only script, and nothing the doctor reads is refused:
        # not even CONFIG GET, which a single server's live tail does not need.
        assert acl.denials() == []


async def test_an_agent_user_asked_to_operate_fails_in_one_line(acl: AclServer) -> None:
    seed(acl)
    result = await doctor(acl.agent, "--role", "operator")
    report = report_of(result, 1)
    assert report["reasons"] == [f"role: operator: {check(report, 'role: operator')['value']}"]
    assert report["reasons"][0].startswith(
        "role: operator: cannot list the exchanges, read every exchange's status"
    )
    table = await asyncio.to_thread(
        CliRunner().invoke,
        cli,
        ["doctor", "--role", "operator"],
        env={"PERSEUS_REDIS_URL": acl.agent},
    )
    assert table.exit_code == 1
    assert "Perseus will not work with this Redis:\n  role: operator: cannot " in table.output


async def test_an_agent_of_another_exchange_is_told_to_name_it(acl: AclServer) -> None:
    # The documented agent line made for exchange 2 binance. It cannot read the
    # catalog to find its exchange, so the doctor checks exchange 1 (the
    # default) and finds it fit for no role there.
    words = next(w for w in documented_acl_lines(acl.variant) if w[2] == AGENT)
    line = re.sub(r"(?<=:)1(?=[: )])", "2", " ".join(words)).replace("coinbase", "binance")
    line = line.replace(AGENT, "perseus-agent-2")
    with acl.admin() as admin:
        admin.execute_command("ACL", "DELUSER", "perseus-agent-2")
        admin.execute_command(*line.split())
    url = acl.url("perseus-agent-2", PASSWORDS["AGENT_PASSWORD"])
    report = report_of(await doctor(url), 1)
    assert report["reasons"] == [
        "role: fit for no Perseus role; for an agent's user, name its exchange:"
        " --role agent --exchange-id ID"
    ]
    named = report_of(await doctor(url, "--exchange-id", "2"), 0)
    # Neither the catalog nor a status key names exchange 2: its streams are
    # not checked until the name is given, and the agent is fit all the same.
    assert check(named, "role: agent")["value"] == (
        "can run the agent of exchange 2; not checked: write its activity streams"
    )
    given = report_of(await doctor(url, "--exchange-id", "2", "--exchange-name", "binance"), 0)
    assert check(given, "role: agent")["value"] == "can run the agent of exchange 2 (binance)"
    # Named wrong, its streams are another exchange's: refused.
    asked = report_of(
        await doctor(url, "--role", "agent", "--exchange-id", "2", "--exchange-name", "kraken"), 1
    )
    assert asked["reasons"] == ["role: agent: cannot write its activity streams"]


@pytest.mark.parametrize(
    ("right", "does", "refused"),
    [
        ("+evalsha", "hold its status key", "EVALSHA exchange:1:status"),
        ("~logs:network:coinbase", "write its activity streams", "XADD logs:network:coinbase"),
        (
            "~perseus:outcomes:1",
            "answer commands and record their outcomes",
            "HSETNX perseus:outcomes:1",
        ),
        ("~perseus:agents:1", "announce its presence", "ZADD perseus:agents:1"),
        ("~perseus:output:1", "keep its child's output", "XADD perseus:output:1"),
    ],
)
async def test_an_agent_short_of_a_right_is_not_fit_and_told_which(
    acl: AclServer, right: str, does: str, refused: str
) -> None:
    seed(acl)
    url = acl.user_without(AGENT, "agent-short", right)
    report = report_of(await doctor(url, "--role", "agent", "--exchange-id", "1"), 1)
    row = check(report, "role: agent")
    assert row["ok"] is False and row["value"].startswith("cannot ")
    assert does in row["value"]
    assert report["reasons"] == [f"role: agent: {row['value']}"]
    assert any(line.startswith(f"{does}") and refused in line for line in row["details"]), row
    agent = report["facts"]["rights"]["roles"]["agent"]
    lines = [r for a in agent["abilities"] if a["does"].startswith(does) for r in a["refused"]]
    assert any(f"this user may not {refused}" in line for line in lines), lines


@pytest.mark.parametrize("user", USERS)
async def test_a_full_server_refusing_writes_is_not_fit_for_any_role(
    acl: AclServer, user: str
) -> None:
    seed(acl)
    with acl.admin() as admin:
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", 1)
        try:
            report = report_of(await doctor(url_of(acl, user), "--exchange-id", "1"), 1)
        finally:
            admin.config_set("maxmemory", 0)
    memory = check(report, "memory")
    assert memory["ok"] is False
    assert memory["value"].endswith(
        "over maxmemory 1, policy noeviction; Redis refuses every write"
    )
    assert report["reasons"] == [f"memory: {memory['value']}"]
    assert report["facts"]["roles"] == FIT[user]  # the rights are what they were


@pytest.fixture
def reader_without_scripts(acl: AclServer) -> Iterator[str]:
    """The documented viewer without the script command of its version's lines:
    on 7 the doctor then has no script to ask from, and probes."""
    right = "+eval_ro" if acl.variant == "7" else "+eval"
    yield acl.user_without(VIEWER, "viewer-no-script", right)


@pytest.fixture
def admin_without_scripts(acl: AclServer) -> Iterator[str]:
    """A user who may run everything but scripts: on 7 the doctor asks ACL DRYRUN."""
    with acl.admin() as admin:
        admin.execute_command("ACL", "SETUSER", "no-scripts", "reset", "on", ">pw", "~*", "&*")
        admin.execute_command("ACL", "SETUSER", "no-scripts", "+@all", "-@scripting")
    yield acl.url("no-scripts", "pw")
    with acl.admin() as admin:
        admin.execute_command("ACL", "DELUSER", "no-scripts")


@pytest.mark.parametrize("user", [*USERS, "viewer-no-script", "no-scripts", "default"])
async def test_what_the_doctor_says_is_what_redis_does(
    acl: AclServer,
    make_settings: Callable[..., Settings],
    reader_without_scripts: str,
    admin_without_scripts: str,
    user: str,
) -> None:
    """Every command of every role, judged by the doctor as `user`, then run
    for real as that user on the emptied server: the same answer each time
    (a command the doctor could not check is not compared)."""
    url = {
        "viewer-no-script": reader_without_scripts,
        "no-scripts": admin_without_scripts,
        "default": acl.admin_url,
    }.get(user) or url_of(acl, user)
    target = Target(1, "coinbase", 2)
    client = connect(make_settings(redis_url=url))
    try:
        roles = await probe_roles(client, target)
    finally:
        await client.aclose()
    acl.flush()  # the real runs below start from nothing, as the probes did
    wrong: list[str] = []
    unchecked = 0
    tally: Counter[str] = Counter()
    for result in roles.results.values():
        for ability in result.abilities:
            answers = {r: a for r, a in (*ability.refused, *ability.unchecked)}
            for right in ability.ability.rights:
                said = answers.get(right)
                if said is not None and said.allowed is None:
                    unchecked += 1
                    continue
                doctor_says = REFUSED if said is not None else ALLOWED
                truth = run_as(url, *_without_script_body(right.command))
                tally[truth] += 1
                if truth != doctor_says:
                    wrong.append(f"{right.label}: doctor {doctor_says}, Redis {truth}")
    assert wrong == [], f"{user} on the {acl.variant} lines:\n" + "\n".join(wrong)
    powerful = user in ("default", "no-scripts")
    assert tally[ALLOWED] >= 20 and (powerful or tally[REFUSED] >= 10), tally
    methods = {
        "default": Method.SCRIPT if acl.version >= (7, 0) else Method.GETUSER,
        "no-scripts": Method.DRYRUN if acl.version >= (7, 0) else Method.PROBES,
        "viewer-no-script": Method.PROBES,
    }
    assert roles.method is methods.get(user, expected_method(acl))
    if roles.method is not Method.PROBES or user in USERS:
        assert unchecked == 0  # every documented role, and any user Redis answers for
    elif user == "no-scripts":
        # 6.2, every key: HSETNX, RPUSH and a DEL that could hit data are not tried.
        assert unchecked == 5


def _without_script_body(command: tuple[str, ...]) -> tuple[str, ...]:
    """A script command with a script that runs no command: a real run then
    tells the right to send it on its keys (what the doctor judges), not the
    rights of the calls inside (judged as commands of their own)."""
    if command[0] in ("EVAL", "EVAL_RO"):
        return (command[0], "return 1", *command[2:])
    if command[0] == "SCRIPT":
        return ("SCRIPT", "LOAD", "return 1")
    return command


async def test_on_7_an_agent_s_doctor_is_refused_eval_ro_and_nothing_else(
    acl: AclServer,
) -> None:
    if acl.version < (7, 0):
        pytest.skip("Redis 6.2 has no ACL DRYRUN nor redis.acl_check_cmd: it is probed")
    seed(acl)
    with acl.admin() as admin:
        admin.execute_command("ACL", "LOG", "RESET")
    report_of(await doctor(acl.agent, "--exchange-id", "1"), 0)
    # An agent's user may send no read-only script: the doctor asks from an
    # EVALSHA once EVAL_RO is refused, and that is all.
    assert set(acl.denials()) == {Denial(AGENT, "command", "eval_ro")}
