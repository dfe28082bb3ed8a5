"""The data every screenshot shows: a seeded fleet in every state, its history,
its agents, a hostile hostname and an empty fleet, all dated from one frozen
"now" so nothing depends on the day the screenshots are taken.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

import redis as sync_redis

from perseus_core.store.wanted import WANTED_FIELD
from perseus_core.wire import keys
from perseus_core.wire.models import (
    AgentPresence,
    CatalogEntry,
    CommandEntry,
    ConnectionState,
    ErrorEntry,
    HolderEntry,
    InstanceStatus,
    OtherEntry,
    StateTransitionEntry,
)
from perseus_core.wire.timeutil import parse_ts_or_none, to_epoch_ms

FIXED_NOW = datetime(2026, 2, 10, 22, 45, 0, tzinfo=UTC)
"""The frozen "now" of every screenshot."""
SCREENSHOT_TZ = timezone(timedelta(hours=1), "CET")
"""The "local" zone of every screenshot, whatever the machine's zone is."""
DISPLAY_URL = "redis://redis.example:6379/0"
"""The Redis target the header shows in screenshots (the real port is random)."""
OPERATOR = "alice@ops-laptop"
STATUS_TTL_S = 3_600
"""Seeded status keys outlive any screenshot run."""

HOSTILE_HOSTNAME = "[b]x[/b][@click=app.quit]q[/]\x1b[31m"
"""Markup, an action link and an escape sequence: must show literally and do nothing."""


def _ago(**delta: float) -> datetime:
    return FIXED_NOW - timedelta(**delta)


@dataclass(frozen=True)
class _Instance:
    exchange_id: int
    name: str
    display: str
    state: ConnectionState
    host: str
    ip: str | None
    country: str | None
    admin: str | None
    symbols: int
    beat_s: float
    since: timedelta
    error: str | None = None
    error_s: float = 0.0


FLEET: tuple[_Instance, ...] = (
    _Instance(1, "coinbase", "Coinbase", ConnectionState.ACTIVE, "DESKTOP-ABC", "203.0.113.7",
              "US", "Ops Team", 25, 3, timedelta(hours=4, minutes=23)),
    _Instance(2, "kraken", "Kraken", ConnectionState.WARMING, "kraken-01", "198.51.100.20",
              "DE", "Kim Ng", 140, 12, timedelta(minutes=1)),
    _Instance(3, "binance", "Binance", ConnectionState.STARTING, "bn-east-2", None, None,
              None, 0, 1, timedelta(seconds=30)),
    _Instance(4, "bitstamp", "Bitstamp", ConnectionState.STOPPING, "bitstamp-a", "192.0.2.44",
              "GB", "ops@example.com", 61, 34, timedelta(minutes=2),
              "websocket closed (1006)", 130),
    _Instance(5, "gemini", "Gemini", ConnectionState.STOPPED, "gem-1", "192.0.2.90", "US",
              "Ops Team", 12, 5, timedelta(seconds=20)),
    _Instance(6, "okx", "OKX", ConnectionState.IDLE, "okx-standby", "203.0.113.99", "SG",
              None, 0, 2, timedelta(minutes=40)),
)  # fmt: skip
OFFLINE = (7, "bybit", "Bybit")
CORRUPT = (8, "kucoin", "KuCoin")
READY = (9, "bitfinex", "Bitfinex")
"""No instance runs, but two agents do (one a standby): the card says a start would work."""
READY_AGENTS = (("bfx-01", 5150), ("bfx-02", 5151))


def _status(item: _Instance) -> InstanceStatus:
    changed = FIXED_NOW - item.since
    return InstanceStatus(
        exchange_id=item.exchange_id,
        exchange_name=item.name,
        hostname=item.host,
        ip_address=item.ip,
        country_code=item.country,
        admin_email="ops@example.com" if item.admin else None,
        admin_display_name=item.admin if item.admin and "@" not in item.admin else None,
        connection_state=item.state,
        symbol_count=item.symbols,
        connected_at=changed if item.state is ConnectionState.ACTIVE else None,
        last_heartbeat=_ago(seconds=item.beat_s),
        last_state_change=changed,
        registered_at=changed - timedelta(seconds=6),
        last_error=item.error,
        last_error_at=_ago(seconds=item.error_s) if item.error else None,
        instance_id=f"{item.host}:{item.exchange_id}:4242:1770700000000",
        epoch=3,
        pid=4242,
        version="0.1.0",
        ttl_ms=45_000,  # what an agent at the default timing writes
        heartbeat_interval_ms=15_000,
    )


