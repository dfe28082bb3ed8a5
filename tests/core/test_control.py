"""The control channel against a real Redis: acks, results, every rejection,
at-most-once execution, ordering, late listeners and Redis outages."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from redis.asyncio import Redis

from perseus_cli.apps.redis_server import RedisServer
from perseus_core.plumbing.connection import connect
from perseus_core.plumbing.processes import pid_is_running
from perseus_core.store.activity import ActivityLog
from perseus_core.store.control.records import (
    INTERRUPTED_MESSAGE,
    CommandOutcome,
    NoAgentAnswered,
    OutcomeRecord,
)
from perseus_core.store.control.sender import ControlClient
from perseus_core.store.control.server import CommandHandler, CommandServer, HandlerResult
from perseus_core.wire import keys
from perseus_core.wire.errors import CommandRejected, PerseusError
from perseus_core.wire.models import Command, CommandEntry, CommandReply, ReplyStatus
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import to_epoch_ms
from tests.faults.flood import fates, flood
from tests.waiting import eventually

EXCHANGE_ID = 1
NAME = "coinbase"
HOST = "host-a"
IP = "203.0.113.7"


class FakeExchange:
    """A real handler with the agent's rules in miniature: it counts its calls
    and how many run at the same time."""

    def __init__(self, delay: float = 0.0) -> None:
        self.state = "idle"
        self.calls: list[Command] = []
        self.running = 0
        self.max_running = 0
        self.delay = delay

    async def __call__(self, command: Command) -> HandlerResult:
        self.calls.append(command)
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if command.type == "start":
                if self.state == "active":
                    raise CommandRejected(f"cannot start {NAME}: it is active")
                self.state = "active"
                return ReplyStatus.SUCCESS, f"{NAME} is active", None
            if command.type == "stop":
                if self.state == "idle":
                    raise CommandRejected(f"cannot stop {NAME}: it is idle")
                self.state = "idle"
                return ReplyStatus.SUCCESS, f"{NAME} is idle", None
            return ReplyStatus.SUCCESS, f"{NAME} is {self.state}", {"state": self.state}
        finally:
            self.running -= 1


@asynccontextmanager
async def serving(
    settings: Settings, handler: CommandHandler, **options: Any
) -> AsyncIterator[CommandServer]:
    server = CommandServer(
        settings, EXCHANGE_ID, NAME, handler, identity=lambda: (HOST, IP), **options
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


async def audit(redis: Redis, settings: Settings) -> list[CommandEntry]:
    """The exchange's command entries, oldest first."""
    page = await ActivityLog(redis, settings).page(NAME, count=200)
    return [e for e in reversed(page.entries) if isinstance(e, CommandEntry)]


def command_json(kind: str = "ping", *, cid: str = "c-1", age_s: float = 0.0) -> str:
    moment = datetime.now(UTC) - timedelta(seconds=age_s)
    return Command(
        correlation_id=cid,
        type=kind,
        payload={"operator": "ops@test"},
        timestamp=to_epoch_ms(moment),
    ).to_json()


async def test_ack_then_success_with_audit_entries(redis: Redis, settings: Settings) -> None:
    handler = FakeExchange()
    acks: list[CommandReply] = []
    sent: list[Command] = []
    async with serving(settings, handler):
        outcome = await ControlClient(redis, settings).send(
            EXCHANGE_ID, "start", operator="ops@test", on_ack=acks.append, on_sent=sent.append
        )
    assert outcome == CommandOutcome(
        sent[0].correlation_id, True, ReplyStatus.SUCCESS, f"{NAME} is active", None
    )
    assert outcome.ok
    assert [a.status for a in acks] == [ReplyStatus.ACK]
    assert acks[0].message == f"acknowledged by {HOST}"
    assert [c.type for c in handler.calls] == ["start"]
    assert handler.calls[0].operator == "ops@test"

    entries = await audit(redis, settings)
    assert [(e.status, e.message) for e in entries] == [
        ("ack", f"acknowledged by {HOST}"),
        ("success", f"{NAME} is active"),
    ]
    for entry in entries:
        assert entry.to_fields() | {"timestamp": "", "status": "", "message": ""} == {
            "event": "command",
            "command": "start",
            "correlationId": outcome.correlation_id,
            "operator": "ops@test",
            "status": "",
            "message": "",
            "timestamp": "",
            "exchangeId": "1",
            "exchangeName": NAME,
            "hostname": HOST,
            "ip": IP,
        }
        assert entry.time is not None
    # The command went into the command stream as one JSON field.
    rows = await redis.xrange(keys.commands_key(EXCHANGE_ID))
    assert [Command.from_json(fields["command"]).type for _id, fields in rows] == ["start"]


