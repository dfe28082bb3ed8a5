"""`/metrics` over HTTP, parsed with prometheus_client's own parser, for a
fleet written straight into a real Redis: exact values before and after
transitions, the shared cached read, hostile values, Redis going away."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Iterable

import httpx
import pytest
import redis as sync_redis
from prometheus_client.exposition import generate_latest as text_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from perseus_cli.apps.redis_server import RedisServer
from perseus_core.export import FleetReadings
from perseus_core.store.activity import ActivityLog
from perseus_core.store.network import FleetReader
from perseus_core.store.presence import AgentAnnouncer
from perseus_core.wire import keys
from perseus_core.wire.models import (
    CatalogEntry,
    CommandEntry,
    ConnectionState,
    ErrorEntry,
    RestartEntry,
    StateTransitionEntry,
)
from perseus_core.wire.settings import Settings
from tests.export.conftest import Samples, livermore_status, running, sample, scrape
from tests.waiting import eventually

STATES = ("idle", "starting", "warming", "active", "stopping", "stopped")
WORDS = (*STATES, "unreadable", "ready", "offline")
OPENMETRICS_ACCEPT = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"


def seed_fleet(r: sync_redis.Redis) -> None:
    """1 coinbase live and active (a Livermore payload), 2 binance in the
    catalog without a status, 3 kraken with a corrupt status."""
    for entry in (
        CatalogEntry(id=1, name="coinbase", display_name="Coinbase"),
        CatalogEntry(id=2, name="binance"),
        CatalogEntry(id=3, name="kraken"),
    ):
        r.hset(keys.CATALOG_KEY, str(entry.id), entry.to_json())
    r.set(keys.status_key(1), livermore_status(1, "coinbase"), px=45_000)
    r.set(keys.status_key(3), "{not json", px=45_000)


def state_of(samples: Samples, exchange_id: str, name: str) -> str:
    """The one state whose sample is 1; every other word must be there at 0."""
    values = {
        word: samples[sample("perseus_exchange_state", exchange_id=exchange_id,
                             exchange_name=name, state=word)]
        for word in WORDS
    }  # fmt: skip
    ones = [word for word, value in values.items() if value == 1]
    assert len(ones) == 1 and sum(values.values()) == 1, values
    return ones[0]


async def test_a_known_fleet_scrapes_to_exact_values(
    settings: Settings, r: sync_redis.Redis
) -> None:
    seed_fleet(r)
    async with running(settings) as exporter:
        samples = await scrape(exporter.url)
    one = {"exchange_id": "1", "exchange_name": "coinbase"}
    two = {"exchange_id": "2", "exchange_name": "binance"}
    three = {"exchange_id": "3", "exchange_name": "kraken"}
    assert samples[sample("perseus_exchange_up", **one)] == 1
    assert samples[sample("perseus_exchange_up", **two)] == 0
    assert samples[sample("perseus_exchange_up", **three)] == 0
    assert state_of(samples, "1", "coinbase") == "active"
    assert state_of(samples, "2", "binance") == "offline"
    assert state_of(samples, "3", "kraken") == "unreadable"
    # Judged by Livermore's own 15 s timing: a heartbeat written just now is fresh.
    assert 0 <= samples[sample("perseus_exchange_heartbeat_age_seconds", **one)] < 5
    assert samples[sample("perseus_exchange_heartbeat_late", **one)] == 0
    assert abs(samples[sample("perseus_exchange_uptime_seconds", **one)] - 3600) < 5
    for labels in (two, three):  # no heartbeat, no uptime without a readable status
        assert sample("perseus_exchange_heartbeat_age_seconds", **labels) not in samples
        assert sample("perseus_exchange_uptime_seconds", **labels) not in samples
    for labels in (one, two, three):
        assert samples[sample("perseus_exchange_agents_present", **labels)] == 0
        assert samples[sample("perseus_exchange_errors_total", **labels)] == 0
        assert samples[sample("perseus_exchange_restarts_total", **labels)] == 0
        for command in ("start", "stop"):
            key = sample("perseus_commands_total", **labels, command=command, outcome="error")
            assert samples[key] == 0
    assert not [key for key in samples if key[0] == "perseus_exchange_transitions_total"]
    assert samples[sample("perseus_exporter_redis_up")] == 1
    assert samples[sample("perseus_exporter_redis_errors_total")] == 0
    assert abs(samples[sample("perseus_redis_clock_skew_seconds")]) < 1  # same host


async def test_counters_grow_by_exactly_the_entries_appended(
    settings: Settings, r: sync_redis.Redis, redis: Redis
) -> None:
    seed_fleet(r)
    # An entry written before the exporter starts is history: never counted.
    old = StateTransitionEntry(from_state="warming", to_state="active", exchange_id="1",
                               exchange_name="coinbase", hostname="host-a")  # fmt: skip
    log = ActivityLog(redis, settings)
    await log.append("coinbase", old)
    async with running(settings) as exporter:
        one = {"exchange_id": "1", "exchange_name": "coinbase"}
        for from_state, to_state in (("active", "stopping"), ("stopping", "stopped"),
                                     ("stopped", "idle"), ("idle", "starting"),
                                     ("starting", "warming"), ("warming", "active")):  # fmt: skip
            await log.append("coinbase", old.model_copy(update={"from_state": from_state,
                                                               "to_state": to_state}))  # fmt: skip
        await log.append(
            "coinbase",
            ErrorEntry(
                error="websocket closed",
                state="active",
                exchange_id="1",
                exchange_name="coinbase",
                hostname="host-a",
            ),  # fmt: skip
        )
        # Automatic restarts (Perseus's stream), hostile fields counted all the same.
        restart = RestartEntry(attempt="1", start_retries="5", delay_ms="1400",
                               reason="child command exited with code 2", exchange_id="1",
                               exchange_name="coinbase")  # fmt: skip
        for update in ({}, {"attempt": "x" * 1000, "delay_ms": "-1", "reason": "\x1b[31m"}):
            await log.append("coinbase", restart.model_copy(update=update))
        other = restart.model_copy(update={"exchange_id": "2", "exchange_name": "binance"})
        await log.append("binance", other)
        audit = CommandEntry(command="start", correlation_id="c1", status="ack", exchange_id="1",
                             exchange_name="coinbase")  # fmt: skip
        for status in ("ack", "success", "error"):  # an ack is no outcome: not counted
            await log.append("coinbase", audit.model_copy(update={"status": status}), holder=False)
        # An entry naming no exchange is counted as skipped, never as an exchange.
        await log.append("coinbase", old.model_copy(update={"exchange_id": ""}))

        async def counted() -> Samples | None:
            samples = await scrape(exporter.url)
            key = sample("perseus_commands_total", **one, command="start", outcome="error")
            skipped = samples.get(sample("perseus_exporter_entries_skipped_total"))
            return samples if samples.get(key) == 1 and skipped == 1 else None

        samples = await eventually(counted, what="the appended entries counted")
        for to_state in STATES:
            key = sample("perseus_exchange_transitions_total", **one, to_state=to_state)
            assert samples[key] == 1, to_state  # the entry from before the start is not counted
        assert samples[sample("perseus_exchange_errors_total", **one)] == 1
        assert samples[sample("perseus_exchange_restarts_total", **one)] == 2
        two = {"exchange_id": "2", "exchange_name": "binance"}
        assert samples[sample("perseus_exchange_restarts_total", **two)] == 1
        three = {"exchange_id": "3", "exchange_name": "kraken"}
        assert samples[sample("perseus_exchange_restarts_total", **three)] == 0
        success = sample("perseus_commands_total", **one, command="start", outcome="success")
        assert samples[success] == 1
        assert (
            sample("perseus_commands_total", **one, command="start", outcome="ack") not in samples
        )
        # The exchange goes down: its state follows at the next read.
        r.set(keys.status_key(1), livermore_status(1, "coinbase", "stopping"), px=45_000)
        samples = await scrape(exporter.url)
        assert state_of(samples, "1", "coinbase") == "stopping"
        assert sample("perseus_exchange_uptime_seconds", **one) not in samples


async def test_agents_present_are_counted_with_or_without_a_status(
    settings: Settings, r: sync_redis.Redis, redis: Redis
) -> None:
    seed_fleet(r)
    announcers = [
        AgentAnnouncer(
            redis,
            settings,
            exchange_id=exchange_id,
            exchange_name=name,
            state=lambda: ConnectionState.IDLE,
            hostname=f"host-{n}",
        )  # fmt: skip
        for n, (exchange_id, name) in enumerate(((1, "coinbase"), (2, "binance"), (2, "binance")))
    ]
    for announcer in announcers:
        await announcer.publish()
    async with running(settings) as exporter:
        samples = await scrape(exporter.url)
    assert samples[sample("perseus_exchange_agents_present", exchange_id="1",
                          exchange_name="coinbase")] == 1  # fmt: skip
    assert samples[sample("perseus_exchange_agents_present", exchange_id="2",
                          exchange_name="binance")] == 2  # fmt: skip
    assert state_of(samples, "2", "binance") == "ready"


async def test_scrapes_within_the_cache_window_share_one_fleet_read(
    settings: Settings, r: sync_redis.Redis, redis: Redis
) -> None:
    seed_fleet(r)
    async with running(settings, cache_ms=60_000) as exporter:
        first = await scrape(exporter.url)
        r.set(keys.status_key(1), livermore_status(1, "coinbase", "stopping"), px=45_000)
        second = await scrape(exporter.url, accept="application/openmetrics-text; version=1.0.0")
        assert exporter.readings.health.reads == 1
    assert state_of(first, "1", "coinbase") == state_of(second, "1", "coinbase") == "active"

    class Counting(FleetReader):
        snapshots = 0

        async def snapshot(self, **options: object) -> object:  # type: ignore[override]
            Counting.snapshots += 1
            return await super().snapshot(**options)  # type: ignore[arg-type]

    # Concurrent scrapes wait for the one read in flight, even with no cache at all.
    readings = FleetReadings(redis, settings, cache_ms=0, reader=Counting(redis))
    results = await asyncio.gather(*(readings.latest() for _ in range(5)))
    assert Counting.snapshots == 1
    assert all(result is results[0] for result in results)


async def test_hostile_values_become_safe_labels_and_break_nothing(
    settings: Settings, r: sync_redis.Redis
) -> None:
    seed_fleet(r)
    hostile = '[bold red]x[/] "quoted" \\ back\nnew\x1b[31mline\x00' + "A" * 5_000
    r.set(keys.status_key(7), livermore_status(7, hostile), px=45_000)
    r.set(keys.status_key(8), '{"exchangeId": "8", "exchangeName": 12}', px=45_000)
    async with running(settings) as exporter:
        samples = await scrape(exporter.url)
    names = {dict(labels).get("exchange_name", "") for _, labels in samples}
    ups = {
        dict(labels)["exchange_id"]: value
        for (metric, labels), value in samples.items()
        if metric == "perseus_exchange_up"
    }
    assert ups["1"] == 1  # the good exchange is still there
    assert {"7", "8"} <= set(ups)
    for name in names:
        assert len(name) <= 64
        assert not any(ord(char) < 32 for char in name), repr(name)
    assert any(name.startswith('[bold red]x[/] "quoted" \\ back') for name in names)


@pytest.mark.parametrize("fmt", ["text", "openmetrics"])
async def test_the_page_is_exactly_what_the_library_writes(
    fmt: str, settings: Settings, r: sync_redis.Redis, redis: Redis
) -> None:
    """The families with a sample per exchange are written without the
    library's encoders (for speed): parsed by the library and written again
    by it, the page comes out the same, byte for byte, in both formats, with
    hostile label values and every kind of counter among them."""
    seed_fleet(r)
    r.set(keys.status_key(7), livermore_status(7, 'x[/] "quoted" \\ back'), px=45_000)
    accept = OPENMETRICS_ACCEPT if fmt == "openmetrics" else None
    async with running(settings) as exporter:
        log = ActivityLog(redis, settings)
        one = {"exchange_id": "1", "exchange_name": "coinbase"}
        await log.append("coinbase", StateTransitionEntry(from_state="active", to_state="stopping",
                                                          **one))  # fmt: skip
        await log.append("coinbase", ErrorEntry(error="boom", state="stopping", **one))
        audit = CommandEntry(command="stop", correlation_id="c1", status="success",
                             exchange_id="1", exchange_name="coinbase")  # fmt: skip
        await log.append("coinbase", audit, holder=False)
        await eventually(lambda: exporter.counters.errors.get(1) == 1, what="the error counted")
        await eventually(lambda: len(exporter.counters.commands) == 1, what="the command counted")
        async with httpx.AsyncClient(trust_env=False, timeout=30) as client:
            response = await client.get(exporter.url, headers={"Accept": accept} if accept else {})
    page = response.text
    assert 'x[/] \\"quoted\\" \\\\ back' in page  # escaped once, as the format wants
    if fmt == "openmetrics":
        assert response.headers["content-type"].startswith("application/openmetrics-text")
        again = openmetrics_latest(Families(openmetrics_families(page))).decode()
    else:
        assert response.headers["content-type"].startswith("text/plain")
        again = text_latest(Families(text_string_to_metric_families(page))).decode()
    assert normalised(again) == normalised(page)


LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def normalised(page: str) -> list[str]:
    """The page's lines with each sample's labels in name order (the parser
    keeps them in a dict of its own order, so only the order may differ)."""
    lines = []
    for line in page.splitlines():
        name, brace, rest = line.partition("{")
        if line.startswith("#") or not brace:
            lines.append(line)
            continue
        labels, _, value = rest.rpartition("} ")
        pairs = sorted(LABEL.findall(labels))
        lines.append(name + "{" + ",".join(f'{k}="{v}"' for k, v in pairs) + "} " + value)
    return lines


class Families:
    """Parsed families, as a collector the library's encoders take."""

    def __init__(self, families: Iterable[Metric]) -> None:
        self._families = list(families)

    def collect(self) -> list[Metric]:
        return self._families


async def test_redis_going_away_keeps_the_last_values_and_says_so(
    fresh_redis: RedisServer, make_settings: object, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(redis_url=fresh_redis.url)  # type: ignore[operator]
    with sync_redis.Redis.from_url(fresh_redis.url, decode_responses=True) as r:
        seed_fleet(r)
    async with running(settings) as exporter:
        before = await scrape(exporter.url)
        fresh_redis.stop()
        caplog.set_level(logging.INFO, logger="perseus_core")
        after = await scrape(exporter.url)
        again = await scrape(exporter.url)
    up = sample("perseus_exchange_up", exchange_id="1", exchange_name="coinbase")
    assert before[up] == after[up] == again[up] == 1
    assert before[sample("perseus_exporter_redis_up")] == 1
    assert after[sample("perseus_exporter_redis_up")] == 0
    assert after[sample("perseus_exporter_redis_errors_total")] == 1
    assert again[sample("perseus_exporter_redis_errors_total")] == 2
    said = [rec for rec in caplog.records if rec.name.startswith("perseus_core.export")]
    assert len(said) == 1, [rec.getMessage() for rec in said]  # one line per outage
    assert said[0].exc_info is None and "\n" not in said[0].getMessage()
