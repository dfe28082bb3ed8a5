"""A mixed fleet on one real Redis: a Livermore-shaped writer and responder
beside Perseus's readers, command servers and CLI (the issue's "Done means")."""

from __future__ import annotations

import re
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
from tests.livermore.shapes import LivermoreServer, LivermoreWriter, is_uuid
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


def _catalog(settings: Settings, *entries: tuple[int, str]) -> None:
    for exchange_id, name in entries:
        code = invoke(settings, "catalog", "add", str(exchange_id), name, "--livermore-sub", SUB)[0]
        assert code == 0


EXCHANGES = {"coinbase": 1, "binance": 2, "kraken": 4}


def test_stop_of_a_livermore_slot_succeeds_when_its_key_leaves_active(
    settings: Settings, r: sync_redis.Redis
) -> None:
    _catalog(settings, (2, "binance"))
    with LivermoreServer(settings.redis_url, SUB, "lm-host-02", EXCHANGES, running="binance") as lm:
        code, out, err = invoke(settings, "stop", "2", "--operator", "alice")
    assert (code, err) == (0, ""), out + err
    assert f"via livermore:commands:{SUB}" in out
    assert re.search(r"success: binance is (stopping|stopped|offline)", out), out
    [command] = lm.received
    assert command["type"] == "stop" and "payload" not in command
    assert is_uuid(command["correlationId"]) and 1 <= command["priority"] <= 100
    assert isinstance(command["timestamp"], int)
    assert r.get("exchange:2:status") is None
    [audit] = r.xrange("perseus:activity:binance")
    assert audit[1]["status"] == "success" and audit[1]["operator"] == "alice"
    assert audit[1]["correlationId"] == command["correlationId"]
    assert events(r, "logs:network:binance") == ["state_transition"] * 5


def test_start_succeeds_when_its_key_comes_up(settings: Settings, r: sync_redis.Redis) -> None:
    _catalog(settings, (2, "binance"))
    with LivermoreServer(settings.redis_url, SUB, "lm-host-02", EXCHANGES) as lm:
        code, out, err = invoke(settings, "start", "2")
    assert (code, err) == (0, ""), out + err
    assert lm.ran[0]["payload"] == {"exchange": "binance"}
    assert "success: binance is" in out and "on lm-host-02" in out


def test_an_error_answer_with_no_effect_exits_1(settings: Settings, r: sync_redis.Redis) -> None:
    _catalog(settings, (2, "binance"))
    with LivermoreServer(
        settings.redis_url, SUB, "lm-host-02", EXCHANGES, start_error="exchange not configured"
    ):
        code, out, err = invoke(settings, "start", "2")
    assert "ack" in out and code == 1
    assert "exchange not configured (binance is offline (no status key))" in err


def test_already_started_for_another_exchange_is_not_success(
    settings: Settings, r: sync_redis.Redis
) -> None:
    """The server runs kraken: it answers success/already_started for binance,
    which stays offline. Exit 1, naming what the server runs."""
    _catalog(settings, (2, "binance"), (4, "kraken"))
    with LivermoreServer(settings.redis_url, SUB, "lm-a", EXCHANGES, running="kraken"):
        code, out, err = invoke(settings, "start", "2")
    assert code == 1, out + err
    assert "lm-a is running kraken, not binance" in err
    assert "already_started" in err and "binance is offline" in err
    assert r.get("exchange:2:status") is None


def test_already_idle_after_an_autostart_is_not_success(
    settings: Settings, r: sync_redis.Redis
) -> None:
    """Started by autostart, the server believes it is idle: `stop` answers
    already_idle and binance keeps running. Exit 1, saying so."""
    _catalog(settings, (2, "binance"))
    with LivermoreServer(settings.redis_url, SUB, "lm-c", EXCHANGES, autostart="binance"):
        code, out, err = invoke(settings, "stop", "2")
    assert code == 1, out + err
    assert "believes it is idle, but binance is active on lm-c" in err
    assert '"connectionState":"active"' in (r.get("exchange:2:status") or "")


def test_two_servers_both_run_a_start_and_the_losers_error_is_listed(
    settings: Settings, r: sync_redis.Redis
) -> None:
    """Both servers pop the start (a race the shared queue allows): one brings
    binance up, the other's claim is refused at once. Success (exit 0), with the
    loser's error listed, not taken for the outcome."""
    _catalog(settings, (2, "binance"))
    with (
        LivermoreServer(settings.redis_url, SUB, "lm-a", EXCHANGES, races=True),
        LivermoreServer(settings.redis_url, SUB, "lm-b", EXCHANGES, races=True),
    ):
        code, out, err = invoke(settings, "start", "2")
    assert (code, err) == (0, ""), out + err
    assert "success: binance is" in out and "other answers: error" in out
    assert "already claimed" in out


def test_at_the_deadline_the_message_says_what_the_key_shows(
    settings: Settings, r: sync_redis.Redis
) -> None:
    """Two idle servers on one identity, one of them running kraken: one pops the
    start and answers, the other never does (it did not pop it). At the result
    deadline the outcome is what the key shows, with the answer that came."""
    _catalog(settings, (2, "binance"), (4, "kraken"))
    with (
        LivermoreServer(settings.redis_url, SUB, "lm-a", EXCHANGES, running="kraken"),
        LivermoreServer(settings.redis_url, SUB, "lm-b", EXCHANGES, running="coinbase"),
    ):
        code, out, err = invoke(settings, "start", "2", "--timeout", "1")
    assert code == 1, out + err
    assert "no result within 1 s" in err and "binance is offline (no status key)" in err
    assert "answers: success (already_started)" in err


def test_a_stop_that_two_servers_would_hear_is_never_sent(
    settings: Settings, r: sync_redis.Redis
) -> None:
    _catalog(settings, (2, "binance"), (4, "kraken"))
    with (
        LivermoreServer(settings.redis_url, SUB, "lm-a", EXCHANGES, running="binance") as one,
        LivermoreServer(settings.redis_url, SUB, "lm-b", EXCHANGES, running="kraken") as two,
    ):
        code, _out, err = invoke(settings, "stop", "2")
        assert code == 1 and "2 Livermore servers listen for" in err
        assert "any one of them would take it" in err and "own identity" in err
        assert one.received == two.received == []
        assert invoke(settings, "stop", "2", "--yes")[0] == 2  # no override
    assert '"connectionState":"active"' in (r.get("exchange:4:status") or "")


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