async def test_ping_passes_through_to_the_handler_with_its_data(
    redis: Redis, settings: Settings
) -> None:
    async with serving(settings, FakeExchange()):
        outcome = await ControlClient(redis, settings).send(EXCHANGE_ID, "ping", operator="o")
    assert (outcome.status, outcome.message, outcome.data) == (
        ReplyStatus.SUCCESS,
        f"{NAME} is idle",
        {"state": "idle"},
    )


async def test_handler_rejection_is_an_error_after_the_ack(
    redis: Redis, settings: Settings
) -> None:
    async with serving(settings, FakeExchange()):
        outcome = await ControlClient(redis, settings).send(EXCHANGE_ID, "stop", operator="o")
    assert (outcome.acked, outcome.status, outcome.message) == (
        True,
        ReplyStatus.ERROR,
        f"cannot stop {NAME}: it is idle",
    )
    assert [(e.status, e.message) for e in await audit(redis, settings)][-1] == (
        "error",
        f"cannot stop {NAME}: it is idle",
    )


async def test_unknown_type_is_rejected_without_running(redis: Redis, settings: Settings) -> None:
    handler = FakeExchange()
    async with serving(settings, handler):
        outcome = await ControlClient(redis, settings).send(EXCHANGE_ID, "launch", operator="o")
    assert (outcome.acked, outcome.status, outcome.message) == (
        False,
        ReplyStatus.ERROR,
        "unknown command type 'launch' (expected start, stop, ping)",
    )
    assert handler.calls == []
    assert [(e.command, e.status) for e in await audit(redis, settings)] == [("launch", "error")]


async def test_expired_command_is_rejected_without_running(
    redis: Redis, settings: Settings
) -> None:
    handler = FakeExchange()
    past = datetime.now(UTC) - timedelta(seconds=31)
    async with serving(settings, handler):
        outcome = await ControlClient(redis, settings, clock=lambda: past).send(
            EXCHANGE_ID, "start", operator="o"
        )
    assert (outcome.acked, outcome.status, outcome.message) == (
        False,
        ReplyStatus.ERROR,
        "Command expired",
    )
    assert handler.calls == []


async def test_malformed_entries_are_answered_when_possible_and_always_audited(
    redis: Redis, settings: Settings
) -> None:
    handler = FakeExchange()
    stream = keys.commands_key(EXCHANGE_ID)
    client = ControlClient(redis, settings)
    async with serving(settings, handler) as server:
        await redis.xadd(stream, {"command": "{not json"})
        await redis.xadd(stream, {"something": "else"})
        bad_timestamp = json.dumps({"correlationId": "c-bad", "type": "start", "timestamp": "now"})
        await redis.xadd(stream, {"command": bad_timestamp})
        outcome = await client.wait(EXCHANGE_ID, "c-bad", ack_timeout_ms=5_000)
        await eventually(lambda: server.handled >= 3)
        # The server is unaffected: the next valid command runs.
        after = await client.send(EXCHANGE_ID, "ping", operator="o")
    assert (outcome.acked, outcome.status) == (False, ReplyStatus.ERROR)
    assert outcome.message is not None and outcome.message.startswith("invalid command: timestamp")
    assert after.ok
    assert [c.type for c in handler.calls] == ["ping"]
    entries = await audit(redis, settings)
    rejected = [(e.correlation_id, e.command, e.status) for e in entries[:3]]
    assert rejected == [("", "", "error"), ("", "", "error"), ("c-bad", "start", "error")]
    assert "not valid JSON" in entries[0].message
    assert entries[1].message == "stream entry has no 'command' field"


