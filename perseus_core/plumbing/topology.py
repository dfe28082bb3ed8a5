"""Which kind of Redis a URL points at, and a client of the matching kind.

A `redis://` or `rediss://` URL may lead to a single server or to any node
of a Redis Cluster; there is no separate URL scheme to learn. The first
connection to a URL asks the server (`INFO cluster`, `cluster_enabled:1`)
and remembers the answer for the life of the process, so every later
`connect()` is free. On a cluster the client is redis-py's async
`RedisCluster`, which routes every single-key command to the node that
owns the key and follows slot moves and failovers; `KeyFinder` makes it
follow a failover for the commands whose keys it has to ask a node about
(`XREAD`) as well.

The question is asked with a short synchronous round trip because
`connect()` is synchronous and called from everywhere; it happens once per
URL. When the server cannot be reached the answer is not remembered for
long (`_RETRY_UNKNOWN_S`): the caller gets a single-server client, whose
own commands then report the outage, and the next `connect()` after that
asks again.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import redis as sync_redis
from redis._parsers import AsyncCommandsParser
from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, NodesManager, RedisCluster
from redis.asyncio.connection import Connection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from perseus_core.plumbing.tls import (
    SERVER_NAME_OPTION,
    NamedSyncSSLConnection,
    name_cluster_nodes,
)

RedisClient = Redis | RedisCluster
"""What `connect()` returns: a single-server client or a cluster client."""

_PROBED_SCHEMES = ("redis", "rediss")
_RETRY_UNKNOWN_S = 2.0
_PROBE_OPTIONS = ("username", "password", "socket_connect_timeout", "socket_timeout")

_SINGLE_SERVER_ONLY = ("connection_class", SERVER_NAME_OPTION)
"""Options of a single-server client the cluster client has no place for:
it picks its TLS connection class itself from `rediss://` (a server name is
given to its nodes afterwards: `tls.name_cluster_nodes`)."""

_lock = threading.Lock()
_known: dict[str, bool] = {}
_nodes: dict[str, list[tuple[str, int]]] = {}
_unknown_until: dict[str, float] = {}


def is_cluster(url: str, options: dict[str, Any] | None = None) -> bool:
    """Whether `url` points at a Redis Cluster node (asked once per URL).

    Args:
        url: the Redis URL; other schemes than `redis` and `rediss` (unix
            sockets, Sentinel) are never clusters.
        options: the client options `connect()` uses; credentials, timeouts
            and TLS settings among them are used for the question too.

    Returns:
        True for a cluster node; False for a single server, and for now
        when the server cannot be reached (asked again a little later).
    """
    if urlsplit(url).scheme not in _PROBED_SCHEMES:
        return False
    with _lock:
        if url in _known:
            return _known[url]
        if time.monotonic() < _unknown_until.get(url, 0.0):
            return False
    probe = {
        key: value
        for key, value in (options or {}).items()
        if key in _PROBE_OPTIONS or key.startswith("ssl")
    }
    if probe.get(SERVER_NAME_OPTION):
        probe["connection_class"] = NamedSyncSSLConnection
    else:
        probe.pop(SERVER_NAME_OPTION, None)
    try:
        answer = _ask(url, probe)
    except RedisError:
        with _lock:
            _unknown_until[url] = time.monotonic() + _RETRY_UNKNOWN_S
        return False
    with _lock:
        _known[url] = answer
        _unknown_until.pop(url, None)
    return answer


def _ask(url: str, options: dict[str, Any]) -> bool:
    """`INFO cluster` (or `CLUSTER INFO` for a user without INFO); on a
    cluster, every node's address too (`CLUSTER SLOTS`), to start from."""
    with sync_redis.Redis.from_url(url, decode_responses=True, **options) as client:
        try:
            info = client.info("cluster")
            enabled = bool(int(info.get("cluster_enabled", 0)))
        except ResponseError:  # INFO is @dangerous: a least-privilege user may lack it
            enabled = True
        if not enabled:
            return False
        try:
            slots = client.execute_command("CLUSTER", "SLOTS")
        except ResponseError:
            return False  # "This instance has cluster support disabled"
        _nodes[url] = sorted(
            {(str(node[0]), int(node[1])) for row in slots for node in row[2:] if node[0]}
        )
        return True


def cluster_client(url: str, options: dict[str, Any]) -> RedisCluster:
    """An async cluster client for the cluster `url` leads to.

    Besides the node the URL names, every node the cluster had when it was
    first asked is a starting point, so a client made while that one node is
    down (a failover in progress) still finds the cluster. redis-py's cluster
    client takes its own `retry` policy (per command, across nodes and
    failovers); a `retry` given for a single server is passed on as that policy.
    """
    server_name = options.get(SERVER_NAME_OPTION)
    options = {key: value for key, value in options.items() if key not in _SINGLE_SERVER_ONLY}
    with _lock:
        known = [ClusterNode(host, port) for host, port in _nodes.get(url, [])]
    client = RedisCluster.from_url(url, startup_nodes=known or None, **options)
    client.commands_parser = KeyFinder(client.nodes_manager)
    if server_name:
        name_cluster_nodes(client, server_name)
    return client


