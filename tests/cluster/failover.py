"""One failover drill on a running cluster: the definition shared by the test
(`test_failover.py`, one kill) and the long form (`bench/failover.py`, JSON).

While three instances heartbeat (one per master), a tail follows their
streams, a writer per stream appends an entry to it each 50 ms and a command
client pings one agent in a loop, the master that holds one instance's status
key and another's stream is killed with SIGKILL; its replica takes over after
the cluster's node timeout. A rival instance tries to claim the victim's slot
all along, so any moment of two holders is seen.

Which node the settings' URL names is chosen, not left to the cluster's
layout: the killed master itself (`kill_startup_node`, the harder case: every
client was made from that address, and it is often the node a cluster client
asks for a command's keys as well) or a master that survives.

Measured from the kill, on this host's monotonic clock: when the cluster
served every slot again, when the victim's heartbeat reached Redis again,
when the tail delivered an entry written after the kill to a stream of the
killed master (and to any other stream: those never stop), when the snapshot
the dashboard reads showed every instance live again, when a command was
answered again; entries acknowledged by the old master that the new one never
had (asynchronous replication), entries the tail delivered twice or missed,
and how long two instances believed they held the victim's slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import redis as sync_redis
from redis.asyncio.cluster import RedisCluster

from perseus_cli.apps.redis_cluster import RedisClusterNodes
from perseus_cli.apps.redis_server import RedisServer
from perseus_core.instance import Instance
from perseus_core.plumbing.connection import connect
from perseus_core.plumbing.errors import REDIS_ERRORS
from perseus_core.runtime.supervisor import kill_deadline_ms
from perseus_core.store.activity import ActivityLog, ActivityTail
from perseus_core.store.control.sender import ControlClient
from perseus_core.store.control.server import CommandServer
from perseus_core.store.lease import ClaimConflict, LeaseLost
from perseus_core.store.network import FleetReader
from perseus_core.wire import keys
from perseus_core.wire.errors import PerseusError
from perseus_core.wire.models import (
    CatalogEntry,
    Command,
    ConnectionState,
    InstanceStatus,
    ReplyStatus,
    StateTransitionEntry,
)
from perseus_core.wire.settings import Settings
from tests.cluster.conftest import FLEET
from tests.waiting import eventually

WRITE_EVERY_S = 0.05
SETTLE_S = 1.0
"""How long the drill keeps going after everything resumed, so late
duplicates or a late second holder would still be seen."""
IN_SYNC_WITHIN_S = 20.0
"""How long the replicas may take to have their copy before the kill (Redis 7
waits 5 s before a diskless copy to a node that rejoined)."""
WATCH_S = 20.0
"""How long after the kill the drill waits for every part to be back (the
target is 10 s)."""
DELIVERED_WITHIN_S = 5.0
"""How long the tail may take to deliver what Redis kept, once writing ended.