async def test_the_same_command_written_twice_runs_once(redis: Redis, settings: Settings) -> None:
    handler = FakeExchange()
    stream = keys.commands_key(EXCHANGE_ID)
    raw = command_json("start", cid="c-twice")
    await redis.xadd(stream, {"command": raw})
    await redis.xadd(stream, {"command": raw})
    client = ControlClient(redis, settings)
    acks: list[CommandReply] = []
    async with serving(settings, handler) as server:
        first = await client.wait(EXCHANGE_ID, "c-twice")
        await eventually(lambda: server.handled >= 2)
        second = await client.wait(EXCHANGE_ID, "c-twice", on_ack=acks.append)
        # A sender retrying with its correlation id gets the first outcome too.
        third = await client.send(
            EXCHANGE_ID, "start", operator="ops@test", correlation_id="c-twice"
        )
    assert len(handler.calls) == 1
    expected = (True, ReplyStatus.SUCCESS, f"{NAME} is active")
    for outcome in (first, second, third):
        assert (outcome.acked, outcome.status, outcome.message) == expected
    assert acks[0].message == "repeat of a command already handled; not run again"
    statuses = [(e.status, e.message) for e in await audit(redis, settings)]
    assert statuses[:2] == [("ack", f"acknowledged by {HOST}"), ("success", f"{NAME} is active")]
    assert (
        statuses[2:]
        == [("success", f"repeat of a command already handled; not run again: {NAME} is active")]
        * 2
    )


async def test_two_servers_on_one_exchange_never_run_a_command_twice(
    redis: Redis, settings: Settings
) -> None:
    a, b = FakeExchange(), FakeExchange()
    client = ControlClient(redis, settings)
    async with serving(settings, a), serving(settings, b):
        outcomes = [await client.send(EXCHANGE_ID, "ping", operator="o") for _ in range(6)]
    assert all(o.ok for o in outcomes)
    assert len(a.calls) + len(b.calls) == 6
    assert await audit(redis, settings) == []  # a ping changes nothing: not audited


async def test_should_serve_leaves_a_command_to_another_server(
    redis: Redis, settings: Settings
) -> None:
    handler = FakeExchange()

    async def never(_command: Command) -> bool:
        return False

    client = ControlClient(redis, settings)
    async with serving(settings, handler, should_serve=never):
        with pytest.raises(NoAgentAnswered):
            await client.send(EXCHANGE_ID, "ping", operator="o", ack_timeout_ms=300)
    assert handler.calls == []
    assert await audit(redis, settings) == []


async def test_commands_run_one_at_a_time_in_order(redis: Redis, settings: Settings) -> None:
    handler = FakeExchange(delay=0.03)
    client = ControlClient(redis, settings)
    kinds = ["start", "ping", "stop", "ping", "start", "stop"]
    commands = [await client.submit(EXCHANGE_ID, k, operator="o") for k in kinds]
    async with serving(settings, handler):
        outcomes = await asyncio.gather(
            *(client.wait(EXCHANGE_ID, c.correlation_id) for c in commands)
        )
    assert [c.correlation_id for c in handler.calls] == [c.correlation_id for c in commands]
    assert handler.max_running == 1
    assert all(o.ok for o in outcomes)


async def test_a_sender_that_waits_late_still_gets_both_replies(
    redis: Redis, settings: Settings
) -> None:
    client = ControlClient(redis, settings)
    async with serving(settings, FakeExchange()):
        command = await client.submit(EXCHANGE_ID, "start", operator="o")
        key = keys.replies_key(command.correlation_id)
        await eventually(lambda: _llen_is(redis, key, 2))
        assert 0 < await redis.ttl(key) <= 60
    # The server is gone; the replies are not.
    acks: list[CommandReply] = []
    outcome = await client.wait(EXCHANGE_ID, command.correlation_id, on_ack=acks.append)
    assert len(acks) == 1
    assert (outcome.acked, outcome.status) == (True, ReplyStatus.SUCCESS)


async def _llen_is(redis: Redis, key: str, n: int) -> bool:
    return bool(await redis.llen(key) == n)


