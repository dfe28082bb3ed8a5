"""The one pid check, the one process table, the kernel's hooks for processes
Perseus starts (parent death, subreaper), and where a pid can be checked at
all (`process_scope`)."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import functools
import os
import signal
import sys
from asyncio import AbstractEventLoop
from collections.abc import Callable
from pathlib import Path

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36


def pid_is_running(pid: int) -> bool:
    """Whether a process with this pid exists on this host.

    Only a definite "no such process" (or a zombie: it exited and waits for
    its parent to reap it) counts as not running: a process owned by
    another user (PermissionError), an error we cannot interpret, and pids that
    `kill` would read as process groups (0 and negatives) all count as running,
    because a wrong "not running" would let two live processes share a slot.
    """
    if pid <= 0:
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # OverflowError: beyond any pid this OS can hold
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """Whether `pid` has exited and only waits for its parent to reap it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # not Linux, or gone meanwhile: the caller's answer stands
    fields = stat.rpartition(")")[2].split()
    return bool(fields) and fields[0] == "Z"


@functools.cache
def _prctl() -> Callable[..., int] | None:
    """libc's `prctl`, or None where there is none (not Linux, no libc)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


def parent_death_hook(sig: signal.Signals = signal.SIGKILL) -> Callable[[], None] | None:
    """A pre-exec hook that makes the kernel send `sig` to the child when its
    parent dies (`PR_SET_PDEATHSIG`), so nothing a Perseus process started
    outlives it unattended, even when it is killed with -9.

    Everything that can allocate or import (finding libc, looking up the
    symbol) happens here, in the parent: between fork and exec the hook only
    makes two system calls, which is safe even with other threads around.
    Returns None where the facility does not exist (not Linux, no libc).
    """
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()
    death_signal = int(sig)

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the hook ran
            os._exit(1)

    return hook


def become_subreaper() -> bool:
    """Make this process a subreaper (`PR_SET_CHILD_SUBREAPER`): a descendant
    whose parent dies is handed to it instead of to init, however it left
    (`setsid`, a double fork), so it can still be found and killed.

    Returns False where the facility does not exist (not Linux, no libc).
    """
    prctl = _prctl()
    return prctl is not None and prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0


class ProcessInfo:
    """One line of the process table: what /proc/PID/stat says of a process.

    A plain class, not a dataclass: the child's watchdog imports this module
    and must start in a few milliseconds.

    Attributes:
        ppid: the parent's pid.
        pgid: the process group.
        zombie: it has exited and only waits for its parent to reap it.
    """

    __slots__ = ("ppid", "pgid", "zombie")

    def __init__(self, ppid: int, pgid: int, zombie: bool) -> None:
        self.ppid = ppid
        self.pgid = pgid
        self.zombie = zombie


def process_table() -> dict[int, ProcessInfo]:
    """Every process of this pid namespace, from /proc; empty where there is no /proc."""
    table: dict[int, ProcessInfo] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return table
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as stat:
                raw = stat.read()
        except OSError:
            continue  # gone meanwhile, or not ours to read
        # `pid (comm) state ppid pgrp ...`; comm may hold spaces and parentheses.
        fields = raw[raw.rfind(b")") + 1 :].split()
        with contextlib.suppress(IndexError, ValueError):
            table[int(name)] = ProcessInfo(int(fields[1]), int(fields[2]), fields[0] == b"Z")
    return table


def descendants(pid: int, table: dict[int, ProcessInfo] | None = None) -> dict[int, ProcessInfo]:
    """Every process below `pid` (children, grandchildren...), zombies included,
    from `table` (default: read now). Empty where there is no /proc."""
    table = process_table() if table is None else table
    children: dict[int, list[int]] = {}
    for child, info in table.items():
        children.setdefault(info.ppid, []).append(child)
    found: dict[int, ProcessInfo] = {}
    pending = list(children.get(pid, ()))
    while pending:
        child = pending.pop()
        if child not in found:
            found[child] = table[child]
            pending.extend(children.get(child, ()))
    return found


@functools.cache
def process_scope() -> str | None:
    """Where this process's pid means something: the running kernel's boot id
    and the pid namespace, e.g. `8d1f…/4026531836`; None where that cannot be
    told (not Linux, /proc unreadable).

    Two processes with the same scope see the same pids, so one may check
    whether the other's pid is still running. A host name cannot tell that:
    a container on the host network has the host's name but its own pids.
    """
    try:
        boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return f"{boot_id}/{namespace}" if boot_id else None


def gone_from_here(scope: str | None, pid: int | None) -> bool:
    """Whether the process `pid` of `scope` (`process_scope()` where it runs)
    is definitely gone: only when this process shares its scope and the pid
    is not running (`pid_is_running`). Anything else may still be alive."""
    if scope is None or pid is None or scope != process_scope():
        return False
    return not pid_is_running(pid)


def install_signal_handlers(
    loop: AbstractEventLoop, handler: Callable[[signal.Signals], None]
) -> list[signal.Signals]:
    """Send SIGTERM, SIGHUP and SIGINT to `handler` in `loop`, where the loop can
    take them (Unix, the main thread); returns those installed, for
    `loop.remove_signal_handler` when the process stops handling them."""
    installed = []
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, handler, sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not Unix / not main thread
            continue
        installed.append(sig)
    return installed
