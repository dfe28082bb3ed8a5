"""The watchdog between the agent and its child: `python -m perseus_core.runtime.watchdog`.

An agent that is frozen (SIGSTOP, a stalled VM) or cut off from Redis stops
renewing its lease, but it cannot stop its child either: the status key
expires, another agent claims the exchange and starts its own child while the
old one still runs. This small process closes that gap. It runs the child
and kills it, with every process the child started, when the agent has not
renewed a local deadline in time. The agent sets that deadline to end before
the Redis TTL of its last confirmed heartbeat does (see `supervisor`), so the
child is gone before anyone else can claim the exchange.

It also keeps the child's processes together (`containment`): it is a
subreaper, so what the child orphans (a `setsid` helper, a double-forked
daemon) becomes the watchdog's child; it puts the child into the child's
cgroup when the agent made one; and it leaves only when every process of the
child is gone. Killed processes are reaped here: none is left a zombie.

Protocol, kept to what a frozen agent cannot get wrong:

- argv: `DEADLINE_MS OUT_FD ERR_FD CGROUP -- COMMAND...`, where DEADLINE_MS is a
  point on the system-wide monotonic clock (`time.monotonic()` in ms, the same
  clock in every process of the host; `inf` for none), OUT_FD and ERR_FD are
  the write ends of the pipes the agent drains, which become the child's
  stdout and stderr, CGROUP is the directory of the child's cgroup (`-` for
  none) and COMMAND is the child;
- stdin: renewals from the agent, one new DEADLINE_MS per line, written as
  each heartbeat Redis confirmed lands (`Heartbeat.on_renewal`); end of file
  means the agent is gone (even after `kill -9`), and every process of the
  child is killed;
- stdout (and stderr) to the agent, one line each: `started PID HOW` (HOW as in
  `Containment`), `failed ERRNO` (the command cannot run) or `failed ERRNO
  cgroup` (the cgroup refused it), then `exited CODE` when the child itself
  ends (its exit code, negative for a signal); any other line is a message for
  the agent's log. Written without ever blocking: a frozen agent cannot stall
  a kill;
- exit: once the child and everything it started are gone, with the child's
  own exit status (a signal is re-raised on the watchdog), so an agent that
  missed the `exited` line still reads it as if there were no watchdog.

The watchdog leads the child's process group: it ignores the agent's
SIGTERM/SIGINT/SIGHUP (the agent signals the child's processes, not the
watchdog) and waits. It imports nothing beyond the standard library's basics:
it starts in a few milliseconds and holds no Redis connection.
"""

from __future__ import annotations

import errno
import fcntl
import math
import os
import select
import signal
import sys
import time
from pathlib import Path

from perseus_core.plumbing.processes import become_subreaper, descendants, parent_death_hook
from perseus_core.runtime.containment import ChildCgroup, Containment

_RELAYED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# Dispositions the child gets back: Python ignores SIGPIPE and SIGXFSZ, and an
# ignored signal stays ignored across exec.
_RESET = (*_RELAYED, signal.SIGCHLD, signal.SIGPIPE, signal.SIGXFSZ)
_POLL_MS = 20
"""How often a kill is repeated, or a cgroup looked at, while processes remain."""


def _tell(line: str) -> None:
    """One line to the agent, never blocking: a frozen agent's full pipe drops it,
    a dead agent's closed pipe too."""
    try:
        os.write(1, f"{line}\n".encode())
    except OSError:
        pass


class _SpawnFailed(Exception):
    def __init__(self, code: int, step: str) -> None:
        super().__init__(code, step)
        self.code = code
        self.step = step


def _spawn(argv: list[str], out_fd: int, err_fd: int, cgroup: ChildCgroup | None) -> int:
    """Fork and exec the child; returns its pid. Raises _SpawnFailed if it could
    not join its cgroup or exec."""
    die_with_us = parent_death_hook()
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the child: default signals, stdin closed, dies with the watchdog
        step = "cgroup"
        try:
            os.close(read_end)
            signal.set_wakeup_fd(-1)
            for sig in _RESET:
                signal.signal(sig, signal.SIG_DFL)
            if cgroup is not None:
                procs = os.open(cgroup.procs_file, os.O_WRONLY)
                os.write(procs, str(os.getpid()).encode())
                os.close(procs)
            step = "exec"
            devnull = os.open(os.devnull, os.O_RDONLY)
            for fd, target in ((devnull, 0), (out_fd, 1), (err_fd, 2)):
                os.dup2(fd, target)
                os.close(fd)
            if die_with_us is not None:
                die_with_us()
            os.execvp(argv[0], argv)
        except OSError as exc:
            os.write(write_end, f"{exc.errno or errno.ENOEXEC} {step}".encode())
        os._exit(127)
    os.close(write_end)
    os.close(out_fd)  # the child holds them now: the agent sees their end with the child's
    os.close(err_fd)
    with os.fdopen(read_end, "rb") as failure:
        report = failure.read().split()
    if report:
        os.waitpid(pid, 0)
        raise _SpawnFailed(int(report[0]), report[1].decode())
    return pid


def _exit_like(code: int) -> None:
    """Leave with the child's exit code, or by the signal that killed it."""
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        code = 128 - code  # only if the signal does not end a process by default
    sys.exit(code)


