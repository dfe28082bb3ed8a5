"""The webhook notifier against real Redis and a local HTTP server.

The server (`WebhookServer`) is a small HTTP/1.1 implementation on 127.0.0.1
that records every request and answers from a script (429 with Retry-After,
500, 404...) before falling back to 204, as Discord does for a posted message.
Entries and status keys are written straight to Redis in the wire format.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import redis as sync_redis
from redis.asyncio import Redis

from perseus_cli.apps.redis_server import RedisServer, free_port
from perseus_core.notify import (
    COLOURS,
    EventKind,
    FleetEvent,
    Notifier,
    build_payload,
    discord_text,
    event_from_entry,
    offline_event,
    online_event,
    redact_webhook_url,
    retry_delay,
    validate_webhook_url,
)
from perseus_core.plumbing.connection import connect
from perseus_core.present import other_writer, restart_text
from perseus_core.store.activity import ActivityLog
from perseus_core.store.network import ExchangeView
from perseus_core.wire import keys
from perseus_core.wire.models import (
    CatalogEntry,
    CommandEntry,
    ConnectionState,
    ErrorEntry,
    InstanceStatus,
    RestartEntry,
    StateTransitionEntry,
    parse_entry,
)
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import format_ts
from tests.livermore.shapes import LivermoreWriter
from tests.waiting import eventually
from tests.wire_examples import WIRE_TRANSITION

TOKEN = "s3cr3t-T0KEN"
FIXED_NOW = datetime(2026, 2, 10, 22, 45, 0, 123000, tzinfo=UTC)
pytestmark = pytest.mark.usefixtures("_no_proxy")


# --- a recording webhook server -------------------------------------------------


@dataclass
class Recorded:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Reply:
    """One scripted answer."""

    status: int = 204
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


class WebhookServer:
    """Records requests; answers from `script` in order, then 204."""

    def __init__(self, port: int = 0) -> None:
        self.requests: list[Recorded] = []
        self.script: list[Reply] = []
        self.port = port
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/webhooks/42/{TOKEN}"

    async def start(self) -> WebhookServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def bodies(self) -> list[Any]:
        return [r.json() for r in self.requests]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            while True:  # keep-alive: several requests per connection
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append(Recorded(method, path, headers, body, time.monotonic()))
                reply = self.script.pop(0) if self.script else Reply()
                out = [f"HTTP/1.1 {reply.status} Scripted", f"Content-Length: {len(reply.body)}"]
                out += [f"{k}: {v}" for k, v in reply.headers.items()]
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode() + reply.body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


@pytest.fixture
async def webhook() -> AsyncIterator[WebhookServer]:
    server = await WebhookServer().start()
    try:
        yield server
    finally:
        await server.close()


# --- helpers ------------------------------------------------------------------------


async def settle(notifier: Notifier, rounds: int = 3) -> None:
    """Let the notifier compare a few more snapshots (to prove nothing else is sent).

    One round more than asked: a message the last of them queued has had a
    full poll interval to go out.
    """
    target = notifier.stats.polls + rounds + 1
    await eventually(lambda: notifier.stats.polls >= target, what=f"{rounds} more status polls")


def transition(
    name: str, exchange_id: int, src: str, dst: str, **extra: str
) -> StateTransitionEntry:
    fields = {
        "timestamp": format_ts(datetime.now(UTC)),
        "fromState": src,
        "toState": dst,
        "exchangeId": str(exchange_id),
        "exchangeName": name,
        "hostname": "host-a",
        "ip": "203.0.113.7",
        "adminEmail": "ops@example.com",
    }
    fields.update(extra)
    return StateTransitionEntry.model_validate(fields)


def status_json(exchange_id: int, name: str, state: str, *, hostname: str = "host-a") -> str:
    now = datetime.now(UTC)
    return InstanceStatus(
        exchange_id=exchange_id,
        exchange_name=name,
        hostname=hostname,
        ip_address="203.0.113.7",
        connection_state=ConnectionState(state),
        symbol_count=3,
        connected_at=now if state == "active" else None,
        last_heartbeat=now,
        last_state_change=now,
        registered_at=now,
    ).to_json()


def strings(value: Any) -> list[str]:
    """Every string inside a JSON-like value."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


