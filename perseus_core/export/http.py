"""A minimal HTTP/1.1 server for `/metrics`, in the exporter's own event loop.

Why not prometheus_client's own servers: `start_http_server` and
`make_wsgi_app` answer from a thread, and the collector's data comes from
redis.asyncio, whose client belongs to the event loop that made it (calling
it from another thread's loop breaks its connections). An ASGI app would
need an ASGI server Perseus does not otherwise depend on. Prometheus sends
one GET per scrape, so a small asyncio server that reads a request line and
its headers (bounded in size and time) and answers with a complete body is
all it takes, and the fleet read then runs in the same loop as the tail.

Each connection serves one request (`Connection: close`): a scrape every
few seconds gains nothing from keep-alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from http import HTTPStatus

log = logging.getLogger(__name__)

LINE_LIMIT = 8_192
"""The longest request or header line accepted."""

MAX_HEADERS = 100
"""The most header lines accepted in one request."""

REQUEST_TIMEOUT_S = 10.0
"""How long a client may take to send its request (a slow or idle client
must not hold a connection open forever)."""

Render = Callable[[str], Awaitable[tuple[bytes, str]]]
"""Given the request's Accept header, the metrics page and its content type."""

INDEX = b"""<!doctype html>
<html><head><title>Perseus exporter</title></head>
<body><h1>Perseus exporter</h1><p><a href="/metrics">Metrics</a></p></body></html>
"""


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:PORT` for IPv6) as a host and a port.

    Raises:
        ValueError: not HOST:PORT, or the port is not 0-65535.
    """
    host, sep, port_text = value.strip().rpartition(":")
    if not sep or not host or not port_text.isascii() or not port_text.isdecimal():
        raise ValueError(f"{value[:80]!r} is not HOST:PORT (for example 127.0.0.1:9464)")
    port = int(port_text)
    if port > 65_535:
        raise ValueError(f"port {port} is out of range (0-65535)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


class MetricsServer:
    """Serves `GET /metrics` (the page `render` makes) and `GET /` (a link to it)."""

    def __init__(self, render: Render, host: str, port: int) -> None:
        """Create the server; nothing listens until `start`.

        Args:
            render: makes the metrics page for the request's Accept header.
            host: the address to listen on.
            port: the port (0: any free one; see `port` once started).
        """
        self._render = render
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        """The port listened on (the one picked, when 0 was asked)."""
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    @property
    def url(self) -> str:
        """The metrics URL, as a browser or Prometheus would use it."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}/metrics"

    async def start(self) -> None:
        """Listen. Raises OSError when the address cannot be bound."""
        self._server = await asyncio.start_server(
            self._handle, self._host, self._port, limit=LINE_LIMIT
        )

    async def aclose(self) -> None:
        """Stop listening and close the open connections."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            for writer in list(self._writers):
                writer.close()
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            request = await self._read_request(reader)
            if request is None:
                await self._send(writer, HTTPStatus.BAD_REQUEST, b"bad request\n")
            else:
                await self._answer(writer, *request)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client went away: nothing to answer
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _read_request(self, reader: asyncio.StreamReader) -> tuple[str, str, str] | None:
        """The method, path and Accept header of one request; None when it is
        malformed, too large or too slow."""
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                words = (await reader.readline()).decode("latin-1").split()
                accept = ""
                for _ in range(MAX_HEADERS + 1):
                    line = await reader.readline()
                    if line in (b"\r\n", b"\n", b""):
                        break
                    name, _, value = line.decode("latin-1").partition(":")
                    if name.strip().lower() == "accept":
                        accept = value.strip()
                else:
                    return None
        except (TimeoutError, ValueError):  # ValueError: a line past LINE_LIMIT
            return None
        if len(words) != 3 or not words[2].startswith("HTTP/"):
            return None
        return words[0], words[1], accept

    async def _answer(
        self, writer: asyncio.StreamWriter, method: str, target: str, accept: str
    ) -> None:
        if method not in ("GET", "HEAD"):
            await self._send(
                writer, HTTPStatus.METHOD_NOT_ALLOWED, b"GET only\n", allow="GET, HEAD"
            )
            return
        path = target.split("?", 1)[0]
        if path == "/metrics":
            body, content_type = await self._render(accept)
        elif path == "/":
            body, content_type = INDEX, "text/html; charset=utf-8"
        else:
            await self._send(writer, HTTPStatus.NOT_FOUND, b"not found: try /metrics\n")
            return
        await self._send(writer, HTTPStatus.OK, body, content_type, head=method == "HEAD")

    @staticmethod
    async def _send(
        writer: asyncio.StreamWriter,
        status: HTTPStatus,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
        *,
        head: bool = False,
        allow: str | None = None,
    ) -> None:
        lines = [
            f"HTTP/1.1 {status.value} {status.phrase}",
            f"Content-Type: {content_type}",
            f"Content-Length: {len(body)}",
            "Connection: close",
        ]
        if allow is not None:
            lines.append(f"Allow: {allow}")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if not head:
            writer.write(body)
        await writer.drain()