class _Watch:
    """The watchdog's loop: the child, its orphans, the agent's renewals, the deadline."""

    def __init__(
        self, pid: int, deadline_ms: float, how: Containment, cgroup: ChildCgroup | None, wake: int
    ) -> None:
        self.pid = pid
        self.deadline_ms = deadline_ms
        self.how = how
        self.cgroup = cgroup
        self.code: int | None = None
        """The child's exit code, once it has ended."""
        self._wake = wake
        self._poller = select.poll()
        self._poller.register(0, select.POLLIN)
        self._poller.register(wake, select.POLLIN)
        self._pending = b""

    def reap(self) -> bool:
        """Reap every process of ours that ended; True while any is left.
        The child's own end is told to the agent at once."""
        while True:
            try:
                done, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return False
            if done == 0:
                return True
            if done == self.pid:
                self.code = os.waitstatus_to_exitcode(status)
                _tell(f"exited {self.code}")

    def empty(self, children_left: bool) -> bool:
        """Whether nothing of the child is left: no process of ours, an empty cgroup."""
        if children_left:
            return False
        return self.cgroup is None or not self.cgroup.populated()

    def leave(self) -> None:
        """Everything is gone: remove the cgroup, exit like the child."""
        if self.cgroup is not None:
            try:
                self.cgroup.remove()
            except OSError as exc:
                _tell(f"perseus watchdog: cannot remove {self.cgroup.path}: {exc.strerror}")
        _exit_like(-signal.SIGKILL if self.code is None else self.code)

    def kill_all(self, why: str) -> None:
        """SIGKILL every process of the child, reap them all, then leave."""
        _tell(f"perseus watchdog: {why}; killing every process of the child")
        self._poller.unregister(0)  # renewals no longer matter, and a closed stdin never sleeps
        while True:
            if self.cgroup is not None:
                self.cgroup.kill()
            if self.how is Containment.GROUP:
                os.killpg(os.getpgrp(), signal.SIGKILL)  # nothing better here: us too
            for pid in descendants(os.getpid()):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    continue  # gone meanwhile
            if self.empty(self.reap()):
                self.leave()
            self.wait(_POLL_MS)

    def wait(self, timeout_ms: int) -> bool:
        """Sleep until a process of ours ends, the agent writes, or `timeout_ms`
        passes (-1: no timeout). False when the agent is gone (end of file)."""
        for fd, _ in self._poller.poll(timeout_ms):
            if fd == self._wake:
                while True:
                    try:
                        if not os.read(self._wake, 512):
                            break
                    except BlockingIOError:
                        break
            elif fd == 0 and not self._renewals():
                return False
        return True

    def _renewals(self) -> bool:
        """Take the agent's new deadlines; False at end of file."""
        chunk = os.read(0, 4096)
        if not chunk:
            return False
        self._pending += chunk
        *lines, self._pending = self._pending.split(b"\n")
        for line in lines:
            try:
                self.deadline_ms = float(line)
            except ValueError:
                continue  # only the agent writes here; never die of a bad line
        return True

    def run(self) -> None:
        """Until the child and everything it started are gone, or a kill."""
        while True:
            if self.empty(self.reap()) and self.code is not None:
                self.leave()
            left_ms = self.deadline_ms - time.monotonic() * 1000
            if left_ms <= 0:
                self.kill_all("the agent did not renew its lease deadline in time")
            wait_ms = -1 if math.isinf(left_ms) else max(1, math.ceil(left_ms))
            if self.code is not None and self.cgroup is not None:
                # The child has ended; what is left of it may not be ours to
                # hear about (a cgroup empties without a SIGCHLD here): look.
                wait_ms = _POLL_MS if wait_ms < 0 else min(wait_ms, _POLL_MS)
            if not self.wait(wait_ms):
                self.kill_all("the agent is gone")


def _never_block(fd: int) -> None:
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)


def main(argv: list[str]) -> None:
    """Run `DEADLINE_MS OUT_FD ERR_FD CGROUP -- COMMAND...` (see the module docstring)."""
    if len(argv) < 6 or argv[4] != "--":
        sys.exit(f"usage: python -m {__spec__.name} DEADLINE_MS OUT_FD ERR_FD CGROUP -- COMMAND...")
    for sig in _RELAYED:
        signal.signal(sig, signal.SIG_IGN)
    for fd in (1, 2):
        _never_block(fd)
    cgroup = None if argv[3] == "-" else ChildCgroup(Path(argv[3]))
    subreaper = become_subreaper()
    how = (
        Containment.CGROUP
        if cgroup is not None
        else Containment.SUBREAPER
        if subreaper
        else Containment.GROUP
    )
    # Every process of ours that ends wakes the loop: the child, or an orphan.
    wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda _signum, _frame: None)
    try:
        pid = _spawn(argv[5:], int(argv[1]), int(argv[2]), cgroup)
    except _SpawnFailed as exc:
        _tell(f"failed {exc.code}" + (" cgroup" if exc.step == "cgroup" else ""))
        if cgroup is not None:
            cgroup.remove()
        sys.exit(127)
    _tell(f"started {pid} {how.value}")
    _Watch(pid, float(argv[0]), how, cgroup, wake_read).run()


if __name__ == "__main__":
    main(sys.argv[1:])
