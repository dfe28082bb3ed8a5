"""Run one child command under the agent: its own process group, watched, stopped for sure.

The child gets a session (and so a process group) of its own, so that:

- a Ctrl-C in the agent's terminal reaches the agent only, which then decides
  how to stop the child (graceful stop first, not a signal storm);
- a stop can signal the *whole* group: a shell wrapper's grandchildren are
  stopped with it instead of being left running as orphans.

On Linux the child also asks the kernel to SIGKILL it when the agent dies
(`PR_SET_PDEATHSIG`): an agent killed with -9 stops heartbeating, its slot
expires and another instance may take over, so its child must not keep
working as an invisible second instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path

from perseus_core.plumbing.processes import parent_death_hook

log = logging.getLogger(__name__)

_GROUP_POLL_S = 0.02


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

    def __init__(self, process: asyncio.subprocess.Process, argv: Sequence[str]) -> None:
        self._process = process
        self.argv: tuple[str, ...] = tuple(argv)
        self.pid: int = process.pid
        # The child leads its own session, so its process group id is its pid.
        self.pgid: int = process.pid
        self._stopping = False

    @classmethod
    async def spawn(cls, argv: Sequence[str], *, env: dict[str, str] | None = None) -> ChildProcess:
        """Start `argv` in a new session, stdin closed, stdout/stderr shared with the agent.

        Raises OSError (for example FileNotFoundError) when it cannot be started.
        """
        if not argv:
            raise ValueError("no command to run")
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=parent_death_hook(),
            env=env,
        )
        return cls(process, argv)

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
        return await self._process.wait()

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
            return await self.wait()
        # The leader is gone; give the rest of its group what is left of the grace.
        # Nothing notifies about processes that are not our children: poll.
        while time.monotonic() < deadline:
            if not self.group_alive():
                break
            await asyncio.sleep(_GROUP_POLL_S)
        if self._signal_group(signal.SIGKILL):
            log.debug("sent SIGKILL to the remains of process group %d", self.pgid)
        return await self.wait()

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