With these three the drill ends by itself, also when something never comes
back, within about 50 s: before the suite's per-test timeout would cut it off
mid-way and leave its sockets open for the next test to trip over."""


@dataclass
class FailoverFigures:
    """What one drill measured (seconds from the kill; None: never happened)."""

    killed_port: int = 0
    startup_node_killed: bool = False
    cluster_ok_s: float | None = None
    heartbeat_s: float | None = None
    tail_s: float | None = None
    tail_others_s: float | None = None
    snapshot_s: float | None = None
    command_s: float | None = None
    acknowledged: int = 0
    lost_by_replication: list[str] = field(default_factory=list)
    delivered_twice: int = 0
    missed_by_tail: int = 0
    two_holders_s: float = 0.0
    victim_lease_lost: bool = False
    rival_claimed: bool = False


@contextlib.asynccontextmanager
async def _background(
    *loops: Callable[[asyncio.Event], Awaitable[None]], cancel: bool = True
) -> AsyncIterator[None]:
    """Run `loops` meanwhile; each is given an event set when they must end.

    On leaving, the event is set and (with `cancel`) the loops are cancelled,
    then waited for. Cancelling alone is not enough: on Python 3.11 a
    cancellation that meets a timeout inside redis-py can come out as a Redis
    TimeoutError, which a loop that carries on after Redis errors swallows,
    and then it would run (and be waited for) forever. The event ends it at
    its next turn.
    """
    stopping = asyncio.Event()
    tasks = [asyncio.create_task(loop(stopping)) for loop in loops]
    try:
        yield
    finally:
        stopping.set()
        if cancel:
            for task in tasks:
                task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def failover_drill(
    nodes: RedisClusterNodes, settings: Settings, *, kill_startup_node: bool
) -> FailoverFigures:
    """Kill one master under load; measure (see the module docstring).

    Args:
        nodes: the running cluster.
        settings: timings and timeouts; their URL is replaced by the address
            of the node the drill chooses.
        kill_startup_node: the settings' URL names the master that is killed
            (True) or a master that survives (False).

    Every client, server, tail and instance it makes is closed before it
    returns or raises, whatever failed: nothing it opened outlives it.
    """
    async with contextlib.AsyncExitStack() as stack:
        return await _drill(nodes, settings, kill_startup_node, stack)


async def _drill(
    nodes: RedisClusterNodes,
    settings: Settings,
    kill_startup_node: bool,
    stack: contextlib.AsyncExitStack,
) -> FailoverFigures:
    """The drill itself; whatever it opens is closed by `stack`."""
    figures = FailoverFigures(startup_node_killed=kill_startup_node)
    # A replica still waiting for its first copy would take over empty-handed
    # (Redis 7 waits 5 s before a diskless copy): that measures no failover.
    await eventually(
        lambda: asyncio.to_thread(_replicas_in_sync, nodes),
        within=IN_SYNC_WITHIN_S,
        what="every replica in sync",
    )
    names = [name for _, name in FLEET]
    victim_id, victim_name = FLEET[2]  # status key on the master of FLEET[0]'s stream
    victim_key = keys.status_key(victim_id)
    victim_master = nodes.master_of(victim_key)
    startup = victim_master if kill_startup_node else _other_master(nodes, victim_master)
    settings = settings.model_copy(update={"redis_url": startup.url})
    admin = connect(settings)
    stack.push_async_callback(admin.aclose)
    assert isinstance(admin, RedisCluster)
    clients = [connect(settings) for _ in range(len(FLEET) + 2)]
    for client in clients:
        stack.push_async_callback(client.aclose)
    lost_at: list[float] = []  # when the victim learned it lost the slot
    reader = FleetReader(admin)
    for exchange_id, name in FLEET:
        await reader.add_to_catalog(CatalogEntry(id=exchange_id, name=name))

    async def lost(_exc: LeaseLost) -> None:
        lost_at.append(time.monotonic())

    instances = [
        Instance(
            client,
            settings,
            exchange_id=i,
            exchange_name=n,
            hostname="holder",
            on_lease_lost=lost if i == victim_id else None,
        )
        for client, (i, n) in zip(clients[: len(FLEET)], FLEET, strict=True)
    ]
    rival = Instance(
        clients[-1],
        settings,
        exchange_id=victim_id,
        exchange_name=victim_name,
        hostname="rival",
    )
    for instance in [*instances, rival]:
        stack.push_async_callback(instance.close)  # before its client is closed
    written: set[tuple[str, str]] = set()  # (stream, entry id) acknowledged by Redis
    delivered: list[tuple[str, str]] = []
    moments: dict[str, float] = {}
    before_kill: set[tuple[str, str]] = set()
    victim_deadline: list[float] = []  # the victim's watchdog deadline when the rival claimed
    killed_at = 0.0
    killed_streams: set[str] = set()  # the streams the killed master served

    async def names_provider() -> list[str]:
        return names

    def writer(exchange_id: int, name: str) -> Callable[[asyncio.Event], Awaitable[None]]:
        """Appends to one exchange's stream every `WRITE_EVERY_S`: one writer per
        stream, so a stream on the dead master holds up no other."""

        async def write_loop(stopping: asyncio.Event) -> None:
            log = ActivityLog(admin, settings)
            n = 0
            while not stopping.is_set():
                n += 1
                entry = StateTransitionEntry(
                    from_state="idle",
                    to_state="starting",
                    exchange_id=str(exchange_id),
                    exchange_name=name,
                    hostname=f"w{n}",
                )
                with contextlib.suppress(*REDIS_ERRORS):
                    written.add((keys.activity_key(name), await log.append(name, entry)))
                await asyncio.sleep(WRITE_EVERY_S)

        return write_loop

    async def rival_loop(stopping: asyncio.Event) -> None:
        while not rival.lease.held and not stopping.is_set():
            with contextlib.suppress(ClaimConflict, PerseusError, *REDIS_ERRORS):
                await rival.claim()
                moments["rival"] = time.monotonic()
                confirmed = instances[2].lease.confirmed_at
                if confirmed is not None and instances[2].lease.held:
                    victim_deadline.append(
                        kill_deadline_ms(confirmed, settings.heartbeat_ttl_ms) / 1000
                    )
            await asyncio.sleep(settings.heartbeat_interval_ms / 1000)

    async def command_loop(stopping: asyncio.Event) -> None:
        client = ControlClient(clients[-2], settings)
        while not stopping.is_set():
            with contextlib.suppress(PerseusError, *REDIS_ERRORS):
                outcome = await client.send(victim_id, "ping", operator="drill")
                if outcome.status == ReplyStatus.SUCCESS and killed_at:
                    moments.setdefault("command", time.monotonic())
            await asyncio.sleep(0.1)

    async def handler(command: Command) -> tuple[ReplyStatus, str | None, None]:
        return ReplyStatus.SUCCESS, f"{command.type} ok", None

    server = CommandServer(
        settings, victim_id, victim_name, handler, identity=lambda: ("holder", "")
    )
    stack.push_async_callback(server.stop)
    tail = ActivityTail(settings, names_provider)
    stack.push_async_callback(tail.aclose)
    for instance in instances:
        await instance.claim()
        await instance.transition(ConnectionState.STARTING)
    await server.start()
    await tail.start()
    older = await _present_ids(admin, names)  # before the tail started: not its to deliver

    async def tail_loop(stopping: asyncio.Event) -> None:
        async for entry in tail:  # ends when the tail is closed or this task cancelled
            found = (entry.key or "", entry.id or "")
            delivered.append(found)
            if killed_at and found in written and found not in before_kill:
                moments.setdefault("tail_others", time.monotonic())
                if found[0] in killed_streams:
                    moments.setdefault("tail", time.monotonic())

    writers = [writer(exchange_id, name) for exchange_id, name in FLEET]
    async with _background(tail_loop, rival_loop, command_loop):
        async with _background(*writers, cancel=False):  # the last appends are let finish
            await asyncio.sleep(0.5)  # everything running
            victim_port = figures.killed_port = victim_master.port
            killed_streams.update(
                key
                for key in map(keys.activity_key, names)
                if nodes.master_of(key) is victim_master
            )
            before_kill.update(written)
            killed_at, killed_wall = time.monotonic(), time.time()
            victim_master.kill()
            deadline = killed_at + WATCH_S
            while time.monotonic() < deadline and not _all_seen(moments):
                now = time.monotonic()
                if "cluster" not in moments and await _moved(nodes, victim_key, victim_port):
                    moments["cluster"] = now
                if (
                    "cluster" in moments
                    and "heartbeat" not in moments
                    and await _beat_since(admin, victim_id, killed_wall)
                ):
                    moments["heartbeat"] = now
                if "cluster" in moments and "snapshot" not in moments and await _all_live(reader):
                    moments["snapshot"] = now
                await asyncio.sleep(0.05)
            await asyncio.sleep(SETTLE_S)
        present = await _present_ids(admin, names) - older
        with contextlib.suppress(AssertionError):
            await eventually(lambda: present <= set(delivered), within=DELIVERED_WITHIN_S)
    for name, attribute in _MOMENTS.items():
        if name in moments:
            setattr(figures, attribute, round(moments[name] - killed_at, 3))
    figures.acknowledged = len(written)
    figures.lost_by_replication = sorted(f"{k} {i}" for k, i in written - present - older)
    figures.delivered_twice = len(delivered) - len(set(delivered))
    figures.missed_by_tail = len(present - set(delivered))
    figures.victim_lease_lost = bool(lost_at)
    figures.rival_claimed = "rival" in moments
    if victim_deadline:
        # Two holders from the rival's claim until the old holder either
        # learned it (its next heartbeat) or its watchdog deadline passed
        # (the agent kills its child then, without hearing from Redis).
        learned = min([*lost_at, victim_deadline[0]])
        figures.two_holders_s = round(max(0.0, learned - moments["rival"]), 3)
    return figures


_MOMENTS = {
    "cluster": "cluster_ok_s",
    "heartbeat": "heartbeat_s",
    "tail": "tail_s",
    "tail_others": "tail_others_s",
    "snapshot": "snapshot_s",
    "command": "command_s",
}


def _all_seen(moments: dict[str, float]) -> bool:
    return all(name in moments for name in _MOMENTS)


def _other_master(nodes: RedisClusterNodes, victim: RedisServer) -> RedisServer:
    """A master other than `victim`: the one of another exchange's status key
    (the fleet's status keys are spread over every master)."""
    masters = (nodes.master_of(keys.status_key(exchange_id)) for exchange_id, _ in FLEET)
    return next(master for master in masters if master is not victim)


def _replicas_in_sync(nodes: RedisClusterNodes) -> bool:
    """Every running master has a replica, and every replica has its first
    copy and follows the master's writes (`state=online`)."""
    for node in nodes.nodes:
        if node.pid is None:
            continue
        try:
            with sync_redis.Redis.from_url(node.url, decode_responses=True) as client:
                info = client.info("replication")
        except sync_redis.RedisError:
            return False
        if info.get("role") != "master":
            continue
        replicas = [value for key, value in info.items() if key.startswith("slave")]
        if not replicas or any(
            not isinstance(replica, dict) or replica.get("state") != "online"
            for replica in replicas
        ):
            return False
    return True


async def _moved(nodes: RedisClusterNodes, key: str, killed_port: int) -> bool:
    """Whether a surviving node serves `key` now (its replica took over)."""
    with contextlib.suppress(PerseusError, *REDIS_ERRORS):
        return await asyncio.to_thread(lambda: nodes.master_of(key).port != killed_port)
    return False


async def _beat_since(admin: RedisCluster, exchange_id: int, since_wall: float) -> bool:
    """The status key holds a heartbeat written after `since_wall` (epoch seconds)."""
    with contextlib.suppress(*REDIS_ERRORS):
        raw = await admin.get(keys.status_key(exchange_id))
        if raw:
            status = InstanceStatus.from_json(raw)
            return status.last_heartbeat.timestamp() > since_wall
    return False


async def _all_live(reader: FleetReader) -> bool:
    with contextlib.suppress(*REDIS_ERRORS, PerseusError):
        snapshot = await reader.snapshot()
        return len(snapshot.exchanges) == len(FLEET) and all(
            view.online for view in snapshot.exchanges
        )
    return False


async def _present_ids(admin: RedisCluster, names: list[str]) -> set[tuple[str, str]]:
    found: set[tuple[str, str]] = set()
    for name in names:
        key = keys.activity_key(name)
        found.update((key, entry_id) for entry_id, _ in await admin.xrange(key))
    return found
