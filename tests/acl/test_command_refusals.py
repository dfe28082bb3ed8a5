"""An agent whose ACL user lacks a right its command server needs: every
command is answered with the refusal, never acknowledged and then dropped."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from perseus_core.plumbing.connection import connect
from perseus_core.store.control.sender import ControlClient
from perseus_core.wire import keys
from perseus_core.wire.models import ReplyStatus
from perseus_core.wire.settings import Settings
from tests.acl.conftest import PASSWORDS, AclServer, documented_acl_lines
from tests.core.test_control import EXCHANGE_ID, NAME, FakeExchange, serving

AUDIT_STREAM = keys.perseus_activity_key(NAME)


def agent_user(acl: AclServer, name: str, *, drop: str = "", add: tuple[str, ...] = ()) -> str:
    """The documented agent user under another name, one rule dropped or
    rules added: its URL."""
    words = next(w for w in documented_acl_lines(acl.variant) if w[2] == "perseus-agent-1")
    words = [name if w == "perseus-agent-1" else w for w in words if w != drop] + list(add)
    with sync_redis.Redis(port=acl.server.port) as admin:
        admin.execute_command(*words)
    return acl.url(name, PASSWORDS["AGENT_PASSWORD"])


async def test_an_agent_without_the_right_on_its_audit_stream_answers_each_command(
    acl: AclServer, make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    url = agent_user(acl, "agent-no-audit", drop=f"~{AUDIT_STREAM}")
    handler = FakeExchange()
    operator: Redis = connect(make_settings(redis_url=acl.operator))
    try:
        async with serving(make_settings(redis_url=url), handler):
            client = ControlClient(operator, make_settings(redis_url=acl.operator))
            outcome = await client.send(EXCHANGE_ID, "start", operator="ops")
            ping = await client.send(EXCHANGE_ID, "ping", operator="ops")  # not audited: runs
    finally:
        await operator.aclose()
    assert outcome.status is ReplyStatus.ERROR
    assert not outcome.acked
    assert outcome.message is not None
    assert outcome.message.startswith(f"audit append refused (XADD {AUDIT_STREAM}): NOPERM")
    assert outcome.message.endswith("; command not run")
    assert ping.status is ReplyStatus.SUCCESS
    assert [c.type for c in handler.calls] == ["ping"]
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []


async def test_an_agent_that_may_not_run_scripts_says_so_to_the_sender(
    acl: AclServer, make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    url = agent_user(acl, "agent-no-scripts", add=("-eval", "-evalsha"))
    handler = FakeExchange()
    operator: Redis = connect(make_settings(redis_url=acl.operator))
    try:
        async with serving(make_settings(redis_url=url), handler) as server:
            client = ControlClient(operator, make_settings(redis_url=acl.operator))
            outcomes = [await client.send(EXCHANGE_ID, "ping", operator="ops") for _ in range(2)]
            assert server.handled == 2
    finally:
        await operator.aclose()
    for outcome in outcomes:
        assert outcome.status is ReplyStatus.ERROR
        assert outcome.message is not None
        assert outcome.message.startswith(
            f"command claim refused (HSETNX {keys.outcomes_key(EXCHANGE_ID)}): NOPERM"
        )
        assert "evalsha" in outcome.message
    assert handler.calls == []
    warnings = [r for r in caplog.records if "command claim refused" in r.getMessage()]
    assert len(warnings) == 2  # once per command, no traceback, no silent retry
    assert all(r.exc_info is None for r in warnings)
