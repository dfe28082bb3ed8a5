"""The library on a 3-master Redis Cluster: detection, lease and fencing,
transitions and entries, pages, the live tail (every way it waits, and across
a slot move), the control channel, presence, the snapshot, the catalog and
the notifier.

Every exchange of `FLEET` keeps its status key, its streams and its command
stream on different masters, so any multi-key command across slots would
fail here with CROSSSLOT.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from perseus_cli.apps.redis_cluster import RedisClusterNodes
from perseus_core.export import Exporter
from perseus_core.instance import Instance
from perseus_core.notify import Notifier
from perseus_core.plumbing.connection import connect
from perseus_core.plumbing.streams import xread_rows
from perseus_core.store.activity import ActivityLog, ActivityTail, reads
from perseus_core.store.control.sender import ControlClient
from perseus_core.store.control.server import CommandServer, HandlerResult
from perseus_core.store.lease import ClaimConflict, LeaseLost
from perseus_core.store.network import FleetReader
from perseus_core.store.output import OutputFollower, OutputWriter, recent_output
from perseus_core.store.presence import AgentAnnouncer
from perseus_core.wire import keys
from perseus_core.wire.models import (
    CatalogEntry,
    Command,
    ConnectionState,
    ErrorEntry,
    ReplyStatus,
    StateTransitionEntry,
)
from perseus_core.wire.settings import Settings
from tests.cluster.conftest import FLEET, master_index
from tests.export.conftest import livermore_status, sample, scrape
from tests.helpers import append_round, expected_rounds, tail_collects
from tests.waiting import eventually

S = ConnectionState
NAMES = [name for _, name in FLEET]
DISCORD_NAMES = [name.replace("_", "\\_") for name in NAMES]  # markdown escaped


def test_fleet_keys_span_every_master() -> None:
    """The premise of this module: the fleet's keys are spread over all masters."""
    assert {master_index(keys.activity_key(n)) for n in NAMES} == {0, 1, 2}
    assert {master_index(keys.status_key(i)) for i, _ in FLEET} == {0, 1, 2}


async def test_a_cluster_node_url_gives_a_cluster_client(
    cluster_settings: Settings, make_settings: Callable[..., Settings]
) -> None:
    cluster_client = connect(cluster_settings)
    single = connect(make_settings())
    try:
        assert isinstance(cluster_client, RedisCluster)
        assert isinstance(single, Redis)
        assert len(await cluster_client.cluster_nodes()) == 6
    finally:
        await cluster_client.aclose()
        await single.aclose()


@contextlib.asynccontextmanager
async def instances(settings: Settings, **kwargs: object) -> AsyncIterator[list[Instance]]:
    """One Instance per fleet exchange, each on its own cluster client."""
    clients = [connect(settings) for _ in FLEET]
    made = [
        Instance(client, settings, exchange_id=i, exchange_name=n, hostname="host-a", **kwargs)  # type: ignore[arg-type]
        for client, (i, n) in zip(clients, FLEET, strict=True)
    ]
    try:
        yield made
    finally:
        for instance in made:
            await instance.close()
        for client in clients:
            await client.aclose()


async def test_claim_heartbeat_transitions_pages_and_release(
    cluster_settings: Settings, cluster_redis: RedisCluster
) -> None:
    async with instances(cluster_settings) as fleet:
        for instance in fleet:
            await instance.claim()
            for state in (S.STARTING, S.WARMING, S.ACTIVE):
                assert (await instance.transition(state)).ok
        await eventually(lambda: all(i.heartbeat.count >= 3 for i in fleet), what="heartbeats")
        assert all(i.heartbeat.failures == 0 for i in fleet)

        for instance in fleet:
            raw = await cluster_redis.get(keys.status_key(instance.exchange_id))
            assert json.loads(raw)["connectionState"] == "active"
            assert 0 < await cluster_redis.pttl(keys.status_key(instance.exchange_id)) <= 400

        log = ActivityLog(cluster_redis, cluster_settings)
        page = await log.page("coinbase", count=2)
        assert [e.to_state for e in page.entries] == ["active", "warming"]  # type: ignore[attr-defined]
        older = await log.page("coinbase", count=5, before=page.next_cursor)
        # Beside the first transition, the claim's note of who holds the slot now.
        assert sorted(e.event for e in older.entries) == ["holder", "state_transition"]
        [first] = [e for e in older.entries if isinstance(e, StateTransitionEntry)]
        assert first.to_state == "starting"

        merged = await log.merged_page(NAMES, count=4)
        assert len(merged.entries) == 4 and not merged.errors
        rest = await log.merged_page(NAMES, count=50, before=merged.next_cursor)
        assert len(merged.entries) + len(rest.entries) == 12  # 3 transitions, 1 holder each
        ids = [e.id for e in [*merged.entries, *rest.entries]]
        assert ids == sorted(ids, key=lambda i: tuple(map(int, str(i).split("-"))), reverse=True)

        for instance in fleet:
            await instance.transition(S.STOPPING)
            await instance.transition(S.STOPPED)
            assert await instance.release()
        assert await cluster_redis.exists(*[keys.status_key(i) for i, _ in FLEET[:1]]) == 0
        for exchange_id, _ in FLEET:
            assert await cluster_redis.exists(keys.status_key(exchange_id)) == 0


