"""The README's embedding example runs as written against a real Redis."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis as sync_redis

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

            def active() -> bool:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                raw = client.get("exchange:1:status")
                return raw is not None and json.loads(raw)["connectionState"] == "active"

            asyncio.run(eventually(active, within=15, what="the example to become active"))
            time.sleep(0.5)  # longer than the TTL: the heartbeat keeps the key alive
            assert client.exists("exchange:1:status")
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
