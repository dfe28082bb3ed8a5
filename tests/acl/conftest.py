"""A server of its own with the three documented users, created from the very
`ACL SETUSER` lines of docs/production-redis.md (so the lines people copy are
the lines that are tested)."""

from __future__ import annotations

import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis as sync_redis

from perseus_cli.apps.redis_server import RedisServer
from tests.agent.conftest import spawn_agent  # noqa: F401 - the agent fixture, reused
from tests.tui.conftest import make_app  # noqa: F401 - the dashboard fixture, reused

DOC = Path(__file__).resolve().parents[2] / "docs" / "production-redis.md"
PASSWORDS = {
    "AGENT_PASSWORD": "agent-pw",
    "OPERATOR_PASSWORD": "operator-pw",
    "VIEWER_PASSWORD": "viewer-pw",
}


def documented_acl_lines() -> list[list[str]]:
    """Every `ACL SETUSER` line of the doc, placeholders filled in."""
    lines = [line for line in DOC.read_text().splitlines() if line.startswith("ACL SETUSER ")]
    filled = []
    for line in lines:
        for placeholder, secret in PASSWORDS.items():
            line = line.replace(placeholder, secret)
        filled.append(shlex.split(line))
    return filled


class AclServer:
    """The server and a URL per role (agent of exchange 1 coinbase, operator, viewer)."""

    def __init__(self, server: RedisServer) -> None:
        self.server = server
        with sync_redis.Redis(port=server.port) as admin:
            for words in documented_acl_lines():
                admin.execute_command(*words)

    def url(self, user: str, password: str) -> str:
        return f"redis://{user}:{password}@127.0.0.1:{self.server.port}/0"

    @property
    def admin_url(self) -> str:
        return self.server.url

    @property
    def agent(self) -> str:
        return self.url("perseus-agent-1", PASSWORDS["AGENT_PASSWORD"])

    @property
    def operator(self) -> str:
        return self.url("perseus-operator", PASSWORDS["OPERATOR_PASSWORD"])

    @property
    def viewer(self) -> str:
        return self.url("perseus-viewer", PASSWORDS["VIEWER_PASSWORD"])

    def flush(self) -> None:
        with sync_redis.Redis(port=self.server.port) as admin:
            admin.flushall()


@pytest.fixture(scope="module")
def acl_module_server() -> Iterator[AclServer]:
    with RedisServer() as server:
        yield AclServer(server)


@pytest.fixture
def acl(acl_module_server: AclServer) -> AclServer:
    """The users' server, emptied of data (the users stay)."""
    acl_module_server.flush()
    return acl_module_server
