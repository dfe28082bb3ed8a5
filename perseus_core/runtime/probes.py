"""Readiness and health probes: is the agent's service really up?

A child that merely runs is not a service that works: a feed may take a
minute to connect, or stop answering while its process lives on. A probe
asks the service itself, in one of four ways an operator already knows from
Docker and Kubernetes:

- `cmd`: a shell command, ready when it exits 0 (its own process group,
  killed at the probe's timeout; Perseus's secrets are not in its
  environment, as for the child: `supervisor.child_environment`);
- `tcp`: HOST:PORT accepts a connection;
- `http`: a GET of the URL answers 2xx (httpx, from the app extra, imported
  only when such a probe runs: the library never needs it);
- `file`: the path exists.

Each check never blocks the event loop and ends within its timeout; the
caller runs it as a task it can cancel (the warm-up is woken by a child
exit, a lost lease or a shutdown, and does not wait for a probe then). A
failure comes back with its reason as one clean, bounded line, which the
agent puts in its error entries.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass

from perseus_core.runtime.supervisor import child_environment, describe_exit
from perseus_core.wire.text import clean

REASON_CHARS = 200
"""Longest reason a probe reports (error entries are bounded, and one line)."""

_OUTPUT_BYTES = 4096
"""How much of the end of a probe command's output is kept (its last line is the reason)."""


class ProbeFailed(Exception):
    """A probe said no; `str()` is the reason, one clean line."""


def parse_host_port(value: str) -> tuple[str, int]:
    """`HOST:PORT` (`[::1]:80` for IPv6) as a host and a port.

    Raises:
        ValueError: not HOST:PORT with a port in 1..65535.
    """
    host, sep, port = value.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected HOST:PORT, got {clean(value, 80)!r}")
    return host, int(port)


def check_http_url(value: str) -> str:
    """The URL, if it is http:// or https:// with a host.

    Raises:
        ValueError: another scheme, or no host.
    """
    scheme, sep, rest = value.strip().partition("://")
    if not sep or scheme.lower() not in ("http", "https") or not rest or rest.startswith("/"):
        raise ValueError(f"expected an http:// or https:// URL, got {clean(value, 80)!r}")
    return value.strip()


@dataclass(frozen=True, slots=True)
class Probe:
    """One way of asking the service whether it works.

    Attributes:
        kind: `cmd`, `tcp`, `http` or `file`.
        target: the command line, HOST:PORT, URL or path.
    """

    kind: str
    target: str

    def describe(self) -> str:
        """`tcp 127.0.0.1:9000`, for messages."""
        return f"{self.kind} {clean(self.target, 80)}"

    async def check(self, timeout_s: float) -> None:
        """Ask once, within `timeout_s`.

        Raises:
            ProbeFailed: the answer was no (or none came in time).
        """
        try:
            async with asyncio.timeout(timeout_s):
                await _CHECKS[self.kind](self.target)
        except TimeoutError:
            raise ProbeFailed(f"no answer within {timeout_s:g}s") from None
        except OSError as exc:
            raise ProbeFailed(clean(exc.strerror or exc, REASON_CHARS)) from None
        except ValueError as exc:  # a malformed target that reached here unchecked
            raise ProbeFailed(clean(exc, REASON_CHARS)) from None


def probes(cmd: str | None, tcp: str | None, http: str | None, file: str | None) -> list[Probe]:
    """The probes among the options given (None: not asked for)."""
    given = (("cmd", cmd), ("tcp", tcp), ("http", http), ("file", file))
    return [Probe(kind, target) for kind, target in given if target]


async def check_all(checks: Sequence[Probe], timeout_s: float) -> None:
    """Every probe in turn; the first refusal names its probe.

    Raises:
        ProbeFailed: one of them said no.
    """
    for probe in checks:
        try:
            await probe.check(timeout_s)
        except ProbeFailed as exc:
            raise ProbeFailed(f"{probe.describe()}: {exc}") from None


async def _check_cmd(command: str) -> None:
    process = await asyncio.create_subprocess_shell(
        command,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,  # a group of its own: a timeout kills all of it
        env=child_environment(os.environ, pass_env=False),
    )
    try:
        assert process.stdout is not None
        output = b""
        while chunk := await process.stdout.read(65536):  # to its end: a full pipe would stall it
            output = (output + chunk)[-_OUTPUT_BYTES:]
        code = await process.wait()
    finally:
        if process.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                await asyncio.shield(process.wait())
    if code != 0:
        lines = [line for line in output.decode(errors="replace").splitlines() if line.strip()]
        last = f" ({clean(lines[-1], REASON_CHARS)})" if lines else ""
        raise ProbeFailed(f"{describe_exit(code)}{last}")


async def _check_tcp(address: str) -> None:
    host, port = parse_host_port(address)
    try:
        _, writer = await asyncio.open_connection(host, port)
    except ConnectionRefusedError:
        raise ProbeFailed("connection refused") from None
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


async def _check_http(url: str) -> None:
    import httpx  # the app extra's; only an agent with an HTTP probe needs it

    try:
        async with httpx.AsyncClient(follow_redirects=False, trust_env=False) as client:
            response = await client.get(url, headers={"User-Agent": "perseus-probe"})
    except httpx.HTTPError as exc:
        raise ProbeFailed(clean(f"{type(exc).__name__}: {exc}", REASON_CHARS)) from None
    if not 200 <= response.status_code < 300:
        raise ProbeFailed(f"HTTP {response.status_code}")


async def _check_file(path: str) -> None:
    if not await asyncio.to_thread(os.path.exists, path):
        raise ProbeFailed("no such file")


_CHECKS = {"cmd": _check_cmd, "tcp": _check_tcp, "http": _check_http, "file": _check_file}
