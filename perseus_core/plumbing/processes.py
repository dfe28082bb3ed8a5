"""The one pid check and the one parent-death hook for processes Perseus starts."""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def pid_is_running(pid: int) -> bool:
    """Whether a process with this pid exists on this host.

    Only a definite "no such process" counts as not running: a process owned by
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
    except OSError:
        return True
    return True


def parent_death_hook(sig: signal.Signals = signal.SIGKILL) -> Callable[[], None] | None:
    """A pre-exec hook that makes the kernel send `sig` to the child when its
    parent dies (`PR_SET_PDEATHSIG`), so nothing a Perseus process started
    outlives it unattended, even when it is killed with -9.

    Everything that can allocate or import (finding libc, looking up the
    symbol) happens here, in the parent: between fork and exec the hook only
    makes two system calls, which is safe even with other threads around.
    Returns None where the facility does not exist (not Linux, no libc).
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    parent = os.getpid()
    death_signal = int(sig)

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, death_signal, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the hook ran
            os._exit(1)

    return hook