async def test_no_agent_answered_fails_fast(redis: Redis, settings: Settings) -> None:
    client = ControlClient(redis, settings)
    with pytest.raises(NoAgentAnswered) as caught:
        await client.send(7, "start", operator="o", ack_timeout_ms=200)
    assert str(caught.value) == (
        "no agent answered in 0.2 s: check that an agent for exchange 7 is running"
    )
    assert caught.value.exchange_id == 7


async def test_acked_without_a_result_in_time(redis: Redis, settings: Settings) -> None:
    handler = FakeExchange(delay=1.0)
    async with serving(settings, handler):
        outcome = await ControlClient(redis, settings).send(
            EXCHANGE_ID, "ping", operator="o", result_timeout_ms=100
        )
    assert outcome.acked and outcome.status is None
    assert outcome.message is not None and "no result within 0.1 s" in outcome.message


async def test_commands_sent_before_the_server_starts_still_run(
    redis: Redis, settings: Settings
) -> None:
    handler = FakeExchange()
    stream = keys.commands_key(EXCHANGE_ID)
    client = ControlClient(redis, settings)
    old_ms = to_epoch_ms(datetime.now(UTC) - timedelta(seconds=45))
    old_command = {"command": command_json("ping", cid="too-old", age_s=45)}
    await redis.xadd(stream, old_command, id=f"{old_ms}-0")  # type: ignore[arg-type]
    queued = await client.submit(EXCHANGE_ID, "start", operator="o")
    async with serving(settings, handler):
        outcome = await client.wait(EXCHANGE_ID, queued.correlation_id)
    assert outcome.ok
    # Before the expiry window: not read at all (no reply, no audit entry).
    assert [c.correlation_id for c in handler.calls] == [queued.correlation_id]
    assert await redis.exists(keys.replies_key("too-old")) == 0


async def test_a_restarted_server_neither_reruns_nor_reanswers(
    redis: Redis, settings: Settings
) -> None:
    first, second = FakeExchange(), FakeExchange()
    client = ControlClient(redis, settings)
    async with serving(settings, first):
        outcome = await client.send(EXCHANGE_ID, "start", operator="o")
    before = await audit(redis, settings)
    async with serving(settings, second) as server:
        await eventually(lambda: server.handled == 1)
    assert outcome.ok and len(first.calls) == 1
    assert second.calls == []
    assert await redis.exists(keys.replies_key(outcome.correlation_id)) == 0
    assert await audit(redis, settings) == before


async def test_a_command_left_running_by_a_dead_process_is_answered_not_rerun(
    redis: Redis, settings: Settings
) -> None:
    handler = FakeExchange()
    stream = keys.commands_key(EXCHANGE_ID)
    dead = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await dead.wait()
    for cid, pid in (("c-dead", dead.pid), ("c-alive", 1)):
        entry_id = await redis.xadd(stream, {"command": command_json("start", cid=cid)})
        record = {"state": "running", "entry": entry_id, "server": "old", "hostname": HOST,
                  "pid": pid, "at": to_epoch_ms(datetime.now(UTC))}  # fmt: skip
        await redis.hset(keys.outcomes_key(EXCHANGE_ID), cid, json.dumps(record))
    client = ControlClient(redis, settings)
    async with serving(settings, handler) as server:
        outcome = await client.wait(EXCHANGE_ID, "c-dead")
        await eventually(lambda: server.handled == 2)
    assert (outcome.status, outcome.message) == (ReplyStatus.ERROR, INTERRUPTED_MESSAGE)
    assert handler.calls == []
    # A live holder (pid 1 always exists) may still be running it: left alone.
    assert await redis.exists(keys.replies_key("c-alive")) == 0


