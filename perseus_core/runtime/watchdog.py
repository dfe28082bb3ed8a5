"""The watchdog between the agent and its child: `python -m perseus_core.runtime.watchdog`.

An agent that is frozen (SIGSTOP, a stalled VM) or cut off from Redis stops
renewing its lease, but it cannot stop its child either: the status key
expires, another agent claims the exchange and starts its own child while the
old one still runs. This small process closes that gap. It runs the child
and kills it, with everything in its process group, when the agent has not
renewed a local deadline in time. The agent sets that deadline to end before
the Redis TTL of its last confirmed heartbeat does (see `supervisor`), so the
child is gone before anyone else can claim the exchange.

Protocol, kept to what a frozen agent cannot get wrong:

- argv: `STATUS_FD DEADLINE_MS -- COMMAND...`, where DEADLINE_MS is a point on the
  system-wide monotonic clock (`time.monotonic()` in ms, the same clock in
  every process of the host; `inf` for none) and COMMAND is the child;
- stdin: renewals from the agent, one new DEADLINE_MS per line, written as
  each heartbeat Redis confirmed lands (`Heartbeat.on_renewal`); end of file
  means the agent is gone (even after `kill -9`), and the group is killed;
- STATUS_FD: one status line for the agent, `started PID` or `failed ERRNO`;
- exit: the child's own exit status (a signal is re-raised on the watchdog),
  so the agent reads it as if there were no watchdog in between.

The watchdog leads the process group the agent signals: it ignores the
agent's SIGTERM/SIGINT/SIGHUP (they reach the child through the group) and
waits for the child. It imports nothing beyond the standard library's basics:
it starts in a few milliseconds and holds no Redis connection.
"""

from __future__ import annotations

import errno
import math
import os
import select
import signal
import sys
import time

from perseus_core.plumbing.processes import parent_death_hook

_RELAYED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_POLL_MS = 50  # without pidfd_open (Linux < 5.3), how often the child is looked at


def _spawn(argv: list[str], status_fd: int) -> int:
    """Fork and exec the child; returns its pid. Raises OSError if exec failed."""
    die_with_us = parent_death_hook()
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:  # the child: default signals, stdin closed, dies with the watchdog
        try:
            os.close(read_end)
            os.close(status_fd)
            for sig in _RELAYED:
                signal.signal(sig, signal.SIG_DFL)
            os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
            if die_with_us is not None:
                die_with_us()
            os.execvp(argv[0], argv)
        except OSError as exc:
            os.write(write_end, str(exc.errno or errno.ENOEXEC).encode())
        os._exit(127)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as failure:
        code = failure.read()
    if code:
        os.waitpid(pid, 0)
        raise OSError(int(code), os.strerror(int(code)))
    return pid


def _exit_like(status: int) -> None:
    """Leave with the child's wait status: its exit code, or the signal that killed it."""
    code = os.waitstatus_to_exitcode(status)
    if code < 0:
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        code = 128 - code  # only if the signal does not end a process by default
    sys.exit(code)


def _kill_group(why: str) -> None:
    """SIGKILL the whole process group (this watchdog included): the child is gone."""
    sys.stderr.write(f"perseus watchdog: {why}; killing process group {os.getpgrp()}\n")
    sys.stderr.flush()
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _supervise(pid: int, deadline_ms: float) -> None:
    """Wait for the child, the agent's renewals, or the deadline, whichever comes first."""
    poller = select.poll()
    poller.register(0, select.POLLIN)
    child_fd = os.pidfd_open(pid) if hasattr(os, "pidfd_open") else -1
    if child_fd >= 0:
        poller.register(child_fd, select.POLLIN)
    pending = b""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            _exit_like(status)
        left_ms = deadline_ms - time.monotonic() * 1000
        if left_ms <= 0:
            _kill_group("the agent did not renew its lease deadline in time")
        wait_ms = -1 if math.isinf(left_ms) else max(1, math.ceil(left_ms))
        if child_fd < 0:
            wait_ms = _POLL_MS if wait_ms < 0 else min(wait_ms, _POLL_MS)
        for fd, _ in poller.poll(wait_ms):
            if fd != 0:
                continue
            chunk = os.read(0, 4096)
            if not chunk:
                _kill_group("the agent is gone")
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                try:
                    deadline_ms = float(line)
                except ValueError:
                    continue  # only the agent writes here; never die of a bad line


def main(argv: list[str]) -> None:
    """Run `STATUS_FD DEADLINE_MS -- COMMAND...` (see the module docstring)."""
    if len(argv) < 4 or argv[2] != "--":
        sys.exit(f"usage: python -m {__spec__.name} STATUS_FD DEADLINE_MS -- COMMAND...")
    for sig in _RELAYED:
        signal.signal(sig, signal.SIG_IGN)
    status_fd = int(argv[0])
    try:
        pid = _spawn(argv[3:], status_fd)
    except OSError as exc:
        os.write(status_fd, f"failed {exc.errno}\n".encode())
        sys.exit(127)
    os.write(status_fd, f"started {pid}\n".encode())
    os.close(status_fd)
    _supervise(pid, float(argv[1]))


if __name__ == "__main__":
    main(sys.argv[1:])
