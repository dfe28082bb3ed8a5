"""A Perseus agent beside Livermore servers on one real Redis: only the slot's
holder writes into `logs:network:{name}`, and a key a Livermore server deletes
under the agent is told apart from one that expired (real agent processes)."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import pytest
import redis as sync_redis

from tests.agent.conftest import CHILD_SLEEP, SpawnAgent, pid_alive, read_pid
from tests.livermore.shapes import LivermoreWriter
from tests.waiting import eventually

SHARED = "logs:network:coinbase"
OURS = "perseus:activity:coinbase"


def rows(r: sync_redis.Redis, key: str) -> list[dict[str, str]]:
    return [fields for _id, fields in r.xrange(key)]


def holder_host(r: sync_redis.Redis) -> str | None:
    """The hostname in the status key while a Perseus agent (instanceId) holds it."""
    raw = r.get("exchange:1:status")
    if raw is None or '"instanceId"' not in raw:
        return None
    return str(json.loads(raw)["hostname"])


def active(r: sync_redis.Redis) -> bool:
    raw = r.get("exchange:1:status")
    return raw is not None and '"connectionState":"active"' in raw


@pytest.mark.parametrize("frozen", [False, True], ids=["noticed", "frozen-then-watchdog"])
async def test_a_fenced_agent_writes_its_errors_to_perseus_own_stream(
    frozen: bool, spawn_agent: SpawnAgent, r: sync_redis.Redis, tmp_path: Path
) -> None:
    """A Livermore server overwrites the key a Perseus agent holds (its
    heartbeat's `SET ... XX`). The agent fences itself; its "lease lost", its
    fencing note and, when it was frozen meanwhile, its child's watchdog kill
    are Perseus's own entries: Livermore's admin would show anything in
    `logs:network:{name}` as the exchange's error."""
    pidfile = tmp_path / "child.pid"
    agent = spawn_agent(
        args=["--warmup", "0.2", "--autostart"],
        command=[sys.executable, "-c", CHILD_SLEEP, str(pidfile)],
    )
    await eventually(lambda: active(r), what="the agent active")
    host = holder_host(r)
    assert host is not None
    child = await eventually(lambda: read_pid(pidfile), what="the child's pid")
    livermore = LivermoreWriter(r, 1, "coinbase", "lm-host-09", "203.0.113.9")

    if frozen:
        agent.signal(signal.SIGSTOP)
        try:
            livermore.heartbeat()  # overwrites whatever key is there
            # Frozen, the agent renews nothing: its child's watchdog kills the child.
            await eventually(lambda: not pid_alive(child), what="the watchdog's kill")
        finally:
            agent.signal(signal.SIGCONT)
    else:
        livermore.heartbeat()
    await agent.wait_log("fenced after losing the slot")
    await eventually(lambda: not pid_alive(child), what="the child to stop")

    ours = await eventually(
        lambda: [e for e in rows(r, OURS) if e.get("event") == "error"] or None,
        what="the agent's errors in its own stream",
    )
    texts = [e["error"] for e in ours]
    assert any(t.startswith("lease on exchange 1 lost") and "lm-host-09" in t for t in texts)
    assert any(t.startswith("fenced after losing the slot while active") for t in texts)
    if frozen:
        assert any("killed by its watchdog" in t for t in texts), texts
    assert {e["hostname"] for e in ours} == {host}
    # The shared stream holds the agent's run up to active, and nothing after it.
    mine = [e for e in rows(r, SHARED) if e.get("hostname") == host]
    assert [(e["event"], e.get("toState")) for e in mine] == [
        ("state_transition", "starting"),
        ("state_transition", "warming"),
        ("state_transition", "active"),
    ]
    assert holder_host(r) is None and "lm-host-09" in (r.get("exchange:1:status") or "")
    assert agent.running


async def test_a_key_livermore_deletes_under_the_agent_is_said_deleted_naming_it(
    spawn_agent: SpawnAgent, r: sync_redis.Redis, tmp_path: Path
) -> None:
    """A Livermore server refused the claim (its error, its own host, in the
    holder's stream), then shut down gracefully: a plain `DEL` of the key the
    agent holds. The agent re-creates the key and says it was deleted, by
    whom, long before its TTL could have run out; not that it had expired."""
    pidfile = tmp_path / "child.pid"
    agent = spawn_agent(
        args=["--warmup", "0.2", "--autostart"],
        command=[sys.executable, "-c", CHILD_SLEEP, str(pidfile)],
        env={"PERSEUS_HEARTBEAT_TTL_MS": "20000"},  # expiry is not the point here
    )
    await eventually(lambda: active(r), what="the agent active")
    host = holder_host(r)
    livermore = LivermoreWriter(r, 1, "coinbase", "lm-host-09")
    assert not livermore.claim()  # refused: its error goes into the holder's stream
    livermore.deregister()  # graceful shutdown: DEL, whoever holds the key

    def recreation() -> str | None:
        for entry in rows(r, SHARED):
            if entry.get("hostname") == host and "re-created" in entry.get("error", ""):
                return entry["error"]
        return None

    text = await eventually(recreation, what="the agent's re-creation entry")
    assert "deleted by another writer" in text and "probably lm-host-09" in text
    assert "before its 20s TTL could have run out" in text
    assert "had expired" not in text
    assert holder_host(r) == host and active(r)
    assert pid_alive(await eventually(lambda: read_pid(pidfile), what="the child's pid"))
    assert agent.running
