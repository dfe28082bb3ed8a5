"""The child supervisor on real processes: start, stop of every process, exits, output.

Every process here is real; every wait is for a condition (a pid file written,
a process gone), never a guessed sleep. Whatever a test started is killed in
teardown, group and all, should the test fail half-way.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from perseus_core.runtime.containment import (
    CGROUP_PREFIX,
    ChildCgroup,
    Containment,
    cgroup_home,
    remove_stale_cgroups,
)
from perseus_core.runtime.output import MAX_LINE_BYTES, OutputDrain, OutputLog
from perseus_core.runtime.supervisor import ChildProcess, describe_exit
from tests.agent.conftest import (
    CHILD_IGNORE_TERM,
    CHILD_SLEEP,
    FAMILY_ROLES,
    family_child,
    family_pids,
    pid_alive,
    read_pid,
)
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
    assert child.running()


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
    assert child.stopping and not child.running()
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
    assert not child.running()


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


# --- every process of the child -----------------------------------------------

_HOME = cgroup_home()

CONTAINMENT = [
    pytest.param(
        True,
        id="cgroup",
        marks=pytest.mark.skipif(
            isinstance(_HOME, str), reason=f"this host gives no cgroup v2 to write into: {_HOME}"
        ),
    ),
    pytest.param(
        False,
        id="subreaper",
        marks=pytest.mark.skipif(
            not sys.platform.startswith("linux"), reason="PR_SET_CHILD_SUBREAPER is Linux's"
        ),
    ),
]


async def _family(tmp_path: Path, roles: frozenset[str] = FAMILY_ROLES) -> list[int]:
    def recorded() -> dict[str, list[int]] | None:
        pids = family_pids(tmp_path)
        return pids if roles <= pids.keys() else None

    pids = await eventually(recorded, what=f"the child's family {sorted(roles)}")
    return [pid for role in roles for pid in pids[role]]


@pytest.mark.parametrize("cgroup", CONTAINMENT)
async def test_terminate_reaches_every_process_of_the_child_and_nothing_else(
    cgroup: bool, children: list[ChildProcess], tmp_path: Path
) -> None:
    # A process of the agent's own (here: the test's), which must be left alone.
    own = await asyncio.create_subprocess_exec(sys.executable, "-c", "import time; time.sleep(120)")
    try:
        child = await ChildProcess.spawn(family_child(tmp_path), cgroup=cgroup)
        children.append(child)
        family = await _family(tmp_path)
        assert child.tree.how is (Containment.CGROUP if cgroup else Containment.SUBREAPER)
        assert sorted(child.tree.pids()) == sorted(family)
        code = await child.terminate(grace_s=0.3)
        assert code == -signal.SIGKILL  # it ignores SIGTERM, like all of its family
        assert [pid for pid in family if pid_alive(pid)] == []
        assert not child.running() and child.tree.pids() == []
        if child.tree.cgroup is not None:
            assert not child.tree.cgroup.path.exists()
        assert own.returncode is None and pid_alive(own.pid)
    finally:
        own.kill()
        await own.wait()


@pytest.mark.parametrize("cgroup", CONTAINMENT)
async def test_a_child_that_daemonises_ends_but_its_daemon_is_still_the_childs(
    cgroup: bool, children: list[ChildProcess], tmp_path: Path
) -> None:
    child = await ChildProcess.spawn(family_child(tmp_path, "leave"), cgroup=cgroup)
    children.append(child)
    assert await child.wait() == 0
    [daemon] = await _family(tmp_path, frozenset({"daemon"}))
    # The child has ended; what it started has not, and is still within reach.
    assert pid_alive(daemon) and child.running()
    assert child.tree.pids() == [daemon]
    assert await child.terminate(grace_s=0.3) == 0  # the child's own exit code
    assert not pid_alive(daemon) and not child.running()


@pytest.mark.parametrize("cgroup", CONTAINMENT)
async def test_the_watchdog_deadline_kills_every_process_of_the_child(
    cgroup: bool, children: list[ChildProcess], tmp_path: Path
) -> None:
    child = await ChildProcess.spawn(family_child(tmp_path), cgroup=cgroup)
    children.append(child)
    family = await _family(tmp_path)
    child.renew(time.monotonic() * 1000)  # a deadline that has passed
    assert await child.wait() == -signal.SIGKILL
    assert child.killed_by_watchdog
    await eventually(lambda: not child.running(), what="the watchdog to leave")
    assert [pid for pid in family if pid_alive(pid)] == []


def test_the_watchdog_says_when_the_cgroup_refuses_the_child(tmp_path: Path) -> None:
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    watchdog = subprocess.run(
        [sys.executable, "-m", "perseus_core.runtime.watchdog", "inf", str(out_write)]
        + [str(err_write), str(tmp_path / "no-such-cgroup"), "--", "true"],
        pass_fds=(out_write, err_write),
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    for fd in (out_read, out_write, err_read, err_write):
        os.close(fd)
    assert watchdog.returncode == 127
    assert watchdog.stdout.decode().split() == ["failed", str(errno.ENOENT), "cgroup"]


def test_stale_cgroups_of_agents_gone_are_removed(tmp_path: Path) -> None:
    # A plain directory stands for the cgroup v2 hierarchy: rmdir is the same.
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = tmp_path / f"{CGROUP_PREFIX}{gone.pid}-00000000"
    ours = tmp_path / f"{CGROUP_PREFIX}{os.getpid()}-00000000"
    other = tmp_path / "someone-elses"
    busy = tmp_path / f"{CGROUP_PREFIX}{gone.pid}-11111111"
    for path in (stale, ours, other, busy):
        path.mkdir()
    (busy / "cgroup.procs").write_text("")  # not empty: left alone
    remove_stale_cgroups(tmp_path)
    assert not stale.exists()
    assert ours.exists() and other.exists() and busy.exists()


def test_killing_a_cgroup_removed_meanwhile_is_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stop that meets the watchdog's removal of the emptied cgroup: once
    the cgroup is gone the write to `cgroup.kill` fails with ENOENT, and
    between the file's opening and the write the kernel refuses it with
    ENODEV (a fresh-clone run failed a stop on it). Nothing is left to kill
    either way. The kernel decides both here; only the moment of the removal
    is arranged (between the open and the write, where the race put it).
    Any other refusal is the caller's to hear."""
    ChildCgroup(tmp_path / "removed").kill()  # ENOENT
    (tmp_path / "cgroup.kill").mkdir()
    with pytest.raises(IsADirectoryError):
        ChildCgroup(tmp_path).kill()

    home = cgroup_home()
    if isinstance(home, str):
        pytest.skip(f"no cgroup v2 to make one in: {home}")
    cgroup = ChildCgroup.create(home)
    if isinstance(cgroup, str):
        pytest.skip(cgroup)
    real_open = Path.open

    def removed_once_open(path: Path, *args: Any, **kwargs: Any) -> Any:
        opened = real_open(path, *args, **kwargs)
        if path == cgroup.path / "cgroup.kill":
            cgroup.path.rmdir()  # the watchdog's removal of the emptied cgroup
        return opened

    monkeypatch.setattr(Path, "open", removed_once_open)
    cgroup.kill()  # ENODEV from the kernel, taken as nothing left to kill
    assert not cgroup.path.exists()