def _ts(at: datetime) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _transition(name: str, eid: int, host: str, src: str, dst: str, at: datetime) -> dict[str, str]:
    entry = StateTransitionEntry(
        timestamp=_ts(at), from_state=src, to_state=dst,
        exchange_id=str(eid), exchange_name=name, hostname=host, ip="", admin_email="",
    )  # fmt: skip
    return entry.to_fields()


def _history() -> list[tuple[str, dict[str, str]]]:
    """Activity entries, oldest first (stream IDs follow insertion order)."""

    rows: list[tuple[str, dict[str, str]]] = []
    coinbase_up = FIXED_NOW - timedelta(hours=4, minutes=23)
    for i, (src, dst) in enumerate((("idle", "starting"), ("starting", "warming"))):
        at = coinbase_up - timedelta(seconds=6 - 3 * i)
        rows.append(("coinbase", _transition("coinbase", 1, "DESKTOP-ABC", src, dst, at)))
    rows.append(
        ("coinbase", _transition("coinbase", 1, "DESKTOP-ABC", "warming", "active", coinbase_up))
    )
    for src, dst, minutes in (("active", "stopping", 124.05), ("stopping", "stopped", 123)):
        fields = _transition("bybit", 7, "bybit-02", src, dst, _ago(minutes=minutes))
        rows.append(("bybit", {**fields, "ip": "198.51.100.4"}))
    rows.append(("kraken", CommandEntry(
        command="start", correlation_id="7d0c", operator=OPERATOR, status="success",
        message="starting", timestamp=_ts(_ago(minutes=1, seconds=5)), exchange_id="2",
        exchange_name="kraken", hostname="kraken-01",
    ).to_fields()))  # fmt: skip
    rows.append(
        ("kraken", _transition("kraken", 2, "kraken-01", "starting", "warming", _ago(minutes=1)))
    )
    rows.append(("bitstamp", ErrorEntry(
        timestamp=_ts(_ago(seconds=130)), error="websocket closed (1006)", exchange_id="4",
        exchange_name="bitstamp", hostname="bitstamp-a", state="active",
    ).to_fields()))  # fmt: skip
    rows.append(("bitstamp", CommandEntry(
        command="stop", correlation_id="91aa", operator=OPERATOR, status="ack",
        timestamp=_ts(_ago(seconds=121)), exchange_id="4", exchange_name="bitstamp",
        hostname="bitstamp-a",
    ).to_fields()))  # fmt: skip
    rows.append(
        (
            "bitstamp",
            _transition("bitstamp", 4, "bitstamp-a", "active", "stopping", _ago(minutes=2)),
        )
    )
    rows.append(
        ("binance", _transition("binance", 3, "bn-east-2", "idle", "starting", _ago(seconds=30)))
    )
    rows.append(
        ("gemini", _transition("gemini", 5, "gem-1", "stopping", "stopped", _ago(seconds=20)))
    )
    rows.append(("okx", OtherEntry.model_validate({
        "event": "maintenance_window", "timestamp": _ts(_ago(seconds=12)), "exchangeName": "okx",
        "hostname": "okx-standby", "window": "23:00-23:30Z",
    }).to_fields()))  # fmt: skip
    rows.append(("okx", {"event": "state_transition", "toState": "idle", "exchangeName": "okx"}))
    # Stopped through its agent: the transitions back to idle, then the stop's
    # audit entry, which names no state (the card still shows `idle`).
    steps = (("active", "stopping", 902), ("stopping", "stopped", 901), ("stopped", "idle", 900))
    for src, dst, seconds in steps:
        fields = _transition("bitfinex", 9, "bfx-01", src, dst, _ago(seconds=seconds))
        rows.append(("bitfinex", fields))
    rows.append(("bitfinex", CommandEntry(
        command="stop", correlation_id="c3f1", operator=OPERATOR, status="success",
        message="bitfinex stopped", timestamp=_ts(_ago(seconds=899)), exchange_id="9",
        exchange_name="bitfinex", hostname="bfx-01",
    ).to_fields()))  # fmt: skip
    return rows


