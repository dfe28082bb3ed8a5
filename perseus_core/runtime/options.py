"""What `perseus agent` is asked to run, and how it can fail to get going."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass

from perseus_core.runtime.restarts import RestartMode
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
        warmup_s: time spent in `warming` when no readiness probe is given;
            a child must survive it.
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
        restart: which ends of a run start it again on its own (`restarts`).
        backoff_max_s: the longest wait between two automatic starts.
        start_secs: a run that fails sooner than this after its claim (or
            before it was active) is a quick failure.
        start_retries: quick failures in a row before the agent gives up (FATAL)
            until an operator's start or stop.
        ready_cmd: shell command; warming ends once it exits 0.
        ready_tcp: HOST:PORT; warming ends once it accepts a connection.
        ready_http: URL; warming ends once a GET answers 2xx.
        ready_file: path; warming ends once it exists.
        ready_timeout_s: a start whose readiness probes have not all passed
            after this long fails (warming -> idle, the probe's reason in the
            error entry).
        probe_interval_s: time between two rounds of readiness or health probes.
        probe_timeout_s: how long one probe may take before it counts as failed.
        health_cmd: shell command run while active; non-zero is a failure.
        health_tcp: HOST:PORT checked while active.
        health_http: URL checked while active (2xx).
        health_file: path checked while active (must exist).
        health_failures: failed health rounds in a row that make an error entry.
        health_restart: then also restart the child (through the restart policy).
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
    restart: RestartMode = RestartMode.ON_FAILURE
    backoff_max_s: float = 30.0
    start_secs: float = 10.0
    start_retries: int = 5
    ready_cmd: str | None = None
    ready_tcp: str | None = None
    ready_http: str | None = None
    ready_file: str | None = None
    ready_timeout_s: float = 60.0
    probe_interval_s: float = 1.0
    probe_timeout_s: float = 5.0
    health_cmd: str | None = None
    health_tcp: str | None = None
    health_http: str | None = None
    health_file: str | None = None
    health_failures: int = 3
    health_restart: bool = False


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
