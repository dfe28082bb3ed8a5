"""No secret on a command line: `perseus agent` refuses a Redis password in
--redis-url (every process on the host can read /proc/PID/cmdline, the
agent's child included), and takes the URL from --redis-url-file instead.

Real agents against a redis-server of their own that requires a password.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as sync_redis
from click.testing import CliRunner

from perseus_cli.agent_cmd import ARGV_PASSWORD
from perseus_cli.apps.redis_server import RedisServer
from perseus_cli.main import cli
from tests.agent.conftest import SpawnAgent, agent_env
from tests.helpers import AGENT_ARGV, PERSEUS_ARGV
from tests.waiting import eventually

PASSWORD = "Sw0rdfish-16"

# A child that writes down everything it can see of its ancestors (the
# watchdog, the agent, and on up): each one's command line and, where this
# user may read it, environment; and its own environment.
SNOOP = """
import json, os, sys
seen = {"self": dict(os.environ), "ancestors": []}
pid = os.getppid()
while pid > 1:
    def read(name):
        try:
            with open(f"/proc/{pid}/{name}", "rb") as f:
                return f.read().decode(errors="replace")
        except OSError as exc:
            return f"<{exc}>"
    seen["ancestors"].append({"pid": pid, "cmdline": read("cmdline"), "environ": read("environ")})
    with open(f"/proc/{pid}/stat") as f:
        pid = int(f.read().rsplit(")", 1)[1].split()[1])
with open(sys.argv[1] + ".tmp", "w") as f:
    json.dump(seen, f)
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
import time; time.sleep(120)
"""


@pytest.fixture(scope="module")
def locked_server() -> Iterator[RedisServer]:
    """A redis-server of its own that requires PASSWORD."""
    with RedisServer() as server:
        with sync_redis.Redis(port=server.port) as r:
            r.config_set("requirepass", PASSWORD)
        yield server


def url_file(tmp_path: Path, url: str, mode: int = 0o600) -> Path:
    path = tmp_path / "redis-url"
    path.write_text(url + "\n")
    path.chmod(mode)
    return path


@pytest.mark.parametrize(
    "argv",
    [
        [*AGENT_ARGV, "--redis-url", f"redis://:{PASSWORD}@127.0.0.1:6379/0"],
        [*AGENT_ARGV, "--redis-url", f"redis://ops:{PASSWORD}@127.0.0.1:6379/0"],
        [*AGENT_ARGV, "--redis-url", f"redis://127.0.0.1:6379/0?password={PASSWORD}"],
        [*PERSEUS_ARGV, "--redis-url", f"redis://:{PASSWORD}@127.0.0.1:6379/0", "agent"],
    ],
    ids=["userinfo", "user-and-password", "query", "before-the-verb"],
)
def test_an_agent_refuses_a_password_on_its_command_line(argv: list[str], redis_url: str) -> None:
    done = subprocess.run(
        [*argv, "--exchange-id", "1", "--exchange-name", "coinbase", "--", "true"],
        env=agent_env(redis_url),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [f"perseus: {ARGV_PASSWORD}"]
    assert PASSWORD not in done.stdout + done.stderr


async def test_an_agent_reads_the_url_from_a_file_and_its_child_never_sees_the_password(
    spawn_agent: SpawnAgent, locked_server: RedisServer, tmp_path: Path
) -> None:
    path = url_file(tmp_path, f"redis://:{PASSWORD}@127.0.0.1:{locked_server.port}/0")
    seen_path = tmp_path / "seen.json"
    # The environment names the server without the password: only the file works.
    agent = spawn_agent(
        url=f"redis://127.0.0.1:{locked_server.port}/0",
        args=["--redis-url-file", str(path), "--autostart", "--warmup", "0"],
        command=[sys.executable, "-c", SNOOP, str(seen_path)],
    )
    await eventually(seen_path.exists, 20, f"the child to look around:\n{agent.log()}")
    with sync_redis.Redis(port=locked_server.port, password=PASSWORD) as r:
        assert r.exists("exchange:1:status")
    seen = json.loads(seen_path.read_text())
    assert agent.pid in [ancestor["pid"] for ancestor in seen["ancestors"]]
    assert any("--redis-url-file" in ancestor["cmdline"] for ancestor in seen["ancestors"])
    assert PASSWORD not in seen_path.read_text()
    assert PASSWORD not in agent.log()


def test_every_verb_takes_the_url_from_a_file(locked_server: RedisServer, tmp_path: Path) -> None:
    path = url_file(tmp_path, f"redis://:{PASSWORD}@127.0.0.1:{locked_server.port}/0")
    for args in (
        ["status", "--redis-url-file", str(path)],
        ["--redis-url-file", str(path), "status"],
    ):
        result = CliRunner().invoke(cli, args, env={"PERSEUS_REDIS_URL": "redis://nowhere:1/0"})
        assert result.exit_code == 0, result.output
        assert result.stderr == ""


def test_a_url_file_open_to_others_is_used_with_a_warning(
    locked_server: RedisServer, tmp_path: Path
) -> None:
    path = url_file(tmp_path, f"redis://:{PASSWORD}@127.0.0.1:{locked_server.port}/0", 0o644)
    result = CliRunner().invoke(cli, ["status", "--redis-url-file", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        f"perseus: warning: --redis-url-file {path} is open to other users (mode 644); "
        "chmod 600 it\n"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--redis-url-file", "/nonexistent/url"], "cannot read --redis-url-file /nonexistent/url"),
        (
            ["--redis-url-file", os.devnull, "--redis-url", "redis://h/0"],
            "give --redis-url or --redis-url-file, not both",
        ),
        (["--redis-url-file", os.devnull], "must hold one Redis URL on one line"),
    ],
    ids=["missing", "both", "empty"],
)
def test_a_url_file_that_cannot_be_used_is_one_line_and_exit_2(
    args: list[str], message: str
) -> None:
    for verb in (["status"], ["agent", "--exchange-id", "1", "--exchange-name", "coinbase"]):
        result = CliRunner().invoke(cli, [*verb, *args])
        assert result.exit_code == 2, result.output
        [line] = result.stderr.splitlines()
        assert line.startswith("perseus: ") and message in line