def _seed_agents(client: sync_redis.Redis) -> None:
    """Presence of the READY exchange's agents, expiring (by the server's clock) an
    hour from now, like the status keys."""
    seconds, micros = client.time()
    expires_ms = seconds * 1000 + micros // 1000 + STATUS_TTL_S * 1000
    exchange_id, name, _ = READY
    members = {
        AgentPresence(
            agent_id=f"{host}:{pid}:1770700000000",
            exchange_id=exchange_id,
            exchange_name=name,
            hostname=host,
            pid=pid,
            state=ConnectionState.IDLE.value,
            since=_ago(seconds=900 if host == "bfx-01" else 3_600),
            version="0.1.0",
        ).to_json(): expires_ms
        for host, pid in READY_AGENTS
    }
    key = keys.agents_key(exchange_id)
    client.zadd(key, members)
    client.expire(key, STATUS_TTL_S)


def _append_history(client: sync_redis.Redis, rows: list[tuple[str, dict[str, str]]]) -> None:
    """XADD with IDs taken from the entries' own timestamps, as a live writer's would be.

    Seeding writes every entry within a millisecond; auto IDs would then order
    entries across streams by stream name instead of by time.
    """
    last_ms = 0
    timed = [row for row in rows if parse_ts_or_none(row[1].get("timestamp"))]
    timed.sort(key=lambda row: row[1]["timestamp"])
    for name, fields in [*timed, *(row for row in rows if row not in timed)]:
        moment = parse_ts_or_none(fields.get("timestamp"))
        ms = to_epoch_ms(moment) if moment is not None else last_ms + 1
        last_ms = max(last_ms + 1, ms)
        client.xadd(keys.activity_key(name), fields, id=f"{last_ms}-0")  # type: ignore[arg-type]


def seed_fleet(url: str) -> None:
    """Write the screenshot fleet: one exchange per state, one offline, one corrupt,
    one with idle agents and no instance."""
    with sync_redis.Redis.from_url(url, decode_responses=True) as client:
        client.flushall()
        pipe = client.pipeline(transaction=False)
        for item in FLEET:
            entry = CatalogEntry(id=item.exchange_id, name=item.name, display_name=item.display)
            pipe.hset(keys.CATALOG_KEY, str(item.exchange_id), entry.to_json())
            pipe.set(keys.status_key(item.exchange_id), _status(item).to_json(), ex=STATUS_TTL_S)
        for exchange_id, name, display in (OFFLINE, CORRUPT, READY):
            entry = CatalogEntry(id=exchange_id, name=name, display_name=display)
            pipe.hset(keys.CATALOG_KEY, str(exchange_id), entry.to_json())
        pipe.set(
            keys.status_key(CORRUPT[0]),
            '{"exchangeId": 8, "exchangeName": "kucoin", "connectionState": "dancing"}',
            ex=STATUS_TTL_S,
        )
        pipe.execute()
        _append_history(client, _history())
        _seed_agents(client)


OUTPUT_HOSTILE = "[bold red]boom[/] [@click=app.quit]quit[/]"
"""A line of child output that looks like markup: shown as written."""


def seed_output(url: str, exchange_id: int = 1) -> None:
    """A run of one exchange's child output, as its agent writes it
    (docs/wire-format.md 2.5): the agent's notes, stdout, stderr, a line that
    looks like markup, a count of dropped lines without a time."""
    rows = [
        ("perseus", "child starting (epoch 3)", "2026-02-10T22:40:00.000Z"),
        ("stdout", "feed: connected to wss://ws-feed.example", "2026-02-10T22:40:01.250Z"),
        ("stdout", "feed: subscribed to 25 symbols", "2026-02-10T22:40:01.900Z"),
        ("stderr", "WARN feed: slow consumer, 3 messages behind", "2026-02-10T22:43:12.004Z"),
        ("stderr", OUTPUT_HOSTILE, "2026-02-10T22:44:00.000Z"),
    ]
    with sync_redis.Redis.from_url(url, decode_responses=True) as client:
        key = keys.output_key(exchange_id)
        for stream, line, at in rows:
            client.xadd(key, {"stream": stream, "line": line, "at": at})
        dropped = "212 lines of output dropped: Redis was slow or unreachable"
        client.xadd(key, {"stream": "perseus", "line": dropped, "at": "", "dropped": "212"})