@contextlib.asynccontextmanager
async def running(notifier: Notifier) -> AsyncIterator[Notifier]:
    """Run `notifier` in the background; stop it (and check it stopped cleanly) after."""
    task = asyncio.create_task(notifier.run())
    try:
        ready = asyncio.create_task(notifier.wait_ready())
        await asyncio.wait([ready, task], timeout=5, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            await task  # raises what went wrong
        assert ready.done(), "notifier not ready in time"
        yield notifier
    finally:
        notifier.stop()
        await asyncio.wait_for(task, 10)


def make_notifier(settings: Settings, url: str | None, **options: Any) -> Notifier:
    """A notifier at test speed that tells each entry at once (`settle_s=0`),
    unless a test asks for episodes (`test_one_post_per_crash...`)."""
    values: dict[str, Any] = {
        "interval_ms": 100,
        "backoff_s": 0.05,
        "max_retry_delay_s": 2.0,
        "settle_s": 0,
    }
    values.update(options)
    return Notifier(settings, url, **values)


Appender = Callable[..., Awaitable[str]]

CATALOG = {
    1: "coinbase",
    2: "kraken",
    3: "bitstamp",
    4: "gemini",
    5: "bitfinex",
    6: "okx",
    9: "binance",
}


@pytest.fixture(autouse=True)
async def catalog(redis: Redis) -> None:
    """The known exchanges (docs/wire-format.md 2.1): the tail follows the catalog's streams."""
    await redis.hset(
        keys.CATALOG_KEY,
        mapping={
            str(i): CatalogEntry(id=i, name=name, display_name=name.title()).to_json()
            for i, name in CATALOG.items()
        },
    )


@pytest.fixture
def append(redis: Redis, settings: Settings) -> Appender:
    activity = ActivityLog(redis, settings)

    async def add(name: str, entry: Any) -> str:
        return await activity.append(name, entry)

    return add


# --- pure functions -----------------------------------------------------------------


def test_transition_payload_has_the_discord_shape() -> None:
    entry = parse_entry("1700000000000-0", WIRE_TRANSITION, "coinbase")
    event = event_from_entry(entry, now=FIXED_NOW)
    assert event is not None and event.kind is EventKind.TRANSITION
    payload = build_payload(event)

    assert payload["allowed_mentions"] == {"parse": []}
    assert "coinbase" in payload["content"] and "warming → active" in payload["content"]
    (embed,) = payload["embeds"]
    assert embed["color"] == COLOURS[EventKind.TRANSITION]
    assert embed["timestamp"] == "2026-02-10T18:22:04.511Z"
    assert "coinbase" in embed["title"]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields == {
        "exchange": "coinbase (#1)",
        "transition": "warming → active",
        "host": "DESKTOP-ABC (203.0.113.7)",
        "time": "2026-02-10T18:22:04.511Z",
    }
    json.dumps(payload)  # serialisable as is


def test_every_kind_has_its_own_colour_and_title() -> None:
    status = InstanceStatus.from_json(status_json(2, "kraken", "active"))
    events = [
        FleetEvent(EventKind.TRANSITION, "kraken", 2, "idle → starting", "h", FIXED_NOW),
        FleetEvent(EventKind.ERROR, "kraken", 2, "error while active", "h", FIXED_NOW, "boom"),
        offline_event(2, "kraken", status, now=FIXED_NOW),
        online_event(2, "kraken", status, now=FIXED_NOW),
    ]
    embeds = [build_payload(e)["embeds"][0] for e in events]
    assert len({e["color"] for e in embeds}) == 4
    assert len({e["title"] for e in embeds}) == 4
    error, offline, online = embeds[1], embeds[2], embeds[3]
    assert error["description"] == "boom"
    assert {f["name"]: f["value"] for f in offline["fields"]}["transition"] == "active → offline"
    assert {f["name"]: f["value"] for f in online["fields"]}["transition"] == "offline → active"
    for embed in embeds:
        assert all(f["value"] for f in embed["fields"])  # Discord rejects empty values


def test_error_entry_and_missing_fields() -> None:
    error = parse_entry("5-0", {"event": "error", "error": "websocket closed (1006)"}, "kraken")
    event = event_from_entry(error, now=FIXED_NOW)
    assert event is not None and event.kind is EventKind.ERROR
    payload = build_payload(event)
    fields = {f["name"]: f["value"] for f in payload["embeds"][0]["fields"]}
    assert fields["exchange"] == "kraken"  # from the stream key when the field is missing
    assert fields["host"] == "-"
    assert fields["time"] == format_ts(FIXED_NOW)  # no timestamp: the clock stands in
    assert "websocket closed \\(1006\\)" not in payload["content"]  # parentheses are harmless
    assert "websocket closed (1006)" in payload["content"]


def test_a_crash_posts_the_childs_last_stderr_lines() -> None:
    """The agent quotes a crashed child's last three stderr lines (200
    characters each at most) in its error entry: the post shows all three."""
    last = [f"{n}: " + "e" * 197 for n in range(3)]
    message = "child command exited with code 3 while active; last stderr: " + " | ".join(last)
    entry = parse_entry("5-0", {"event": "error", "error": message, "state": "active"}, "kraken")
    event = event_from_entry(entry, now=FIXED_NOW)
    assert event is not None
    description = build_payload(event)["embeds"][0]["description"]
    assert all(line in description for line in last)


def test_another_hosts_error_while_the_holder_is_healthy_is_posted_as_its_own() -> None:
    """docs/wire-format.md part 4: a refused Livermore claimant writes an
    error (its own host, state idle) into the holder's stream."""
    holder = ExchangeView(2, "kraken", "Kraken", True, InstanceStatus.from_json(
        status_json(2, "kraken", "active", hostname="p-host")
    ), key_exists=True)  # fmt: skip
    refused = ErrorEntry(
        error="Exchange 2 is already claimed by p-host", exchange_id="2",
        exchange_name="kraken", hostname="lm-host-09", ip="203.0.113.9", state="idle",
    )  # fmt: skip
    other = other_writer(refused, holder)
    assert other is not None and other.summary == "refused claim by lm-host-09"
    event = event_from_entry(refused, now=FIXED_NOW, other=other)
    assert event is not None and event.kind is EventKind.OTHER_WRITER
    payload = build_payload(event)
    embed = payload["embeds"][0]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["transition"] == "refused claim by lm-host-09"
    assert fields["host"] == "lm-host-09 (203.0.113.9)"
    assert "held by p-host" in payload["content"] and "error while" not in payload["content"]
    assert embed["color"] == COLOURS[EventKind.OTHER_WRITER] != COLOURS[EventKind.ERROR]
    # A fenced agent (not idle) is another writer too, worded as such.
    fenced = refused.model_copy(update={"state": "active", "error": "fenced"})
    assert other_writer(fenced, holder).summary == "error from lm-host-09, not the holder"  # type: ignore[union-attr]
    # The holder's own error, and any error while no healthy holder speaks for
    # the exchange (no key, or an unreadable one), are the exchange's.
    own = refused.model_copy(update={"hostname": "p-host", "ip": ""})
    assert other_writer(own, holder) is None
    assert other_writer(refused, ExchangeView(2, "kraken", "Kraken", True)) is None
    unreadable = ExchangeView(2, "kraken", "Kraken", True, key_exists=True)
    assert other_writer(refused, unreadable) is None
    assert other_writer(refused.model_copy(update={"hostname": ""}), holder) is None


def test_an_entry_of_no_exchange_names_none() -> None:
    """A Livermore start that failed early: `logs:network:unknown`, exchangeId 0."""
    entry = parse_entry(
        "7-0",
        {"event": "error", "error": "Missing exchange configuration", "exchangeId": "0",
         "exchangeName": "unknown", "hostname": "lm-host-09", "state": "idle"},
        "unknown",
    )  # fmt: skip
    event = event_from_entry(entry, now=FIXED_NOW)
    assert event is not None and event.exchange_id is None
    fields = {f["name"]: f["value"] for f in build_payload(event)["embeds"][0]["fields"]}
    assert fields["exchange"] == "unknown exchange" and "#0" not in fields["exchange"]


def test_commands_and_unknown_events_are_not_announced() -> None:
    command = CommandEntry(command="start", status="success", exchange_name="x")
    other = parse_entry("1-0", {"event": "custom", "foo": "bar"}, "x")
    assert event_from_entry(command, now=FIXED_NOW) is None
    assert event_from_entry(other, now=FIXED_NOW) is None


def test_hostile_strings_are_sanitised() -> None:
    entry = transition(
        "evil\x1b]8;;http://x\x07",
        7,
        "idle",
        "\x1b[2Jstarting",
        hostname="@everyone [click me](http://evil.example) <@123> \x1b[31mred\u202e\n**bold**",
        ip="",
    )
    event = event_from_entry(entry, now=FIXED_NOW)
    assert event is not None
    payload = build_payload(event)
    for value in strings(payload):
        for bad in ("\x1b", "\u202e", "\n", "\x07"):
            assert bad not in value
    host = {f["name"]: f["value"] for f in payload["embeds"][0]["fields"]}["host"]
    assert "@everyone" not in host and "@\u200beveryone" in host
    assert "[click me](" not in host and "\\[click me\\]" in host
    assert "<@123>" not in host and "\\<@123" in host
    assert "**bold**" not in host
    assert payload["allowed_mentions"] == {"parse": []}


def test_discord_text_limits_length() -> None:
    assert len(discord_text("x" * 5000, 100)) == 100
    assert discord_text("", 10) == "-"
    assert discord_text(None, 10, default="n/a") == "n/a"


def test_webhook_url_redaction_hides_the_token() -> None:
    url = f"https://discord.com/api/webhooks/123456/{TOKEN}?wait=true"
    assert redact_webhook_url(url) == "https://discord.com/..."
    assert (
        redact_webhook_url("http://user:pw@127.0.0.1:8080/hook/abc") == "http://127.0.0.1:8080/..."
    )
    assert TOKEN not in redact_webhook_url(f"not a url {TOKEN}")
    assert validate_webhook_url(url) == url
    for bad in ("discord.com/api/webhooks/1/x", "ftp://host/x", f"http://[::1/{TOKEN}"):
        with pytest.raises(ValueError) as info:
            validate_webhook_url(bad)
        assert TOKEN not in str(info.value)


def test_retry_delay_reads_header_and_discord_body() -> None:
    def response(headers: dict[str, str], body: bytes = b"") -> httpx.Response:
        return httpx.Response(429, headers=headers, content=body)

    assert retry_delay(response({"Retry-After": "0.2"}), now=FIXED_NOW) == 0.2
    assert retry_delay(response({"Retry-After": "3"}), now=FIXED_NOW) == 3.0
    discord = response({"Retry-After": "1"}, b'{"message": "rate limited", "retry_after": 0.25}')
    assert retry_delay(discord, now=FIXED_NOW) == 0.25
    http_date = format_http_date(FIXED_NOW + timedelta(seconds=7))
    # HTTP dates have whole seconds: FIXED_NOW is 0.123 s past one.
    assert retry_delay(response({"Retry-After": http_date}), now=FIXED_NOW) == 6.877
    assert retry_delay(response({}), now=FIXED_NOW) is None
    assert retry_delay(response({"Retry-After": "soon"}), now=FIXED_NOW) is None
    assert retry_delay(response({"Retry-After": "-4"}), now=FIXED_NOW) is None


def format_http_date(moment: datetime) -> str:
    from email.utils import format_datetime

    return format_datetime(moment, usegmt=True)


def test_a_webhook_url_is_required_unless_dry_run(settings: Settings) -> None:
    with pytest.raises(ValueError):
        Notifier(settings, None)
    with pytest.raises(ValueError) as info:
        Notifier(settings, f"nope/{TOKEN}")
    assert TOKEN not in str(info.value)
    assert Notifier(settings, None, dry_run=True).webhook == "(dry run)"


def test_replayed_entries_are_skipped(settings: Settings) -> None:
    lines: list[str] = []
    notifier = Notifier(settings, None, dry_run=True, output=lines.append)
    first = transition("coinbase", 1, "idle", "starting").model_copy(
        update={"id": "1700000000000-1", "stream": "coinbase"}
    )
    older = first.model_copy(update={"id": "1700000000000-0"})
    # Compared as numbers, not strings: "…-10" is newer than "…-9".
    newer = first.model_copy(update={"id": "1700000000000-10"})
    stale = first.model_copy(update={"id": "1700000000000-9"})
    assert notifier.handle_entry(first) is True
    assert notifier.handle_entry(first) is False
    assert notifier.handle_entry(older) is False
    assert notifier.handle_entry(newer) is True
    assert notifier.handle_entry(stale) is False
    assert len(lines) == 0  # nothing is sent before run() starts the sender


def test_equal_ids_in_an_exchanges_two_streams_are_both_handled(settings: Settings) -> None:
    # IDs are ordered per stream: the Perseus-only stream can hold the very ID
    # the shared stream gets next (both written in the same millisecond).
    notifier = Notifier(settings, None, dry_run=True, output=lambda _line: None)
    shared = keys.activity_key("coinbase")
    ours = keys.perseus_activity_key("coinbase")
    audit = CommandEntry(command="start", exchange_name="coinbase").model_copy(
        update={"id": "1700000000000-0", "stream": "coinbase", "key": ours}
    )
    error = ErrorEntry(error="boom", state="warming", exchange_name="coinbase").model_copy(
        update={"id": "1700000000000-0", "stream": "coinbase", "key": shared}
    )
    notifier.handle_entry(audit)
    assert notifier.handle_entry(error) is True


# --- watching real Redis ------------------------------------------------------------


async def test_one_post_per_transition_and_error(
    settings: Settings, webhook: WebhookServer, append: Appender
) -> None:
    async with httpx.AsyncClient(trust_env=False) as http:
        notifier = make_notifier(settings, webhook.url, http=http)
        async with running(notifier):
            await append("coinbase", transition("coinbase", 1, "idle", "starting"))
            await append("coinbase", transition("coinbase", 1, "starting", "warming"))
            await append("coinbase", CommandEntry(command="start", exchange_name="coinbase"))
            await append(
                "coinbase",
                ErrorEntry(
                    error="websocket closed (1006)", state="warming", exchange_name="coinbase"
                ),
            )
            await eventually(lambda: len(webhook.requests) == 3)
            await settle(notifier)
        assert not http.is_closed  # an injected client belongs to the caller

    assert len(webhook.requests) == 3
    assert all(
        r.method == "POST" and r.path == f"/api/webhooks/42/{TOKEN}" for r in webhook.requests
    )
    assert all(r.headers["content-type"] == "application/json" for r in webhook.requests)
    transitions = [
        {f["name"]: f["value"] for f in body["embeds"][0]["fields"]}["transition"]
        for body in webhook.bodies()
    ]
    assert transitions == ["idle → starting", "starting → warming", "error while warming"]
    assert webhook.bodies()[2]["embeds"][0]["color"] == COLOURS[EventKind.ERROR]
    assert notifier.stats.delivered == 3


def crash_and_restart(name: str, exchange_id: int) -> list[Any]:
    """What the stream holds for one crash of a supervised child and its
    restart: an error, the walk down to idle, the walk back up to active."""
    walk = ["active", "stopping", "stopped", "idle", "starting", "warming", "active"]
    crash = ErrorEntry(
        error="child command exited with code 75 while active",
        state="active",
        exchange_id=str(exchange_id),
        exchange_name=name,
        hostname="host-a",
    )
    steps = [transition(name, exchange_id, a, b) for a, b in zip(walk, walk[1:], strict=False)]
    return [crash, *steps]


async def test_one_post_per_crash_and_only_the_kinds_asked_for(
    settings: Settings, webhook: WebhookServer, append: Appender
) -> None:
    """A crash and its restart are seven entries; they were seven posts. Told
    as one episode they are one error, naming the states walked; a plain
    start is one transition. `only` leaves the other kinds out."""
    async with httpx.AsyncClient(trust_env=False) as http:
        notifier = make_notifier(settings, webhook.url, http=http, settle_s=30)
        async with running(notifier):
            for entry in crash_and_restart("coinbase", 1):
                await append("coinbase", entry)
            await eventually(lambda: len(webhook.requests) == 1, what="the crash's post")
            for a, b in (("idle", "starting"), ("starting", "warming"), ("warming", "active")):
                await append("kraken", transition("kraken", 2, a, b))
            await eventually(lambda: len(webhook.requests) == 2, what="kraken's start")
            await settle(notifier)
    crash, start = webhook.bodies()
    assert len(webhook.requests) == 2
    assert crash["embeds"][0]["title"] == "Error: coinbase"
    walked = "active → stopping → stopped → idle → starting → warming → active"
    fields = {f["name"]: f["value"] for f in crash["embeds"][0]["fields"]}
    assert fields["transition"] == "error while active" and fields["states"] == walked
    assert crash["content"].endswith(f"while active; {walked}")
    assert start["embeds"][0]["title"] == "State change: kraken"
    assert start["content"] == "kraken: idle → starting → warming → active on host-a (203.0.113.7)"

    errors_only = make_notifier(
        settings, webhook.url, settle_s=30, only={EventKind.ERROR, EventKind.OFFLINE}
    )
    async with running(errors_only):
        for a, b in (("active", "stopping"), ("stopping", "stopped"), ("stopped", "idle")):
            await append("kraken", transition("kraken", 2, a, b))  # a clean stop: told at idle
        for entry in crash_and_restart("coinbase", 1):
            await append("coinbase", entry)
        await eventually(lambda: len(webhook.requests) == 3, what="the second crash's post")
        await settle(errors_only)
    assert len(webhook.requests) == 3 and errors_only.stats.skipped == 1
    assert webhook.bodies()[2]["embeds"][0]["title"] == "Error: coinbase"


async def test_an_episode_still_open_is_told_when_the_notifier_stops(
    settings: Settings, webhook: WebhookServer, append: Appender
) -> None:
    notifier = make_notifier(settings, webhook.url, settle_s=30)
    async with running(notifier):
        for entry in crash_and_restart("coinbase", 1)[:4]:  # idle after a crash: not at rest
            await append("coinbase", entry)
        await settle(notifier)
        assert webhook.requests == []
    (body,) = webhook.bodies()
    fields = {f["name"]: f["value"] for f in body["embeds"][0]["fields"]}
    assert fields["states"] == "active → stopping → stopped → idle"


async def test_a_refused_claim_is_posted_as_the_claimants_not_the_exchanges(
    settings: Settings, webhook: WebhookServer, append: Appender, redis: Redis
) -> None:
    """The holder claimed after the last status poll (the poll is far off):
    the notifier reads the holder when the error arrives, so a refused
    Livermore claimant's error names that host and does not pass for
    kraken's own; the holder's own error still does."""
    r = sync_redis.Redis.from_url(settings.redis_url, decode_responses=True)
    notifier = make_notifier(settings, webhook.url, interval_ms=60_000)
    try:
        async with running(notifier):
            await redis.set(
                keys.status_key(2), status_json(2, "kraken", "active", hostname="p-host"), px=60_000
            )
            assert not LivermoreWriter(r, 2, "kraken", "lm-host-09").claim()  # refused
            await append(
                "kraken",
                ErrorEntry(
                    error="feed stalled", exchange_id="2", exchange_name="kraken",
                    hostname="p-host", ip="203.0.113.7", state="active",
                ),
            )  # fmt: skip
            await eventually(lambda: len(webhook.requests) == 2, what="two posts")
    finally:
        r.close()
    refused, own = webhook.bodies()
    fields = {f["name"]: f["value"] for f in refused["embeds"][0]["fields"]}
    assert fields["transition"] == "refused claim by lm-host-09"
    assert fields["host"] == "lm-host-09" and fields["exchange"] == "kraken (#2)"
    assert refused["embeds"][0]["color"] == COLOURS[EventKind.OTHER_WRITER]
    assert "held by p-host" in refused["content"]
    assert {f["name"]: f["value"] for f in own["embeds"][0]["fields"]}["transition"] == (
        "error while active"
    )
    assert own["embeds"][0]["color"] == COLOURS[EventKind.ERROR]


async def test_exchange_filter_is_case_insensitive(
    settings: Settings, webhook: WebhookServer, append: Appender
) -> None:
    notifier = make_notifier(settings, webhook.url, exchanges=["CoinBase"])
    async with running(notifier):
        await append("kraken", transition("kraken", 2, "idle", "starting"))
        await append("coinbase", transition("coinbase", 1, "idle", "starting"))
        await eventually(lambda: len(webhook.requests) == 1)
        await settle(notifier)
    assert len(webhook.requests) == 1
    assert webhook.bodies()[0]["content"].startswith("coinbase")


async def test_no_duplicates_when_the_tail_connection_is_cut(
    settings: Settings, webhook: WebhookServer, append: Appender, redis: Redis
) -> None:
    notifier = make_notifier(settings, webhook.url)
    async with running(notifier):
        await append("coinbase", transition("coinbase", 1, "idle", "starting"))
        await eventually(lambda: len(webhook.requests) == 1)

        # Cut every blocking reader's connection: the tail must reconnect and resume.
        clients = await redis.client_list()
        blocked = [c for c in clients if c.get("cmd") in ("xread", "xreadgroup")]
        assert blocked, "the tail should be blocked in XREAD"
        for client in blocked:
            await redis.client_kill_filter(_id=client["id"])

        await append("coinbase", transition("coinbase", 1, "starting", "warming"))
        await append("coinbase", transition("coinbase", 1, "warming", "active"))
        await eventually(lambda: len(webhook.requests) == 3, within=10)
        await settle(notifier)

    transitions = [b["embeds"][0]["fields"][1]["value"] for b in webhook.bodies()]
    assert transitions == ["idle → starting", "starting → warming", "warming → active"]


async def test_offline_when_a_key_expires_and_back_online(
    settings: Settings, webhook: WebhookServer, redis: Redis
) -> None:
    key = keys.status_key(3)
    await redis.set(key, status_json(3, "bitstamp", "active"), px=60_000)
    notifier = make_notifier(settings, webhook.url)
    async with running(notifier):
        await redis.set(key, status_json(3, "bitstamp", "active"), px=300)
        await eventually(lambda: len(webhook.requests) == 1)
        await settle(notifier)  # still offline: no second message
        assert len(webhook.requests) == 1

        await redis.set(key, status_json(3, "bitstamp", "warming", hostname="host-b"), px=60_000)
        await eventually(lambda: len(webhook.requests) == 2)
        await settle(notifier)

    offline, online = webhook.bodies()
    assert offline["embeds"][0]["color"] == COLOURS[EventKind.OFFLINE]
    fields = {f["name"]: f["value"] for f in offline["embeds"][0]["fields"]}
    assert fields["exchange"] == "bitstamp (#3)"
    assert fields["transition"] == "active → offline"
    assert fields["host"] == "host-a (203.0.113.7)"
    assert online["embeds"][0]["color"] == COLOURS[EventKind.ONLINE]
    fields = {f["name"]: f["value"] for f in online["embeds"][0]["fields"]}
    assert fields["transition"] == "offline → warming"
    assert fields["host"] == "host-b (203.0.113.7)"
    assert len(webhook.requests) == 2


async def test_a_graceful_stop_is_not_reported_offline(
    settings: Settings, webhook: WebhookServer, redis: Redis, append: Appender
) -> None:
    key = keys.status_key(4)
    await redis.set(key, status_json(4, "gemini", "active"), px=60_000)
    # Watch only the status side here: the stop is known from the stream alone.
    notifier = make_notifier(settings, webhook.url, exchanges=["gemini"])
    async with running(notifier):
        await append("gemini", transition("gemini", 4, "active", "stopping"))
        await append("gemini", transition("gemini", 4, "stopping", "stopped"))
        await append("gemini", transition("gemini", 4, "stopped", "idle"))
        await redis.delete(key)
        await eventually(lambda: len(webhook.requests) == 3)
        await settle(notifier)
        # Started again later: that is news from the stream, not a "back online".
        await redis.set(key, status_json(4, "gemini", "idle"), px=60_000)
        await settle(notifier)

    transitions = [b["embeds"][0]["fields"][1]["value"] for b in webhook.bodies()]
    assert transitions == ["active → stopping", "stopping → stopped", "stopped → idle"]


async def test_a_stop_the_tail_never_saw_is_read_from_the_stream(
    settings: Settings, webhook: WebhookServer, redis: Redis, append: Appender
) -> None:
    """The stop was written before the notifier started (so the tail, starting
    at new entries, never delivers it) while the status still said active:
    the stream itself is read before anything is called offline."""
    key = keys.status_key(5)
    await redis.set(key, status_json(5, "bitfinex", "active"), px=60_000)
    for src, dst in (("active", "stopping"), ("stopping", "stopped"), ("stopped", "idle")):
        await append("bitfinex", transition("bitfinex", 5, src, dst))
    notifier = make_notifier(settings, webhook.url)
    async with running(notifier):
        await settle(notifier, rounds=1)
        await redis.delete(key)
        await settle(notifier)
    assert webhook.requests == []


async def test_a_stale_stop_in_the_stream_does_not_hide_a_loss(
    settings: Settings, webhook: WebhookServer, redis: Redis, append: Appender
) -> None:
    """The newest stop in the stream is older than the state the key showed:
    the instance started again since (without a stream entry) and was lost."""
    await append(
        "okx", transition("okx", 6, "stopped", "idle", timestamp="2020-01-01T00:00:00.000Z")
    )
    key = keys.status_key(6)
    await redis.set(key, status_json(6, "okx", "active"), px=60_000)
    notifier = make_notifier(settings, webhook.url)
    async with running(notifier):
        await settle(notifier, rounds=1)
        await redis.delete(key)
        await eventually(lambda: len(webhook.requests) == 1)
        await settle(notifier)
    assert webhook.bodies()[0]["embeds"][0]["color"] == COLOURS[EventKind.OFFLINE]


# --- delivery -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        Reply(429, {"Retry-After": "0.3"}),
        Reply(429, {"Content-Type": "application/json"}, b'{"retry_after": 0.3, "global": false}'),
    ],
    ids=["header", "discord-json"],
)
async def test_429_is_retried_after_the_delay_asked(
    settings: Settings, webhook: WebhookServer, append: Appender, reply: Reply
) -> None:
    webhook.script = [reply]
    # No backoff of its own: any wait between the two posts is the server's.
    notifier = make_notifier(settings, webhook.url, backoff_s=0.0)
    async with running(notifier):
        await append("coinbase", transition("coinbase", 1, "idle", "starting"))
        await eventually(lambda: len(webhook.requests) == 2)
        await settle(notifier, rounds=1)
    first, second = webhook.requests
    assert first.body == second.body
    assert second.at - first.at >= 0.25
    assert notifier.stats.delivered == 1 and notifier.stats.failed == 0


