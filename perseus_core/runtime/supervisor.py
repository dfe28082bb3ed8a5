"""Run one child command under the agent: contained, watched, stopped for sure.

The child gets a session (and so a process group) of its own, so that a
Ctrl-C or a hangup of the agent's terminal reaches the agent only, which then
decides how to stop the child (graceful stop first, not a signal storm). It
shares no pipe or terminal with the agent: stdin is closed, stdout and stderr
are pipes the agent drains (`output`), so a full pipe can never freeze it.

Every process the child starts is kept with it (`containment`: a cgroup of
its own where the host allows it, its watchdog as subreaper otherwise), so a
stop reaches all of them, `setsid` and double-forked ones included, and
nothing is left behind: not after a stop, not after the child exits on its
own, not after the agent is killed.

The child runs under a watchdog (`perseus_core.runtime.watchdog`), which
leads that process group. The agent renews a deadline on the watchdog as
each heartbeat that Redis confirmed lands (the instance's heartbeat tells it;
nothing polls); when the agent is frozen, cut off from Redis or killed with
-9, the renewals stop and the watchdog kills every process of the child
before the status key can expire and another instance take over. The
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

from perseus_core.runtime.containment import ChildCgroup, ChildTree, Containment, cgroup_home
from perseus_core.runtime.output import OutputDrain, OutputLog
from perseus_core.store.lease import RATE_MARGIN
from perseus_core.wire.text import clean

log = logging.getLogger(__name__)

_GROUP_POLL_S = 0.02
_KILL_LANDS_S = 5.0
"""How long the watchdog may take to collect every process of a child after
SIGKILL before it is killed too (it is alive and only slow: a loaded host)."""
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


_TOLD: set[str] = set()
"""Why children get no cgroup, as already logged (once is enough)."""


def _new_cgroup() -> ChildCgroup | None:
    """A cgroup of its own for the next child, where the host allows one."""
    home = cgroup_home()
    made = home if isinstance(home, str) else ChildCgroup.create(home)
    if isinstance(made, str):
        level = logging.DEBUG if made in _TOLD else logging.INFO
        _TOLD.add(made)
        log.log(level, "no cgroup for the child (%s): its watchdog keeps its processes", made)
        return None
    return made


class ChildProcess:
    """One supervised child command, with every process it starts.

    Create it with `await ChildProcess.spawn(argv)`. `wait()` resolves with
    the child's exit code however it ends; `terminate(grace_s)` stops every
    process of the child (`containment`) and returns the exit code.
    """

    def __init__(
        self,
        process: asyncio.subprocess.Process,
        argv: Sequence[str],
        pid: int,
        tree: ChildTree,
        drain: OutputDrain,
        deadline_ms: float,
    ) -> None:
        self._process = process
        self.argv: tuple[str, ...] = tuple(argv)
        self.pid: int = pid
        """The child command's own pid."""
        # The watchdog leads a session of its own, so the group id is its pid.
        self.pgid: int = process.pid
        self.tree = tree
        """Every process of the child: how it is kept, found and killed."""
        self._drain = drain
        self.deadline_ms = deadline_ms
        """The watchdog's current deadline, in monotonic ms (`inf`: none)."""
        self._stopping = False
        self._exit: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._watchdog_left = asyncio.Event()
        self._reports = asyncio.create_task(self._read_reports(), name=f"child {pid} watchdog")

    @classmethod
    async def spawn(
        cls,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        deadline_ms: float = math.inf,
        drain: OutputDrain | None = None,
        cgroup: bool = True,
    ) -> ChildProcess:
        """Start `argv` under a watchdog in a new session, stdin closed, stdout and
        stderr into pipes that `drain` reads (by default: lines into this log, at a
        bounded rate); the watchdog kills it at `deadline_ms` (monotonic ms)
        unless `renew` moves the deadline first. With `cgroup`, the child gets a
        cgroup of its own where the host allows it.

        Raises OSError (for example FileNotFoundError) when it cannot be started.
        """
        if not argv:
            raise ValueError("no command to run")
        if drain is None:
            lines = OutputLog("child")
            drain = OutputDrain(lines, on_end=lines.flush)
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        await drain.attach("stdout", out_read)
        await drain.attach("stderr", err_read)
        contained = _new_cgroup() if cgroup else None
        try:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                _WATCHDOG,
                repr(deadline_ms),
                str(out_write),
                str(err_write),
                "-" if contained is None else str(contained.path),
                "--",
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                pass_fds=(out_write, err_write),
                env=env,
            )
        except BaseException:
            drain.close()
            if contained is not None:
                contained.remove()
            raise
        finally:
            os.close(out_write)
            os.close(err_write)
        try:
            pid, how = await cls._started(process, argv[0])
        except BaseException:
            drain.close()
            if contained is not None:
                contained.remove()
            raise
        tree = ChildTree(
            how,
            process.pid,
            contained if how is Containment.CGROUP else None,
            watchdog_running=lambda: process.returncode is None,
        )
        return cls(process, argv, pid, tree, drain, deadline_ms)

    @staticmethod
    async def _started(
        process: asyncio.subprocess.Process, program: str
    ) -> tuple[int, Containment]:
        """The watchdog's first report: the child's pid and how it is kept.

        Raises OSError when the command could not be run.
        """
        assert process.stdout is not None
        while True:
            try:
                line = await process.stdout.readline()
            except ValueError:  # a line over the reader's limit: skipped, not fatal
                continue
            if not line:
                break
            words = line.decode(errors="replace").split()
            if not words:
                continue
            how = {c.value: c for c in Containment}.get(words[2]) if len(words) == 3 else None
            if words[0] == "started" and words[1].isdigit() and how is not None:
                return int(words[1]), how
            if words[0] == "failed" and words[1:2] and words[1].isdigit():
                await process.wait()
                code = int(words[1])
                if words[2:] == ["cgroup"]:
                    raise OSError(
                        code,
                        f"its cgroup refused it ({os.strerror(code)});"
                        " PERSEUS_CHILD_CGROUP=off runs children without one",
                        program,
                    )
                raise OSError(code, os.strerror(code), program)
            log.warning("%s", clean(" ".join(words), 1000))
        await process.wait()
        raise OSError(f"the watchdog for {program!r} did not start (exit {process.returncode})")

    async def _read_reports(self) -> None:
        """The watchdog's reports until it leaves: the child's exit, its messages."""
        stdout = self._process.stdout
        assert stdout is not None
        while True:
            try:
                line = await stdout.readline()
            except ValueError:  # a line over the reader's limit: skipped, not fatal
                continue
            if not line:
                break
            words = line.decode(errors="replace").split()
            if len(words) == 2 and words[0] == "exited" and words[1].lstrip("-").isdigit():
                if not self._exit.done():
                    self._exit.set_result(int(words[1]))
            elif words:
                log.warning("%s", clean(" ".join(words), 1000))
        code = await self._process.wait()
        if not self._exit.done():  # it died without a word: killed from outside
            self._exit.set_result(code)
        if self._process.stdin is not None:
            self._process.stdin.close()  # after it left: an earlier close kills the child
        self.tree.remove()
        self._watchdog_left.set()

    def renew(self, deadline_ms: float) -> None:
        """Move the watchdog's deadline (it only ever kills; a late renewal is harmless)."""
        stdin = self._process.stdin
        if stdin is None or stdin.is_closing() or self._process.returncode is not None:
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
        """The exit code once the child has ended (negative: killed by that signal).

        The child's own: what it started may still run (`running`).
        """
        return self._exit.result() if self._exit.done() else None

    @property
    def stopping(self) -> bool:
        """True once `terminate` has been called: an exit from then on was asked for."""
        return self._stopping

    async def wait(self) -> int:
        """Wait for the child itself to end and return its exit code."""
        return await asyncio.shield(self._exit)

    def running(self) -> bool:
        """True while any process of the child, or its watchdog, is still running.

        Zombies do not count: an exited process whose parent has not reaped it
        yet no longer does anything.
        """
        return not self._watchdog_left.is_set() or self.tree.running()

    async def terminate(self, grace_s: float) -> int:
        """SIGTERM every process of the child; SIGKILL them all if any outlives `grace_s`.

        Also used after the child ended on its own: whatever it left behind
        (a shell's background jobs, a daemon it forked) gets the same treatment.
        Returns the child's exit code once nothing of it is left.
        """
        self._stopping = True
        deadline = time.monotonic() + grace_s
        sent = self.tree.signal(signal.SIGTERM)
        if sent:
            log.debug("sent SIGTERM to %d process(es) of child %d", sent, self.pid)
        if not await self._gone_by(deadline):
            log.warning(
                "child (pid %d) %s %.1fs after SIGTERM: sending SIGKILL to every process of it",
                self.pid,
                "still running" if self.returncode is None else "ended, but what it started runs",
                grace_s,
            )
            await self._kill_all()
        code = await self.wait()
        await self._finish()
        return code

    async def _gone_by(self, deadline: float) -> bool:
        """Wait until nothing of the child is left, or `deadline` (monotonic) passes.

        The watchdog leaves only once every process it knows of is gone; what
        it cannot know of (the rest of its group, should it have been killed
        from outside) is looked at here. True when all is gone.
        """
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                self._watchdog_left.wait(), max(0.0, deadline - time.monotonic())
            )
        if not self._watchdog_left.is_set():
            return False
        while self.tree.running():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(_GROUP_POLL_S)
        return True

    async def _kill_all(self) -> None:
        """SIGKILL every process of the child (again, for any forked meanwhile)
        until its watchdog has collected them all and left; a watchdog that
        does not is killed too."""
        deadline = time.monotonic() + _KILL_LANDS_S
        while time.monotonic() < deadline:
            self.tree.kill()
            if await self._gone_by(min(deadline, time.monotonic() + _GROUP_POLL_S)):
                return
        log.error(
            "child (pid %d): its watchdog did not leave %.1fs after SIGKILL: killing it too",
            self.pid,
            _KILL_LANDS_S,
        )
        self.tree.kill_watchdog()
        await self._gone_by(time.monotonic() + _KILL_LANDS_S)

    async def _finish(self) -> None:
        """Once nothing of the child runs: read what it wrote last (stop reading
        if something still holds a pipe), collect the watchdog's last report,
        remove the cgroup."""
        if not await self._drain.wait_closed(_KILL_LANDS_S):
            self._drain.close()
        if not self._reports.done():
            self._reports.cancel()  # only a watchdog that could not be killed
        with contextlib.suppress(asyncio.CancelledError):
            await self._reports
        self.tree.remove()

    def kill_now(self) -> None:
        """SIGKILL every process of the child without waiting (forced exit of the
        agent: its watchdog, hearing the agent leave, kills what is forked meanwhile)."""
        self._stopping = True
        self.tree.kill()

    async def aclose(self) -> None:
        """Make sure nothing of the child is left running (used on every exit
        path). Its pipes and reports are closed even when killing it failed."""
        try:
            if self.running():
                self._stopping = True
                await self._kill_all()
        finally:
            await self._finish()
