"""The README's embedding example runs as written against a real Redis."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import redis as sync_redis

from perseus_core.wire.timeutil import parse_ts
from tests.waiting import eventually

README = Path(__file__).resolve().parent.parent / "README.md"


def _embedding_example() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "the README has no Python example"
    return str(blocks[0])


def test_readme_embedding_example_claims_runs_and_releases(redis_url: str, tmp_path: Path) -> None:
    script = tmp_path / "service.py"
    script.write_text(_embedding_example())
    env = {
        **os.environ,
        "PERSEUS_REDIS_URL": redis_url,
        "PERSEUS_HEARTBEAT_INTERVAL_MS": "100",
        "PERSEUS_HEARTBEAT_TTL_MS": "400",
        "PERSEUS_PUBLIC_IP": "off",
    }
    proc = subprocess.Popen([sys.executable, str(script)], env=env, stderr=subprocess.PIPE)
    try:
        with sync_redis.Redis.from_url(redis_url, decode_responses=True) as client:

            def active() -> dict[str, Any] | None:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                raw = client.get("exchange:1:status")
                status = None if raw is None else json.loads(raw)
                return status if status and status["connectionState"] == "active" else None

            def beat_past_the_ttl() -> bool:
                raw = client.get("exchange:1:status")
                assert raw is not None, "the key expired: the heartbeat did not keep it alive"
                return parse_ts(json.loads(raw)["lastHeartbeat"]) >= outlive

            status = asyncio.run(eventually(active, within=15, what="the example to become active"))
            # The heartbeat keeps the key alive: it is still there, heartbeat after
            # heartbeat, until the last one is longer than the TTL after the first.
            outlive = parse_ts(status["lastHeartbeat"]) + timedelta(milliseconds=500)
            asyncio.run(eventually(beat_past_the_ttl, what="heartbeats past the TTL"))
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(15) == 0
            assert not client.exists("exchange:1:status")
            moves = [
                (fields["fromState"], fields["toState"])
                for _, fields in client.xrange("logs:network:coinbase")
                if fields.get("event") == "state_transition"
            ]
            assert moves == [
                ("idle", "starting"),
                ("starting", "warming"),
                ("warming", "active"),
                ("active", "stopping"),
                ("stopping", "stopped"),
            ]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