async def test_5xx_is_retried_until_it_succeeds(
    settings: Settings, webhook: WebhookServer, append: Appender
) -> None:
    webhook.script = [Reply(500), Reply(503, body=b"upstream down")]
    notifier = make_notifier(settings, webhook.url)
    async with running(notifier):
        await append("coinbase", transition("coinbase", 1, "idle", "starting"))
        await eventually(lambda: notifier.stats.delivered == 1)
        await settle(notifier, rounds=1)
    assert len(webhook.requests) == 3
    assert len({r.body for r in webhook.requests}) == 1


async def test_other_4xx_is_logged_and_not_retried(
    settings: Settings, webhook: WebhookServer, append: Appender, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # Some servers echo the request path, token included, in their error body.
    webhook.script = [Reply(404, body=f"Cannot POST /api/webhooks/42/{TOKEN}".encode())]
    notifier = make_notifier(settings, webhook.url)
    async with running(notifier):
        await append("coinbase", transition("coinbase", 1, "idle", "starting"))
        await eventually(lambda: notifier.stats.failed == 1)
        await append("coinbase", transition("coinbase", 1, "starting", "warming"))
        await eventually(lambda: notifier.stats.delivered == 1)
        await settle(notifier, rounds=1)
    assert len(webhook.requests) == 2
    assert "404" in caplog.text and "Cannot POST" in caplog.text
    assert f"http://127.0.0.1:{webhook.port}/..." in caplog.text
    assert TOKEN not in caplog.text


async def test_retries_give_up_after_max_attempts(
    settings: Settings, webhook: WebhookServer, append: Appender, caplog: pytest.LogCaptureFixture
) -> None:
    webhook.script = [Reply(502)] * 3
    notifier = make_notifier(settings, webhook.url, max_attempts=3)
    async with running(notifier):
        await append("coinbase", transition("coinbase", 1, "idle", "starting"))
        await eventually(lambda: notifier.stats.failed == 1)
        await settle(notifier, rounds=1)
    assert len(webhook.requests) == 3
    assert "giving up" in caplog.text and TOKEN not in caplog.text


async def test_watching_continues_while_the_webhook_is_down(
    settings: Settings, append: Appender, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = WebhookServer(free_port())  # nothing listens there yet
    # Each failing message holds the sender for a while, so the queue overflows.
    notifier = make_notifier(settings, server.url, max_attempts=2, backoff_s=0.5, queue_size=2)
    try:
        async with running(notifier):
            for i in range(4):
                await append("coinbase", transition("coinbase", 1, "idle", f"s{i}"))
            await eventually(lambda: notifier.stats.failed + notifier.stats.dropped == 4)
            assert notifier.stats.delivered == 0

            # Still watching: once the webhook is back, the next event goes out.
            await server.start()
            await append("coinbase", transition("coinbase", 1, "idle", "starting"))
            await eventually(lambda: notifier.stats.delivered == 1)
    finally:
        await server.close()
    assert [b["embeds"][0]["fields"][1]["value"] for b in server.bodies()] == ["idle → starting"]
    assert notifier.stats.dropped >= 1
    assert "dropped the oldest" in caplog.text
    assert TOKEN not in caplog.text


async def test_dry_run_writes_payloads_instead_of_posting(
    settings: Settings, append: Appender
) -> None:
    lines: list[str] = []
    notifier = make_notifier(settings, None, dry_run=True, output=lines.append)
    async with running(notifier):
        await append("coinbase", transition("coinbase", 1, "idle", "starting"))
        await eventually(lambda: len(lines) == 1)
    payload = json.loads(lines[0])
    assert payload["embeds"][0]["fields"][1]["value"] == "idle → starting"
    assert payload["allowed_mentions"] == {"parse": []}


async def test_hostile_strings_from_redis_are_sanitised_end_to_end(
    settings: Settings, webhook: WebhookServer, redis: Redis
) -> None:
    hostile = {
        "event": "error",
        "timestamp": "not a time",
        "error": (
            "@here \x1b[2J\x1b]0;pwned\x07 [phish](https://evil.example) <@&42>\r\nsecond line"
        ),
        "exchangeId": "9",
        "exchangeName": "binance",
        "hostname": "h\u202eost\x00",
        "ip": "",
        "state": "active",
    }
    notifier = make_notifier(settings, webhook.url)
    async with running(notifier):
        await redis.xadd(keys.activity_key("binance"), hostile)  # type: ignore[arg-type]
        await eventually(lambda: len(webhook.requests) == 1)
    body = webhook.requests[0].json()
    text = "\n".join(strings(body))
    for bad in ("\x1b", "\x07", "\u202e", "\x00", "\r", "@here", "[phish](", "<@&42>"):
        assert bad not in text, bad
    assert all("\n" not in value for value in strings(body))
    assert body["allowed_mentions"] == {"parse": []}
    assert "second line" in body["embeds"][0]["description"]


async def test_a_redis_restart_is_survived(
    fresh_redis: RedisServer, make_settings: Callable[..., Settings], webhook: WebhookServer
) -> None:
    settings = make_settings(redis_url=fresh_redis.url)

    async def append_once(entry: StateTransitionEntry) -> None:
        client = connect(settings)
        try:
            await ActivityLog(client, settings).append("coinbase", entry)
        finally:
            await client.aclose()

    notifier = make_notifier(settings, webhook.url, exchanges=["coinbase"])
    async with running(notifier):
        await append_once(transition("coinbase", 1, "idle", "starting"))
        await eventually(lambda: len(webhook.requests) == 1)

        await asyncio.to_thread(fresh_redis.restart)  # all data lost, same port
        await settle(notifier, rounds=2)
        await append_once(transition("coinbase", 1, "starting", "warming"))
        await eventually(lambda: len(webhook.requests) == 2, within=15)
    transitions = [b["embeds"][0]["fields"][1]["value"] for b in webhook.bodies()]
    assert transitions == ["idle → starting", "starting → warming"]


# --- holder changes (docs/wire-format.md 2.7) -----------------------------------------


def test_a_change_of_holder_is_posted_and_a_first_holder_is_not() -> None:
    """A holder entry naming another process is posted as information, with
    the same words as the feed; the first holder on record is not."""
    fields = {
        "event": "holder",
        "timestamp": "2026-02-10T22:45:00.123Z",
        "exchangeId": "1",
        "exchangeName": "coinbase",
        "hostname": "vm",
        "instanceId": "vm:1:29183:1770763500000",
        "pid": "29183",
        "via": "takeover",
        "previousInstanceId": "vm:1:28770:1770700000000",
        "previousHostname": "vm",
        "previousPid": "28770",
    }
    now = datetime(2026, 2, 10, tzinfo=UTC)
    event = event_from_entry(parse_entry("1-0", fields), now=now)
    assert event is not None and event.kind is EventKind.HOLDER
    said = "holder changed: vm pid 29183 took over from vm pid 28770 (its process was gone)"
    assert event.detail == said
    payload = build_payload(event)
    assert payload["content"] == f"coinbase: {said}"
    assert payload["embeds"][0]["title"] == "Holder changed: coinbase"

    first = fields | {"previousInstanceId": "", "previousHostname": "", "previousPid": ""}
    assert event_from_entry(parse_entry("2-0", first), now=now) is None
    # The same process with a new start time claimed again: no change.
    again = fields | {"previousInstanceId": "vm:1:29183:1770700000000"}
    assert event_from_entry(parse_entry("3-0", again), now=now) is None


# --- automatic restarts (docs/wire-format.md 2.8) -----------------------------------------


def test_a_restart_reads_the_same_everywhere_and_tolerates_bad_fields() -> None:
    """A restart entry is an event with the feed's words; missing or malformed
    fields are left out of them, never guessed, and never raise."""
    fields = {
        "event": "restart",
        "timestamp": "2026-02-10T22:45:00.123Z",
        "exchangeId": "1",
        "exchangeName": "coinbase",
        "hostname": "vm",
        "attempt": "2",
        "startRetries": "5",
        "delayMs": "1400",
        "reason": "child command exited with code 2",
    }
    now = datetime(2026, 2, 10, tzinfo=UTC)
    event = event_from_entry(parse_entry("1-0", fields), now=now)
    said = "restarting in 1.4s (quick failure 2 of 5): child command exited with code 2"
    assert event is not None and event.kind is EventKind.RESTART and event.detail == said
    payload = build_payload(event)
    assert payload["content"] == f"coinbase: {said}"
    assert payload["embeds"][0]["title"] == "Restarting: coinbase"

    def words(**changes: str) -> str:
        entry = parse_entry("2-0", fields | changes)
        return restart_text(entry)  # type: ignore[arg-type]

    assert words(attempt="0") == "restarting in 1.4s: child command exited with code 2"
    assert words(startRetries="") == (
        "restarting in 1.4s (quick failure 2): child command exited with code 2"
    )
    assert words(delayMs="-5", attempt="²", reason="") == "restarting"
    assert words(delayMs="9" * 40, attempt="1" * 40) == (
        "restarting: child command exited with code 2"
    )
    hostile = words(reason="[bold]x[/]\x1b[31m\n" + "y" * 10_000)
    assert "\x1b" not in hostile and "\n" not in hostile and len(hostile) < 400
    assert restart_text(RestartEntry()) == "restarting"
