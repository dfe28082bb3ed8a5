"""The child supervisor on real processes: start, stop of the whole group, exits described.

Every process here is real; every wait is for a condition (a pid file written,
a process gone), never a guessed sleep. Whatever a test started is killed in
teardown, group and all, should the test fail half-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from perseus_core.runtime.supervisor import ChildProcess, describe_exit
from tests.agent.conftest import CHILD_IGNORE_TERM, CHILD_SLEEP, pid_alive, read_pid
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parent.parent.parent

# A parent that starts a child (CHILD_SLEEP) through the parent-death hook,
# prints the child's pid, then waits to be killed.
PARENT = """
import subprocess, sys, time
from perseus_core.plumbing.processes import parent_death_hook
child = subprocess.Popen(
    [sys.executable, "-c", sys.argv[1], sys.argv[2]], preexec_fn=parent_death_hook()
)
print(child.pid, flush=True)
time.sleep(120)
"""


@pytest.fixture
async def children() -> AsyncIterator[list[ChildProcess]]:
    """Children the test started; their groups are killed at the end in any case."""
    started: list[ChildProcess] = []
    yield started
    for child in started:
        await child.aclose()


async def spawn(children: list[ChildProcess], argv: list[str]) -> ChildProcess:
    child = await ChildProcess.spawn(argv)
    children.append(child)
    return child


async def test_spawn_runs_the_command_in_a_group_of_its_own(
    children: list[ChildProcess], tmp_path: Path
) -> None:
    pidfile = tmp_path / "child.pid"
    child = await spawn(children, [sys.executable, "-c", CHILD_SLEEP, str(pidfile)])
    assert await eventually(lambda: read_pid(pidfile), what="the child's pid file") == child.pid
    assert child.returncode is None and not child.stopping
    # The watchdog leads the group; the child is in it.
    assert os.getpgid(child.pid) == child.pgid != os.getpgid(0)
    assert child.group_alive()


async def test_a_child_that_ends_on_its_own_reports_its_exit_code(
    children: list[ChildProcess],
) -> None:
    child = await spawn(children, [sys.executable, "-c", "import sys; sys.exit(3)"])
    assert await child.wait() == 3
    assert child.returncode == 3 and not child.stopping
    assert describe_exit(3) == "exited with code 3"


async def test_terminate_sends_sigterm_to_the_group(
    children: list[ChildProcess], tmp_path: Path
) -> None:
    pidfile = tmp_path / "child.pid"
    child = await spawn(children, [sys.executable, "-c", CHILD_SLEEP, str(pidfile)])
    await eventually(lambda: read_pid(pidfile), what="the child's pid file")
    started = time.monotonic()
    code = await child.terminate(grace_s=5.0)
    assert code == -signal.SIGTERM
    assert time.monotonic() - started < 4.0  # ended by SIGTERM, not by the grace's SIGKILL
    assert child.stopping and not child.group_alive()
    assert describe_exit(code) == "killed by SIGTERM"


async def test_a_child_that_traps_sigterm_is_killed_after_the_grace(
    children: list[ChildProcess], tmp_path: Path
) -> None:
    pidfile = tmp_path / "child.pid"
    child = await spawn(children, [sys.executable, "-c", CHILD_IGNORE_TERM, str(pidfile)])
    await eventually(lambda: read_pid(pidfile), what="the child to trap SIGTERM")
    started = time.monotonic()
    code = await child.terminate(grace_s=0.5)
    assert time.monotonic() - started >= 0.5
    assert code == -signal.SIGKILL
    assert describe_exit(code) == "killed by SIGKILL"
    assert not pid_alive(child.pid)


async def test_a_shell_wrappers_grandchild_is_stopped_with_the_group(
    children: list[ChildProcess], tmp_path: Path
) -> None:
    pidfile = tmp_path / "grandchild.pid"
    # The shell forks the sleeper and waits: the grandchild is the one that works.
    script = f'{sys.executable} -c "{CHILD_SLEEP}" {pidfile}; echo done'
    child = await spawn(children, ["/bin/sh", "-c", script])
    grandchild = await eventually(lambda: read_pid(pidfile), what="the grandchild's pid file")
    assert grandchild != child.pid
    assert os.getpgid(grandchild) == child.pgid
    await child.terminate(grace_s=5.0)
    await eventually(lambda: not pid_alive(grandchild), what="the grandchild to be stopped")
    assert not child.group_alive()


async def test_kill_now_kills_the_group_without_waiting(
    children: list[ChildProcess], tmp_path: Path
) -> None:
    pidfile = tmp_path / "child.pid"
    child = await spawn(children, [sys.executable, "-c", CHILD_IGNORE_TERM, str(pidfile)])
    await eventually(lambda: read_pid(pidfile), what="the child's pid file")
    child.kill_now()
    assert child.stopping
    assert await child.wait() == -signal.SIGKILL


@pytest.mark.parametrize(
    ("code", "text"),
    [
        (0, "exited with code 0"),
        (3, "exited with code 3"),
        (-signal.SIGTERM, "killed by SIGTERM"),
        (-signal.SIGKILL, "killed by SIGKILL"),
        (-200, "killed by signal 200"),
    ],
)
def test_describe_exit(code: int, text: str) -> None:
    assert describe_exit(code) == text


async def test_a_command_that_does_not_exist_raises_oserror(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await ChildProcess.spawn([str(tmp_path / "no-such-command")])
    with pytest.raises(ValueError, match="no command"):
        await ChildProcess.spawn([])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
async def test_a_child_started_with_the_parent_death_hook_dies_with_its_parent(
    tmp_path: Path,
) -> None:
    pidfile = tmp_path / "child.pid"
    parent = await asyncio.create_subprocess_exec(
        *[sys.executable, "-c", PARENT, CHILD_SLEEP, str(pidfile)],
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    child_pid: int | None = None
    try:
        assert parent.stdout is not None
        child_pid = int(await parent.stdout.readline())
        await eventually(lambda: read_pid(pidfile), what="the child's pid file")
        parent.kill()
        await parent.wait()
        await eventually(lambda: not pid_alive(child_pid), what="the child to die with its parent")
    finally:
        if parent.returncode is None:
            parent.kill()
            await parent.wait()
        if child_pid is not None and pid_alive(child_pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child_pid, signal.SIGKILL)
