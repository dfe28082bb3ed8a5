"""What `perseus agent` is asked to run, and how it can fail to get going."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass

from perseus_core.wire.errors import PerseusError
from perseus_core.wire.text import clean

FORCED_EXIT = 130
"""Exit code after a second Ctrl-C (128 + SIGINT, as shells report it)."""


class StartupFailed(PerseusError):
    """The agent could not get going: Redis unreachable past the startup
    timeout, or refusing the credentials (retrying would not help)."""


@dataclass(frozen=True, slots=True)
class AgentOptions:
    """What `perseus agent` was asked to run.

    Attributes:
        exchange_id: the slot.
        exchange_name: the exchange's name (validated by the caller).
        display_name: catalog display name; defaults to the name.
        command: the child command line run while the slot is held; empty for none.
        autostart: run a start as soon as the agent is listening.
        symbol_count: `symbolCount` reported once active.
        warmup_s: time spent in `warming`; a child must survive it.
        admin_email: operator identity written in the status.
        admin_display_name: operator display name written in the status.
        startup_timeout_s: give up when Redis is still unreachable after this
            long at startup; None keeps trying (a service manager may start
            the agent before Redis, and the agent must not die for that).
        hostname: reported hostname; defaults to this machine's.
        pass_env: give the child Perseus's secrets too (`PERSEUS_REDIS_URL`...);
            by default they are removed from its environment.
        rename: when the catalog names the exchange id differently, rename
            its entry to `exchange_name` instead of refusing to start.
    """

    exchange_id: int
    exchange_name: str
    display_name: str | None = None
    command: Sequence[str] = ()
    autostart: bool = False
    symbol_count: int = 0
    warmup_s: float = 2.0
    admin_email: str | None = None
    admin_display_name: str | None = None
    startup_timeout_s: float | None = None
    hostname: str | None = None
    pass_env: bool = False
    rename: bool = False


def child_command_problem(command: Sequence[str]) -> str | None:
    """Why the child command cannot run, or None: checked at start, so a typo
    is one line and exit 2 now rather than an error at the first `start`
    while the agent sits READY. A name is looked up on PATH, a path (with a
    `/`) is taken as it is; either must be an executable file."""
    if not command:
        return None
    program = command[0]
    if shutil.which(program) is not None:
        return None
    shown = clean(program, 200)
    if "/" not in program:
        return f"child command not found on PATH: {shown}"
    if not os.path.exists(program):
        return f"child command not found: {shown}"
    if os.path.isdir(program):
        return f"child command is a directory: {shown}"
    return f"child command is not executable: {shown} (chmod +x?)"
