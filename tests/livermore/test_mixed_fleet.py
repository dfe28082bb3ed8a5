"""A mixed fleet on one real Redis: a Livermore-shaped writer and responder
beside Perseus's readers, command servers and CLI (the issue's "Done means")."""

from __future__ import annotations

import time

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from perseus_core.store.activity import ActivityLog
from perseus_core.store.control.livermore import NoLivermoreListener
from perseus_core.store.control.sender import ControlClient, Via
from perseus_core.store.control.server import CommandServer, HandlerResult
from perseus_core.store.network import FleetReader
from perseus_core.wire.models import Command, ErrorEntry, ReplyStatus
from perseus_core.wire.settings import Settings
from tests.helpers import invoke
from tests.livermore.shapes import LivermoreResponder, LivermoreWriter, is_uuid
from tests.waiting import commands_naming, eventually

SUB = "google-oauth2|1234"


def events(r: sync_redis.Redis, key: str) -> list[str]:
    return [fields.get("event", "") for _id, fields in r.xrange(key)]


def livermore_on_binance(r: sync_redis.Redis) -> LivermoreWriter:
    writer = LivermoreWriter(r, 2, "binance", "lm-host-02", "203.0.113.9")
    assert writer.claim()
    writer.bring_up()
    writer.heartbeat()
    return writer


async def test_livermore_streams_keep_only_their_kinds_after_many_perseus_commands(
    settings: Settings, redis: Redis, r: sync_redis.Redis
) -> None:
    livermore_on_binance(r)
    state = {"run": "idle"}

    async def handler(command: Command) -> HandlerResult:
        state["run"] = "active" if command.type == "start" else "idle"
        return ReplyStatus.SUCCESS, f"coinbase is {state['run']}", None

    server = CommandServer(settings, 1, "coinbase", handler, identity=lambda: ("p-host", None))
    await server.start()
    try:
        client = ControlClient(redis, settings)
        for kind in ["ping"] * 10 + ["start", "stop"] * 3:
            assert (await client.send(1, kind, operator="ops")).ok
    finally:
        await server.stop()
    for key in r.scan_iter(match="logs:network:*"):
        assert set(events(r, key)) <= {"state_transition", "error"}, key
    audit = events(r, "perseus:activity:coinbase")
    assert audit and set(audit) == {"command"}
    assert len(audit) == 12  # ack and outcome of 6 starts/stops; pings are not audited
    # Perseus's own reads merge both streams.
    page = await ActivityLog(redis, settings).merged_page(["coinbase", "binance"], count=100)
    assert {e.event for e in page.entries} == {"command", "state_transition"}


async def test_offline_card_names_the_real_last_holder_after_refused_claims(
    settings: Settings, redis: Redis, r: sync_redis.Redis
) -> None:
    holder = livermore_on_binance(r)
    # Another Livermore host is refused, and writes its error into the holder's stream...
    assert not LivermoreWriter(r, 2, "binance", "lm-host-03").claim()
    assert events(r, "logs:network:binance")[-1] == "error"
    # ...and a refused Perseus agent writes to its own stream only.
    refusal = ErrorEntry(error="refused", state="idle", hostname="p-host", exchange_id="2")
    await ActivityLog(redis, settings).append("binance", refusal, holder=False)
    holder.deregister()
    r.hset("perseus:exchanges", "2", '{"id":2,"name":"binance","displayName":"Binance"}')
    view = await FleetReader(redis).exchange(2)
    assert view.status is None and view.last_known is not None
    assert (view.last_known.hostname, view.last_known.state) == ("lm-host-02", "active")


def test_stop_of_a_livermore_slot_with_an_identity_reaches_its_server(
    settings: Settings, r: sync_redis.Redis
) -> None:
    livermore_on_binance(r)
    assert invoke(settings, "catalog", "add", "2", "binance", "--livermore-sub", SUB)[0] == 0
    with LivermoreResponder(settings.redis_url, SUB) as responder:
        code, out, err = invoke(settings, "stop", "2", "--operator", "alice")
    assert (code, err) == (0, "")
    assert f"via livermore:commands:{SUB}" in out and "success: stopped" in out
    [command] = responder.received
    assert command["type"] == "stop" and "payload" not in command
    assert is_uuid(command["correlationId"]) and 1 <= command["priority"] <= 100
    assert isinstance(command["timestamp"], int)
    [audit] = r.xrange("perseus:activity:binance")
    assert audit[1]["status"] == "success" and audit[1]["operator"] == "alice"
    assert events(r, "logs:network:binance") == ["state_transition"] * 3


