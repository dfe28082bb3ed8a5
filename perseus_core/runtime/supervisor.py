"""Run one child command under the agent: its own process group, watched, stopped for sure.

The child gets a session (and so a process group) of its own, so that:

- a Ctrl-C in the agent's terminal reaches the agent only, which then decides
  how to stop the child (graceful stop first, not a signal storm);
- a stop can signal the *whole* group: a shell wrapper's grandchildren are
  stopped with it instead of being left running as orphans.

The child runs under a watchdog (`perseus_core.runtime.watchdog`), which
leads that process group. The agent renews a deadline on the watchdog as
each heartbeat that Redis confirmed lands (the instance's heartbeat tells it;
nothing polls); when the agent is frozen, cut off from Redis or killed with
-9, the renewals stop and the watchdog kills the group before the status key
can expire and another instance take over. The
deadline is the confirmed heartbeat's send time + the TTL - `margin_ms(ttl)`:

- 2 % of the TTL (`RATE_MARGIN`, the lease's) for clock-rate differences
  between this host's monotonic clock and the Redis server's clock (NTP
  keeps rates within 0.05 %, so this covers a clock running 40 times worse);
- 100 ms for the kill to land (the watchdog waking up, SIGKILL delivered).

The heartbeat's send time, not its reply, starts the count: Redis started
the TTL later than that, so the key outlives the deadline by at least the
margin. With the default 45 s TTL the child dies 44.0 s after the last
confirmed heartbeat was sent; at test speed (600 ms) 0.49 s after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from perseus_core.store.lease import RATE_MARGIN

log = logging.getLogger(__name__)

_GROUP_POLL_S = 0.02
_KILL_LANDS_S = 1.0
"""How long a SIGKILL may take to end every member of a group before we stop waiting."""
_WATCHDOG = "perseus_core.runtime.watchdog"
KILL_MARGIN_MS = 100
"""Time kept back for the watchdog's kill to land."""


def margin_ms(ttl_ms: int) -> float:
    """How long before the Redis TTL runs out the watchdog kills the child."""
    return ttl_ms * RATE_MARGIN + KILL_MARGIN_MS


def kill_deadline_ms(confirmed_at_s: float, ttl_ms: int) -> float:
    """The watchdog's deadline (monotonic ms) for a heartbeat sent at `confirmed_at_s`."""
    return confirmed_at_s * 1000 + ttl_ms - margin_ms(ttl_ms)


_SECRET_WORDS = ("URL", "PASSWORD", "SECRET", "TOKEN", "AUTH", "KEY", "CREDENTIAL", "WEBHOOK")


def is_perseus_secret(name: str) -> bool:
    """Whether the environment variable `name` may carry one of Perseus's secrets:
    any `PERSEUS_REDIS_*`, and any other `PERSEUS_*` whose name says URL, password,
    secret, token, auth, key, credential or webhook (a URL may hold a password)."""
    upper = name.upper()
    if not upper.startswith("PERSEUS_"):
        return False
    return upper.startswith("PERSEUS_REDIS_") or any(word in upper for word in _SECRET_WORDS)


def child_environment(environ: Mapping[str, str], *, pass_env: bool) -> dict[str, str]:
    """The environment a child gets: the agent's, without Perseus's secrets unless
    `pass_env` (`perseus agent --pass-env`) asks for them. A child is someone
    else's program: it has no business with the agent's Redis credentials."""
    return {k: v for k, v in environ.items() if pass_env or not is_perseus_secret(k)}


