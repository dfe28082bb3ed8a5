"""Readiness and health probes (perseus_core.runtime.probes) against real sockets,
files, shell commands and a small HTTP server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from perseus_cli.apps.redis_server import free_port
from perseus_core.runtime.probes import (
    Probe,
    ProbeFailed,
    check_all,
    check_http_url,
    parse_host_port,
    probes,
)
from tests.agent.conftest import pid_alive, written_pid
from tests.waiting import eventually


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:80", ("127.0.0.1", 80)), ("[::1]:9000", ("::1", 9000)), ("db:1", ("db", 1))],
)
def test_host_port(text: str, expected: tuple[str, int]) -> None:
    assert parse_host_port(text) == expected


@pytest.mark.parametrize("text", ["", "host", ":80", "host:0", "host:65536", "host:x", "h:\x1b[2J"])
def test_bad_host_port_is_one_clean_line(text: str) -> None:
    with pytest.raises(ValueError, match="expected HOST:PORT") as caught:
        parse_host_port(text)
    assert "\x1b" not in str(caught.value)


@pytest.mark.parametrize("url", ["ftp://h/", "http://", "http:///x", "localhost:80", "file:///x"])
def test_only_http_urls(url: str) -> None:
    with pytest.raises(ValueError, match="expected an http"):
        check_http_url(url)


def test_only_the_probes_given() -> None:
    assert probes(None, "h:1", None, "") == [Probe("tcp", "h:1")]


async def test_cmd_probe_passes_on_exit_0_and_reports_the_last_line_otherwise() -> None:
    await Probe("cmd", "true").check(5)
    with pytest.raises(ProbeFailed) as caught:
        await Probe("cmd", "echo starting; echo 'db down\x1b[31m'; exit 3").check(5)
    assert str(caught.value) == "exited with code 3 (db down)"


async def test_cmd_probe_that_floods_its_output_is_read_to_the_end() -> None:
    with pytest.raises(ProbeFailed) as caught:
        await Probe("cmd", "head -c 1000000 /dev/zero | tr '\\0' x; echo; echo last; exit 1").check(
            10
        )
    assert str(caught.value) == "exited with code 1 (last)"


async def test_cmd_probe_timeout_kills_its_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    with pytest.raises(ProbeFailed, match=r"no answer within 0.3s"):
        await Probe("cmd", f"sleep 30 & echo $! > {pidfile}; wait").check(0.3)
    assert time.monotonic() - started < 10
    pid = await written_pid(pidfile)
    await eventually(lambda: not pid_alive(pid), what="the timed-out command's group killed")


async def test_cmd_probe_gets_no_perseus_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERSEUS_REDIS_URL", "redis://:hunter2@db:6379/0")
    monkeypatch.setenv("PERSEUS_PROBE_VISIBLE_SETTING", "1")
    dump = tmp_path / "env"
    await Probe("cmd", f"env > {dump}").check(5)
    environment = dump.read_text()
    assert "hunter2" not in environment and "PERSEUS_PROBE_VISIBLE_SETTING=1" in environment


async def test_tcp_probe() -> None:
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        await Probe("tcp", f"127.0.0.1:{port}").check(5)
    finally:
        server.close()
        await server.wait_closed()
    with pytest.raises(ProbeFailed, match="connection refused"):
        await Probe("tcp", f"127.0.0.1:{free_port()}").check(5)
    with pytest.raises(ProbeFailed, match="expected HOST:PORT"):
        await Probe("tcp", "nonsense").check(5)


async def test_file_probe_and_check_all_names_the_failing_probe(tmp_path: Path) -> None:
    there = tmp_path / "ready"
    there.touch()
    await check_all([Probe("file", str(there))], 5)
    with pytest.raises(ProbeFailed) as caught:
        await check_all([Probe("file", str(there)), Probe("file", str(tmp_path / "no"))], 5)
    assert str(caught.value) == f"file {tmp_path / 'no'}: no such file"


@pytest.fixture
async def http_server() -> AsyncIterator[tuple[str, list[int]]]:
    """A server answering each GET with the next status in the list (the last one repeats)."""
    statuses: list[int] = [503, 200]

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        status = statuses.pop(0) if len(statuses) > 1 else statuses[0]
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".encode()
        )
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/ready", statuses
    finally:
        server.close()
        await server.wait_closed()


async def test_http_probe_wants_2xx(http_server: tuple[str, list[int]]) -> None:
    url, _ = http_server
    with pytest.raises(ProbeFailed, match="HTTP 503"):
        await Probe("http", url).check(5)
    await Probe("http", url).check(5)
    with pytest.raises(ProbeFailed, match="ConnectError"):
        await Probe("http", f"http://127.0.0.1:{free_port()}/").check(5)
