"""The documented least-privilege roles on a real server, line for line: the
agent run as the agent user, the CLI and the library as the operator and the
viewer, the Livermore bridge included. Each does its job without one refusal
in the server's ACL log, and a right it lacks is refused and named.

Every test runs on each version's lines, on a server of that version
(tests/acl/conftest.py). What each role may and may not run, command by
command, is in test_role_commands.py."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import signal
import sys
from collections.abc import Callable

import pytest
from click.testing import CliRunner, Result
from redis.exceptions import NoPermissionError, ResponseError

from perseus_cli.apps.redis_server import RedisServer
from perseus_cli.main import cli
from perseus_core.instance import Instance
from perseus_core.plumbing.connection import connect
from perseus_core.store.control.records import OutcomeRecord, now_ms
from perseus_core.store.control.server import PRUNE_EVERY, OutcomeBook
from perseus_core.store.doctor import Target, probe_roles
from perseus_core.store.network import FleetReader, FleetSnapshot
from perseus_core.store.presence import AgentAnnouncer
from perseus_core.wire import keys
from perseus_core.wire.models import CatalogEntry, ConnectionState
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import system_clock
from tests.acl.conftest import (
    USERS,
    VARIANTS,
    AclServer,
    Denial,
    documented_acl_lines,
    redis_binaries,
)
from tests.agent.conftest import SpawnAgent
from tests.livermore.shapes import LivermoreServer
from tests.waiting import eventually

AGENT, OPERATOR, VIEWER = USERS
SUB = "google-oauth2|1234"
LIVERMORE_EXCHANGES = {"binance": 2}


async def perseus(url: str, *args: str) -> Result:
    """A CLI run as the user of `url` (in a thread: the CLI runs its own loop)."""
    env = {"PERSEUS_REDIS_URL": url, "PERSEUS_SOCKET_TIMEOUT_MS": "2000"}
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=env)


def ok(result: Result) -> str:
    """The output of a CLI run that must have succeeded."""
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    return result.output


def one_line_failure(result: Result, exit_code: int) -> str:
    """The single line a refused CLI run printed."""
    assert result.exit_code == exit_code, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def catalog(acl: AclServer, *entries: CatalogEntry) -> None:
    with acl.admin() as admin:
        for entry in entries:
            admin.hset(keys.CATALOG_KEY, str(entry.id), entry.to_json())


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_the_doc_names_three_users_per_version(variant: str) -> None:
    users = tuple(words[2] for words in documented_acl_lines(variant))
    assert users == USERS


async def test_the_operator_steers_an_agent_run_as_the_agent_user(
    acl: AclServer, spawn_agent: SpawnAgent
) -> None:
    agent = spawn_agent(exchange_id=1, name="coinbase", args=["--warmup", "0.1"], url=acl.agent)
    await agent.wait_log("listening for commands")
    listed = ok(await perseus(acl.operator, "status"))
    [row] = [line for line in listed.splitlines() if line.split()[:3] == ["1", "coinbase", "ready"]]
    assert f"agent pid {agent.pid} ready" in row  # presence read by its script: see below
    assert "success: coinbase is idle" in ok(await perseus(acl.operator, "ping", "1"))
    started = ok(await perseus(acl.operator, "start", "1", "--operator", "ops"))
    assert "success: coinbase is active" in started
    instances = json.loads(ok(await perseus(acl.operator, "status", "--json")))["instances"]
    [coinbase] = [i for i in instances if i["exchangeId"] == 1]
    assert coinbase["online"] and coinbase["status"]["connectionState"] == "active"
    assert "coinbase" in ok(await perseus(acl.operator, "log", "--count", "5"))
    ok(await perseus(acl.operator, "stop", "1", "--operator", "ops"))
    assert agent.running
    with acl.admin() as admin:
        assert admin.exists(keys.status_key(1)) == 0
        entries = admin.xrange(keys.perseus_activity_key("coinbase"))
        audit = [f["status"] for _, f in entries if f.get("event") == "command"]
    assert audit.count("success") == 2  # written by the agent as the agent user
    # Not one command of either role was refused, not even one a surface got
    # around (the presence script, the PTTLs, a keyspace subscription).
    assert acl.denials() == []


async def test_the_operator_steers_a_livermore_server_over_its_channel(acl: AclServer) -> None:
    ok(await perseus(acl.operator, "catalog", "add", "2", "binance", "--livermore-sub", SUB))
    with LivermoreServer(acl.admin_url, SUB, "lm-host-02", LIVERMORE_EXCHANGES) as lm:
        started = ok(await perseus(acl.operator, "start", "2", "--operator", "alice"))
        assert f"via livermore:commands:{SUB}" in started
        assert re.search(r"success: binance is (warming|active) on lm-host-02", started), started
        stopped = ok(await perseus(acl.operator, "stop", "2", "--operator", "alice"))
        assert re.search(r"success: binance is (stopping|stopped|offline)", stopped), stopped
    assert [c["type"] for c in lm.ran] == ["start", "stop"]
    with acl.admin() as admin:
        audit = [
            f
            for _, f in admin.xrange(keys.perseus_activity_key("binance"))
            if f.get("event") == "command"
        ]
    assert [(f["command"], f["status"], f["operator"]) for f in audit] == [
        ("start", "success", "alice"),
        ("stop", "success", "alice"),
    ]
    assert acl.denials(OPERATOR) == []


async def read_fleet_as(
    acl: AclServer, make_settings: Callable[..., Settings], url: str
) -> FleetSnapshot:
    """The fleet as `url`'s user reads it, with an agent of exchange 1 waiting
    idle (its presence written as the agent user) and exchange 2 held."""
    catalog(
        acl,
        CatalogEntry(id=1, name="coinbase", display_name="Coinbase"),
        CatalogEntry(id=2, name="binance", display_name="Binance"),
    )
    long_ttl = {"heartbeat_ttl_ms": 60_000}
    admin = connect(make_settings(redis_url=acl.admin_url, **long_ttl))
    agent = connect(make_settings(redis_url=acl.agent))
    holder = Instance(
        admin,
        make_settings(redis_url=acl.admin_url, **long_ttl),
        exchange_id=2,
        exchange_name="binance",
    )
    reader_client = connect(make_settings(redis_url=url))
    try:
        await holder.claim(heartbeat=False)
        waiting = AgentAnnouncer(
            agent,
            make_settings(redis_url=acl.agent, **long_ttl),
            exchange_id=1,
            exchange_name="coinbase",
            state=lambda: ConnectionState.IDLE,
        )
        await waiting.publish()
        return await FleetReader(reader_client).snapshot()
    finally:
        await holder.close()
        await reader_client.aclose()
        await agent.aclose()
        await admin.aclose()


def assert_ages_and_agents(snapshot: FleetSnapshot) -> None:
    """What `read_fleet_as` must find: the waiting agent, and the holder's
    heartbeat dated by its key's PTTL (on Redis's clock)."""
    coinbase, binance = snapshot.get(1), snapshot.get(2)
    assert coinbase is not None and binance is not None
    assert [a.exchange_id for a in coinbase.agents] == [1] and coinbase.error is None
    assert binance.online and binance.heartbeat_at is not None


@pytest.mark.parametrize("role", [OPERATOR, VIEWER])
async def test_readers_date_heartbeats_and_see_agents_on_redis_clock(
    acl: AclServer, make_settings: Callable[..., Settings], role: str
) -> None:
    url = acl.operator if role == OPERATOR else acl.viewer
    assert_ages_and_agents(await read_fleet_as(acl, make_settings, url))
    # Not refused even once: a refused script would have been got around
    # (plain reads on this host's clock, an undated heartbeat), and logged.
    assert acl.denials() == []
    with acl.admin() as admin:
        stats = admin.info("commandstats")
    # The read-only scripts went as EVAL_RO where Redis has it: Redis 7 would
    # refuse EVAL on the read-only (%R~) keys of the 7 lines.
    used = "cmdstat_eval_ro" if acl.version >= (7, 0) else "cmdstat_eval"
    assert stats[used]["calls"] >= 2  # the PTTLs and the presence set


async def test_the_62_lines_work_on_redis_7(
    make_settings: Callable[..., Settings], spawn_agent: SpawnAgent
) -> None:
    # Servers are upgraded before their users are: the doc says the 6.2 lines
    # keep working on 7 (without what only 7 can draw).
    found = redis_binaries().get("7")
    if found is None:
        pytest.skip("no redis-server 7 on this machine to load the 6.2 lines into")
    binary, version = found
    with RedisServer(binary=binary) as server:
        acl = AclServer(server, "6.2", version)
        # A reader asks once per client whether it may send EVAL_RO (these
        # users may not: it sends EVAL); nothing else is refused.
        for url, user in ((acl.operator, OPERATOR), (acl.viewer, VIEWER)):
            acl.flush()
            assert_ages_and_agents(await read_fleet_as(acl, make_settings, url))
            assert acl.denials() == [Denial(user, "command", "eval_ro")]
        acl.flush()
        agent = spawn_agent(exchange_id=1, name="coinbase", args=["--warmup", "0.1"], url=acl.agent)
        await agent.wait_log("listening for commands")
        ok(await perseus(acl.operator, "start", "1"))
        ok(await perseus(acl.operator, "stop", "1"))
        assert agent.running
        assert set(acl.denials()) == {Denial(OPERATOR, "command", "eval_ro")}


async def test_a_viewer_reads_and_is_told_what_it_may_not_do(
    acl: AclServer, make_settings: Callable[..., Settings]
) -> None:
    catalog(
        acl,
        CatalogEntry(id=2, name="binance", display_name="Binance"),
        CatalogEntry(id=3, name="kraken", display_name="Kraken", livermore_sub=SUB),
    )
    admin = connect(make_settings(redis_url=acl.admin_url))
    try:
        waiting = AgentAnnouncer(
            admin,
            make_settings(redis_url=acl.admin_url, heartbeat_ttl_ms=60_000),
            exchange_id=2,
            exchange_name="binance",
            state=lambda: ConnectionState.IDLE,
        )
        await waiting.publish()  # an agent is ready, so a start is not refused before sending
    finally:
        await admin.aclose()
    listed = ok(await perseus(acl.viewer, "status"))
    assert "binance" in listed and "kraken" in listed
    ok(await perseus(acl.viewer, "log", "--count", "5"))
    assert acl.denials() == []
    refused = one_line_failure(await perseus(acl.viewer, "start", "2"), 3)
    assert "this user may not XADD perseus:commands:2" in refused
    # Kraken is steered over Livermore's channel: the first right a viewer
    # lacks there is counting its listeners, and that is what is named.
    refused = one_line_failure(await perseus(acl.viewer, "start", "3"), 3)
    assert f"this user may not PUBSUB NUMSUB livermore:commands:{SUB}" in refused
    viewer = connect(make_settings(redis_url=acl.viewer))
    try:
        # A script cannot make a writer of a viewer.
        write = "return redis.call('SET', KEYS[1], 'x')"
        if acl.version >= (7, 0):  # only read-only scripts (EVAL_RO), no EVAL
            with pytest.raises(NoPermissionError):
                await viewer.eval(write, 1, keys.status_key(2))
        script = "EVAL_RO" if acl.version >= (7, 0) else "EVAL"
        with pytest.raises(ResponseError, match="can't run this command"):  # the caller's rights
            await viewer.execute_command(script, write, 1, keys.status_key(2))
        roles = await probe_roles(viewer, Target(2, "binance", 3))
        assert roles.names == ["viewer"]
        assert any("may not XADD perseus:commands:2" in r for r in roles.refusals)
    finally:
        await viewer.aclose()
    with acl.admin() as admin:
        assert admin.exists(keys.commands_key(2), keys.commands_key(3)) == 0


@pytest.mark.parametrize(
    ("right", "named"),
    [
        ("+pubsub|numsub", f"PUBSUB NUMSUB livermore:commands:{SUB}"),
        ("+subscribe", f"SUBSCRIBE livermore:responses:{SUB}"),
        ("+publish", f"PUBLISH livermore:commands:{SUB}"),
    ],
)
async def test_an_operator_without_a_livermore_right_is_told_which(
    acl: AclServer, right: str, named: str
) -> None:
    url = acl.user_without(OPERATOR, "operator-short", right)
    catalog(acl, CatalogEntry(id=2, name="binance", display_name="Binance", livermore_sub=SUB))
    with LivermoreServer(acl.admin_url, SUB, "lm-host-02", LIVERMORE_EXCHANGES) as lm:
        refused = one_line_failure(await perseus(url, "start", "2"), 3)
    assert refused.startswith(f"perseus: this user may not {named} ("), refused
    assert "no permissions" in refused
    assert lm.received == []  # nothing was sent


async def test_an_agent_cannot_touch_another_exchange(
    acl: AclServer, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(redis_url=acl.agent)
    redis = connect(settings)
    own = Instance(redis, settings, exchange_id=1, exchange_name="coinbase")
    other = Instance(redis, settings, exchange_id=2, exchange_name="binance")
    try:
        await own.claim(heartbeat=False)
        await own.transition(ConnectionState.STARTING)
        assert (await own.heartbeat.tick()).value == "refreshed"
        assert await own.release()
        with pytest.raises(NoPermissionError):
            await other.claim(heartbeat=False)
        for denied in (
            redis.set(keys.status_key(2), "{}", px=1000),
            redis.xadd(keys.activity_key("binance"), {"event": "error"}),
            redis.xadd(keys.commands_key(2), {"command": "{}"}),
            redis.flushall(),
        ):
            with pytest.raises(NoPermissionError):
                await denied
        # The catalog: its own entry without overwriting an operator's.
        entry = CatalogEntry(id=1, name="coinbase", display_name="Coinbase")
        assert await redis.hsetnx(keys.CATALOG_KEY, "1", entry.to_json())
    finally:
        await own.close()
        await other.close()
        await redis.aclose()


async def test_an_agent_renames_its_catalog_entry_only_where_the_lines_allow_it(
    acl: AclServer, spawn_agent: SpawnAgent
) -> None:
    # On 7 the agent's catalog right is a selector of HSETNX and reads: it may
    # add its entry, never rewrite one (an operator renames). 6.2 cannot say
    # that: an agent there may HSET (its outcomes hash needs it) any field.
    catalog(acl, CatalogEntry(id=1, name="gdax", display_name="gdax"))
    agent = spawn_agent(exchange_id=1, name="coinbase", args=["--rename"], url=acl.agent)
    if acl.version >= (7, 0):
        assert await agent.wait_exit(within=15) == 3
        lines = [line for line in agent.log().splitlines() if line.startswith("perseus:")]
        assert len(lines) == 1, agent.log()
        assert lines[0].startswith(f"perseus: this user may not EVALSHA {keys.CATALOG_KEY} ")
        assert "Traceback" not in agent.log()
        with acl.admin() as admin:
            assert json.loads(admin.hget(keys.CATALOG_KEY, "1") or "{}")["name"] == "gdax"
    else:
        await agent.wait_log("listening for commands")
        with acl.admin() as admin:
            assert json.loads(admin.hget(keys.CATALOG_KEY, "1") or "{}")["name"] == "coinbase"
        assert acl.denials(AGENT) == []


async def test_an_agent_that_may_not_run_scripts_stops_at_start_naming_evalsha(
    acl: AclServer, spawn_agent: SpawnAgent
) -> None:
    # Without EVALSHA the agent could claim the key (a plain SET NX) but never
    # heartbeat or update it: it must stop at once with the reason, not retry for ever.
    with acl.admin() as admin:
        admin.execute_command("ACL", "SETUSER", AGENT, "-evalsha", "-eval")
    try:
        agent = spawn_agent(exchange_id=1, name="coinbase", args=["--autostart"], url=acl.agent)
        assert await agent.wait_exit(within=15) == 3
        lines = [line for line in agent.log().splitlines() if line.startswith("perseus:")]
        assert len(lines) == 1, agent.log()
        # Redis's own words in the parentheses differ between versions.
        assert lines[0].startswith(
            "perseus: this user may not EVALSHA perseus:agents:1 (this user has no permissions"
            " to run the 'evalsha' command"
        ), agent.log()
        assert lines[0].endswith(
            "): the agent runs its heartbeat and presence as scripts"
            " (docs/production-redis.md lists the rights it needs)"
        ), agent.log()
        assert "Traceback" not in agent.log()
        with acl.admin() as admin:
            assert admin.exists(keys.status_key(1)) == 0  # never claimed
    finally:
        acl.recreate(AGENT)


async def test_an_agent_prunes_its_outcomes_on_the_documented_lines(
    acl: AclServer, make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """Past `PRUNE_EVERY` outcomes the agent drops the records past their
    retention (HSCAN, HDEL): its lines allow that, so nothing is refused."""
    settings = make_settings(redis_url=acl.agent)
    redis = connect(settings)
    key = keys.outcomes_key(1)
    stale = OutcomeRecord(state="done", entry="1-0", server="old", hostname="h", pid=1, at=0)
    with acl.admin() as admin:
        admin.hset(key, "stale", stale.to_json())
    book = OutcomeBook(redis, 1, system_clock)
    try:
        fresh = dataclasses.replace(stale, at=now_ms(system_clock))
        for index in range(PRUNE_EVERY):
            await book.record(f"c-{index}", fresh)
        await book.prune_when_due()
    finally:
        await redis.aclose()
    with acl.admin() as admin:
        assert not admin.hexists(key, "stale")
        assert admin.hlen(key) == PRUNE_EVERY
    assert "could not prune" not in caplog.text
    assert acl.denials(AGENT) == []


CHATTY_CHILD = [
    sys.executable,
    "-c",
    "import sys, time; print('hello from the child', flush=True); time.sleep(120)",
]


async def test_an_agent_keeps_its_childs_output_on_the_documented_lines(
    acl: AclServer, spawn_agent: SpawnAgent
) -> None:
    """Lines from before the output key lack its pattern: the child runs all the
    same and the agent's log names the missing right, once."""
    short = acl.user_without(AGENT, "agent-no-output", "~perseus:output:1")
    for url, kept in ((acl.agent, True), (short, False)):
        with acl.admin() as admin:
            admin.delete(keys.output_key(1))
        agent = spawn_agent(args=["--warmup", "0.1", "--autostart"], command=CHATTY_CHILD, url=url)
        await agent.wait_log("child stdout: hello from the child")
        if kept:
            with acl.admin() as admin:

                def written() -> bool:
                    lines = [f.get("line") for _, f in admin.xrange(keys.output_key(1))]
                    return "hello from the child" in lines

                await eventually(written, what="the child's line in its output stream")
            assert acl.denials(AGENT) == []
        else:
            await agent.wait_log("this user may not XADD perseus:output:1")
            assert agent.log().count("this user may not XADD perseus:output:1") == 1
            with acl.admin() as admin:
                assert not admin.exists(keys.output_key(1))
        agent.signal(signal.SIGTERM)
        assert await agent.wait_exit() == 0
