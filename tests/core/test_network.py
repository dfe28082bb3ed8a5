"""The network reader against real Redis: catalog, statuses, last-known info, discovery.

Payloads are written the way other writers write them (the docs/wire-format.md 3
example,
byte for byte, without countryCode), plus corrupt ones, to check that the
reader reports each problem on its own exchange and never fails the whole
snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from perseus_cli.apps.redis_cluster import cluster_port
from perseus_cli.apps.redis_server import find_redis_server
from perseus_core.present.exchange import Timing, status_line
from perseus_core.present.fleet import exchange_json
from perseus_core.store.activity import ActivityLog
from perseus_core.store.network import (
    LAST_KNOWN_SCAN,
    ExchangeView,
    FleetReader,
    LastKnown,
    parse_catalog_payload,
    parse_status_payload,
)
from perseus_core.store.presence import AgentAnnouncer
from perseus_core.wire import keys
from perseus_core.wire.errors import PayloadError
from perseus_core.wire.models import (
    MAX_PAYLOAD_BYTES,
    CatalogEntry,
    CommandEntry,
    ConnectionState,
    ErrorEntry,
    InstanceStatus,
    StateTransitionEntry,
    parse_entry,
)
from perseus_core.wire.settings import Settings
from tests.waiting import eventually
from tests.wire_examples import WIRE_STATUS

TTL_MS = 60_000


def status_json(exchange_id: int, name: str, state: str = "active", **extra: object) -> str:
    """The docs/wire-format.md example payload for another exchange."""
    data = json.loads(WIRE_STATUS) | {
        "exchangeId": exchange_id,
        "exchangeName": name,
        "connectionState": state,
    }
    return json.dumps(data | extra, separators=(",", ":"))


async def catalog(redis: Redis, exchange_id: int, name: str, *, active: bool = True) -> None:
    entry = CatalogEntry(id=exchange_id, name=name, display_name=name.title(), is_active=active)
    await redis.hset(keys.CATALOG_KEY, str(exchange_id), entry.to_json())  # type: ignore[misc]


async def online(redis: Redis, exchange_id: int, payload: str) -> None:
    await redis.set(keys.status_key(exchange_id), payload, px=TTL_MS)


def by_id(views: list[ExchangeView]) -> dict[int, ExchangeView]:
    return {view.exchange_id: view for view in views}


@pytest.fixture
def reader(redis: Redis, settings: Settings) -> FleetReader:
    return FleetReader(redis)


@pytest.fixture(scope="module")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real one-node Redis Cluster (cluster mode on, every slot assigned)."""

    port = cluster_port()
    workdir = tmp_path_factory.mktemp("cluster")
    process = subprocess.Popen(
        [
            find_redis_server(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            str(workdir / "nodes.conf"),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],  # fmt: skip
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        with sync_redis.Redis(host="127.0.0.1", port=port, decode_responses=True) as client:
            deadline = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except sync_redis.ConnectionError:
                    assert process.poll() is None, "cluster node exited at start"
                    assert time.monotonic() < deadline, "cluster node did not start"
                    time.sleep(0.02)
            client.execute_command("CLUSTER", "ADDSLOTS", *range(16384))
            while "cluster_state:ok" not in client.execute_command("CLUSTER", "INFO"):
                assert time.monotonic() < deadline, "cluster did not become ready"
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


# --- snapshot ---------------------------------------------------------------------


async def test_snapshot_of_a_mixed_fleet(
    redis: Redis, settings: Settings, reader: FleetReader
) -> None:
    log = ActivityLog(redis, settings)
    # 1: online, payload exactly as the TypeScript writer produces it.
    await catalog(redis, 1, "coinbase")
    await redis.set(keys.status_key(1), WIRE_STATUS, px=TTL_MS)
    # 2: offline, with history in its stream.
    await catalog(redis, 2, "kraken")
    await log.append(
        "kraken",
        StateTransitionEntry(
            timestamp="2026-02-10T20:00:00.000Z",
            from_state="stopping",
            to_state="stopped",
            hostname="trader-7",
            ip="198.51.100.4",
        ),
    )
    # 3: online with a corrupt payload.
    await catalog(redis, 3, "binance")
    await online(redis, 3, '{"exchangeId": 3, "hostname": ')
    # 4: inactive and offline: not listed.
    await catalog(redis, 4, "bitstamp", active=False)
    # 5: inactive but online: listed.
    await catalog(redis, 5, "gemini", active=False)
    await online(redis, 5, status_json(5, "gemini", "warming"))
    # 6: online, not in the catalog.
    await online(redis, 6, status_json(6, "okx"))
    # 7: a corrupt catalog entry; 8: a catalog entry with another id inside.
    await redis.hset(keys.CATALOG_KEY, "7", "{broken")  # type: ignore[misc]
    await redis.hset(keys.CATALOG_KEY, "8", CatalogEntry(id=80, name="bybit").to_json())  # type: ignore[misc]
    # 9: a payload that claims to be another exchange.
    await catalog(redis, 9, "kucoin")
    await online(redis, 9, status_json(10, "kucoin"))
    # A catalog field that is not an id at all.
    await redis.hset(keys.CATALOG_KEY, "abc", CatalogEntry(id=11, name="x").to_json())  # type: ignore[misc]
    # 12: offline, never wrote anything.
    await catalog(redis, 12, "bitfinex")

    snapshot = await reader.snapshot()
    ids = [view.exchange_id for view in snapshot.exchanges]
    assert ids == sorted(ids)
    views = by_id(snapshot.exchanges)
    assert set(views) == {-1, 1, 2, 3, 5, 6, 7, 8, 9, 12}

    coinbase = views[1]
    assert coinbase.online and coinbase.error is None and coinbase.in_catalog
    assert coinbase.status is not None and coinbase.status.country_code is None
    assert coinbase.status.connection_state is ConnectionState.ACTIVE
    assert coinbase.status == InstanceStatus.from_json(WIRE_STATUS)
    assert (coinbase.exchange_name, coinbase.display_name) == ("coinbase", "Coinbase")
    assert coinbase.last_known is None

    kraken = views[2]
    assert not kraken.online and kraken.status is None and kraken.error is None
    assert kraken.last_known is not None
    assert (kraken.last_known.hostname, kraken.last_known.ip, kraken.last_known.state) == (
        "trader-7",
        "198.51.100.4",
        "stopped",
    )
    assert kraken.last_known.event == "state_transition"
    assert kraken.last_known.timestamp == "2026-02-10T20:00:00.000Z"
    assert kraken.last_known.time is not None

    binance = views[3]
    assert binance.online and binance.status is None
    assert binance.error is not None and "not valid JSON" in binance.error

    assert views[5].online and not views[5].is_active and views[5].status is not None
    okx = views[6]
    assert okx.online and not okx.in_catalog and okx.exchange_name == "okx"
    assert okx.display_name == "okx" and okx.catalog_entry is None

    assert views[7].in_catalog and views[7].error is not None and not views[7].online
    assert "catalog entry" in views[7].error
    assert views[8].error == "catalog entry under id 8 says id 80"
    assert views[9].status is None and views[9].online
    assert views[9].error is not None and "exchange:9:status" in views[9].error
    assert views[-1].error is not None and "'abc'" in views[-1].error
    assert not views[12].online and views[12].last_known is None and views[12].error is None
    assert snapshot.online_count == 5  # 1, 3, 5, 6 and 9
    assert snapshot.get(6) is okx and snapshot.get(4) is None


async def test_a_cancelled_snapshot_ends_after_its_read_of_new_statuses(
    redis: Redis, r: sync_redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first snapshot reads the statuses while it validates the catalog
    in slices. Cancelled between two slices, it ends only once that read has
    ended: a read left unwinding met the client its caller closed next (a
    fresh-clone run once found a connection of the dashboard left unclosed)."""
    r.hset(
        keys.CATALOG_KEY,
        mapping={str(i): CatalogEntry(id=i, name=f"ex{i}").to_json() for i in range(1, 3001)},
    )
    reader = FleetReader(redis)
    read_started = asyncio.Event()
    read_ended: list[bool] = []

    async def slow_to_unwind(ids: Any) -> Any:
        read_started.set()
        try:
            await asyncio.Event().wait()  # a read that is answered only after the cancel
        finally:
            for _ in range(5):  # what redis-py does on the way out: a few turns
                await asyncio.sleep(0)
            read_ended.append(True)

    monkeypatch.setattr(reader, "_mget", slow_to_unwind)
    ended_with_snapshot: list[bool] = []

    async def snapshot() -> None:
        try:
            await reader.snapshot(discover_online=False)
        finally:  # as the snapshot ends, before any other task has run
            ended_with_snapshot.append(bool(read_ended))

    task = asyncio.ensure_future(snapshot())
    await read_started.wait()
    task.cancel()  # lands between two slices of the catalog's validation
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert ended_with_snapshot == [True]


async def test_status_json_shape_of_a_view(redis: Redis, reader: FleetReader) -> None:
    await catalog(redis, 1, "coinbase")
    await redis.set(keys.status_key(1), WIRE_STATUS, px=TTL_MS)
    view = (await reader.snapshot()).exchanges[0]
    data = exchange_json(view, datetime.now(UTC), Timing())
    assert list(data) == [
        "exchangeId",
        "exchangeName",
        "displayName",
        "online",
        "state",
        "tone",
        "status",
        "heartbeat",
        "uptimeMs",
        "uptime",
        "lastKnown",
        "lastSeen",
        "agents",
        "standbys",
        "wanted",
        "stoppedBy",
        "crashed",
        "error",
    ]
    assert data["agents"] == []
    assert {k: v for k, v in data["status"].items() if k != "countryCode"} == json.loads(
        WIRE_STATUS
    )
    beat = data["heartbeat"]  # a Livermore payload: judged at its fixed 15 s
    assert list(beat) == [
        "at",
        "ageMs",
        "health",
        "tone",
        "text",
        "intervalMs",
        "timing",
        "freshMs",
        "overdueMs",
    ]
    assert (beat["timing"], beat["intervalMs"], beat["overdueMs"]) == ("livermore", 15_000, 30_000)


async def test_status_json_and_the_status_table_say_the_same(
    redis: Redis, reader: FleetReader, settings: Settings
) -> None:
    """The JSON's verdict is the presenter's, word for word and tone for tone,
    as `perseus status` lays it out: live (overdue, healthy), ready, offline."""
    now = datetime.now(UTC)
    await catalog(redis, 1, "coinbase")
    await redis.set(keys.status_key(1), WIRE_STATUS, px=TTL_MS)
    await catalog(redis, 2, "kraken")
    fresh = status_json(2, "kraken", connectedAt="2026-02-10T18:00:00.000Z")
    await redis.set(keys.status_key(2), fresh, px=TTL_MS)
    await catalog(redis, 3, "okx")
    await AgentAnnouncer(
        redis,
        settings.model_copy(update={"heartbeat_ttl_ms": 60_000}),  # no expiry while read
        exchange_id=3,
        exchange_name="okx",
        state=lambda: ConnectionState.IDLE,
        hostname="okx-host",
    ).publish()
    await catalog(redis, 4, "gemini")
    snapshot = await reader.snapshot()
    timing = Timing.from_settings(settings)
    for view in snapshot.exchanges:
        data = exchange_json(view, now, timing)
        line = status_line(view, now, timing)
        assert (data["state"], data["tone"]) == (line.state.text, line.state.tone)
        beat = data["heartbeat"]
        said = (beat["text"], beat["tone"]) if beat is not None else ("-", None)
        assert said == (line.heartbeat.text, line.heartbeat.tone)
        assert (data["uptime"] or "-") == line.uptime
    assert [exchange_json(v, now, timing)["state"] for v in snapshot.exchanges] == [
        "active",
        "active",
        "ready",
        "offline",
    ]


async def test_last_known_tolerates_missing_fields_and_unknown_events(
    redis: Redis, reader: FleetReader
) -> None:
    await catalog(redis, 1, "coinbase")
    await catalog(redis, 2, "kraken")
    await catalog(redis, 3, "binance")
    await redis.xadd(keys.activity_key("coinbase"), {"event": "rebalance", "state": "warming"})
    await redis.xadd(keys.activity_key("kraken"), {"hostname": "h2"})
    await redis.set(keys.activity_key("binance"), "not a stream")
    views = by_id((await reader.snapshot()).exchanges)
    assert views[1].last_known == LastKnown(
        hostname="",
        ip="",
        state="warming",
        timestamp="",
        event="rebalance",
        id=views[1].last_known.id if views[1].last_known else "",
    )
    assert views[2].last_known is not None
    assert (views[2].last_known.hostname, views[2].last_known.event) == ("h2", "")
    assert views[2].last_known.time is None
    assert views[3].last_known is None
    assert views[3].error is not None and "unreadable" in views[3].error


async def test_last_known_of_an_error_entry_and_opt_out(
    redis: Redis, settings: Settings, reader: FleetReader
) -> None:
    await catalog(redis, 1, "coinbase")
    await ActivityLog(redis, settings).append(
        "coinbase", ErrorEntry(error="boom", state="warming", hostname="h", ip="")
    )
    view = (await reader.snapshot()).exchanges[0]
    assert view.last_known is not None
    assert (view.last_known.state, view.last_known.event) == ("warming", "error")
    assert (await reader.snapshot(last_known=False)).exchanges[0].last_known is None


async def test_last_known_skips_entries_without_a_state(
    redis: Redis, settings: Settings, reader: FleetReader
) -> None:
    """After a stop the newest entry is the command's audit entry, which names no
    state: the state (and host) come from the newest entry that has one."""
    log = ActivityLog(redis, settings)
    await catalog(redis, 1, "coinbase")
    await log.append(
        "coinbase", StateTransitionEntry(from_state="active", to_state="stopping", hostname="h1")
    )
    await log.append(
        "coinbase", StateTransitionEntry(from_state="stopped", to_state="idle", hostname="h1")
    )
    for _ in range(3):
        await log.append(
            "coinbase", CommandEntry(command="stop", status="success", hostname="other")
        )
    # 2: only commands: the newest entry of any kind, with no state.
    await catalog(redis, 2, "kraken")
    await log.append("kraken", CommandEntry(command="ping", status="success", hostname="k1"))
    await log.append("kraken", CommandEntry(command="stop", status="error", hostname="k2"))
    # 3: the state-carrying entry is further back than the reader looks.
    await catalog(redis, 3, "binance")
    await log.append("binance", StateTransitionEntry(to_state="stopped", hostname="b0"))
    for _ in range(LAST_KNOWN_SCAN):
        await log.append("binance", CommandEntry(command="ping", hostname="b1"))

    views = by_id((await reader.snapshot()).exchanges)
    one = views[1].last_known
    assert one is not None
    assert (one.state, one.event, one.hostname) == ("idle", "state_transition", "h1")
    # Audit entries live in the Perseus-only stream: they never name a holder.
    assert views[2].last_known is None
    three = views[3].last_known
    assert three is not None and (three.state, three.hostname) == ("stopped", "b0")
    # The same pick from a single-exchange read, and again from the reader's cache.
    assert (await reader.exchange(1)).last_known == one
    assert by_id((await reader.snapshot()).exchanges)[1].last_known == one
    # An error of another host (a refused claim) never names the holder...
    await log.append("coinbase", ErrorEntry(error="refused", state="idle", hostname="h2"))
    assert by_id((await reader.snapshot()).exchanges)[1].last_known.hostname == "h1"  # type: ignore[union-attr]
    # ...while the holder's own newer error wins at once.
    await log.append("coinbase", ErrorEntry(error="boom", state="starting", hostname="h1"))
    fresh = by_id((await reader.snapshot()).exchanges)[1].last_known
    assert fresh is not None and (fresh.state, fresh.event) == ("starting", "error")


def test_last_known_pick_names_the_last_holder() -> None:
    command = parse_entry("3-0", {"event": "command", "command": "stop"})
    other = parse_entry("2-0", {"event": "maintenance", "toState": "stopped"})
    transition = parse_entry("1-0", {"event": "state_transition", "toState": "active"})
    assert LastKnown.pick([command, other, transition]).state == "active"  # type: ignore[union-attr]
    assert LastKnown.pick([command, other]).state == "stopped"  # type: ignore[union-attr]
    assert LastKnown.pick([command]).event == "command"  # type: ignore[union-attr]
    assert LastKnown.pick([]) is None


async def test_ttl_expiry_makes_an_exchange_offline(redis: Redis, reader: FleetReader) -> None:
    await catalog(redis, 1, "coinbase")
    await redis.set(keys.status_key(1), WIRE_STATUS, px=300)
    assert (await reader.snapshot()).exchanges[0].online

    async def offline() -> bool:
        return not (await reader.snapshot()).exchanges[0].online

    await eventually(offline, within=5, what="the status key to expire")
    assert (await reader.snapshot()).exchanges[0].status is None


async def test_changed_payloads_are_never_served_from_the_cache(
    redis: Redis, reader: FleetReader
) -> None:
    await catalog(redis, 1, "coinbase")
    await online(redis, 1, WIRE_STATUS)
    first = (await reader.snapshot()).exchanges[0]
    await online(redis, 1, status_json(1, "coinbase", "stopping"))
    second = (await reader.snapshot()).exchanges[0]
    await online(redis, 1, "{}")
    third = (await reader.snapshot()).exchanges[0]
    assert first.status is not None and first.status.connection_state is ConnectionState.ACTIVE
    assert second.status is not None
    assert second.status.connection_state is ConnectionState.STOPPING
    assert third.status is None and third.error is not None
    # A catalog entry edited in place is read again too.
    await catalog(redis, 1, "renamed")
    assert (await reader.snapshot()).exchanges[0].exchange_name == "renamed"


async def test_unchanged_exchanges_keep_their_view_and_changes_show_at_once(
    redis: Redis, reader: FleetReader
) -> None:
    await catalog(redis, 1, "coinbase")
    await online(redis, 1, WIRE_STATUS)
    await catalog(redis, 2, "kraken")
    await redis.hset(keys.CATALOG_KEY, "3", "{broken")  # type: ignore[misc]
    first = by_id((await reader.snapshot()).exchanges)
    second = by_id((await reader.snapshot()).exchanges)
    assert second[1] is first[1]  # nothing changed: nothing re-validated
    assert second[1].status is not None and second[3].error is not None
    # Deactivated while offline: gone; repaired catalog entry: valid at once.
    await catalog(redis, 2, "kraken", active=False)
    await catalog(redis, 3, "binance")
    await redis.delete(keys.status_key(1))
    third = by_id((await reader.snapshot()).exchanges)
    assert set(third) == {1, 3}
    assert not third[1].online and third[1].status is None
    assert third[3].error is None and third[3].exchange_name == "binance"


async def test_online_exchanges_outside_the_catalog_are_found_by_a_cached_scan(
    redis: Redis, settings: Settings
) -> None:
    reader = FleetReader(redis, scan_every_s=3600)
    await catalog(redis, 1, "coinbase")
    await online(redis, 2, status_json(2, "kraken"))
    assert [v.exchange_id for v in (await reader.snapshot()).exchanges] == [1, 2]  # first: scans
    await online(redis, 3, status_json(3, "okx"))
    # Not scanned again yet: 3 is unknown; 2 is still read from the remembered ids.
    assert [v.exchange_id for v in (await reader.snapshot()).exchanges] == [1, 2]
    assert [v.exchange_id for v in (await reader.snapshot(discover_online=True)).exchanges] == [
        1,
        2,
        3,
    ]
    await redis.delete(keys.status_key(2))
    assert [v.exchange_id for v in (await reader.snapshot()).exchanges] == [1, 3]
    # Once an exchange joins the catalog it is listed through it.
    await catalog(redis, 3, "okx")
    await redis.delete(keys.status_key(3))
    views = by_id((await reader.snapshot(discover_online=False)).exchanges)
    assert set(views) == {1, 3} and views[3].in_catalog and not views[3].online


async def test_an_exchange_removed_from_the_catalog_while_online_stays_listed(
    redis: Redis, settings: Settings
) -> None:
    """`perseus catalog remove` of a running exchange made it vanish from the
    dashboard until the next scan (up to `scan_every_s`) found its key."""
    reader = FleetReader(redis, scan_every_s=3600)
    await catalog(redis, 1, "coinbase")
    await catalog(redis, 2, "kraken")
    await online(redis, 1, status_json(1, "coinbase"))
    assert [v.exchange_id for v in (await reader.snapshot()).exchanges] == [1, 2]
    assert await reader.remove_from_catalog(1) and await reader.remove_from_catalog(2)
    views = by_id((await reader.snapshot()).exchanges)
    assert list(views) == [1]  # kraken was offline: gone with its entry
    assert views[1].online and not views[1].in_catalog
    assert "coinbase" in await reader.exchange_names()  # its stream is still followed
    await redis.delete(keys.status_key(1))
    assert (await reader.snapshot(last_known=False)).exchanges == []


async def test_snapshot_without_scanning(redis: Redis, reader: FleetReader) -> None:
    await catalog(redis, 1, "coinbase")
    await online(redis, 2, status_json(2, "kraken"))
    snapshot = await reader.snapshot(discover_online=False)
    assert [v.exchange_id for v in snapshot.exchanges] == [1]


async def test_a_catalog_that_grows_between_snapshots(redis: Redis, reader: FleetReader) -> None:
    await catalog(redis, 1, "coinbase")
    assert len((await reader.snapshot()).exchanges) == 1
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(2, 2_502):
            pipe.set(keys.status_key(i), status_json(i, f"ex{i}"), px=TTL_MS)
            pipe.hset(keys.CATALOG_KEY, str(i), CatalogEntry(id=i, name=f"ex{i}").to_json())
        await pipe.execute()
    snapshot = await reader.snapshot(discover_online=False)
    assert len(snapshot.exchanges) == 2_501
    assert all(v.status is not None for v in snapshot.exchanges[1:])
    assert snapshot.exchanges[-1].status is not None
    assert snapshot.exchanges[-1].status.exchange_name == "ex2501"


async def test_empty_redis(reader: FleetReader) -> None:
    snapshot = await reader.snapshot()
    assert snapshot.exchanges == [] and snapshot.online_count == 0
    assert await reader.catalog() == []
    assert await reader.exchange_names() == []


# --- one exchange ---------------------------------------------------------------------


async def test_exchange_reads_one_whether_online_offline_or_unknown(
    redis: Redis, settings: Settings, reader: FleetReader
) -> None:
    await catalog(redis, 1, "coinbase")
    await online(redis, 1, WIRE_STATUS)
    await catalog(redis, 2, "kraken", active=False)
    await ActivityLog(redis, settings).append(
        "kraken", StateTransitionEntry(to_state="stopped", hostname="h")
    )
    await online(redis, 3, status_json(3, "okx"))

    one = await reader.exchange(1)
    assert one.online and one.status is not None and one.display_name == "Coinbase"
    two = await reader.exchange(2)
    assert not two.online and two.last_known is not None and two.last_known.state == "stopped"
    assert not two.is_active
    three = await reader.exchange(3)
    assert three.online and not three.in_catalog and three.exchange_name == "okx"
    unknown = await reader.exchange(99)
    assert (unknown.online, unknown.in_catalog, unknown.error, unknown.last_known) == (
        False,
        False,
        None,
        None,
    )
    assert unknown.display_name == "exchange 99"


# --- the catalog ---------------------------------------------------------------------------


async def test_catalog_lists_valid_entries_and_reports_corrupt_ones(
    redis: Redis, reader: FleetReader, caplog: pytest.LogCaptureFixture
) -> None:
    await catalog(redis, 2, "kraken")
    await catalog(redis, 1, "coinbase")
    await redis.hset(keys.CATALOG_KEY, "3", '{"id": 3}')  # type: ignore[misc]
    entries = await reader.catalog()
    assert [e.id for e in entries] == [1, 2]
    assert set(reader.catalog_errors) == {"3"} and "name" in reader.catalog_errors["3"]
    assert "catalog field '3'" in caplog.text


async def test_add_to_catalog_never_overwrites_without_asking(
    redis: Redis, reader: FleetReader
) -> None:
    operator = CatalogEntry(id=1, name="coinbase", display_name="Coinbase Pro", is_active=False)
    agent = CatalogEntry(id=1, name="coinbase", display_name="coinbase")
    assert await reader.add_to_catalog(operator) is True
    assert await reader.add_to_catalog(agent, overwrite=False) is False
    assert await reader.catalog() == [operator]
    assert await reader.add_to_catalog(agent, overwrite=True) is True
    assert await reader.catalog() == [agent]
    assert await reader.add_to_catalog(CatalogEntry(id=2, name="kraken"), overwrite=False)
    with pytest.raises(ValueError):
        await reader.add_to_catalog(CatalogEntry(id=3, name="bad name\x1b[31m"))
    assert await reader.remove_from_catalog(2) is True
    assert await reader.remove_from_catalog(2) is False
    assert [e.id for e in await reader.catalog()] == [1]


async def test_discover_imports_online_exchanges_missing_from_the_catalog(
    redis: Redis, reader: FleetReader
) -> None:
    await catalog(redis, 1, "coinbase")
    await online(redis, 1, WIRE_STATUS)
    await online(redis, 2, status_json(2, "kraken"))
    await online(redis, 3, "garbage")
    await online(redis, 4, status_json(4, "bad name!"))
    await online(redis, 5, status_json(6, "okx"))  # says it is another exchange
    for i in range(100, 1_600):  # enough keys that SCAN takes several calls
        await redis.set(f"unrelated:{i}", "x")
    added = await reader.discover()
    assert added == [CatalogEntry(id=2, name="kraken", display_name="kraken")]
    assert [e.id for e in await reader.catalog()] == [1, 2]
    assert await reader.discover() == []  # once is enough


async def test_exchange_names_cover_catalog_and_online(redis: Redis, reader: FleetReader) -> None:
    await catalog(redis, 1, "Coinbase")
    await catalog(redis, 2, "kraken", active=False)
    await online(redis, 3, status_json(3, "okx"))
    await online(redis, 4, "corrupt")
    assert await reader.exchange_names() == ["Coinbase", "kraken", "okx"]


# --- validation fast path ------------------------------------------------------------


def _status_variants() -> list[str]:
    base = json.loads(WIRE_STATUS)
    return [
        WIRE_STATUS,
        json.dumps(base | {"countryCode": "DE", "instanceId": "h:1:2:3", "epoch": 4, "pid": 5}),
        json.dumps(base | {"somethingNew": {"a": [1]}}),
        json.dumps(base | {"lastHeartbeat": "2026-02-10T23:45:00.123456789+01:00"}),
        json.dumps(base | {"connectedAt": "2026-02-10T18:22:04Z"}),
        json.dumps(base | {"exchange_id": 1}),
        "{not json",
        "[1, 2]",
        "null",
        '"text"',
        "",
        json.dumps(base | {"connectionState": "running"}),
        json.dumps(base | {"connectionState": 3}),
        json.dumps(base | {"symbolCount": "25"}),
        json.dumps(base | {"symbolCount": 25.0}),
        json.dumps(base | {"symbolCount": -1}),
        json.dumps(base | {"exchangeId": True}),
        json.dumps(base | {"lastHeartbeat": "yesterday"}),
        json.dumps(base | {"lastHeartbeat": 1770000000}),
        json.dumps(base | {"hostname": None}),
        json.dumps({k: v for k, v in base.items() if k != "hostname"}),
        json.dumps(base | {"hostname": "x" * MAX_PAYLOAD_BYTES}),
        WIRE_STATUS.replace('"symbolCount":25', '"symbolCount":NaN'),
        WIRE_STATUS.replace("DESKTOP-ABC", "\\ud800"),
        WIRE_STATUS.replace('"hostname":"DESKTOP-ABC"', '"hostname":"a","hostname":"b"'),
        WIRE_STATUS + " ",
        WIRE_STATUS + "x",
    ]


@pytest.mark.parametrize("raw", _status_variants())
def test_status_fast_path_agrees_with_from_json(raw: str) -> None:
    try:
        expected: InstanceStatus | str = InstanceStatus.from_json(raw)
    except PayloadError as exc:
        expected = str(exc)
    assert parse_status_payload(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        '{"id": 1, "name": "coinbase", "displayName": "Coinbase", "isActive": true}',
        '{"id": 1, "name": "coinbase"}',
        '{"id": "1", "name": "coinbase"}',
        '{"id": 1, "name": ""}',
        '{"id": 1, "name": "a", "isActive": "yes"}',
        '{"id": 1, "name": "a", "isActive": 1}',
        "{broken",
        "[]",
    ],
)
def test_catalog_fast_path_agrees_with_from_json(raw: str) -> None:
    try:
        expected: CatalogEntry | str = CatalogEntry.from_json(raw)
    except PayloadError as exc:
        expected = str(exc)
    assert parse_catalog_payload(raw) == expected


# --- Redis Cluster -------------------------------------------------------------------


async def test_works_on_a_redis_cluster(
    redis_cluster_url: str, make_settings: Callable[..., Settings]
) -> None:
    """A one-node cluster still refuses any multi-key command across slots, so
    it proves every read is split per slot."""
    from redis.asyncio.cluster import RedisCluster

    settings = make_settings(redis_url=redis_cluster_url)
    client = RedisCluster.from_url(redis_cluster_url, decode_responses=True)
    try:
        reader = FleetReader(client)
        log = ActivityLog(client, settings)
        for i in range(1, 41):
            await reader.add_to_catalog(CatalogEntry(id=i, name=f"ex{i}"))
            if i % 2:
                await client.set(keys.status_key(i), status_json(i, f"ex{i}"), px=TTL_MS)
            else:
                await log.append(f"ex{i}", StateTransitionEntry(to_state="stopped"))
        await client.set(keys.status_key(77), status_json(77, "stray"), px=TTL_MS)
        for i in (2, 4):  # presence: one Lua script per key, keys in KEYS
            await AgentAnnouncer(
                client,
                settings,
                exchange_id=i,
                exchange_name=f"ex{i}",
                state=lambda: ConnectionState.IDLE,
                hostname=f"agent-{i}",
            ).publish()
        snapshot = await reader.snapshot()
        views = by_id(snapshot.exchanges)
        assert [a.hostname for a in views[2].agents + views[4].agents] == ["agent-2", "agent-4"]
        assert views[6].agents == () and views[1].agents == ()
        assert len(views) == 41 and views[77].online and not views[77].in_catalog
        assert all(views[i].status is not None for i in range(1, 41, 2))
        assert all(
            views[i].last_known is not None and views[i].last_known.state == "stopped"  # type: ignore[union-attr]
            for i in range(2, 41, 2)
        )
        page = await log.merged_page([f"ex{i}" for i in range(1, 41)], count=5)
        assert len(page.entries) == 5 and page.next_cursor is not None
        assert [v.exchange_id for v in [await reader.exchange(3)]] == [3]
    finally:
        await client.aclose()


# --- large fleets, a first snapshot ------------------------------------------------


def _more_status_variants() -> list[str]:
    base = json.loads(WIRE_STATUS)
    return [
        json.dumps(base | {"lastHeartbeat": "2026-02-10T22:45:00.123"}),  # naive: UTC
        json.dumps(base | {"lastHeartbeat": "2026-02-10T22:45:00"}),
        json.dumps(base | {"lastHeartbeat": "2026-02-10T22:45:00.123456789Z"}),
        json.dumps(base | {"lastHeartbeat": "2026-02-10T17:15:00.123-05:30"}),
        json.dumps(base | {"lastHeartbeat": "2026-02-10T22:45:00+00:00"}),
        json.dumps(base | {"lastHeartbeat": "1770000000"}),
        json.dumps(base | {"lastHeartbeat": "2026-02-10t22:45:00z"}),
        json.dumps(base | {"lastHeartbeat": "2026-02-30T22:45:00Z"}),
        json.dumps(base | {"connectedAt": None, "lastErrorAt": "2026-02-10T22:45:01Z"}),
        json.dumps(base | {"registeredAt": None}),
        json.dumps(base | {"connectionState": "ACTIVE"}),
        json.dumps(base | {"exchangeId": 2**70}),
        json.dumps(base | {"epoch": 1.5}),
    ]


@pytest.mark.parametrize("raw", _more_status_variants())
def test_status_fast_path_agrees_with_from_json_on_timestamps(raw: str) -> None:
    try:
        expected: InstanceStatus | str = InstanceStatus.from_json(raw)
    except PayloadError as exc:
        expected = str(exc)
    parsed = parse_status_payload(raw)
    assert parsed == expected
    if isinstance(parsed, InstanceStatus):
        for moment in (parsed.last_heartbeat, parsed.last_state_change, parsed.registered_at):
            assert moment.utcoffset() == timedelta(0)


def test_naive_and_nanosecond_timestamps_on_the_fast_path() -> None:
    base = json.loads(WIRE_STATUS)
    naive = parse_status_payload(json.dumps(base | {"lastHeartbeat": "2026-02-10T22:45:00.123"}))
    assert isinstance(naive, InstanceStatus)
    assert naive.last_heartbeat == datetime(2026, 2, 10, 22, 45, 0, 123000, tzinfo=UTC)
    assert naive.last_heartbeat.utcoffset() == timedelta(0)
    nanos = parse_status_payload(
        json.dumps(base | {"lastHeartbeat": "2026-02-10T22:45:00.999999999Z"})
    )
    assert isinstance(nanos, InstanceStatus)
    assert nanos.last_heartbeat == datetime(2026, 2, 10, 22, 45, 0, 999999, tzinfo=UTC)


async def _seed(redis: Redis, size: int) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        for i in range(1, size + 1):
            entry = CatalogEntry(id=i, name=f"ex{i}", display_name=f"Ex {i}")
            pipe.hset(keys.CATALOG_KEY, str(i), entry.to_json())
            pipe.set(keys.status_key(i), status_json(i, f"ex{i}"), px=TTL_MS)
        await pipe.execute()


async def test_a_first_snapshot_of_a_large_fleet_reports_each_problem_on_its_own(
    redis: Redis, settings: Settings, long_ttl: Settings
) -> None:
    """1,500 exchanges, a new reader: every payload is validated, and problems
    anywhere in the catalog (which a first snapshot validates in slices while
    the statuses are read) stay on their own exchange."""
    size = 1_500
    await _seed(redis, size)
    for i in (7, 777, 1_499):  # corrupt catalog values, early, middle, late
        await redis.hset(keys.CATALOG_KEY, str(i), "{broken")  # type: ignore[misc]
    await redis.hset(keys.CATALOG_KEY, "1000", CatalogEntry(id=1, name="x").to_json())  # type: ignore[misc]
    await redis.hset(keys.CATALOG_KEY, "²", CatalogEntry(id=2, name="x").to_json())  # type: ignore[misc]
    for i in (3, 900):  # corrupt payloads
        await online(redis, i, '{"exchangeId": ')
    await online(redis, 1_200, status_json(1_201, "ex1201"))  # claims another id
    await online(redis, 1_300, status_json(1_300, "ex1300", lastHeartbeat="2026-02-10T22:45:00"))
    for i in (50, 1_400):  # offline: last-known and presence are read for them
        await redis.delete(keys.status_key(i))
        await ActivityLog(redis, settings).append(
            f"ex{i}", StateTransitionEntry(to_state="stopped", hostname=f"h{i}")
        )
    await AgentAnnouncer(  # a presence that cannot expire while the test reads twice
        redis,
        long_ttl,
        exchange_id=1_400,
        exchange_name="ex1400",
        state=lambda: ConnectionState.IDLE,
        hostname="agent-1400",
    ).publish()
    await redis.hset(
        keys.CATALOG_KEY, "1450", CatalogEntry(id=1450, name="ex1450", is_active=False).to_json()
    )  # type: ignore[misc]
    await redis.delete(keys.status_key(1_450))  # inactive and offline: not listed

    reader = FleetReader(redis)
    snapshot = await reader.snapshot(discover_online=False)
    views = by_id(snapshot.exchanges)
    ids = [view.exchange_id for view in snapshot.exchanges]
    assert ids == sorted(ids) and len(ids) == size  # 1,499 listed ids and one that is no id
    assert views[-1].error is not None and "'²'" in views[-1].error
    for i in (7, 777, 1_499):
        assert views[i].error is not None and "catalog entry" in views[i].error
        assert views[i].status is not None and views[i].catalog_entry is None
    assert views[1_000].error == "catalog entry under id 1000 says id 1"
    for i in (3, 900):
        assert views[i].online and views[i].status is None
        assert views[i].error is not None and "not valid JSON" in views[i].error
    assert views[1_200].status is None and "exchange:1200:status" in (views[1_200].error or "")
    late = views[1_300].status
    assert late is not None and late.last_heartbeat == datetime(2026, 2, 10, 22, 45, tzinfo=UTC)
    assert views[50].last_known is not None and views[50].last_known.hostname == "h50"
    assert [a.hostname for a in views[1_400].agents] == ["agent-1400"] and views[1_400].ready
    assert 1_450 not in views
    problems = {7, 777, 1_499, 1_000, 3, 900, 1_200, -1}
    assert all(views[i].error is None for i in views if i not in problems)
    assert snapshot.online_count == size - 1 - 2  # no id, and the two offline
    assert set(reader.catalog_errors) == {"7", "777", "1499", "1000", "²"}
    for i in (1, 500, 1_498):
        assert views[i].status == InstanceStatus.from_json(status_json(i, f"ex{i}"))

    # The same reader again: nothing changed, nothing is rebuilt.
    again = by_id((await reader.snapshot(discover_online=False)).exchanges)
    assert all(again[i] is views[i] for i in views if views[i].online)
    assert again == views
    # Another new reader reads the same.
    fresh = by_id((await FleetReader(redis).snapshot(discover_online=False)).exchanges)
    assert fresh == views


async def test_an_unchanged_payload_keeps_its_status_when_the_catalog_changes(
    redis: Redis, reader: FleetReader
) -> None:
    await catalog(redis, 1, "coinbase")
    await online(redis, 1, WIRE_STATUS)
    first = (await reader.snapshot()).exchanges[0]
    await redis.hset(  # type: ignore[misc]
        keys.CATALOG_KEY, "1", CatalogEntry(id=1, name="coinbase", display_name="CB").to_json()
    )
    second = (await reader.snapshot()).exchanges[0]
    assert second is not first and second.display_name == "CB"
    assert second.status is first.status  # the same bytes, not validated again
    await redis.hset(keys.CATALOG_KEY, "1", "{broken")  # type: ignore[misc]
    third = (await reader.snapshot()).exchanges[0]
    assert third.status is first.status and third.error is not None


async def test_a_snapshot_never_touches_the_garbage_collector(
    redis: Redis, settings: Settings
) -> None:
    """The collector is the application's: whether it runs, its thresholds and
    what it froze are the same after a large snapshot as before, however the
    application left them."""
    await _seed(redis, 600)

    def collector() -> tuple[bool, tuple[int, int, int], bool]:
        # Frozen objects may be freed meanwhile: what counts is that some stay frozen.
        return gc.isenabled(), gc.get_threshold(), gc.get_freeze_count() > 0

    async def snapshot_keeps_the_collector() -> None:
        before = collector()
        await FleetReader(redis).snapshot(discover_online=False)
        assert collector() == before

    await snapshot_keeps_the_collector()
    gc.disable()
    try:
        await snapshot_keeps_the_collector()
    finally:
        gc.enable()
    gc.freeze()
    try:
        await snapshot_keeps_the_collector()
    finally:
        gc.unfreeze()


async def test_a_cancelled_first_snapshot_leaves_the_reader_usable(
    redis: Redis, settings: Settings
) -> None:
    await _seed(redis, 1_200)
    for steps in range(1, 12):
        reader = FleetReader(redis)
        task = asyncio.create_task(reader.snapshot(discover_online=False))
        for _ in range(steps):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        snapshot = await reader.snapshot(discover_online=False)
        assert len(snapshot.exchanges) == 1_200
        assert all(view.status is not None for view in snapshot.exchanges)
