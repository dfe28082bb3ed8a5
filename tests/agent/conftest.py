"""Run `perseus agent` as a real subprocess against a real Redis, and clean up after it.

Every agent started through `spawn_agent` is killed in teardown together with
whatever it supervised: the child runs in a session of its own, so killing
the agent alone would leave it behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from perseus_core.plumbing.processes import descendants
from tests.helpers import AGENT_ARGV
from tests.waiting import eventually

HEARTBEAT_INTERVAL_MS = 150
HEARTBEAT_TTL_MS = 600

# A child that records its pid, then works until it is stopped.
CHILD_SLEEP = "import os,sys,time; open(sys.argv[1],'w').write(str(os.getpid())); time.sleep(120)"

# A child that records its pid and ignores SIGTERM: only SIGKILL ends it.
CHILD_IGNORE_TERM = (
    "import os,signal,sys,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "open(sys.argv[1],'w').write(str(os.getpid())); time.sleep(120)"
)

# A script whose first process starts a second one in its process group; each
# records its pid and, on SIGTERM, writes `<role>.term` before exiting.
TRAP_TERM_SCRIPT = """
import os, signal, subprocess, sys, time
pidfile, marker_dir, role = sys.argv[1], sys.argv[2], sys.argv[3]
def on_term(signum, frame):
    with open(os.path.join(marker_dir, role + ".term"), "w") as f:
        f.write(str(os.getpid()))
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
if role == "child":
    subprocess.Popen([sys.executable, __file__, pidfile + ".grandchild", marker_dir, "grandchild"])
with open(pidfile, "w") as f:
    f.write(str(os.getpid()))
while True:
    time.sleep(0.05)
"""


# A family of processes that ignore SIGTERM, each recording its pid in
# `<role>-<pid>.pid`: with `stay`, a child that starts a helper in its group
# (`stubborn`), one in a session of its own (`setsid`) and a double-forked
# daemon (`daemon`: a session of its own, its parent gone), then works until
# killed; with `leave`, a child that starts only the daemon and exits 0, as a
# daemonising service's launcher does. The child records itself (`main`) once
# the others have.
FAMILY_SCRIPT = """
import os, signal, sys, time
piddir, mode = sys.argv[1], sys.argv[2]
ready_read, ready_write = os.pipe()