class KeyFinder(AsyncCommandsParser):
    """The cluster client's way of finding a command's keys, which asks another
    node when the one it asks is gone.

    redis-py finds the keys of a command whose keys are not at fixed positions
    (`XREAD`: the tail's and the command server's blocking reads) by sending
    `COMMAND GETKEYS` to one node: the default node of the client's first
    topology refresh, changed only by a later refresh. When that node dies, the
    connection error is raised before the command has a node to go to, so it
    neither marks a node as failed nor asks for a refresh, and nothing ever
    does: every such command fails for the life of the client, even for a key
    on a healthy master. That is how a tail and a command server went on
    dialling a killed master long after its replica had taken over.

    Here the other nodes of the client's current view are asked in turn, and
    the first that answers is asked from then on. `COMMAND GETKEYS` runs
    nothing, so asking again is harmless. Many reads may look for keys at
    once (the tail's, one per slot group): each remembers the node it asked
    itself, since another may have moved on to the next node meanwhile.
    """

    def __init__(self, nodes: NodesManager) -> None:
        """Find keys for the client whose current view of the cluster is `nodes`
        (its nodes manager, not the client: no reference cycle)."""
        super().__init__()
        self._nodes = nodes

    async def get_keys(self, *args: Any) -> tuple[str, ...] | None:
        """The keys of the command `args`: those of `XREAD` read from its own
        arguments, any other command's from the first node that answers.

        `XREAD`'s keys are exactly the first half of what follows `STREAMS`
        (its only other options, `COUNT` and `BLOCK`, take numbers), so no
        round trip is needed: asking a node doubled the cost of every read of
        a tail that follows thousands of streams, one `XREAD` per slot group.
        """
        if len(args) > 2 and _word(args[0]) == "XREAD":
            for index in range(1, min(len(args), 6)):  # after COUNT n, BLOCK ms at most
                if _word(args[index]) == "STREAMS":
                    streams = args[index + 1 :]
                    return tuple(streams[: len(streams) // 2])
        asked = self.node  # read by the parser before its first await
        try:
            return await super().get_keys(*args)
        except _NODE_DOWN as exc:
            if isinstance(exc, RedisCluster.NOT_NODE_FAILURE_ERRORS):
                raise
            failure: RedisError = exc
        others = [node for node in self._nodes.nodes_cache.values() if node.name != asked.name]
        random.shuffle(others)  # clients that lost one node do not all turn to the same next
        for node in others:
            self.node = node
            try:
                return await super().get_keys(*args)
            except _NODE_DOWN as exc:
                if isinstance(exc, RedisCluster.NOT_NODE_FAILURE_ERRORS):
                    raise
                failure = exc
        raise failure


_NODE_DOWN = (RedisConnectionError, RedisTimeoutError)


def _word(arg: Any) -> str:
    """A command argument as an upper-case word (keys and IDs come out as
    whatever they are; only the command and option names are compared)."""
    text = arg.decode(errors="replace") if isinstance(arg, bytes) else str(arg)
    return text.upper()


def forget(url: str | None = None) -> None:
    """Drop what is remembered about the server `url` names: every URL of
    the same host and port, whatever its user, password or database (every
    URL when None).

    For tests and tools that reuse a port for another kind of server: a
    cluster node started where a single server with the same users ran must
    not be taken for that server, under any of the URLs that reached it.
    """
    with _lock:
        if url is None:
            _known.clear()
            _nodes.clear()
            _unknown_until.clear()
            return
        address = _address(url)
        for cache in (_known, _nodes, _unknown_until):
            for stale in [known for known in cache if _address(known) == address]:
                del cache[stale]


def _address(url: str) -> tuple[str, int | None]:
    """The host and port a URL names (an unparsable port as None)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return (parts.hostname or "", port)


def node_client(node: ClusterNode) -> Redis:
    """A single-server client of one cluster node, with the cluster client's
    credentials, timeouts and TLS, for what must talk to that node alone (a
    subscription to its keyspace channels, a question about its ACL rules).
    The caller closes it."""
    pool = ConnectionPool(connection_class=node.connection_class, **node.connection_kwargs)
    return Redis.from_pool(pool)


Release = Callable[[Connection], Awaitable[None]]
"""Gives a connection taken with `checkout` back to its pool."""


async def checkout(redis: RedisClient, key: str) -> tuple[Connection, Release]:
    """One pooled connection to the server that holds `key`, outside the
    client's retries, for a write that must be sent at most once.

    On a cluster the owner of `key` is first asked through the client (an
    `EXISTS`, which follows slot moves and refreshes the topology after a
    failover), so the connection goes to the current master.
    """
    if isinstance(redis, RedisCluster):
        await redis.exists(key)
        node = redis.get_node_from_key(key)
        if node is None:  # the slot is between owners: as if the server were down
            raise RedisConnectionError(f"no cluster node serves {key!r} at the moment")
        connection = node.acquire_connection()

        async def release_to_node(used: Connection) -> None:
            node.release(used)

        return connection, release_to_node
    pool = redis.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    return connection, pool.release