def describe_exit(returncode: int) -> str:
    """`exited with code 3` or `killed by SIGKILL`, for logs and error entries."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


def _running_in_group(pgid: int) -> bool | None:
    """Whether a non-zombie process is in group `pgid`, from /proc; None if unknown."""
    proc = Path("/proc")
    if not proc.is_dir():
        return None
    try:
        entries = [e for e in proc.iterdir() if e.name.isdigit()]
    except OSError:
        return None
    for entry in entries:
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        # `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


class ChildProcess:
    """One supervised child command.

    Create it with `await ChildProcess.spawn(argv)`. `wait()` resolves with
    the exit code however the child ends; `terminate(grace_s)` stops the whole
    process group and returns the exit code.
    """

    def __init__(
        self, process: asyncio.subprocess.Process, argv: Sequence[str], pid: int, deadline_ms: float
    ) -> None:
        self._process = process
        self.argv: tuple[str, ...] = tuple(argv)
        self.pid: int = pid
        """The child command's own pid."""
        # The watchdog leads a session of its own, so the group id is its pid.
        self.pgid: int = process.pid
        self.deadline_ms = deadline_ms
        """The watchdog's current deadline, in monotonic ms (`inf`: none)."""
        self._stopping = False

    @classmethod
    async def spawn(
        cls,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        deadline_ms: float = math.inf,
    ) -> ChildProcess:
        """Start `argv` under a watchdog in a new session, stdin closed, stdout/stderr
        shared with the agent; the watchdog kills it at `deadline_ms` (monotonic ms)
        unless `renew` moves the deadline first.

        Raises OSError (for example FileNotFoundError) when it cannot be started.
        """
        if not argv:
            raise ValueError("no command to run")
        status_r, status_w = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                _WATCHDOG,
                str(status_w),
                repr(deadline_ms),
                "--",
                *argv,
                stdin=asyncio.subprocess.PIPE,
                start_new_session=True,
                pass_fds=(status_w,),
                env=env,
            )
        except BaseException:
            os.close(status_r)
            raise
        finally:
            os.close(status_w)
        report = await asyncio.to_thread(_read_all, status_r)
        word, _, number = report.partition(" ")
        if word == "started" and number.strip().isdigit():
            return cls(process, argv, int(number), deadline_ms)
        await process.wait()
        if word == "failed" and number.strip().isdigit():
            code = int(number)
            raise OSError(code, os.strerror(code), argv[0])
        raise OSError(f"the watchdog for {argv[0]!r} did not start (exit {process.returncode})")

    def renew(self, deadline_ms: float) -> None:
        """Move the watchdog's deadline (it only ever kills; a late renewal is harmless)."""
        stdin = self._process.stdin
        if stdin is None or stdin.is_closing() or self.returncode is not None:
            return
        self.deadline_ms = deadline_ms
        stdin.write(f"{deadline_ms!r}\n".encode())

    @property
    def killed_by_watchdog(self) -> bool:
        """True when the child was killed because its deadline passed."""
        return self.returncode == -signal.SIGKILL and time.monotonic() * 1000 >= self.deadline_ms

    def describe_exit(self) -> str:
        """How the child ended, naming the watchdog when it was the killer."""
        code = self.returncode
        if code is None:
            return "still running"
        if self.killed_by_watchdog:
            return "killed by its watchdog: the lease was not renewed in time"
        return describe_exit(code)

    @property
    def returncode(self) -> int | None:
        """The exit code once the child has ended (negative: killed by that signal)."""
        return self._process.returncode

    @property
    def stopping(self) -> bool:
        """True once `terminate` has been called: an exit from then on was asked for."""
        return self._stopping

    async def wait(self) -> int:
        """Wait for the child to end and return its exit code."""
        code = await self._process.wait()
        if self._process.stdin is not None:
            self._process.stdin.close()  # after the exit: closing it earlier kills the group
        return code

    def _signal_group(self, sig: signal.Signals) -> bool:
        """Send `sig` to the child's process group; False if nothing is left in it."""
        try:
            os.killpg(self.pgid, sig)
        except ProcessLookupError:
            return False
        except PermissionError:
            # The group id was reused by someone else's process: never signal it.
            return False
        return True

    def group_alive(self) -> bool:
        """True while any process of the child's group is still running.

        Zombies do not count: an orphaned grandchild that has exited waits for
        init to reap it, which can take a while, and it no longer does anything.
        """
        try:
            os.killpg(self.pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        running = _running_in_group(self.pgid)
        return True if running is None else running

    async def terminate(self, grace_s: float) -> int:
        """SIGTERM the whole group; SIGKILL it if the child outlives `grace_s`.

        Also used after the child ended on its own: whatever it left behind in
        its group (a shell's background jobs) gets the same treatment.
        Returns the child's exit code.
        """
        self._stopping = True
        deadline = time.monotonic() + grace_s
        if self._signal_group(signal.SIGTERM):
            log.debug("sent SIGTERM to process group %d", self.pgid)
        try:
            await asyncio.wait_for(self.wait(), timeout=max(0.0, grace_s))
        except TimeoutError:
            log.warning(
                "child (pid %d) still running %.1fs after SIGTERM: sending SIGKILL to its group",
                self.pid,
                grace_s,
            )
            self._signal_group(signal.SIGKILL)
            return await self._reaped()
        # The leader is gone; give the rest of its group what is left of the grace.
        await self._until_group_gone(deadline)
        if self._signal_group(signal.SIGKILL):
            log.debug("sent SIGKILL to the remains of process group %d", self.pgid)
        return await self._reaped()

    async def _until_group_gone(self, deadline: float) -> bool:
        """Poll until nothing of the group runs or `deadline` (monotonic) passes.

        Nothing notifies about processes that are not our children (the child
        is the watchdog's): poll. True when the group is gone.
        """
        while self.group_alive():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(_GROUP_POLL_S)
        return True

    async def _reaped(self) -> int:
        """The exit code once the watchdog has ended and a SIGKILL sent to the
        group has landed on every member: the watchdog can die of the signal a
        moment before the child it runs does."""
        code = await self.wait()
        await self._until_group_gone(time.monotonic() + _KILL_LANDS_S)
        return code

    def kill_now(self) -> None:
        """SIGKILL the whole group without waiting (forced exit of the agent)."""
        self._stopping = True
        self._signal_group(signal.SIGKILL)

    async def aclose(self) -> None:
        """Make sure nothing of the child is left running (used on every exit path)."""
        if self.returncode is None or self.group_alive():
            with contextlib.suppress(ProcessLookupError):
                self.kill_now()
            await self.wait()


def _read_all(fd: int) -> str:
    """Everything written to the pipe `fd` until its writer closes it (a few bytes)."""
    with os.fdopen(fd, "rb") as pipe:
        return pipe.read(256).decode(errors="replace")