async def test_fencing_a_second_claimer_and_a_foreign_overwrite(
    make_cluster_settings: Callable[..., Settings], cluster_redis: RedisCluster
) -> None:
    settings = make_cluster_settings(heartbeat_ttl_ms=5_000)
    lost: list[LeaseLost] = []

    async def on_lost(exc: LeaseLost) -> None:
        lost.append(exc)

    async with instances(settings, on_lease_lost=on_lost) as fleet:
        holder = fleet[0]
        await holder.claim()
        async with instances(settings) as rivals:
            with pytest.raises(ClaimConflict, match="host-a"):
                await rivals[0].claim()
        # A writer that does not fence (a Livermore server) overwrites the key.
        key = keys.status_key(holder.exchange_id)
        foreign = json.loads(await cluster_redis.get(key))
        foreign.update(instanceId="other:1:1:1", hostname="host-b")
        await cluster_redis.set(key, json.dumps(foreign), px=5_000)
        await eventually(lambda: lost, what="the holder to fence itself")
        assert not holder.lease.held
        assert json.loads(await cluster_redis.get(key))["hostname"] == "host-b"


async def test_tail_small_fleet_blocking_read_per_slot(
    cluster_settings: Settings, cluster_redis: RedisCluster
) -> None:
    seen = await tail_collects(cluster_settings, cluster_redis, FLEET, rounds=5)
    assert sorted(seen) == sorted(expected_rounds(FLEET, 5))  # no gap, no duplicate
    for name in NAMES:  # each stream's own order is kept
        assert [h for n, h in seen if n == name] == [f"round-{r}" for r in range(5)]


