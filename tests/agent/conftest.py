"""Run `perseus agent` as a real subprocess against a real Redis, and clean up after it.

Every agent started through `spawn_agent` is killed in teardown together with
whatever it supervised: the child runs in a session of its own, so killing
the agent alone would leave it behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

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


def descendants(pid: int) -> list[int]:
    """Every live process below `pid` (children, grandchildren...), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def read_pid(path: Path) -> int | None:
    """The pid a child wrote, or None if it has not yet."""
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return None
    return int(text) if text.isdigit() else None


class AgentProcess:
    """One `perseus agent` subprocess, its stderr captured to a file."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path) -> None:
        self.argv = argv
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.pid = self.process.pid
        self._known: set[tuple[int, str]] = set()

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
            for pid in descendants(self.pid):
                started = _start_time(pid)
                if started is not None:
                    self._known.add((pid, started))

    def kill_everything(self) -> None:
        self.remember_descendants()
        if self.running:
            os.kill(self.pid, signal.SIGCONT)  # a stopped process dies only once resumed
            self.process.kill()
        self.process.wait(10)
        for pid, started in self._known:
            # Only the very process seen earlier: its pid may have been reused since.
            if _start_time(pid) == started:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)


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
    `wrapper` runs the agent under another program (`unshare ...`)."""
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
        proc = AgentProcess(argv, agent_env(url or redis_url, **(env or {})), log_path)
        agents.append(proc)
        return proc

    try:
        yield spawn
    finally:
        for proc in agents:
            proc.kill_everything()