def record(role):
    path = os.path.join(piddir, f"{role}-{os.getpid()}.pid")
    with open(path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(path + ".tmp", path)

def linger(role):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    record(role)
    os.write(ready_write, b"x")
    while True:
        time.sleep(1)

def start(role, setsid, double):
    pid = os.fork()
    if pid == 0:
        if setsid:
            os.setsid()
        if double and os.fork() != 0:
            os._exit(0)
        linger(role)
    if double:
        os.waitpid(pid, 0)

roles = [("daemon", True, True)]
if mode == "stay":
    roles += [("stubborn", False, False), ("setsid", True, False)]
for role, setsid, double in roles:
    start(role, setsid, double)
for _ in roles:
    os.read(ready_read, 1)
if mode == "leave":
    record("main")
    sys.exit(0)
linger("main")
"""

FAMILY_ROLES = frozenset({"main", "stubborn", "setsid", "daemon"})


def family_child(tmp_path: Path, mode: str = "stay") -> list[str]:
    """argv of the `FAMILY_SCRIPT` child, recording pids in `tmp_path`."""
    script = tmp_path / "family.py"
    script.write_text(FAMILY_SCRIPT)
    return [sys.executable, str(script), str(tmp_path), mode]


def family_pids(tmp_path: Path) -> dict[str, list[int]]:
    """role -> the pids recorded so far under that role."""
    found: dict[str, list[int]] = {}
    for path in sorted(tmp_path.glob("*-*.pid")):
        role, _, pid = path.stem.rpartition("-")
        if pid.isdigit():
            found.setdefault(role, []).append(int(pid))
    return found


def trap_term_child(tmp_path: Path, pidfile: Path) -> list[str]:
    """argv of a child that starts a grandchild; both write `<role>.term` on SIGTERM."""
    script = tmp_path / "trap_term.py"
    script.write_text(TRAP_TERM_SCRIPT)
    return [sys.executable, str(script), str(pidfile), str(tmp_path), "child"]


def agent_env(redis_url: str, **extra: str) -> dict[str, str]:
    """The test process's environment without any PERSEUS_* of its own, plus test speed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSEUS_")}
    env.update(
        {
            "PERSEUS_REDIS_URL": redis_url,
            "PERSEUS_HEARTBEAT_INTERVAL_MS": str(HEARTBEAT_INTERVAL_MS),
            "PERSEUS_HEARTBEAT_TTL_MS": str(HEARTBEAT_TTL_MS),
            "PERSEUS_PUBLIC_IP": "off",
            "PERSEUS_BLOCK_MS": "200",
            "PERSEUS_SOCKET_TIMEOUT_MS": "1000",
            "PERSEUS_STOP_GRACE_MS": "2000",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.update(extra)
    return env


def pid_alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def read_pid(path: Path) -> int | None:
    """The pid a child wrote, or None if it has not yet."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


async def written_pid(path: Path) -> int:
    """The pid a child wrote, once it has: an agent may report its child
    active before the child's first line (a warm-up shorter than the child's
    start on a loaded machine)."""
    pid: int = await eventually(lambda: read_pid(path), what=f"a pid in {path.name}")
    return pid


class AgentProcess:
    """One `perseus agent` subprocess, its stderr captured to a file; its stdout
    too, unless `stdout_pipe` asks for a pipe (that the test may leave unread;
    with `log_into_pipe`, stderr goes into it too, as with `2>&1 | ...`).
    With `terminal`, stdin, stdout and stderr are a pseudo-terminal that is the
    agent's controlling terminal, as in an SSH session: what it shows is
    copied to the file, and `hang_up` closes it as a dropped session does."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        log_path: Path,
        stdout_pipe: bool = False,
        terminal: bool = False,
        log_into_pipe: bool = False,
    ) -> None:
        self.argv = argv
        self.log_path = log_path
        self._terminal: int | None = None
        self._copying = threading.Event()
        self._copier: threading.Thread | None = None
        if terminal:
            self._terminal, tty = os.openpty()
            try:
                self.process = subprocess.Popen(
                    argv, env=env, stdin=tty, stdout=tty, stderr=tty, preexec_fn=_take_terminal
                )
            finally:
                os.close(tty)
            self._copying.set()
            self._copier = threading.Thread(target=self._copy_terminal, daemon=True)
            self._copier.start()
        else:
            with open(log_path, "wb") as log:
                self.process = subprocess.Popen(
                    argv,
                    env=env,
                    stdout=subprocess.PIPE if stdout_pipe else log,
                    stderr=subprocess.STDOUT if log_into_pipe else log,
                    stdin=subprocess.DEVNULL,
                )
        self.pid = self.process.pid
        self._known: set[tuple[int, str]] = set()

    def _copy_terminal(self) -> None:
        assert self._terminal is not None
        with open(self.log_path, "wb") as log:
            while self._copying.is_set():
                ready, _, _ = select.select([self._terminal], [], [], 0.05)
                if not ready:
                    continue
                try:
                    data = os.read(self._terminal, 65536)
                except OSError:  # EIO: nothing holds the terminal open any more
                    return
                log.write(data)
                log.flush()

    def hang_up(self) -> None:
        """Close the agent's terminal: the kernel sends it SIGHUP."""
        if self._terminal is None:
            return
        self._copying.clear()
        if self._copier is not None:
            self._copier.join(10)
        os.close(self._terminal)
        self._terminal = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_log(self, text: str, within: float = 10.0) -> None:
        """Wait until `text` appears in the agent's log (fails early if the agent died)."""

        def seen() -> bool:
            if text in self.log():
                return True
            if self.process.poll() is not None:
                raise AssertionError(
                    f"agent exited ({self.process.returncode}) before logging {text!r}:\n"
                    + self.log()
                )
            return False

        await eventually(seen, within, f"{text!r} in the agent log:\n{self.log()[-3000:]}")

    def signal(self, sig: signal.Signals) -> None:
        self.remember_descendants()
        os.kill(self.pid, sig)

    async def wait_exit(self, within: float = 10.0) -> int:
        await eventually(lambda: self.process.poll() is not None, within, "the agent to exit")
        return int(self.process.returncode)

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def remember_descendants(self) -> None:
        """Note the agent's descendants now, so teardown can kill them later
        even after they were orphaned."""
        if self.running:
            for pid in descendants(self.pid):  # zombies too: their start time tells them
                started = _start_time(pid)
                if started is not None:
                    self._known.add((pid, started))

    def kill_everything(self) -> None:
        """Kill the agent; give its child's watchdog a moment to kill (and reap,
        and remove the cgroup of) everything it supervised, as it does when its
        agent is gone; then kill whatever is left of what was seen."""
        self.remember_descendants()
        if self.running:
            os.kill(self.pid, signal.SIGCONT)  # a stopped process dies only once resumed
            self.process.kill()
        self.process.wait(10)
        self.hang_up()
        if self.process.stdout is not None:
            self.process.stdout.close()
        # Only the very processes seen earlier: a pid may have been reused since.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(
            _start_time(pid) == started and pid_alive(pid) for pid, started in self._known
        ):
            time.sleep(0.02)
        for pid, started in self._known:
            if _start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGCONT)
                    os.kill(pid, signal.SIGKILL)