async def test_a_failing_handler_is_an_internal_error_and_serving_goes_on(
    redis: Redis, settings: Settings
) -> None:
    calls = 0

    async def flaky(command: Command) -> HandlerResult:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        if calls == 2:
            raise PerseusError("exchange 1 is held by host-b")
        return ReplyStatus.SUCCESS, "fine", None

    client = ControlClient(redis, settings)
    async with serving(settings, flaky):
        failed = await client.send(EXCHANGE_ID, "ping", operator="o")
        rejected = await client.send(EXCHANGE_ID, "start", operator="o")
        ok = await client.send(EXCHANGE_ID, "ping", operator="o")
    assert (rejected.status, rejected.message) == (
        ReplyStatus.ERROR,
        "exchange 1 is held by host-b",
    )
    assert (failed.status, failed.message) == (
        ReplyStatus.ERROR,
        "internal error: RuntimeError: boom",
    )
    assert ok.ok


async def test_a_redis_refusal_in_the_handler_is_an_error_reply_not_a_bug(
    redis: Redis, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    await redis.set("not-a-hash", "x")

    async def handler(command: Command) -> HandlerResult:
        await redis.hget("not-a-hash", "field")  # type: ignore[misc]
        return ReplyStatus.SUCCESS, "unreachable", None

    async with serving(settings, handler):
        outcome = await ControlClient(redis, settings).send(EXCHANGE_ID, "start", operator="o")
    assert outcome.status is ReplyStatus.ERROR
    assert outcome.message == (
        "Redis refused: WRONGTYPE Operation against a key holding the wrong kind of value; "
        "start not completed"
    )
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []


async def test_server_survives_client_kill(redis: Redis, settings: Settings) -> None:
    handler = FakeExchange()
    client = ControlClient(redis, settings)
    async with serving(settings, handler) as server:
        assert (await client.send(EXCHANGE_ID, "ping", operator="o")).ok
        await eventually(lambda: server.connected)
        killed = await redis.client_kill_filter(_type="normal", skipme=True)
        assert killed >= 1
        outcome = await client.send(EXCHANGE_ID, "start", operator="o")
    assert outcome.ok
    assert [c.type for c in handler.calls] == ["ping", "start"]


async def test_server_survives_a_redis_pause(
    fresh_redis: RedisServer, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(redis_url=fresh_redis.url)
    handler = FakeExchange()
    redis = connect(settings, socket_timeout=30)
    try:
        client = ControlClient(redis, settings)
        async with serving(settings, handler) as server:
            assert (await client.send(EXCHANGE_ID, "ping", operator="o")).ok
            fresh_redis.pause()
            try:
                sending = asyncio.create_task(
                    client.send(EXCHANGE_ID, "start", operator="o", ack_timeout_ms=20_000)
                )
                # Paused past the server's own socket timeout: it has lost Redis,
                # while the sender, on its longer timeout, still waits.
                await eventually(lambda: not server.connected, what="the server to lose Redis")
                assert not sending.done()
            finally:
                fresh_redis.resume()
            outcome = await sending
    finally:
        await redis.aclose()
    assert outcome.ok
    assert [c.type for c in handler.calls] == ["ping", "start"]


async def test_server_survives_a_redis_restart(
    fresh_redis: RedisServer, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(redis_url=fresh_redis.url)
    handler = FakeExchange()
    redis = connect(settings)
    try:
        client = ControlClient(redis, settings)
        async with serving(settings, handler) as server:
            assert (await client.send(EXCHANGE_ID, "ping", operator="o")).ok
            fresh_redis.kill()
            await eventually(lambda: not server.connected)
            assert server.last_error is not None and "cannot reach Redis" in server.last_error
            fresh_redis.start()
            outcome = await client.send(EXCHANGE_ID, "start", operator="o", ack_timeout_ms=20_000)
            assert server.connected
    finally:
        await redis.aclose()
    assert outcome.ok
    assert [c.type for c in handler.calls] == ["ping", "start"]


async def test_stopping_lets_the_running_command_finish_and_answer(
    redis: Redis, settings: Settings
) -> None:
    handler = FakeExchange(delay=0.3)
    client = ControlClient(redis, settings)
    async with serving(settings, handler) as server:
        sending = asyncio.create_task(client.send(EXCHANGE_ID, "start", operator="o"))
        await eventually(lambda: handler.calls)
        await server.stop()
        outcome = await sending
    assert outcome.ok


async def test_stopping_answers_the_queued_commands_as_not_run(
    redis: Redis, settings: Settings
) -> None:
    handler = FakeExchange(delay=0.5)
    client = ControlClient(redis, settings)
    async with serving(settings, handler) as server:
        starting = asyncio.create_task(client.send(EXCHANGE_ID, "start", operator="o"))
        await eventually(lambda: handler.running, what="the slow start to run")
        queued = await client.submit(EXCHANGE_ID, "stop", operator="o")
        await eventually(lambda: server.handled == 2, what="the stop to be queued")
        await server.stop()
        started = await starting
        stopped = await client.wait(EXCHANGE_ID, queued.correlation_id)
    assert started.ok
    assert (stopped.acked, stopped.status, stopped.message) == (
        True,
        ReplyStatus.ERROR,
        "not run: the agent stopped before this command's turn came",
    )
    assert [c.type for c in handler.calls] == ["start"]
    # The queued stop is answered at once; the start finishes after.
    assert [(e.command, e.status) for e in await audit(redis, settings)][-2:] == [
        ("stop", "error"),
        ("start", "success"),
    ]


async def test_outcomes_past_their_retention_are_pruned(redis: Redis, settings: Settings) -> None:
    outcomes = keys.outcomes_key(EXCHANGE_ID)
    stale = {"state": "done", "entry": "1-0", "server": "old", "hostname": HOST, "pid": 1,
             "at": to_epoch_ms(datetime.now(UTC)) - 700_000}  # fmt: skip
    await redis.hset(outcomes, "c-stale", json.dumps(stale))
    sent = await flood(ControlClient(redis, settings), EXCHANGE_ID, 100)

    async def pruned() -> bool:
        return not await redis.hexists(outcomes, "c-stale")

    async with serving(settings, FakeExchange()):
        await eventually(pruned, within=30, what="the stale outcome to be pruned")
    assert await fates(redis, sent) == {"answered": len(sent)}
    assert await redis.hlen(outcomes) == len(sent)


async def test_cancelling_run_closes_cleanly(settings: Settings) -> None:
    server = CommandServer(settings, EXCHANGE_ID, NAME, FakeExchange())
    task = asyncio.create_task(server.run())
    await eventually(lambda: server.last_id is not None)
    task.cancel()
    # Once in dozens of loaded runs the task had not ended 60 s later: say where
    # it waits, so that the next occurrence names the cause.
    done, _ = await asyncio.wait({task}, timeout=20)
    if not done:
        where = io.StringIO()
        task.print_stack(file=where)
        inner = server._read_task  # what it waits for, where redis-py is
        if inner is not None:
            inner.print_stack(file=where)
        pytest.fail(f"run() still running 20 s after its cancellation:\n{where.getvalue()}")
    with pytest.raises(asyncio.CancelledError):
        await task
    await server.aclose()  # harmless after the fact


async def test_aclose_interrupts_the_blocking_read_at_once(
    make_settings: Callable[..., Settings],
) -> None:
    server = CommandServer(make_settings(block_ms=30_000), EXCHANGE_ID, NAME, FakeExchange())
    await server.start()
    await eventually(lambda: server.last_id is not None)
    await asyncio.wait_for(server.stop(), timeout=5)


# --- a busy agent, reused ids, clocks, floods, lost replies ---------------------------


async def test_a_busy_server_acknowledges_at_once_queued_behind_the_running_command(
    redis: Redis, settings: Settings
) -> None:
    handler = FakeExchange(delay=0.8)
    handler.state = "active"
    client = ControlClient(redis, settings)
    acks: list[CommandReply] = []
    async with serving(settings, handler):
        stopping = asyncio.create_task(client.send(EXCHANGE_ID, "stop", operator="o"))
        await eventually(lambda: handler.running, what="the slow stop to run")
        handler.delay = 0  # read when the start runs, after the stop
        # The ack comes while the stop still runs: well inside a 1 s ack timeout.
        started = await client.send(
            EXCHANGE_ID, "start", operator="o", ack_timeout_ms=1_000, on_ack=acks.append
        )
        stopped = await stopping
    assert acks[0].message == f"acknowledged by {HOST}, queued behind stop"
    assert (stopped.status, started.status) == (ReplyStatus.SUCCESS, ReplyStatus.SUCCESS)
    assert [c.type for c in handler.calls] == ["stop", "start"] and handler.max_running == 1


async def test_a_reused_correlation_id_with_another_type_is_rejected(
    redis: Redis, settings: Settings
) -> None:
    handler = FakeExchange()
    handler.state = "active"
    client = ControlClient(redis, settings)
    async with serving(settings, handler):
        stopped = await client.send(EXCHANGE_ID, "stop", operator="o", correlation_id="c-used")
        reused = await client.send(EXCHANGE_ID, "start", operator="o", correlation_id="c-used")
    assert stopped.status is ReplyStatus.SUCCESS
    assert reused.status is ReplyStatus.ERROR and not reused.acked
    assert reused.message == (
        "correlation id already used by a stop command; this start is rejected and not run"
    )
    assert [c.type for c in handler.calls] == ["stop"]


async def test_a_command_dated_beyond_the_allowed_skew_is_rejected(
    redis: Redis, settings: Settings
) -> None:
    handler = FakeExchange()
    stream = keys.commands_key(EXCHANGE_ID)
    await redis.xadd(stream, {"command": command_json("start", cid="c-far", age_s=-60)})
    await redis.xadd(stream, {"command": command_json("ping", cid="c-near", age_s=-2)})
    client = ControlClient(redis, settings)
    async with serving(settings, handler):
        far = await client.wait(EXCHANGE_ID, "c-far")
        near = await client.wait(EXCHANGE_ID, "c-near")
    assert far.status is ReplyStatus.ERROR and not far.acked
    assert far.message is not None and "in the future" in far.message
    assert near.status is ReplyStatus.SUCCESS  # within the 5 s skew: runs
    assert [c.correlation_id for c in handler.calls] == ["c-near"]


async def test_the_stream_is_trimmed_by_age_and_never_drops_a_live_command(
    redis: Redis, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(command_expiry_ms=60_000)
    stream = keys.commands_key(EXCHANGE_ID)
    for n in range(1, 301):  # two hours old: past any expiry
        await redis.xadd(
            stream, {"command": "old"}, id=f"{to_epoch_ms(datetime.now(UTC)) - 7_200_000}-{n}"
        )
    client = ControlClient(redis, settings)
    sent = [await client.submit(EXCHANGE_ID, "ping", operator="o") for _ in range(1_200)]
    rows = cast(list[tuple[str, dict[str, str]]], await redis.xrange(stream))
    live = [json.loads(f["command"])["correlationId"] for _, f in rows if f["command"] != "old"]
    assert live == [c.correlation_id for c in sent]  # none dropped, although over 1,000
    assert len(rows) - len(live) < 300  # whole expired nodes trimmed


async def test_a_flood_of_commands_is_answered_none_lost(redis: Redis, settings: Settings) -> None:
    handler = FakeExchange()
    sent = await flood(ControlClient(redis, settings), EXCHANGE_ID, 1_000)

    async def all_final() -> bool:
        return (await fates(redis, sent))["lost"] == 0

    async with serving(settings, handler):
        await eventually(all_final, within=60, what="a final reply to every command")
    assert await fates(redis, sent) == {"answered": len(sent)}
    assert len({c.correlation_id for c in handler.calls}) == len(handler.calls) == len(sent)


@pytest.mark.parametrize("pid", [2**70, 2**31, -(2**70)])
def test_a_recorded_pid_out_of_range_is_unknown_not_a_crash(pid: int) -> None:
    record = {"state": "running", "entry": "1-0", "hostname": "vm", "pid": pid, "at": 2**70}
    parsed = OutcomeRecord.from_json(json.dumps(record))
    assert (parsed.state, parsed.pid, parsed.at) == ("running", 0, 0)
    # ...and a pid check never raises on a pid no OS can hold: it counts as running
    # (a wrong "not running" would let a command run twice).
    assert pid_is_running(pid) is True


def test_a_deeply_nested_recorded_outcome_reads_as_handled() -> None:
    parsed = OutcomeRecord.from_json("[" * 100_000 + "]" * 100_000)
    assert parsed.state == "done" and "unreadable" in parsed.message
