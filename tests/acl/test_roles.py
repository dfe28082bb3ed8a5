"""The documented least-privilege roles on a real server: each can do its job
and nothing more, and a missing right is named."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
import redis as sync_redis
from click.testing import CliRunner, Result
from redis.exceptions import NoPermissionError, ResponseError

from perseus_cli.main import cli
from perseus_core.instance import Instance
from perseus_core.plumbing.connection import connect
from perseus_core.store.control.sender import ControlClient
from perseus_core.store.doctor import probe_roles
from perseus_core.store.presence import AgentAnnouncer
from perseus_core.wire import keys
from perseus_core.wire.models import CatalogEntry, ConnectionState, ReplyStatus
from perseus_core.wire.settings import Settings
from tests.acl.conftest import AclServer, documented_acl_lines
from tests.agent.conftest import SpawnAgent


async def perseus(url: str, *args: str) -> Result:
    """A CLI run as the user of `url` (in a thread: the CLI runs its own loop)."""
    env = {"PERSEUS_REDIS_URL": url, "PERSEUS_SOCKET_TIMEOUT_MS": "2000"}
    return await asyncio.to_thread(CliRunner().invoke, cli, list(args), env=env)


def test_the_doc_names_three_users() -> None:
    users = [words[2] for words in documented_acl_lines()]
    assert users == ["perseus-agent-1", "perseus-operator", "perseus-viewer"]


async def test_agent_and_operator_each_do_their_job_and_no_more(
    acl: AclServer, spawn_agent: SpawnAgent, make_settings: Callable[..., Settings]
) -> None:
    agent = spawn_agent(exchange_id=1, name="coinbase", args=["--warmup", "0.1"], url=acl.agent)
    await agent.wait_log("listening for commands")
    operator = connect(make_settings(redis_url=acl.operator))
    try:
        client = ControlClient(operator, make_settings(redis_url=acl.operator))
        send: dict[str, Any] = {"operator": "ops", "ack_timeout_ms": 10_000}
        started = await client.send(1, "start", **send)
        assert started.status is ReplyStatus.SUCCESS, started.message
        assert '"connectionState":"active"' in (await operator.get(keys.status_key(1)) or "")
        # The operator reads everything...
        listed = await perseus(acl.operator, "status", "--json")
        assert listed.exit_code == 0 and '"coinbase"' in listed.output, listed.output
        assert (await perseus(acl.operator, "log", "--count", "5")).exit_code == 0
        # ...but may not write a status key or delete one.
        with pytest.raises(NoPermissionError):
            await operator.set(keys.status_key(1), "{}", keepttl=True)
        with pytest.raises(NoPermissionError):
            await operator.delete(keys.status_key(1))
        stopped = await client.send(1, "stop", **send)
        assert stopped.status is ReplyStatus.SUCCESS, stopped.message
        assert await operator.exists(keys.status_key(1)) == 0
        assert agent.running
    finally:
        await operator.aclose()


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


async def test_a_viewer_reads_and_is_told_what_it_may_not_do(
    acl: AclServer, make_settings: Callable[..., Settings]
) -> None:
    admin = connect(make_settings(redis_url=acl.admin_url))
    try:
        entry = CatalogEntry(id=2, name="binance", display_name="Binance")
        await admin.hset(keys.CATALOG_KEY, "2", entry.to_json())
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
    listed = await perseus(acl.viewer, "status")
    assert listed.exit_code == 0 and "binance" in listed.output, listed.output
    assert (await perseus(acl.viewer, "log", "--count", "5")).exit_code == 0
    refused = await perseus(acl.viewer, "start", "2")
    assert refused.exit_code != 0
    assert "this user may not XADD perseus:commands:2" in refused.output, refused.output
    assert len(refused.output.strip().splitlines()) == 1
    viewer = connect(make_settings(redis_url=acl.viewer))
    try:
        # A script runs with the caller's rights: EVAL does not make a writer.
        with pytest.raises(ResponseError, match="can't run this command"):
            await viewer.eval("return redis.call('SET', KEYS[1], 'x')", 1, keys.status_key(2))
        roles = await probe_roles(viewer, 2)
        assert roles.names == ["viewer"]
        assert any("may not XADD perseus:commands:2" in r for r in roles.refusals)
    finally:
        await viewer.aclose()


async def test_an_agent_that_may_not_run_scripts_stops_at_start_naming_evalsha(
    acl: AclServer, spawn_agent: SpawnAgent
) -> None:
    # Without EVALSHA the agent could claim the key (a plain SET NX) but never
    # heartbeat or update it: it must stop at once with the reason, not retry for ever.
    with sync_redis.Redis(port=acl.server.port) as admin:
        admin.execute_command("ACL", "SETUSER", "perseus-agent-1", "-evalsha", "-eval")
    try:
        agent = spawn_agent(exchange_id=1, name="coinbase", args=["--autostart"], url=acl.agent)
        assert await agent.wait_exit(within=15) == 3
        lines = [line for line in agent.log().splitlines() if line.startswith("perseus:")]
        assert lines == [
            "perseus: this user may not EVALSHA perseus:agents:1 (this user has no permissions"
            " to run the 'evalsha' command): the agent runs its heartbeat and presence as"
            " scripts (docs/production-redis.md lists the rights it needs)"
        ], agent.log()
        assert "Traceback" not in agent.log()
        with sync_redis.Redis(port=acl.server.port) as admin:
            assert admin.exists(keys.status_key(1)) == 0  # never claimed
    finally:
        with sync_redis.Redis(port=acl.server.port) as admin:
            admin.execute_command("ACL", "SETUSER", "perseus-agent-1", "+evalsha", "+eval")
