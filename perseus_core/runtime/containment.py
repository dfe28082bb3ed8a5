"""Every process of a child, and nothing of the agent's: found, signalled, killed.

A child is someone else's program: it may fork helpers, put one in a session
of its own (`setsid`) or daemonise with a double fork. A signal to its process
group misses all of those, and a daemon left behind outlives the stop, the
agent, and comes back as a second copy on the next start. So every child is
contained, in the first of these ways the host allows:

- **cgroup**: a cgroup v2 of its own, created below the agent's own cgroup
  (`ChildCgroup`). Nothing leaves a cgroup by forking or by `setsid`;
  `cgroup.kill` kills every member at once, and the cgroup is empty exactly
  when the child is gone. It needs a cgroup v2 hierarchy the agent may write
  into: root, or a delegated subtree (systemd's `Delegate=yes`), on Linux 5.14
  or later. `PERSEUS_CHILD_CGROUP=off` turns it off.
- **subreaper**: the child's watchdog (`watchdog`) is a subreaper
  (`PR_SET_CHILD_SUBREAPER`), so whatever the child orphans is handed to the
  watchdog instead of to init, and the child's processes are exactly the
  watchdog's descendants. The watchdog leaves only once they are all gone.
  (The watchdog is a subreaper in the cgroup case too.)
- **group**: where neither exists (not Linux), the child's process group, as
  the watchdog leads it: what left the group is out of reach.

The agent itself is never a subreaper and never in a child's cgroup, so its
other processes are never taken for the child's.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import signal
import sys
from collections.abc import Callable
from enum import Enum
from pathlib import Path

from perseus_core.plumbing.processes import descendants, pid_is_running, process_table

CGROUP_PREFIX = "perseus-child-"
"""Name of every child's cgroup, before the agent's pid and a random part."""


class Containment(Enum):
    """How a child's processes are kept together (see the module docstring)."""

    CGROUP = "cgroup"
    SUBREAPER = "subreaper"
    GROUP = "group"


