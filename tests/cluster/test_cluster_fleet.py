"""The whole product on a 3-master Redis Cluster: real `perseus agent`
processes, the CLI verbs and the dashboard, with every exchange's keys on
other masters than its neighbours'."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable

from redis.asyncio.cluster import RedisCluster

from perseus_cli.apps.screenshots import SCREENSHOT_TZ
from perseus_core.store.control.sender import ControlClient
from perseus_core.wire import keys
from perseus_core.wire.models import ReplyStatus
from perseus_core.wire.settings import Settings
from perseus_tui.app import create_app
from tests.cluster.conftest import FLEET
from tests.helpers import PERSEUS_ARGV
from tests.tui.conftest import spawn_agent  # noqa: F401 - the fixture, shared
from tests.waiting import eventually


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a `perseus` verb against `url`, as an operator would."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERSEUS_")}
    env.update(PERSEUS_REDIS_URL=url, PERSEUS_SOCKET_TIMEOUT_MS="2000")
    return subprocess.run(
        [*PERSEUS_ARGV, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


async def test_agents_cli_and_dashboard_on_a_cluster(
    cluster_url: str,
    make_cluster_settings: Callable[..., Settings],
    cluster_redis: RedisCluster,
    spawn_agent: Callable[..., subprocess.Popen[bytes]],  # noqa: F811
) -> None:
    for exchange_id, name in FLEET:
        spawn_agent(
            cluster_url, "--exchange-id", str(exchange_id), "--exchange-name", name, "--warmup", "0"
        )

    async def all_present() -> bool:
        found = [await cluster_redis.exists(keys.agents_key(i)) for i, _ in FLEET]
        return all(found)

    await eventually(all_present, within=30, what="every agent's presence")

    settings = make_cluster_settings(refresh_ms=60_000)
    app = create_app(settings, local_tz=SCREENSHOT_TZ, target_label="cluster", operator="t@ci")
    app.animation_level = "none"

    def card(exchange_id: int) -> str:
        found = app.dashboard.grid.card(exchange_id)
        return found.render().plain if found is not None else ""

    async with app.run_test(size=(140, 44)):
        await eventually(lambda: all("READY" in card(i) for i, _ in FLEET), within=15)
        await eventually(app.history_loaded.is_set)

        # One start from the CLI (a subprocess, as an operator runs it), the
        # others through the library's client, while the dashboard tails.
        first_id, first_name = FLEET[0]
        started = cli(cluster_url, "start", str(first_id))
        assert started.returncode == 0, started.stderr
        assert f"{first_name} is active" in started.stdout
        client = ControlClient(cluster_redis, settings)
        for exchange_id, _ in FLEET[1:]:
            outcome = await client.send(exchange_id, "start", operator="t@ci")
            assert outcome.status == ReplyStatus.SUCCESS, outcome

        # With a 60 s poll, only the live tail can bring these in.
        await eventually(lambda: all("ACTIVE" in card(i) for i, _ in FLEET), within=10)
        feed = app.dashboard.feed
        for _, name in FLEET:
            await eventually(
                lambda name=name: any(
                    e.stream == name and getattr(e, "to_state", "") == "active"
                    for e in feed.entries
                ),
                what=f"{name}'s active entry in the feed",
            )

    status = cli(cluster_url, "status")
    assert status.returncode == 0, status.stderr
    for _, name in FLEET:
        line = next(row for row in status.stdout.splitlines() if f" {name} " in f" {row} ")
        assert "active" in line
    history = cli(cluster_url, "log", "--count", "50")
    assert history.returncode == 0, history.stderr
    assert all(f"{name}" in history.stdout for _, name in FLEET)
    stopped = cli(cluster_url, "stop", str(FLEET[2][0]))
    assert stopped.returncode == 0, stopped.stderr
