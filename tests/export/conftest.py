"""What the exporter tests share: an exporter on a free port, a scrape parsed
with prometheus_client's own parser, and a status payload written the way a
Livermore server writes it."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
from prometheus_client.parser import text_string_to_metric_families

from perseus_core.export import Exporter
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import format_ts

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
"""(sample name, its labels) -> value."""


def sample(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    """The key of one sample in `Samples`."""
    return name, frozenset(labels.items())


async def scrape(url: str, accept: str | None = None) -> Samples:
    """GET the page and parse it as Prometheus does; fails on any non-200."""
    headers = {"Accept": accept} if accept else {}
    async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
        response = await client.get(url, headers=headers)
    assert response.status_code == 200, response.text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def livermore_status(
    exchange_id: int, name: str, state: str = "active", connected_ago_s: float = 3600
) -> str:
    """A status payload as a Livermore server writes it (no instanceId:
    judged by Livermore's 15 s / 45 s timing), its heartbeat now."""
    now = datetime.now(UTC)
    return json.dumps(
        {
            "exchangeId": exchange_id,
            "exchangeName": name,
            "hostname": "host-a",
            "ipAddress": "203.0.113.7",
            "adminEmail": None,
            "adminDisplayName": None,
            "connectionState": state,
            "symbolCount": 3,
            "connectedAt": format_ts(now - timedelta(seconds=connected_ago_s)),
            "lastHeartbeat": format_ts(now),
            "lastStateChange": format_ts(now - timedelta(seconds=connected_ago_s)),
            "registeredAt": format_ts(now - timedelta(seconds=connected_ago_s + 5)),
            "lastError": None,
            "lastErrorAt": None,
        }
    )


@contextlib.asynccontextmanager
async def running(settings: Settings, cache_ms: int = 0) -> AsyncIterator[Exporter]:
    """A started exporter on a free port (every scrape reads Redis unless
    `cache_ms` says otherwise), closed on exit. Seed the fleet first: the
    tail then follows its streams from the start."""
    server = Exporter(settings, listen="127.0.0.1:0", cache_ms=cache_ms)
    await server.start()
    try:
        yield server
    finally:
        await server.aclose()