def seed_fleet_with_output(url: str) -> None:
    """`seed_fleet`, and the output of its first exchange's child."""
    seed_fleet(url)
    seed_output(url)


def seed_hostile(url: str) -> None:
    """One exchange whose every string tries markup, links and escape sequences."""
    item = _Instance(9, "evil", "[red]Evil[/red] \x1b]8;;http://x\x07link", ConnectionState.ACTIVE,
                     HOSTILE_HOSTNAME, "[i]1.2.3.4[/i]", "[b]", "[@click=app.quit]admin[/]", 3, 4,
                     timedelta(minutes=5), "[blink]boom[/blink]\x1b[2J", 10)  # fmt: skip
    with sync_redis.Redis.from_url(url, decode_responses=True) as client:
        client.flushall()
        entry = CatalogEntry(id=9, name="evil", display_name=item.display)
        client.hset(keys.CATALOG_KEY, "9", entry.to_json())
        client.set(keys.status_key(9), _status(item).to_json(), ex=STATUS_TTL_S)
        fields = _transition("evil", 9, HOSTILE_HOSTNAME, "warming", "active", _ago(minutes=5))
        _append_history(client, [("evil", {**fields, "adminEmail": "[@click=app.quit]x[/]"})])


def seed_empty(url: str) -> None:
    """No catalog entry, nothing online: the first run against a fresh Redis."""
    with sync_redis.Redis.from_url(url, decode_responses=True) as client:
        client.flushall()


# --- incidents: what a card says after a stop, a crash, a give-up, a takeover ----------

INCIDENT_OPERATOR = "root@vm"
CRASH_STDERR = "ERROR feed: connection refused | retrying in 1s | giving up after 3 tries"
FATAL_NOTE = (
    "FATAL: gave up after 5 quick failures: child command exited with code 1 while starting"
)
STANDBY_HOLDER = ("okx-a", 4242)
STANDBYS = (("okx-b", 5150), ("okx-c", 5151))


def _incidents_history() -> list[tuple[str, dict[str, str]]]:
    """A stop by an operator (kraken), a crash (coinbase), repeated failures
    (binance) and a takeover (okx), oldest first."""
    rows: list[tuple[str, dict[str, str]]] = []
    walk = (("idle", "starting"), ("starting", "warming"), ("warming", "active"))
    for i, (src, dst) in enumerate(walk):
        rows.append(
            ("coinbase", _transition("coinbase", 1, "cb-01", src, dst, _ago(minutes=9 - i)))
        )
        rows.append(("kraken", _transition("kraken", 2, "kr-01", src, dst, _ago(minutes=50 - i))))
    rows.append(("kraken", CommandEntry(
        command="stop", correlation_id="5e1d", operator=INCIDENT_OPERATOR, status="success",
        message="kraken stopped", timestamp=_ts(_ago(minutes=3)), exchange_id="2",
        exchange_name="kraken", hostname="kr-01",
    ).to_fields()))  # fmt: skip
    for i, (src, dst) in enumerate(
        (("active", "stopping"), ("stopping", "stopped"), ("stopped", "idle"))
    ):
        rows.append(("kraken", _transition("kraken", 2, "kr-01", src, dst, _ago(seconds=180 - i))))
    for attempt in range(5):
        at = _ago(minutes=6, seconds=-10 * attempt)
        rows.append(("binance", _transition("binance", 3, "bn-01", "idle", "starting", at)))
        rows.append(("binance", ErrorEntry(
            timestamp=_ts(at + timedelta(seconds=1)), exchange_id="3", exchange_name="binance",
            hostname="bn-01", state="starting",
            error="child command exited with code 1 while starting; last stderr: bad API key",
        ).to_fields()))  # fmt: skip
        rows.append(("binance", _transition(
            "binance", 3, "bn-01", "starting", "idle", at + timedelta(seconds=1)
        )))  # fmt: skip
    rows.append(("coinbase", ErrorEntry(
        timestamp=_ts(_ago(seconds=12)), exchange_id="1", exchange_name="coinbase",
        hostname="cb-01", state="active",
        error=f"child command exited with code 3 while active; last stderr: {CRASH_STDERR}",
    ).to_fields()))  # fmt: skip
    for i, (src, dst) in enumerate(
        (("active", "stopping"), ("stopping", "stopped"), ("stopped", "idle"))
    ):
        rows.append(
            ("coinbase", _transition("coinbase", 1, "cb-01", src, dst, _ago(seconds=12 - i / 10)))
        )
    okx_up = _ago(minutes=1)
    for i, (src, dst) in enumerate(walk):
        rows.append(
            (
                "okx",
                _transition("okx", 4, STANDBY_HOLDER[0], src, dst, okx_up + timedelta(seconds=i)),
            )
        )
    return rows