# --- the child's output -------------------------------------------------------


async def test_the_drain_hands_on_lines_of_both_streams() -> None:
    lines: list[tuple[str, bytes]] = []
    ended = asyncio.Event()
    drain = OutputDrain(lambda stream, line: lines.append((stream, line)), on_end=ended.set)
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    await drain.attach("stdout", out_read)
    await drain.attach("stderr", err_read)
    os.write(out_write, b"one\ntw")
    os.write(err_write, b"oops\n")
    os.write(out_write, b"o\n" + b"y" * (MAX_LINE_BYTES + 5) + b"\nlast, unfinished")
    os.close(out_write)
    os.close(err_write)
    assert await drain.wait_closed(10)
    assert ended.is_set()
    assert [line for stream, line in lines if stream == "stderr"] == [b"oops"]
    assert [line for stream, line in lines if stream == "stdout"] == [
        b"one",
        b"two",
        b"y" * MAX_LINE_BYTES,
        b"yyyyy",
        b"last, unfinished",
    ]


async def test_a_child_writes_into_the_drain_not_into_the_agents_stdout(
    children: list[ChildProcess],
) -> None:
    lines: list[tuple[str, bytes]] = []
    drain = OutputDrain(lambda stream, line: lines.append((stream, line)))
    script = "import sys; print('to stdout'); print('to stderr', file=sys.stderr)"
    child = await ChildProcess.spawn([sys.executable, "-c", script], drain=drain)
    children.append(child)
    assert await child.wait() == 0
    await child.terminate(grace_s=1)
    assert sorted(lines) == [("stderr", b"to stderr"), ("stdout", b"to stdout")]


def test_the_output_log_keeps_to_its_rate_and_counts_what_it_leaves_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = [100.0]
    output = OutputLog("coinbase", rate=2, burst=3, max_chars=10, clock=lambda: clock[0])
    with caplog.at_level(logging.INFO, logger="perseus_core.runtime.output"):
        for n in range(5):
            output("stdout", f"line {n}".encode())
        clock[0] += 1.0  # two more lines' worth
        output("stderr", b"\x1b[31mred\x1b[0m and far too long")
        output("stdout", b"kept too")
        output("stdout", b"left out")
        output.flush()
    assert [r.getMessage() for r in caplog.records] == [
        "coinbase: child stdout: line 0",
        "coinbase: child stdout: line 1",
        "coinbase: child stdout: line 2",
        "coinbase: 2 lines of the child's output not logged (more than 2 a second)",
        "coinbase: child stderr: red and f…",
        "coinbase: child stdout: kept too",
        "coinbase: 1 lines of the child's output not logged (more than 2 a second)",
    ]