def _take_terminal() -> None:
    """In the agent before exec: a session of its own, its stdin its controlling terminal."""
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _start_time(pid: int) -> str | None:
    """The process's start time (clock ticks since boot), which tells pid reuse apart."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[19] if len(fields) > 19 else None


SpawnAgent = Callable[..., AgentProcess]


@pytest.fixture
def spawn_agent(tmp_path: Path, redis_url: str) -> Iterator[SpawnAgent]:
    """Factory: `spawn_agent(exchange_id=1, name="coinbase", args=[...], command=[...])`;
    `wrapper` runs the agent under another program (`unshare ...`); `stdout_pipe`
    gives it a stdout pipe nobody reads (its log still goes to the file, unless
    `log_into_pipe`);
    `terminal` a controlling terminal (`AgentProcess.hang_up`)."""
    agents: list[AgentProcess] = []

    def spawn(
        *,
        exchange_id: int = 1,
        name: str = "coinbase",
        args: list[str] | None = None,
        command: list[str] | None = None,
        url: str | None = None,
        env: dict[str, str] | None = None,
        wrapper: list[str] | None = None,
        stdout_pipe: bool = False,
        terminal: bool = False,
        log_into_pipe: bool = False,
    ) -> AgentProcess:
        argv = [
            *(wrapper or []),
            *AGENT_ARGV,
            "--exchange-id",
            str(exchange_id),
            "--exchange-name",
            name,
            *(args or []),
        ]
        if command:
            argv += ["--", *command]
        log_path = tmp_path / f"agent-{len(agents)}-{name}.log"
        proc = AgentProcess(
            argv,
            agent_env(url or redis_url, **(env or {})),
            log_path,
            stdout_pipe=stdout_pipe,
            terminal=terminal,
            log_into_pipe=log_into_pipe,
        )
        agents.append(proc)
        return proc

    try:
        yield spawn
    finally:
        for proc in agents:
            proc.kill_everything()


SpawnHost = Callable[[Path], AgentProcess]


@pytest.fixture
def spawn_host(tmp_path: Path, redis_url: str) -> Iterator[SpawnHost]:
    """Factory: `spawn_host(config_path)` runs `perseus agent --config PATH`, killed
    with everything it supervised in teardown, as `spawn_agent`'s agents are."""
    hosts: list[AgentProcess] = []

    def spawn(config: Path) -> AgentProcess:
        log_path = tmp_path / f"host-{len(hosts)}.log"
        proc = AgentProcess([*AGENT_ARGV, "--config", str(config)], agent_env(redis_url), log_path)
        hosts.append(proc)
        return proc

    try:
        yield spawn
    finally:
        for proc in hosts:
            proc.kill_everything()
