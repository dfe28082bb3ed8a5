"""`perseus doctor` on the 3-master, 3-replica cluster: it says what it is."""

from __future__ import annotations

import asyncio
import json

from click.testing import CliRunner

from perseus_cli.main import cli


async def test_doctor_names_the_cluster(cluster_url: str) -> None:
    result = await asyncio.to_thread(
        CliRunner().invoke, cli, ["doctor", "--json"], env={"PERSEUS_REDIS_URL": cluster_url}
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    mode = next(c for c in report["checks"] if c["check"] == "mode")
    assert mode["value"] == "cluster: 6 nodes, 3 masters, 16384/16384 slots, ok"
    assert report["facts"]["cluster"]["masters"] == 3
    assert report["facts"]["roles"] == ["viewer", "operator", "agent"]
