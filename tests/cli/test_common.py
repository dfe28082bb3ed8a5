"""Options every verb shares."""

from __future__ import annotations

import json

import redis as sync_redis
from click.testing import CliRunner

from perseus_cli.main import cli
from perseus_core.wire.models import CatalogEntry


def test_redis_url_before_the_verb_applies_to_the_verb(redis_url: str) -> None:
    with sync_redis.Redis.from_url(redis_url) as client:
        client.hset("perseus:exchanges", "7", CatalogEntry(id=7, name="bitstamp").to_json())
    result = CliRunner().invoke(cli, ["--redis-url", redis_url, "status", "--json"])
    assert result.exit_code == 0, result.output
    names = [row["exchangeName"] for row in json.loads(result.output)["instances"]]
    assert names == ["bitstamp"]


def test_the_verbs_own_redis_url_wins(redis_url: str) -> None:
    result = CliRunner().invoke(
        cli, ["--redis-url", redis_url, "status", "--redis-url", "redis://127.0.0.1:1/0"]
    )
    assert result.exit_code == 3
    assert "redis://127.0.0.1:1/0" in result.output