def _unescape_mount_path(path: str) -> str:
    """/proc/self/mountinfo writes a space as \\040, a tab as \\011 and so on."""
    out, i = [], 0
    while i < len(path):
        if path[i] == "\\" and i + 3 < len(path) and path[i + 1 : i + 4].isdigit():
            out.append(chr(int(path[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(path[i])
            i += 1
    return "".join(out)


def _own_cgroup_dir() -> Path | str:
    """The directory of this process's cgroup v2, or why there is none."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return "no /proc/self/cgroup"
    unified = [line[3:] for line in lines if line.startswith("0::")]
    if not unified:
        return "no cgroup v2 hierarchy"
    own = unified[0]
    for mount in mounts:
        head, sep, tail = mount.partition(" - ")
        fields = head.split()
        if not sep or not tail.startswith("cgroup2 ") or len(fields) < 5:
            continue
        root, point = _unescape_mount_path(fields[3]), _unescape_mount_path(fields[4])
        relative = os.path.relpath(own, root)
        if relative.startswith(".."):
            continue  # this mount does not show our cgroup
        return Path(os.path.normpath(os.path.join(point, relative)))
    return "cgroup v2 is not mounted"


@functools.cache
def cgroup_home() -> Path | str:
    """Where children's cgroups are made (this process's own cgroup v2), or why
    nowhere: not Linux, no cgroup v2 mounted where we can see it, or no right
    to create a cgroup there and move processes into it."""
    if not sys.platform.startswith("linux"):
        return "not Linux"
    home = _own_cgroup_dir()
    if isinstance(home, str):
        return home
    procs = home / "cgroup.procs"
    try:
        if str(os.getpid()) not in procs.read_text().split():
            return f"{home} does not list this process"
    except OSError as exc:
        return f"cannot read {procs}: {exc.strerror}"
    # Moving a process between two cgroups takes write access to the
    # cgroup.procs of their common ancestor: ours.
    if not (os.access(home, os.W_OK) and os.access(procs, os.W_OK)):
        return f"no write access to {home}"
    remove_stale_cgroups(home)
    return home


def remove_stale_cgroups(home: Path) -> None:
    """Remove the empty cgroups that agents now gone left in `home`.

    A child's watchdog removes its cgroup as it leaves; one killed from
    outside (with its agent) cannot. Only an empty cgroup can be removed,
    and only one whose agent (the pid in its name) is not running is tried.
    """
    for entry in home.glob(f"{CGROUP_PREFIX}*"):
        owner = entry.name.removeprefix(CGROUP_PREFIX).partition("-")[0]
        if owner.isdigit() and not pid_is_running(int(owner)):
            with contextlib.suppress(OSError):
                entry.rmdir()


class ChildCgroup:
    """One child's cgroup v2: created empty, joined by the child before it
    runs, killed whole, removed once empty.

    Args:
        path: the cgroup's directory.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def create(cls, home: Path) -> ChildCgroup | str:
        """A new, empty cgroup below `home` (`cgroup_home()`), or why not.

        A kernel without `cgroup.kill` (before 5.14) cannot kill a cgroup
        whole; such a cgroup is removed again and the reason returned.
        """
        path = home / f"{CGROUP_PREFIX}{os.getpid()}-{os.urandom(4).hex()}"
        try:
            path.mkdir()
        except OSError as exc:
            return f"cannot create a cgroup in {home}: {exc.strerror}"
        cgroup = cls(path)
        if not (path / "cgroup.kill").exists():
            cgroup.remove()
            return "this kernel has no cgroup.kill (Linux 5.14 or later has)"
        return cgroup

    @property
    def procs_file(self) -> Path:
        """The file a process writes its pid into to join."""
        return self.path / "cgroup.procs"

    def pids(self) -> list[int]:
        """Every process in the cgroup now (none once it is removed)."""
        try:
            text = self.procs_file.read_text()
        except OSError:
            return []
        return [int(word) for word in text.split()]

    def populated(self) -> bool:
        """Whether any process is left in the cgroup (zombies not counted)."""
        try:
            events = (self.path / "cgroup.events").read_text().split()
        except OSError:
            return False  # removed: nothing can be in it
        with contextlib.suppress(ValueError, IndexError):
            return events[events.index("populated") + 1] != "0"
        return bool(self.pids())

    def kill(self) -> None:
        """SIGKILL every process in the cgroup, at once and all together:
        nothing forked meanwhile escapes.

        A cgroup removed meanwhile (its watchdog removes it once it is empty)
        has nothing left to kill: the write then fails with ENOENT, or with
        ENODEV while the kernel is still removing it (seen when an agent's
        stop met its watchdog's removal).
        """
        try:
            (self.path / "cgroup.kill").write_text("1")
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENODEV):
                raise

    def remove(self) -> bool:
        """Remove the (empty) cgroup; True once it is gone."""
        try:
            self.path.rmdir()
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                return False  # still populated
            raise
        return True


class ChildTree:
    """The agent's handle on every process of one child (not its watchdog).

    Args:
        how: how the child is contained, as its watchdog reported it.
        watchdog_pid: the watchdog, which leads the child's process group.
        cgroup: the child's cgroup (`Containment.CGROUP` only).
        watchdog_running: whether the watchdog is still the agent's unreaped
            child; only then does its pid still name it (and its descendants
            the child's processes).
    """

    def __init__(
        self,
        how: Containment,
        watchdog_pid: int,
        cgroup: ChildCgroup | None,
        watchdog_running: Callable[[], bool] | None = None,
    ) -> None:
        self.how = how
        self.watchdog_pid = watchdog_pid
        self.cgroup = cgroup
        self._watchdog_running = watchdog_running

    def _watchdog_alive(self) -> bool:
        return self._watchdog_running is None or self._watchdog_running()

    def describe(self) -> str:
        """Where the child's processes are kept, for the agent's log."""
        if self.how is Containment.CGROUP and self.cgroup is not None:
            return f"in cgroup {self.cgroup.path}"
        if self.how is Containment.SUBREAPER:
            return "under its watchdog as subreaper"
        return "in its process group"

    def pids(self) -> list[int]:
        """Every live process of the child now, the watchdog left out."""
        if self.cgroup is not None:
            return self.cgroup.pids()
        table = process_table()
        found: set[int] = set()
        if self.how is Containment.SUBREAPER and self._watchdog_alive():
            found.update(descendants(self.watchdog_pid, table))
        found.update(pid for pid, info in table.items() if info.pgid == self.watchdog_pid)
        found.discard(self.watchdog_pid)
        return sorted(pid for pid in found if not table[pid].zombie)

    def running(self) -> bool:
        """Whether any process of the child is left (zombies not counted)."""
        if self.cgroup is not None:
            return self.cgroup.populated()
        if self.how is Containment.GROUP and not Path("/proc").is_dir():
            return _group_exists(self.watchdog_pid)
        return bool(self.pids())

    def signal(self, sig: signal.Signals) -> int:
        """Send `sig` to every process of the child; how many were found.

        The watchdog is left out (it ignores the stop signals anyway, and it
        must outlive the child to report its exit and collect its orphans),
        except without /proc, where only its whole group can be signalled.
        """
        pids = self.pids()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        if not pids and self.how is Containment.GROUP and not Path("/proc").is_dir():
            return 1 if _signal_group(self.watchdog_pid, sig) else 0
        return len(pids)

    def kill(self) -> None:
        """SIGKILL every process of the child now, without waiting.

        In a cgroup, all at once (`cgroup.kill`); otherwise each process found,
        so one forked meanwhile needs another call (the watchdog, which hears
        of it, kills it too when the agent is gone).
        """
        if self.cgroup is not None:
            self.cgroup.kill()
        else:
            self.signal(signal.SIGKILL)

    def kill_watchdog(self) -> None:
        """Last resort: SIGKILL the watchdog's whole group, the watchdog included."""
        _signal_group(self.watchdog_pid, signal.SIGKILL)
        if self.cgroup is not None:
            self.cgroup.kill()

    def remove(self) -> None:
        """Remove the child's cgroup once it is empty (its watchdog normally has)."""
        if self.cgroup is not None:
            with contextlib.suppress(OSError):
                self.cgroup.remove()


def _signal_group(pgid: int, sig: signal.Signals) -> bool:
    """Send `sig` to the process group `pgid`; False if nothing is left in it."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        # PermissionError: the group id was reused by someone else's process.
        return False
    return True


def _group_exists(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