@pytest.mark.parametrize("notifications", ["", "Kt"], ids=["poll", "keyspace-notifications"])
async def test_tail_large_fleet_pipelined_reads(
    notifications: str,
    cluster: RedisClusterNodes,
    cluster_settings: Settings,
    cluster_redis: RedisCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With more slot groups than blocking reads are allowed, the tail waits
    for keyspace notifications where every master has them, else polls."""
    monkeypatch.setattr(reads, "BLOCKING_GROUPS_MAX", 1)
    await cluster_redis.config_set(
        "notify-keyspace-events", notifications, target_nodes=RedisCluster.ALL_NODES
    )
    try:
        seen = await tail_collects(cluster_settings, cluster_redis, FLEET, rounds=4)
    finally:
        await cluster_redis.config_set(
            "notify-keyspace-events", "", target_nodes=RedisCluster.ALL_NODES
        )
    assert sorted(seen) == sorted(expected_rounds(FLEET, 4))


async def test_xread_on_a_cluster_finds_its_keys_without_asking_a_node(
    cluster_redis: RedisCluster,
) -> None:
    """The keys of an XREAD are read from its own arguments: a large fleet's
    tail sends one per slot group, and a COMMAND GETKEYS round trip before
    each would double its cost."""
    key = keys.activity_key("binance_us")
    entry_id = await cluster_redis.xadd(key, ErrorEntry(error="once").to_fields())
    every_node = RedisCluster.ALL_NODES
    await cluster_redis.config_resetstat(target_nodes=every_node)
    reply = await cluster_redis.xread({key: "0-0"}, count=5)
    assert [row[0] for _, rows in xread_rows(reply) for row in rows] == [entry_id]
    stats = await cluster_redis.info("commandstats", target_nodes=every_node)
    assert not any("cmdstat_command|getkeys" in node_stats for node_stats in stats.values())


@pytest.mark.parametrize("read_max", [reads.READ_MAX_STREAMS, 7], ids=["default", "small-reads"])
async def test_tail_keeps_up_with_a_flood_over_two_thousand_streams(
    read_max: int,
    cluster_settings: Settings,
    cluster_redis: RedisCluster,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """1,000 exchanges (2,000 streams, far more slot groups than blocking
    reads), woken by keyspace notifications: a few thousand entries written
    in floods reach the tail each once, in each stream's order, also when
    each turn reads only a few of the streams that changed."""
    monkeypatch.setattr(reads, "READ_MAX_STREAMS", read_max)
    names = [f"flood-{n}" for n in range(1_000)]
    stream_keys = [
        key_of(name) for name in names for key_of in (keys.activity_key, keys.perseus_activity_key)
    ]
    every_node = RedisCluster.ALL_NODES
    await cluster_redis.config_set("notify-keyspace-events", "Kt", target_nodes=every_node)

    async def provider() -> list[str]:
        return names

    written: dict[str, list[str]] = {key: [] for key in stream_keys}
    seen: dict[str, list[str]] = {key: [] for key in stream_keys}
    try:
        async with ActivityTail(cluster_settings, provider) as tail:

            async def consume() -> None:
                async for entry in tail:
                    seen[entry.key].append(entry.id)

            task = asyncio.create_task(consume())
            try:
                for round_no in range(2):
                    async with cluster_redis.pipeline() as pipe:
                        for key in stream_keys:
                            pipe.xadd(key, ErrorEntry(error=f"flood {round_no}").to_fields())
                        for key, entry_id in zip(stream_keys, await pipe.execute(), strict=True):
                            written[key].append(entry_id)
                total = sum(len(ids) for ids in written.values())
                await eventually(
                    lambda: sum(len(ids) for ids in seen.values()) >= total,
                    within=60,
                    what="every entry",
                )
            finally:
                await tail.aclose()
                await task
    finally:
        await cluster_redis.config_set("notify-keyspace-events", "", target_nodes=every_node)
    assert seen == written  # each entry once, in its stream's order


async def test_tail_sweeps_every_stream_when_notifications_go_missing(
    cluster_settings: Settings, cluster_redis: RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Entries whose notification never comes are still delivered: each quiet
    block time reads the next slice of the streams (here one stream a turn)."""
    monkeypatch.setattr(reads, "BLOCKING_GROUPS_MAX", 1)
    monkeypatch.setattr(reads, "SWEEP_CHUNK", 1)
    every_node = RedisCluster.ALL_NODES
    await cluster_redis.config_set("notify-keyspace-events", "Kt", target_nodes=every_node)

    async def notifications_go_missing() -> None:  # the subscriptions stay, silent
        await cluster_redis.config_set("notify-keyspace-events", "", target_nodes=every_node)

    try:
        seen = await tail_collects(
            cluster_settings,
            cluster_redis,
            FLEET,
            rounds=3,
            after_first_round=notifications_go_missing,
        )
    finally:
        await cluster_redis.config_set("notify-keyspace-events", "", target_nodes=every_node)
    assert sorted(seen) == sorted(expected_rounds(FLEET, 3))


async def test_tail_takes_up_notifications_turned_on_while_it_polls(
    cluster_settings: Settings, cluster_redis: RedisCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tail that polls because the masters announce no stream writes asks
    them again now and then: once an operator turns notifications on, it
    subscribes on every master, and no entry is missed or read twice."""
    monkeypatch.setattr(reads, "BLOCKING_GROUPS_MAX", 1)
    monkeypatch.setattr(reads, "RECHECK_S", 0.3)
    every_node = RedisCluster.ALL_NODES
    await cluster_redis.config_set("notify-keyspace-events", "", target_nodes=every_node)
    masters = cluster_redis.get_primaries()
    assert len(masters) == 3

    async def subscribed_masters() -> int:
        counts = [
            await cluster_redis.execute_command("PUBSUB", "NUMPAT", target_nodes=master)
            for master in masters
        ]
        return sum(1 for count in counts if int(count) > 0)

    async def notifications_turned_on() -> None:
        assert await subscribed_masters() == 0  # polling so far
        await cluster_redis.config_set("notify-keyspace-events", "Kt", target_nodes=every_node)
        await eventually(
            lambda: _equals(subscribed_masters(), len(masters)), what="a subscription per master"
        )

    try:
        seen = await tail_collects(
            cluster_settings,
            cluster_redis,
            FLEET,
            rounds=3,
            after_first_round=notifications_turned_on,
        )
    finally:
        await cluster_redis.config_set("notify-keyspace-events", "", target_nodes=every_node)
    assert sorted(seen) == sorted(expected_rounds(FLEET, 3))


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


class Handler:
    """Answers every command with success; counts calls."""

    def __init__(self) -> None:
        self.calls: list[Command] = []

    async def __call__(self, command: Command) -> HandlerResult:
        self.calls.append(command)
        return ReplyStatus.SUCCESS, f"{command.type} done", None


async def test_control_channel_on_every_master(
    cluster_settings: Settings, cluster_redis: RedisCluster
) -> None:
    handlers = {exchange_id: Handler() for exchange_id, _ in FLEET}
    servers = [
        CommandServer(
            cluster_settings, exchange_id, name, handlers[exchange_id], identity=lambda: ("h", "")
        )
        for exchange_id, name in FLEET
    ]
    for server in servers:
        await server.start()
    try:
        client = ControlClient(cluster_redis, cluster_settings)
        for exchange_id, name in FLEET:
            outcome = await client.send(exchange_id, "start", operator="ops@ci")
            assert outcome.status == ReplyStatus.SUCCESS, outcome
            page = await ActivityLog(cluster_redis, cluster_settings).page(name)
            assert [e.status for e in page.entries] == ["success", "ack"]  # type: ignore[attr-defined]
        assert all(len(h.calls) == 1 for h in handlers.values())
    finally:
        for server in servers:
            await server.stop()


async def test_presence_snapshot_catalog_and_discovery(
    cluster_settings: Settings, cluster_redis: RedisCluster
) -> None:
    reader = FleetReader(cluster_redis)
    first_id, first_name = FLEET[0]
    await reader.add_to_catalog(CatalogEntry(id=first_id, name=first_name))
    async with instances(cluster_settings) as fleet:
        for instance in fleet[1:]:
            await instance.claim()
            await instance.transition(S.STARTING)
        announcer = AgentAnnouncer(
            cluster_redis,
            cluster_settings,
            exchange_id=first_id,
            exchange_name=first_name,
            state=lambda: S.IDLE,
            hostname="host-idle",
        )
        await announcer.publish()

        # Discovery scans every master: the two online exchanges that are not
        # in the catalog are found although their keys live on other nodes.
        views = {view.exchange_id: view for view in (await reader.snapshot()).exchanges}
        assert set(views) == {i for i, _ in FLEET}
        assert views[FLEET[1][0]].status is not None
        assert views[FLEET[1][0]].status.connection_state == S.STARTING
        assert views[first_id].status is None
        assert [a.hostname for a in views[first_id].agents] == ["host-idle"]
        assert sorted(await reader.exchange_names()) == sorted(NAMES)
        assert [e.id for e in await reader.catalog()] == [first_id]
        assert await reader.remove_from_catalog(first_id)


async def test_notifier_posts_transitions_from_every_master(
    cluster_settings: Settings, cluster_redis: RedisCluster
) -> None:
    await FleetReader(cluster_redis).add_to_catalog(CatalogEntry(id=FLEET[0][0], name=FLEET[0][1]))
    for exchange_id, name in FLEET[1:]:
        await FleetReader(cluster_redis).add_to_catalog(CatalogEntry(id=exchange_id, name=name))
    lines: list[str] = []
    notifier = Notifier(
        cluster_settings, None, dry_run=True, output=lines.append, interval_ms=100, settle_s=0
    )
    task = asyncio.create_task(notifier.run())
    try:
        await asyncio.wait_for(notifier.wait_ready(), 10)
        log = ActivityLog(cluster_redis, cluster_settings)
        await append_round(log, FLEET, 0)
        for name in NAMES:
            await log.append(
                name, ErrorEntry(error="feed down", state="active", exchange_name=name)
            )
        await eventually(lambda: len(lines) >= 2 * len(FLEET), what="webhook payloads")
    finally:
        notifier.stop()
        await asyncio.wait_for(task, 10)
    contents = sorted(json.loads(line)["content"] for line in lines)
    assert contents == sorted(
        [f"{discord}: idle → starting on round-0" for discord in DISCORD_NAMES]
        + [f"{discord}: error while active on -: feed down" for discord in DISCORD_NAMES]
    )


async def test_tail_follows_a_stream_whose_slot_moves(
    cluster: RedisClusterNodes, cluster_settings: Settings, cluster_redis: RedisCluster
) -> None:
    """A resharding moves one stream to another master while the tail waits on
    it and entries keep coming: every entry arrives once, in order."""
    moved = keys.activity_key(NAMES[0])
    source = cluster.master_of(moved)
    target = cluster.master_of(keys.activity_key(NAMES[1]))

    seen = await tail_collects(
        cluster_settings,
        cluster_redis,
        FLEET,
        rounds=4,
        after_first_round=lambda: asyncio.to_thread(cluster.move_slot, moved, target),
    )
    assert cluster.master_of(moved).port == target.port
    cluster.move_slot(moved, source)  # the next tests expect the launcher's layout
    assert sorted(seen) == sorted(expected_rounds(FLEET, 4))
    assert [h for n, h in seen if n == NAMES[0]] == [f"round-{r}" for r in range(4)]


async def test_child_output_written_read_and_followed_on_every_master(
    cluster_settings: Settings, cluster_redis: RedisCluster
) -> None:
    """The output writer's pipelined batches (XADD MAXLEN ~ and PEXPIRE on one
    key), the last lines and the follower's blocking read, on each master."""
    # One exchange per master.
    ids = list({master_index(keys.output_key(i)): i for i in range(30, 0, -1)}.values())
    assert {master_index(keys.output_key(i)) for i in ids} == {0, 1, 2}
    for exchange_id in ids:
        writer = OutputWriter(cluster_redis, cluster_settings, exchange_id)
        task = asyncio.create_task(writer.run())
        for n in range(250):
            writer.add("stderr" if n % 2 else "stdout", f"line {n} of {exchange_id}".encode())
        writer.close()
        await asyncio.wait_for(task, 30)
        assert writer.written == 250 and writer.dropped == 0
        lines = await recent_output(cluster_redis, exchange_id, 3)
        assert [(x.stream, x.line) for x in lines] == [
            ("stderr", f"line 247 of {exchange_id}"),
            ("stdout", f"line 248 of {exchange_id}"),
            ("stderr", f"line 249 of {exchange_id}"),
        ]
        assert await cluster_redis.pttl(keys.output_key(exchange_id)) > 0

        follower = OutputFollower(cluster_settings, exchange_id, lines[-1].id)
        seen: list[str] = []

        async def follow(into: list[str] = seen, following: OutputFollower = follower) -> None:
            async for line in following:
                into.append(line.line)

        reading = asyncio.create_task(follow())
        await cluster_redis.xadd(keys.output_key(exchange_id), {"stream": "stdout", "line": "new"})
        await eventually(lambda s=seen: s == ["new"], what="the followed line")
        await follower.aclose()
        await asyncio.wait_for(reading, 10)


async def test_the_exporter_reads_a_fleet_spread_over_every_master(
    cluster_settings: Settings, cluster_redis: RedisCluster
) -> None:
    """Statuses, catalog and streams on three masters: one scrape shows every
    exchange, and an entry appended on each master is counted once."""
    for exchange_id, name in FLEET:
        await cluster_redis.hset(
            keys.CATALOG_KEY, str(exchange_id), CatalogEntry(id=exchange_id, name=name).to_json()
        )
        await cluster_redis.set(
            keys.status_key(exchange_id), livermore_status(exchange_id, name), px=45_000
        )
    exporter = Exporter(cluster_settings, listen="127.0.0.1:0", cache_ms=0)
    await exporter.start()
    try:
        log = ActivityLog(cluster_redis, cluster_settings)
        for exchange_id, name in FLEET:
            await log.append(
                name, ErrorEntry(error="boom", state="active", exchange_id=str(exchange_id),
                                 exchange_name=name)
            )  # fmt: skip
        await eventually(lambda: len(exporter.counters.errors) == len(FLEET), what="the errors")
        samples = await scrape(exporter.url)
    finally:
        await exporter.aclose()
    for exchange_id, name in FLEET:
        labels = {"exchange_id": str(exchange_id), "exchange_name": name}
        assert samples[sample("perseus_exchange_up", **labels)] == 1
        assert samples[sample("perseus_exchange_errors_total", **labels)] == 1
    assert samples[sample("perseus_exporter_redis_up")] == 1