def _incident_holder_entry() -> dict[str, str]:
    """The okx standby that took over, as its claim noted it (docs/wire-format.md 2.7)."""
    host, pid = STANDBY_HOLDER
    return HolderEntry(
        timestamp=_ts(_ago(minutes=1, seconds=1)), exchange_id="4", exchange_name="okx",
        hostname=host, instance_id=f"{host}:4:{pid}:1770700000000", pid=str(pid), epoch="4",
        via="claim", previous_instance_id="okx-b:4:4100:1770600000000",
        previous_hostname="okx-b", previous_pid="4100",
    ).to_fields()  # fmt: skip


def _incident_agents(client: sync_redis.Redis) -> None:
    """Every incident exchange's agents: idle ones with what keeps them idle,
    and okx's holder with its two standbys."""
    seconds, micros = client.time()
    expires_ms = seconds * 1000 + micros // 1000 + STATUS_TTL_S * 1000
    stopped_note = f"not starting: stopped by {INCIDENT_OPERATOR} 3m ago"
    agents = (
        (1, "coinbase", "cb-01", 3100, "idle", None, _ago(seconds=12)),
        (2, "kraken", "kr-01", 3200, "idle", stopped_note, _ago(seconds=178)),
        (3, "binance", "bn-01", 3300, "idle", FATAL_NOTE, _ago(minutes=5, seconds=19)),
        (4, "okx", *STANDBY_HOLDER, "active", None, _ago(minutes=1)),
        *(
            (4, "okx", host, pid, "idle", f"standby: okx is held by {STANDBY_HOLDER[0]} pid "
             f"{STANDBY_HOLDER[1]}", _ago(minutes=1))
            for host, pid in STANDBYS
        ),
    )  # fmt: skip
    for exchange_id, name, host, pid, state, note, since in agents:
        member = AgentPresence(
            agent_id=f"{host}:{pid}:1770700000000", exchange_id=exchange_id, exchange_name=name,
            hostname=host, pid=pid, state=state, since=since, version="0.1.0", note=note,
        )  # fmt: skip
        client.zadd(keys.agents_key(exchange_id), {member.to_json(): expires_ms})
        client.expire(keys.agents_key(exchange_id), STATUS_TTL_S)


def seed_incidents(url: str) -> None:
    """Write four exchanges after four incidents: kraken stopped by an operator,
    coinbase's child crashed, binance's restart policy gave up (FATAL), okx
    taken over by a standby, with two more standbys waiting."""
    okx = _Instance(4, "okx", "OKX", ConnectionState.ACTIVE, STANDBY_HOLDER[0], "203.0.113.99",
                    "SG", None, 9, 2, timedelta(minutes=1) - timedelta(seconds=2))  # fmt: skip
    with sync_redis.Redis.from_url(url, decode_responses=True) as client:
        client.flushall()
        for exchange_id, name, display in (
            (1, "coinbase", "Coinbase"), (2, "kraken", "Kraken"), (3, "binance", "Binance"),
            (4, "okx", "OKX"),
        ):  # fmt: skip
            entry = CatalogEntry(id=exchange_id, name=name, display_name=display)
            client.hset(keys.CATALOG_KEY, str(exchange_id), entry.to_json())
        status = _status(okx).model_copy(
            update={"instance_id": f"okx-a:4:{STANDBY_HOLDER[1]}:1770700000000", "epoch": 4}
        )
        client.set(keys.status_key(4), status.to_json(), ex=STATUS_TTL_S)
        stop = {"want": "stop", "operator": INCIDENT_OPERATOR, "at": to_epoch_ms(_ago(minutes=3))}
        client.hset(keys.wanted_key(2), WANTED_FIELD, json.dumps(stop))
        _append_history(client, _incidents_history())
        holder_at = to_epoch_ms(_ago(minutes=1, seconds=1))
        client.xadd(
            keys.perseus_activity_key("okx"),
            _incident_holder_entry(),
            id=f"{holder_at}-0",
        )
        _incident_agents(client)
