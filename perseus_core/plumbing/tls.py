"""TLS connections that check the certificate against a configured server name.

A managed Redis is often dialled by an address its certificate does not
name (an IP, a tunnel, a private endpoint), and on a cluster every node is
dialled by the address the cluster announces. `tls_server_name` names the
host the certificate must be for; these connection classes send it (SNI)
and verify against it, for a single server, for each node of a cluster, and
for the one synchronous question asked before either (`topology`).
"""

from __future__ import annotations

from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import SSLConnection
from redis.connection import SSLConnection as SyncSSLConnection

SERVER_NAME_OPTION = "ssl_server_name"
"""The client option carrying `tls_server_name` to the connection classes below."""


class NamedSSLConnection(SSLConnection):
    """An async TLS connection verified against `ssl_server_name`, not the host it dials."""

    def __init__(self, *, ssl_server_name: str | None = None, **kwargs: Any) -> None:
        """Dial as `SSLConnection` does; verify and send SNI for `ssl_server_name`."""
        self.ssl_server_name = ssl_server_name
        super().__init__(**kwargs)

    def _connection_arguments(self) -> Any:
        arguments = dict(super()._connection_arguments())
        if self.ssl_server_name:
            arguments["server_hostname"] = self.ssl_server_name
        return arguments


class NamedSyncSSLConnection(SyncSSLConnection):
    """The same for redis-py's synchronous client (the cluster question)."""

    def __init__(self, *, ssl_server_name: str | None = None, **kwargs: Any) -> None:
        self.ssl_server_name = ssl_server_name
        super().__init__(**kwargs)

    def _wrap_socket_with_ssl(self, sock: Any) -> Any:
        # redis-py names `self.host` as the server to verify; the socket is
        # already connected, so the host only serves as that name here.
        dialled = self.host
        self.host = self.ssl_server_name or dialled
        try:
            return super()._wrap_socket_with_ssl(sock)  # type: ignore[no-untyped-call]
        finally:
            self.host = dialled


def name_cluster_nodes(client: RedisCluster, server_name: str) -> None:
    """Make every node connection of `client`, known now or found later
    (slot moves, failovers), verify against `server_name`.

    redis-py's cluster client picks its TLS connection class itself from a
    `rediss://` URL and takes no other: its nodes are made from one shared
    set of connection options, which is where the class is swapped.
    """
    options = client.nodes_manager.connection_kwargs
    options["connection_class"] = NamedSSLConnection
    options[SERVER_NAME_OPTION] = server_name
    for node in client.nodes_manager.startup_nodes.values():
        node.connection_class = NamedSSLConnection
        node.connection_kwargs[SERVER_NAME_OPTION] = server_name