def test_start_names_the_exchange_and_an_error_answer_exits_1(
    settings: Settings, r: sync_redis.Redis
) -> None:
    invoke(settings, "catalog", "add", "2", "binance", "--livermore-sub", SUB)
    with LivermoreResponder(
        settings.redis_url, SUB, lambda c: ("error", "exchange not configured", None)
    ) as responder:
        code, out, err = invoke(settings, "start", "2")
    assert responder.received[0]["payload"] == {"exchange": "binance"}
    assert "ack" in out and code == 1 and "exchange not configured" in err


def test_stop_without_an_identity_is_refused_at_once_naming_the_holder(
    settings: Settings, r: sync_redis.Redis
) -> None:
    livermore_on_binance(r)
    started = time.monotonic()
    code, out, err = invoke(settings, "stop", "2")
    assert time.monotonic() - started < 1.0
    assert code == 1 and "lm-host-02" in err and "--livermore-sub" in err and out == ""


def test_nobody_listening_answers_at_once_with_exit_4(
    settings: Settings, r: sync_redis.Redis
) -> None:
    livermore_on_binance(r)
    invoke(settings, "catalog", "add", "2", "binance", "--livermore-sub", SUB)
    started = time.monotonic()
    code, _out, err = invoke(settings, "stop", "2")
    assert time.monotonic() - started < 2.0
    assert (code, err.strip()) == (4, f"perseus: no Livermore server is listening for {SUB}")


async def test_the_audit_of_a_command_nobody_heard_carries_the_published_correlation_id(
    settings: Settings, redis: Redis, r: sync_redis.Redis
) -> None:
    livermore_on_binance(r)
    r.hset("perseus:exchanges", "2", f'{{"id":2,"name":"binance","livermoreSub":"{SUB}"}}')
    channel = f"livermore:commands:{SUB}"
    async with commands_naming(settings.redis_url, channel) as seen:
        await eventually(lambda: r.publish(channel, "probe") == 0 and seen, what="MONITOR")
        with pytest.raises(NoLivermoreListener):
            await ControlClient(redis, settings).send(2, "stop", operator="alice")
        published = await eventually(
            lambda: [c for c in seen if "correlationId" in c], what="the PUBLISH"
        )
    [command] = published
    [audit] = r.xrange("perseus:activity:binance")
    correlation_id = audit[1]["correlationId"]
    assert is_uuid(correlation_id) and f'"correlationId":"{correlation_id}"' in command
    assert audit[1]["status"] == "error" and SUB in audit[1]["message"]


def test_a_stop_reaching_two_servers_needs_yes(settings: Settings, r: sync_redis.Redis) -> None:
    livermore_on_binance(r)
    invoke(settings, "catalog", "add", "2", "binance", "--livermore-sub", SUB)
    with (
        LivermoreResponder(settings.redis_url, SUB) as one,
        LivermoreResponder(settings.redis_url, SUB) as two,
    ):
        code, _out, err = invoke(settings, "stop", "2")
        assert code == 1 and "2 Livermore servers" in err and "--yes" in err
        assert one.received == two.received == []
        assert invoke(settings, "stop", "2", "--yes")[0] == 0


async def test_routes_by_holder_presence_and_identity(
    settings: Settings, redis: Redis, r: sync_redis.Redis
) -> None:
    client = ControlClient(redis, settings)
    assert (await client.route(2, "stop")).via is Via.PERSEUS  # nothing known
    r.hset("perseus:exchanges", "2", f'{{"id":2,"name":"binance","livermoreSub":"{SUB}"}}')
    assert (await client.route(2, "start")).via is Via.LIVERMORE  # vacant, no agent
    assert (await client.route(2, "ping")).via is Via.PERSEUS
    r.zadd("perseus:agents:2", {'{"agentId":"a:1:1","exchangeId":2}': 1e15})
    assert (await client.route(2, "start")).via is Via.PERSEUS  # an agent of ours waits
    livermore_on_binance(r)
    route = await client.route(2, "stop")
    assert (route.via, route.holder, route.listeners) == (Via.LIVERMORE, "lm-host-02", 0)


def test_catalog_add_defaults_the_display_name_and_set_changes_the_identity(
    settings: Settings, r: sync_redis.Redis
) -> None:
    assert invoke(settings, "catalog", "add", "3", "binance_us")[0] == 0
    assert (
        r.hget("perseus:exchanges", "3")
        == '{"id":3,"name":"binance_us","displayName":"Binance Us","isActive":true}'
    )
    code, out, _ = invoke(settings, "catalog", "set", "3", "--livermore-sub", SUB)
    assert code == 0 and SUB in out
    assert f'"livermoreSub":"{SUB}"' in (r.hget("perseus:exchanges", "3") or "")
    assert invoke(settings, "catalog", "set", "9", "--livermore-sub", SUB)[0] == 1
