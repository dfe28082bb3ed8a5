"""The shipped alert rules (docs/perseus-alerts.yml) are well formed, and
every metric they name is one the exporter serves."""

from __future__ import annotations

import re
from pathlib import Path

import redis as sync_redis
from redis.asyncio import Redis

from perseus_core.store.activity import ActivityLog
from perseus_core.wire.models import CommandEntry, StateTransitionEntry
from perseus_core.wire.settings import Settings
from tests.export.conftest import running, scrape
from tests.export.test_exporter import seed_fleet
from tests.waiting import eventually

RULES = Path(__file__).resolve().parents[2] / "docs" / "perseus-alerts.yml"
METRIC = re.compile(r"\bperseus_[a-z0-9_]+\b")


def parse_rules(text: str) -> list[dict[str, str]]:
    """Each rule's keys (`alert`, `expr`, `for`, `severity`, `summary`, ...)
    from the file's YAML: one group of rules, one `key: value` per line (the
    shape the file keeps; no YAML library is a Perseus dependency)."""
    lines = [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    assert lines[0] == "groups:" and lines[1].strip() == "- name: perseus", lines[:2]
    assert lines[2].strip() == "rules:"
    rules: list[dict[str, str]] = []
    for line in lines[3:]:
        key, sep, value = line.strip().removeprefix("- ").partition(":")
        assert sep, f"not `key: value`: {line!r}"
        if line.strip().startswith("- alert:"):
            rules.append({})
        assert rules, f"{line!r} before the first rule"
        if value.strip():
            assert key not in rules[-1], f"{key} twice in {rules[-1].get('alert')}"
            rules[-1][key] = value.strip().strip('"')
    return rules


def test_every_rule_is_complete() -> None:
    rules = parse_rules(RULES.read_text())
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names)) >= 5
    for rule in rules:
        assert {"alert", "expr", "severity", "summary", "description"} <= set(rule), rule
        assert rule["severity"] in ("warning", "critical")
        assert METRIC.search(rule["expr"]), rule


async def test_every_metric_the_rules_name_is_exported(
    settings: Settings, r: sync_redis.Redis, redis: Redis
) -> None:
    named = {m for rule in parse_rules(RULES.read_text()) for m in METRIC.findall(rule["expr"])}
    seed_fleet(r)
    async with running(settings) as exporter:
        log = ActivityLog(redis, settings)
        entry = StateTransitionEntry(from_state="warming", to_state="active",
                                     exchange_id="1", exchange_name="coinbase")  # fmt: skip
        await log.append("coinbase", entry)
        audit = CommandEntry(command="start", status="success", exchange_id="1",
                             exchange_name="coinbase")  # fmt: skip
        await log.append("coinbase", audit, holder=False)

        async def exported() -> set[str] | None:
            found = {name for name, _ in await scrape(exporter.url)}
            return found if "perseus_exchange_transitions_total" in found else None

        found = await eventually(exported, what="a scrape with the counters")
    assert named <= found, sorted(named - found)
