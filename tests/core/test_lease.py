"""The slot lease on real Redis: claim, conflicts, fencing, heartbeat, faults.

Timing-sensitive tests run with a 100 ms heartbeat and a 400 ms TTL and poll
for conditions with a deadline; none asserts how long anything took.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from perseus_cli.apps.redis_server import RedisServer
from perseus_core import __version__
from perseus_core.instance import Instance, StatusWrite
from perseus_core.plumbing.connection import connect
from perseus_core.plumbing.processes import pid_is_running, process_scope
from perseus_core.store.lease import (
    ClaimConflict,
    HeartbeatResult,
    LeaseLost,
    make_instance_id,
    unique_start_ms,
)
from perseus_core.wire import keys
from perseus_core.wire.errors import PerseusError, RedisUnavailable
from perseus_core.wire.models import ConnectionState, ErrorEntry, InstanceStatus
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import format_ts
from tests.helpers import StepClock, status_gone, stored
from tests.waiting import eventually
from tests.wire_examples import WIRE_STATUS

EXCHANGE_ID = 1
NAME = "coinbase"
KEY = keys.status_key(EXCHANGE_ID)
EPOCH_KEY = keys.epoch_key(EXCHANGE_ID)


# --- helpers --------------------------------------------------------------------


@dataclass
class LostCalls:
    """Records on_lease_lost calls."""

    calls: list[LeaseLost] = field(default_factory=list)

    def __call__(self, exc: LeaseLost) -> None:
        self.calls.append(exc)


def no_retry() -> Retry:
    """Fail at once on connection errors, so fault tests do not wait on backoff."""
    return Retry(NoBackoff(), 0)


@pytest.fixture
async def new_client() -> AsyncIterator[Callable[..., Redis]]:
    made: list[Redis] = []

    def factory(settings: Settings, **overrides: Any) -> Redis:
        client = connect(settings, **overrides)
        made.append(client)
        return client

    yield factory
    for client in made:
        await client.aclose()


@pytest.fixture
async def make_instance(
    new_client: Callable[..., Redis],
) -> AsyncIterator[Callable[..., Instance]]:
    """Instances on their own clients; closed (heartbeat stopped) before the clients."""
    made: list[Instance] = []

    def factory(settings: Settings, client: Redis | None = None, **kwargs: Any) -> Instance:
        kwargs.setdefault("exchange_id", EXCHANGE_ID)
        kwargs.setdefault("exchange_name", NAME)
        kwargs.setdefault("hostname", "host-a")
        instance = Instance(client or new_client(settings), settings, **kwargs)
        made.append(instance)
        return instance

    yield factory
    for instance in made:
        await instance.close()


class TcpProxy:
    """A loopback proxy in front of Redis that can swallow one reply or go down.

    Used to reproduce what a real network does and a healthy local Redis never
    does: a command that is applied while its reply is lost, and a server that
    is unreachable while its data survives.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self.lose_reply_to: tuple[bytes, ...] | None = None
        self.lost_replies = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def up(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def down(self) -> None:
        """Refuse new connections and cut the open ones."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    async def _handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self._handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        self._writers.add(client_w)
        try:
            server_r, server_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            client_w.close()
            self._writers.discard(client_w)
            return
        self._writers.add(server_w)
        drop = asyncio.Event()

        async def upstream() -> None:
            while data := await client_r.read(65536):
                markers = self.lose_reply_to
                if markers and all(m in data for m in markers):
                    self.lose_reply_to = None
                    drop.set()
                server_w.write(data)
                await server_w.drain()

        async def downstream() -> None:
            while data := await server_r.read(65536):
                if drop.is_set():
                    self.lost_replies += 1
                    return  # the command ran; its reply never arrives
                client_w.write(data)
                await client_w.drain()

        tasks = [asyncio.create_task(upstream()), asyncio.create_task(downstream())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for writer in (client_w, server_w):
                writer.close()
                self._writers.discard(writer)
            self._handlers.discard(asyncio.current_task())  # type: ignore[arg-type]


@pytest.fixture
async def proxy(redis_server: RedisServer, redis_url: str) -> AsyncIterator[TcpProxy]:
    tcp = TcpProxy(redis_server.port)
    await tcp.up()
    try:
        yield tcp
    finally:
        await tcp.down()


def holder_payload(
    hostname: str, pid: int, *, epoch: int = 5, pid_scope: str | None = None
) -> InstanceStatus:
    """A Perseus holder's payload; `pid_scope` defaults to this process's (the same host)."""
    now = datetime.now(UTC)
    return InstanceStatus(
        exchange_id=EXCHANGE_ID,
        exchange_name=NAME,
        hostname=hostname,
        connection_state=ConnectionState.ACTIVE,
        connected_at=now,
        last_heartbeat=now,
        last_state_change=now,
        registered_at=now,
        instance_id=make_instance_id(hostname, EXCHANGE_ID, pid, 1_700_000_000_000),
        epoch=epoch,
        pid=pid,
        pid_scope=pid_scope or process_scope(),
        version="0.0.1",
    )


# --- identity -------------------------------------------------------------------


def test_instance_id_format() -> None:
    assert (
        make_instance_id("DESKTOP-ABC", 1, 4242, 1739212918002)
        == "DESKTOP-ABC:1:4242:1739212918002"
    )


def test_start_ms_is_unique_under_a_frozen_clock() -> None:
    moment = datetime(2026, 2, 10, tzinfo=UTC)
    values = [unique_start_ms(moment) for _ in range(50)]
    assert len(set(values)) == 50
    assert values == sorted(values)


def test_pid_is_running() -> None:
    import os

    assert pid_is_running(os.getpid())
    assert pid_is_running(0) and pid_is_running(-1)  # process groups: never "dead"


def test_an_exited_child_not_yet_reaped_is_not_running() -> None:
    import os
    import subprocess

    child = subprocess.Popen(["sleep", "30"])
    try:
        assert pid_is_running(child.pid)
        child.kill()
        # Wait for the exit without reaping it (WNOWAIT): a zombie, which
        # kill(pid, 0) still finds, yet it runs nothing.
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        assert not pid_is_running(child.pid)
    finally:
        child.wait()
    assert not pid_is_running(child.pid)


# --- claim ----------------------------------------------------------------------


async def test_claim_writes_the_wire_payload_with_ttl(
    settings: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    clock = StepClock(datetime(2026, 2, 10, 18, 21, 58, 2000, tzinfo=UTC))
    instance = make_instance(settings, admin_email="ops@example.com", clock=clock)
    await instance.claim(heartbeat=False)

    raw = await redis.get(KEY)
    data = json.loads(raw)
    assert list(data)[:15] == [
        "exchangeId", "exchangeName", "hostname", "ipAddress", "countryCode", "adminEmail",
        "adminDisplayName", "connectionState", "symbolCount", "connectedAt", "lastHeartbeat",
        "lastStateChange", "registeredAt", "lastError", "lastErrorAt",
    ]  # fmt: skip
    assert data["registeredAt"] == data["lastHeartbeat"] == "2026-02-10T18:21:58.002Z"
    assert data["connectionState"] == "idle"
    assert data["connectedAt"] is None and data["ipAddress"] is None
    assert data["instanceId"] == instance.instance_id
    assert data["epoch"] == instance.lease.epoch == 1
    assert data["pid"] == instance.pid
    assert data["version"] == __version__
    assert 0 < await redis.pttl(KEY) <= settings.heartbeat_ttl_ms
    assert await redis.get(EPOCH_KEY) == "1"


async def test_ttl_expiry_makes_the_key_disappear(
    settings: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    instance = make_instance(settings)
    await instance.claim(heartbeat=False)
    assert await redis.exists(KEY)
    await eventually(lambda: status_gone(redis), what="the status key to expire")


async def test_claim_twice_is_a_no_op(
    settings: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    instance = make_instance(settings)
    await instance.claim(heartbeat=False)
    await instance.claim(heartbeat=False)
    assert await redis.get(EPOCH_KEY) == "1"


async def test_twenty_concurrent_claimers_one_winner(
    settings: Settings,
    redis: Redis,
    new_client: Callable[..., Redis],
    make_instance: Callable[..., Instance],
) -> None:
    instances = [
        make_instance(settings, new_client(settings), hostname=f"host-{i:02d}") for i in range(20)
    ]
    results = await asyncio.gather(
        *(i.claim(heartbeat=False) for i in instances), return_exceptions=True
    )
    winners = [i for i, r in zip(instances, results, strict=True) if r is None]
    conflicts = [r for r in results if isinstance(r, ClaimConflict)]
    assert len(winners) == 1, results
    assert len(conflicts) == 19, results
    winner = winners[0]
    for conflict in conflicts:
        assert conflict.holder is not None
        assert conflict.holder.instance_id == winner.instance_id
        assert winner.hostname in str(conflict)
        assert "IP unknown" in str(conflict)
        assert "expires in" in str(conflict)
        assert 0 < conflict.ttl_ms <= settings.heartbeat_ttl_ms
    assert [i.lease.held for i in instances].count(True) == 1
    assert (await stored(redis)).instance_id == winner.instance_id
    assert await redis.get(EPOCH_KEY) == "20"  # every claimer drew an epoch; one used it


async def test_conflict_names_the_holder(
    long_ttl: Settings, make_instance: Callable[..., Instance]
) -> None:
    holder = make_instance(long_ttl, hostname="host-a")
    await holder.claim(heartbeat=False)
    await holder.set_ip("203.0.113.7", "NL")
    for state in (ConnectionState.STARTING, ConnectionState.WARMING, ConnectionState.ACTIVE):
        await holder.transition(state)
    connected_at = holder.status.connected_at
    assert connected_at is not None

    with pytest.raises(ClaimConflict) as info:
        await make_instance(long_ttl, hostname="host-b").claim()
    message = str(info.value)
    assert message.startswith("exchange 1 is already held by host-a (IP 203.0.113.7, ")
    assert f"connected since {format_ts(connected_at)}" in message
    assert "state active" in message
    assert "its status key expires in " in message
    assert info.value.holder is not None and info.value.holder.hostname == "host-a"


async def test_conflict_with_a_typescript_holder(
    settings: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    await redis.set(KEY, WIRE_STATUS, px=5_000)
    contender = make_instance(settings, hostname="DESKTOP-ABC")  # same host, but no pid recorded
    with pytest.raises(ClaimConflict) as info:
        await contender.claim()
    message = str(info.value)
    for part in ("DESKTOP-ABC", "IP 203.0.113.7", "connected since 2026-02-10T18:22:04.511Z"):
        assert part in message
    assert 0 < info.value.ttl_ms <= 5_000
    assert await redis.get(KEY) == WIRE_STATUS
    assert not contender.lease.held


async def test_conflict_with_an_unreadable_holder(
    settings: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    await redis.set(KEY, "{not json", px=5_000)
    with pytest.raises(ClaimConflict, match="unreadable") as info:
        await make_instance(settings).claim()
    assert info.value.holder is None
    assert await redis.get(KEY) == "{not json"


async def test_claim_survives_a_lost_reply_on_a_retrying_client(
    proxy: TcpProxy,
    make_settings: Callable[..., Settings],
    redis: Redis,
    new_client: Callable[..., Redis],
    make_instance: Callable[..., Instance],
) -> None:
    """SET NX is applied but its reply is lost; the client's own retry of SET NX
    then fails (the key exists) and the claim recognises the key as its own."""
    settings = make_settings(redis_url=proxy.url)
    client = new_client(settings, retry=Retry(NoBackoff(), 2))
    instance = make_instance(settings, client)
    proxy.lose_reply_to = (b"\r\nSET\r\n", b"\r\nNX\r\n")
    await instance.claim(heartbeat=False)
    assert proxy.lost_replies == 1
    assert instance.lease.held and instance.lease.epoch == 1
    assert (await stored(redis)).instance_id == instance.instance_id


async def test_claim_retried_by_the_caller_after_a_lost_reply(
    proxy: TcpProxy,
    make_settings: Callable[..., Settings],
    redis: Redis,
    new_client: Callable[..., Redis],
    make_instance: Callable[..., Instance],
) -> None:
    """Without client retries the claim fails; calling claim() again adopts the key."""
    settings = make_settings(redis_url=proxy.url)
    instance = make_instance(settings, new_client(settings, retry=no_retry()))
    proxy.lose_reply_to = (b"\r\nSET\r\n", b"\r\nNX\r\n")
    with pytest.raises(RedisUnavailable):
        await instance.claim(heartbeat=False)
    assert not instance.lease.held
    assert (await stored(redis)).instance_id == instance.instance_id  # it was applied

    await instance.claim(heartbeat=False)
    assert instance.lease.held
    assert instance.lease.epoch == 1  # the epoch of the attempt that won, not a new one
    assert (await stored(redis)).epoch == 1
    assert await redis.get(EPOCH_KEY) == "2"


# --- takeover of a holder proven gone -----------------------------------------


async def _dead_pid() -> int:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    await proc.wait()
    assert not pid_is_running(proc.pid)
    return proc.pid


@pytest.fixture
async def live_pid() -> AsyncIterator[int]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(60)")
    try:
        yield proc.pid
    finally:
        proc.kill()
        await proc.wait()


async def test_takeover_when_the_holder_pid_is_dead(
    settings: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    old = holder_payload("host-a", await _dead_pid(), epoch=5)
    await redis.set(EPOCH_KEY, 5)
    await redis.set(KEY, old.to_json(), px=30_000)

    instance = make_instance(settings, hostname="host-a")
    await instance.claim(heartbeat=False)
    now = await stored(redis)
    assert now.instance_id == instance.instance_id
    assert now.epoch == instance.lease.epoch == 6
    assert 0 < await redis.pttl(KEY) <= settings.heartbeat_ttl_ms


async def test_no_takeover_when_the_holder_pid_is_alive(
    settings: Settings, redis: Redis, make_instance: Callable[..., Instance], live_pid: int
) -> None:
    old = holder_payload("host-a", live_pid)
    await redis.set(KEY, old.to_json(), px=30_000)
    with pytest.raises(ClaimConflict, match=f"pid {live_pid} is still running on this host"):
        await make_instance(settings, hostname="host-a").claim()
    assert await redis.get(KEY) == old.to_json()


async def test_no_takeover_from_a_live_instance_in_this_process(
    long_ttl: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    first = make_instance(long_ttl, hostname="host-a")
    await first.claim(heartbeat=False)
    with pytest.raises(ClaimConflict, match="held by this process"):
        await make_instance(long_ttl, hostname="host-a").claim()
    assert (await stored(redis)).instance_id == first.instance_id


async def test_no_takeover_by_hostname_alone_from_another_pid_namespace(
    settings: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    """A holder in another pid namespace (or another boot) with our hostname:
    its pid is not running *here*, which proves nothing about it."""
    elsewhere = f"{process_scope()}0"  # same boot id, another namespace inode
    old = holder_payload("host-a", await _dead_pid(), pid_scope=elsewhere)
    await redis.set(KEY, old.to_json(), px=30_000)
    with pytest.raises(ClaimConflict, match="another pid namespace or boot") as info:
        await make_instance(settings, hostname="host-a").claim()
    assert "cannot be checked here" in str(info.value)
    assert await redis.get(KEY) == old.to_json()


async def test_no_takeover_of_a_holder_that_recorded_no_pid_scope(
    settings: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    """A holder from before pidScope (or where it cannot be told) waits out its TTL."""
    payload = json.loads(holder_payload("host-a", await _dead_pid()).to_json())
    del payload["pidScope"]
    await redis.set(KEY, json.dumps(payload), px=30_000)
    with pytest.raises(ClaimConflict, match="the payload has no pidScope"):
        await make_instance(settings, hostname="host-a").claim()
    assert json.loads(await redis.get(KEY)) == payload


async def test_takeover_needs_the_scope_not_the_hostname(
    settings: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    """Same pid namespace and boot under another hostname (a container with its
    own UTS namespace sharing the host's pids): the dead pid is proof enough."""
    old = holder_payload("container-name", await _dead_pid(), epoch=2)
    await redis.set(EPOCH_KEY, 2)
    await redis.set(KEY, old.to_json(), px=30_000)
    instance = make_instance(settings, hostname="host-a")
    await instance.claim(heartbeat=False)
    assert (await stored(redis)).instance_id == instance.instance_id


async def test_no_takeover_across_hosts_even_if_the_pid_is_dead_here(
    settings: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    old = holder_payload("host-b", await _dead_pid(), pid_scope="another-boot/4026531836")
    await redis.set(KEY, old.to_json(), px=30_000)
    with pytest.raises(ClaimConflict, match="host-b"):
        await make_instance(settings, hostname="host-a").claim()
    assert await redis.get(KEY) == old.to_json()


# --- epoch ----------------------------------------------------------------------


async def test_epoch_increases_every_time_the_slot_changes_hands(
    settings: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    a = make_instance(settings, hostname="host-a")
    await a.claim(heartbeat=False)
    assert (await stored(redis)).epoch == 1
    await a.release()

    b = make_instance(settings, hostname="host-b")
    await b.claim(heartbeat=False)
    assert (await stored(redis)).epoch == b.lease.epoch == 2
    await eventually(lambda: status_gone(redis), what="b's key to expire")

    c = make_instance(settings, hostname="host-c")
    await c.claim(heartbeat=False)
    assert (await stored(redis)).epoch == c.lease.epoch == 3
    assert await redis.get(EPOCH_KEY) == "3"


# --- release --------------------------------------------------------------------


async def test_release_deletes_only_our_key(
    settings: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    instance = make_instance(settings)
    await instance.claim()
    assert instance.heartbeat.running
    assert await instance.release() is True
    assert not instance.heartbeat.running and not instance.lease.held
    assert not await redis.exists(KEY)
    assert await instance.release() is False


async def test_close_releases_the_slot(
    settings: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    instance = make_instance(settings)
    await instance.claim()
    await instance.close()
    assert not await redis.exists(KEY)


async def test_heartbeat_needs_a_claim(
    settings: Settings, make_instance: Callable[..., Instance]
) -> None:
    instance = make_instance(settings)
    with pytest.raises(PerseusError, match="not held"):
        instance.heartbeat.start()
    assert await instance.heartbeat.tick() is HeartbeatResult.NOT_HELD


# --- heartbeat ------------------------------------------------------------------


async def test_heartbeat_keeps_the_key_alive_past_many_ttls(
    settings: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    instance = make_instance(settings)
    await instance.claim()
    registered = instance.status.registered_at
    # 12 ticks at 100 ms span three 400 ms TTLs.
    await eventually(lambda: instance.heartbeat.count >= 12, what="12 heartbeats")
    now = await stored(redis)
    assert now.instance_id == instance.instance_id
    assert now.last_heartbeat > registered
    assert now.registered_at == registered
    assert instance.heartbeat.failures == 0


async def test_each_confirmed_tick_announces_the_renewal(
    settings: Settings, make_instance: Callable[..., Instance]
) -> None:
    """What the agent's child watchdog is told: the send time of every tick
    Redis confirmed, as it happens, and nothing once the exchange is released."""
    instance = make_instance(settings)
    renewals: list[float] = []
    instance.heartbeat.on_renewal(renewals.append)
    await instance.claim(heartbeat=False)
    assert renewals == []  # the claim itself is not a heartbeat
    for _ in range(3):
        assert await instance.heartbeat.tick() is HeartbeatResult.REFRESHED
        assert renewals[-1] == instance.lease.confirmed_at
    assert len(renewals) == 3 and renewals == sorted(renewals)
    await instance.release()
    assert await instance.heartbeat.tick() is HeartbeatResult.NOT_HELD
    assert len(renewals) == 3


async def test_heartbeat_rewrites_only_last_heartbeat(
    long_ttl: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    clock = StepClock(datetime(2026, 2, 10, 18, 0, tzinfo=UTC))
    instance = make_instance(long_ttl, clock=clock, admin_email="a/b@example.com")
    await instance.claim(heartbeat=False)
    await redis.pexpire(KEY, 1_000)
    before = await redis.get(KEY)
    clock.advance(seconds=15, milliseconds=7)

    assert await instance.heartbeat.tick() is HeartbeatResult.REFRESHED
    after = await redis.get(KEY)
    assert after == before.replace(
        '"lastHeartbeat":"2026-02-10T18:00:00.000Z"', '"lastHeartbeat":"2026-02-10T18:00:15.007Z"'
    )
    assert await redis.pttl(KEY) > 1_000  # TTL refreshed to the full 10 s
    assert instance.status.last_heartbeat == clock.now


async def test_heartbeat_handles_a_payload_it_cannot_patch_in_place(
    long_ttl: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    """Our own key, but lastHeartbeat is not where the fast path expects it."""
    instance = make_instance(long_ttl)
    await instance.claim(heartbeat=False)
    data = json.loads(await redis.get(KEY))
    data["lastHeartbeat"] = None
    await redis.set(KEY, json.dumps(data, indent=2), px=10_000)

    assert await instance.heartbeat.tick() is HeartbeatResult.REFRESHED
    now = await stored(redis)
    assert now.last_heartbeat == instance.status.last_heartbeat
    assert now.instance_id == instance.instance_id


@pytest.mark.every_major
async def test_heartbeat_is_one_command_per_tick(
    fresh_redis: RedisServer,
    make_settings: Callable[..., Settings],
    new_client: Callable[..., Redis],
    make_instance: Callable[..., Instance],
) -> None:
    settings = make_settings(redis_url=fresh_redis.url)
    admin = new_client(settings)
    instance = make_instance(settings)
    await instance.claim()
    await eventually(lambda: instance.heartbeat.count >= 2, what="warm-up ticks")
    await instance.heartbeat.stop()

    await admin.config_resetstat()
    base = instance.heartbeat.count
    instance.heartbeat.start()
    await eventually(lambda: instance.heartbeat.count >= base + 5, what="5 ticks")
    await instance.heartbeat.stop()
    ticks = instance.heartbeat.count - base

    stats = await admin.info("commandstats")
    calls = {name.removeprefix("cmdstat_"): int(v["calls"]) for name, v in stats.items()}
    # Redis 7 counts subcommands on their own ("config|resetstat"), 6.2 as "config".
    major = int(str((await admin.info("server"))["redis_version"]).split(".")[0])
    calls.pop("config|resetstat" if major >= 7 else "config")
    calls.pop("info", None)
    # One EVALSHA per tick from the client; GET and SET are run inside the script.
    assert calls == {"evalsha": ticks, "get": ticks, "set": ticks}


async def test_heartbeat_recreates_a_deleted_key_and_says_it_was_deleted(
    long_ttl: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    """A plain DEL (a Livermore server's deregistration) while the TTL still
    ran is not an expiry: the entry says deleted, and by nobody the stream names."""
    instance = make_instance(long_ttl)
    await instance.claim()
    await instance.transition(ConnectionState.STARTING)
    await redis.delete(KEY)

    await eventually(lambda: redis.exists(KEY), what="the key to be re-created")
    now = await stored(redis)
    assert now.instance_id == instance.instance_id
    assert now.connection_state is ConnectionState.STARTING
    assert now.epoch == 1
    text = await eventually(
        lambda: _stream_error(redis, "deleted by another writer"), what="the re-creation entry"
    )
    assert "had expired" not in text and "before its 10s TTL could have run out" in text
    assert "nobody else wrote to logs:network:coinbase meanwhile" in text
    assert instance.lease.held and instance.heartbeat.running


async def test_a_deleted_key_names_the_writer_the_stream_shows(
    long_ttl: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    """A Livermore claimant that was refused writes its own error into the
    holder's stream, then deregisters with a DEL: the re-creation names it."""
    instance = make_instance(long_ttl)
    await instance.claim()
    refusal = ErrorEntry(
        error="Exchange 1 is already claimed by host-a", exchange_id="1",
        exchange_name=NAME, hostname="lm-host-09", state="idle",
    )  # fmt: skip
    await redis.xadd(keys.activity_key(NAME), refusal.to_fields())  # type: ignore[arg-type]
    await redis.delete(KEY)

    text = await eventually(
        lambda: _stream_error(redis, "deleted by another writer"), what="the re-creation entry"
    )
    assert "probably lm-host-09" in text


async def test_an_expired_key_is_still_said_to_have_expired(
    settings: Settings, redis: Redis, make_instance: Callable[..., Instance]
) -> None:
    instance = make_instance(settings)
    await instance.claim(heartbeat=False)
    await eventually(lambda: status_gone(redis), what="the key to expire")

    assert await instance.heartbeat.tick() is HeartbeatResult.RECREATED
    text = await eventually(lambda: _stream_error(redis, "had expired"), what="the entry")
    assert "no heartbeat reached Redis within the 0.4s TTL" in text
    assert "deleted" not in text


async def _stream_has(redis: Redis, event: str, text: str, key: str | None = None) -> bool:
    rows = await redis.xrange(key or keys.activity_key(NAME))
    return any(f.get("event") == event and text in f.get("error", "") for _, f in rows)


async def _stream_error(redis: Redis, text: str) -> str | None:
    """The first error entry of the shared stream that says `text`, whole."""
    for _, fields in await redis.xrange(keys.activity_key(NAME)):
        if fields.get("event") == "error" and text in fields.get("error", ""):
            return str(fields["error"])
    return None


# --- a holder paused past its TTL ------------------------------------------------


@pytest.mark.parametrize("found_by", ["heartbeat", "update", "release", "heartbeat task"])
async def test_a_late_holder_never_touches_the_new_holders_key(
    found_by: str,
    make_settings: Callable[..., Settings],
    redis: Redis,
    make_instance: Callable[..., Instance],
) -> None:
    lost = LostCalls()
    a = make_instance(make_settings(), hostname="host-a", on_lease_lost=lost)
    await a.claim()
    await a.heartbeat.stop()  # "paused": no more refreshes
    await eventually(lambda: status_gone(redis), what="a's key to expire")

    b = make_instance(make_settings(heartbeat_ttl_ms=10_000), hostname="host-b")
    await b.claim(heartbeat=False)
    b_raw = await redis.get(KEY)
    assert b.lease.epoch == 2

    # a wakes up and carries on as if it still held the slot.
    assert a.lease.held
    if found_by == "heartbeat":
        assert await a.heartbeat.tick() is HeartbeatResult.LOST
    elif found_by == "update":
        with pytest.raises(LeaseLost):
            await a.transition(ConnectionState.STARTING)
        assert a.state is ConnectionState.STARTING  # applied in memory all the same
    elif found_by == "release":
        with pytest.raises(LeaseLost):
            await a.release()
    else:
        a.heartbeat.start()
        await eventually(lambda: not a.heartbeat.running, what="a's heartbeat to stop")

    await eventually(lambda: lost.calls, what="on_lease_lost")
    exc = lost.calls[0]
    assert exc.holder is not None and exc.holder.instance_id == b.instance_id
    assert exc.instance_id == a.instance_id
    assert "host-b" in str(exc)
    assert a.lease.lost is exc and not a.lease.held
    assert a.status.last_error == str(exc)

    # Anything else a does afterwards stays away from b's key too.
    assert await a.heartbeat.tick() is HeartbeatResult.NOT_HELD
    if a.state is ConnectionState.IDLE:
        result = await a.transition(ConnectionState.STARTING)
    else:
        result = await a.transition(ConnectionState.STOPPING)
    assert result.status is StatusWrite.NOT_HELD
    assert await a.release() is False
    await a.close()

    assert await redis.get(KEY) == b_raw
    assert await redis.pttl(KEY) > 5_000
    assert len(lost.calls) == 1
    # Only the holder writes to the shared stream: a's loss, and the transition
    # it made afterwards, are Perseus's own entries.
    ours = keys.perseus_activity_key(NAME)
    await eventually(
        lambda: _stream_has(redis, "error", "lease on exchange 1 lost", ours),
        what="the lease-lost entry",
    )
    assert await _stream_has(redis, "state_transition", "", ours)
    assert await redis.xrange(keys.activity_key(NAME)) == []


async def test_an_async_callback_may_close_the_instance(
    make_settings: Callable[..., Settings],
    redis: Redis,
    make_instance: Callable[..., Instance],
) -> None:
    closed = asyncio.Event()

    async def fence(exc: LeaseLost) -> None:
        await a.close()
        closed.set()

    a = make_instance(make_settings(heartbeat_ttl_ms=10_000), on_lease_lost=fence)
    await a.claim()
    await redis.set(KEY, holder_payload("host-z", 1).to_json(), px=10_000)
    await asyncio.wait_for(closed.wait(), 5)
    assert not a.heartbeat.running
    assert (await stored(redis)).hostname == "host-z"


# --- Redis faults ---------------------------------------------------------------


async def test_heartbeat_survives_a_redis_restart(
    fresh_redis: RedisServer,
    make_settings: Callable[..., Settings],
    new_client: Callable[..., Redis],
    make_instance: Callable[..., Instance],
) -> None:
    settings = make_settings(redis_url=fresh_redis.url)
    admin = new_client(settings)
    instance = make_instance(settings)
    await instance.claim()
    await instance.transition(ConnectionState.STARTING)
    await eventually(lambda: instance.heartbeat.count >= 2, what="heartbeats")

    fresh_redis.restart()  # every key is gone, the script cache too
    await eventually(lambda: admin.exists(KEY), what="the key to be re-created")
    now = InstanceStatus.from_json(await admin.get(KEY))
    assert now.instance_id == instance.instance_id
    assert now.connection_state is ConnectionState.STARTING
    assert now.epoch == instance.lease.epoch == 1
    # The fencing counter is restored (by the command after the re-creation),
    # so the next claimer still gets a larger epoch.
    assert await eventually(lambda: admin.get(EPOCH_KEY), what="the epoch counter") == "1"
    # It had gone too: not an expiry, and no writer deleted the key.
    await eventually(
        lambda: _stream_has(admin, "error", "Redis lost its data"), what="the log entry"
    )
    assert not await _stream_has(admin, "error", "deleted by another writer")
    count = instance.heartbeat.count
    await eventually(lambda: instance.heartbeat.count >= count + 3, what="more heartbeats")
    assert instance.heartbeat.running and instance.lease.held


async def test_heartbeat_survives_redis_being_down(
    fresh_redis: RedisServer,
    make_settings: Callable[..., Settings],
    new_client: Callable[..., Redis],
    make_instance: Callable[..., Instance],
) -> None:
    settings = make_settings(redis_url=fresh_redis.url)
    instance = make_instance(settings, new_client(settings, retry=no_retry()))
    await instance.claim()
    await eventually(lambda: instance.heartbeat.count >= 1, what="a heartbeat")

    fresh_redis.stop()
    await eventually(lambda: instance.heartbeat.failures >= 3, what="failed ticks")
    assert instance.heartbeat.running
    assert "cannot reach Redis at redis://127.0.0.1" in (instance.heartbeat.last_error or "")

    fresh_redis.start()
    admin = new_client(settings)
    await eventually(lambda: admin.exists(KEY), what="the key to be re-created")
    assert (await stored(admin)).instance_id == instance.instance_id
    await eventually(lambda: instance.heartbeat.last_error is None, what="a clean tick")


async def test_a_change_made_while_redis_is_unreachable_reaches_the_key(
    proxy: TcpProxy,
    make_settings: Callable[..., Settings],
    redis: Redis,
    new_client: Callable[..., Redis],
    make_instance: Callable[..., Instance],
) -> None:
    """Redis keeps its data but cannot be reached: the next tick writes the full state."""
    settings = make_settings(redis_url=proxy.url, heartbeat_ttl_ms=10_000)
    instance = make_instance(settings, new_client(settings, retry=no_retry()))
    await instance.claim()

    await proxy.down()
    result = await instance.transition(ConnectionState.STARTING)
    assert instance.state is ConnectionState.STARTING
    assert result.status is StatusWrite.DEFERRED
    assert result.entry_id is None and not result.ok
    assert "cannot reach Redis" in (result.error or "")
    assert instance.publisher.unsent_entries == 1
    assert (await stored(redis)).connection_state is ConnectionState.IDLE

    await proxy.up()
    await eventually(lambda: _state_is(redis, ConnectionState.STARTING), what="the key to catch up")
    await eventually(
        lambda: _stream_has(redis, "error", "1 activity entry could not be written"),
        what="the gap note",
    )
    assert await _stream_has(redis, "error", "idle->starting")
    assert not await _stream_has(redis, "error", "had expired")  # updated, not re-created
    assert instance.publisher.unsent_entries == 0


async def _state_is(redis: Redis, state: ConnectionState) -> bool:
    return (await stored(redis)).connection_state is state


# --- fencing on any answer that is not our lease ---------------------------------

_FOREIGN_PAYLOADS = {
    "not json": "not json",
    "json array": "[1, 2]",
    "json string": '"text"',
    "instanceId not a string": '{"instanceId": 7}',
    "no instanceId": WIRE_STATUS,
    "deeply nested": "[" * 5_000 + "]" * 5_000,
    "invalid utf-8": b"\xff\xfe{",
}


@pytest.mark.parametrize("payload", list(_FOREIGN_PAYLOADS), ids=list(_FOREIGN_PAYLOADS))
@pytest.mark.parametrize("found_by", ["heartbeat", "update", "release"])
async def test_a_foreign_payload_of_any_shape_fences_the_holder(
    payload: str,
    found_by: str,
    long_ttl: Settings,
    redis: Redis,
    make_instance: Callable[..., Instance],
) -> None:
    lost = LostCalls()
    a = make_instance(long_ttl, on_lease_lost=lost)
    await a.claim(heartbeat=False)
    value = _FOREIGN_PAYLOADS[payload]
    await redis.execute_command("SET", KEY, value, "KEEPTTL")

    if found_by == "heartbeat":
        assert await a.heartbeat.tick() is HeartbeatResult.LOST
    elif found_by == "update":
        with pytest.raises(LeaseLost):
            await a.transition(ConnectionState.STARTING)
    else:
        with pytest.raises(LeaseLost):
            await a.release()

    await eventually(lambda: lost.calls, what="on_lease_lost")
    assert not a.lease.held and len(lost.calls) == 1
    assert lost.calls[0].holder is None or lost.calls[0].holder.instance_id != a.instance_id
    assert await a.heartbeat.tick() is HeartbeatResult.NOT_HELD
    raw = await redis.execute_command("GET", KEY, NEVER_DECODE=True)
    expected = value if isinstance(value, bytes) else value.encode()
    assert raw == expected
