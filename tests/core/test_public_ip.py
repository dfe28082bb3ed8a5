"""Public IP detection against local HTTP servers: never the internet.

Each fake source is a tiny HTTP/1.1 server on 127.0.0.1 that answers every
request the same way (an address, garbage, an error status, or nothing at
all) and counts the requests it got, so tests can tell which sources were
asked and in what order.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from perseus_cli.apps.redis_server import free_port
from perseus_core.runtime.public_ip import (
    DEFAULT_SOURCES,
    detect_public_ip,
    is_plausible_public,
    parse_ip,
)
from perseus_core.wire.settings import Settings

pytestmark = pytest.mark.usefixtures("_no_proxy")


def _settings(public_ip: str = "auto", timeout_ms: int = 3_000) -> Settings:
    return Settings(public_ip=public_ip, public_ip_timeout_ms=timeout_ms)


class Source:
    """A local HTTP server answering every GET with one fixed response."""

    def __init__(
        self,
        body: bytes = b"203.0.113.7\n",
        *,
        status: int = 200,
        hang: bool = False,
        log: list[str] | None = None,
        name: str = "",
    ) -> None:
        self.body = body
        self.status = status
        self.hang = hang
        self.hits = 0
        self.name = name
        self._log = log
        self.contacted = asyncio.Event()
        self._release = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ip"

    async def start(self) -> Source:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await reader.readuntil(b"\r\n\r\n")
            self.hits += 1
            self.contacted.set()
            if self._log is not None:
                self._log.append(self.name)
            if self.hang:
                await self._release.wait()
                return
            head = (
                f"HTTP/1.1 {self.status} X\r\nContent-Type: text/plain\r\n"
                f"Content-Length: {len(self.body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + self.body)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass
            self._tasks.discard(task)

    async def close(self) -> None:
        self._release.set()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


SourceFactory = Callable[..., Awaitable[Source]]


@pytest.fixture
async def source() -> AsyncIterator[SourceFactory]:
    """Start sources on demand; all are closed after the test."""
    started: list[Source] = []

    async def factory(*args: object, **kwargs: object) -> Source:
        server = await Source(*args, **kwargs).start()  # type: ignore[arg-type]
        started.append(server)
        return server

    yield factory
    for server in started:
        await server.close()


def _closed_port_url() -> str:
    return f"http://127.0.0.1:{free_port()}/ip"


async def _detect(settings: Settings, sources: list[str], timeout_s: float | None = None) -> object:
    """Run detection with a safety net far above any deadline used here, so a
    regression shows up as a failure rather than a hung test."""
    return await asyncio.wait_for(
        detect_public_ip(settings, sources=sources, timeout_s=timeout_s), timeout=20
    )


# --- modes ------------------------------------------------------------------


async def test_off_makes_no_request(source: SourceFactory) -> None:
    good = await source()
    assert await _detect(_settings("off"), [good.url]) is None
    assert await _detect(_settings(" OFF "), [good.url]) is None
    assert good.hits == 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("198.51.100.4", "198.51.100.4"),
        (" 8.8.4.4 ", "8.8.4.4"),
        ("10.1.2.3", "10.1.2.3"),  # the operator's choice, even if private
        ("2001:DB8::0:1", "2001:db8::1"),
    ],
)
async def test_fixed_ip_is_returned_without_a_request(
    source: SourceFactory, value: str, expected: str
) -> None:
    good = await source()
    assert await _detect(_settings(value), [good.url]) == expected
    assert good.hits == 0


@pytest.mark.parametrize("value", ["banana", "", "1.2.3", "auto-detect", "300.1.1.1"])
async def test_invalid_setting_warns_and_means_off(
    source: SourceFactory, caplog: pytest.LogCaptureFixture, value: str
) -> None:
    good = await source()
    with caplog.at_level(logging.WARNING, logger="perseus_core.runtime.public_ip"):
        assert await _detect(_settings(value), [good.url]) is None
    assert good.hits == 0
    assert any("PERSEUS_PUBLIC_IP" in rec.getMessage() for rec in caplog.records)


def test_default_sources_are_the_documented_chain() -> None:
    assert DEFAULT_SOURCES == (
        "https://api.ipify.org",
        "https://icanhazip.com",
        "https://ifconfig.me/ip",
    )


# --- auto: answers ----------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"203.0.113.7\n", "203.0.113.7"),  # icanhazip's style: trailing newline
        (b"  8.8.8.8  ", "8.8.8.8"),
        (b"2001:db8::7", "2001:db8::7"),
        (b"::ffff:203.0.113.9", "203.0.113.9"),  # IPv4-mapped: reported as IPv4
    ],
)
async def test_auto_returns_a_valid_answer(
    source: SourceFactory, body: bytes, expected: str
) -> None:
    good = await source(body)
    assert await _detect(_settings(), [good.url]) == expected
    assert good.hits == 1


@pytest.mark.parametrize(
    "body",
    [
        b"<html><body>Your IP is 203.0.113.7</body></html>",
        b"not an ip",
        b"",
        b"203.0.113.7 203.0.113.8",
        b"300.1.2.3",
        b"\xff\xfe\x00garbage",
        b"203.0.113.7" + b" " * 4096,  # over the size limit
        b"10.0.0.1",  # private
        b"127.0.0.1",  # loopback
        b"100.64.1.1",  # carrier-grade NAT
        b"169.254.1.1",  # link-local
        b"0.0.0.0",
        b"224.0.0.1",  # multicast
        b"fe80::1%eth0",  # zone id
        b"fd00::1",  # unique-local
    ],
)
async def test_garbage_or_non_public_answer_gives_none(source: SourceFactory, body: bytes) -> None:
    bad = await source(body)
    assert await _detect(_settings(), [bad.url]) is None
    assert bad.hits == 1


async def test_error_status_is_rejected_even_with_an_address_body(source: SourceFactory) -> None:
    broken = await source(b"203.0.113.7", status=500)
    assert await _detect(_settings(), [broken.url]) is None
    assert broken.hits == 1


async def test_down_source_gives_none() -> None:
    assert await _detect(_settings(), [_closed_port_url()]) is None


async def test_no_sources_gives_none() -> None:
    assert await _detect(_settings(), []) is None


# --- auto: the fallback chain -------------------------------------------------


async def test_first_fails_second_answers_third_not_asked(source: SourceFactory) -> None:
    order: list[str] = []
    broken = await source(b"oops", status=500, log=order, name="broken")
    garbage = await source(b"<html>", log=order, name="garbage")
    good = await source(b"198.51.100.23", log=order, name="good")
    unused = await source(b"198.51.100.99", log=order, name="unused")
    urls = [broken.url, _closed_port_url(), garbage.url, good.url, unused.url]
    assert await _detect(_settings(), urls) == "198.51.100.23"
    assert order == ["broken", "garbage", "good"]
    assert unused.hits == 0


async def test_slow_source_beyond_deadline_gives_none(source: SourceFactory) -> None:
    slow = await source(hang=True)
    # A deadline long enough for the request to arrive on a loaded machine.
    assert await _detect(_settings(timeout_ms=1_500), [slow.url]) is None
    assert slow.hits == 1


async def test_timeout_argument_overrides_settings(source: SourceFactory) -> None:
    slow = await source(hang=True)
    # Settings say 60 s; the argument's 1.5 s wins (the 20 s safety net would fire
    # otherwise), long enough for the request to arrive on a loaded machine.
    assert await _detect(_settings(timeout_ms=60_000), [slow.url], timeout_s=1.5) is None
    assert slow.hits == 1


async def test_hanging_first_source_leaves_time_for_the_next(source: SourceFactory) -> None:
    slow = await source(hang=True)
    good = await source(b"203.0.113.50")
    assert await _detect(_settings(), [slow.url, good.url], timeout_s=2.0) == "203.0.113.50"
    assert slow.hits == 1
    assert good.hits == 1


async def test_cancellation_propagates(source: SourceFactory) -> None:
    slow = await source(hang=True)
    task = asyncio.create_task(detect_public_ip(_settings(timeout_ms=60_000), sources=[slow.url]))
    await asyncio.wait_for(slow.contacted.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


# --- helpers ------------------------------------------------------------------


def test_parse_ip() -> None:
    assert str(parse_ip(" 203.0.113.7\r\n")) == "203.0.113.7"
    assert parse_ip("fe80::1%eth0") is None
    assert parse_ip("example.com") is None


@pytest.mark.parametrize(
    ("text", "plausible"),
    [
        ("8.8.8.8", True),
        ("2606:4700:4700::1111", True),
        ("203.0.113.7", True),
        ("192.0.2.1", True),
        ("2001:db8::1", True),
        ("192.168.1.1", False),
        ("172.16.0.1", False),
        ("::1", False),
        ("255.255.255.255", False),
    ],
)
def test_is_plausible_public(text: str, plausible: bool) -> None:
    addr = parse_ip(text)
    assert addr is not None
    assert is_plausible_public(addr) is plausible
