"""Webhook notifications (Discord-compatible) for what happens in the fleet.

Two sources feed the notifier. The activity streams, tailed live, carry every
state transition and error an instance reports about itself. The status
snapshot, polled, reveals what no instance can report: its status key expiring
without a stop (it went offline) and reappearing afterwards (it came back).

Payloads are built by pure functions (`event_from_entry`, `build_payload`) so
their shape can be checked without Redis or HTTP. Delivery goes through a
bounded queue drained by one sender task: a slow, rate-limited or dead webhook
delays or drops messages (each drop is logged) but never stalls the watching.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import httpx
from redis.exceptions import RedisError, ResponseError

from perseus_core import __version__
from perseus_core.plumbing.connection import (
    connect,
    describe_redis_error,
    ping_or_raise,
)
from perseus_core.plumbing.errors import TRANSIENT_ERRORS
from perseus_core.store.activity import ActivityLog, ActivityTail, parse_stream_id
from perseus_core.store.network import ExchangeView, NetworkReader
from perseus_core.wire.models import (
    ActivityEntry,
    ErrorEntry,
    InstanceStatus,
    StateTransitionEntry,
)
from perseus_core.wire.settings import Settings
from perseus_core.wire.text import clean, clean_or
from perseus_core.wire.timeutil import Clock, format_ts, system_clock

log = logging.getLogger("perseus.notify")

STOP_STATES = frozenset({"stopping", "stopped", "idle"})
"""States an instance passes through on its way out: a key that disappears
after one of them was released (or is being released), not lost."""


class EventKind(StrEnum):
    """What a notification is about; each kind has its own embed colour."""

    TRANSITION = "transition"
    ERROR = "error"
    OFFLINE = "offline"
    ONLINE = "online"


COLOURS: dict[EventKind, int] = {
    EventKind.TRANSITION: 0x3498DB,  # blue
    EventKind.ERROR: 0xE74C3C,  # red
    EventKind.OFFLINE: 0xE67E22,  # orange
    EventKind.ONLINE: 0x2ECC71,  # green
}
"""Embed colour per kind, as the integer Discord expects."""

_TITLES: dict[EventKind, str] = {
    EventKind.TRANSITION: "State change",
    EventKind.ERROR: "Error",
    EventKind.OFFLINE: "Offline",
    EventKind.ONLINE: "Back online",
}


@dataclass(frozen=True, slots=True)
class FleetEvent:
    """One thing worth telling people about, with the raw (uncleaned) strings
    as read from Redis; `build_payload` makes them safe."""

    kind: EventKind
    exchange_name: str
    exchange_id: int | None
    transition: str
    host: str
    time: datetime
    detail: str = ""


# --- pure helpers -------------------------------------------------------------

# Markdown Discord renders inside content, descriptions and field values. `<`
# also starts user/role/channel mentions (`<@123>`), so escaping it disarms them.
_MARKDOWN = re.compile(r"([\\*_~`|>\[\]<#])")
_MASS_MENTION = re.compile(r"@(?=everyone|here)", re.IGNORECASE)


def discord_text(value: object, max_chars: int, default: str = "-") -> str:
    """An untrusted string made safe for a Discord message.

    Control characters and escape sequences are stripped (`clean`), Markdown is
    escaped so a hostname cannot become a masked link or a header, and mass
    mentions get a zero-width space: `allowed_mentions` already stops pings on
    Discord, this also covers receivers that only mimic its API.
    """
    text = clean_or(value, default, max_chars)
    text = _MARKDOWN.sub(r"\\\1", text)
    return _MASS_MENTION.sub("@\u200b", text)


def redact_webhook_url(url: str) -> str:
    """`scheme://host[:port]/...`: a webhook URL's path is its secret token."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable webhook url>"
    if not parts.scheme or not host:
        return "<unparseable webhook url>"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    return f"{parts.scheme}://{netloc}/..."


def validate_webhook_url(url: str) -> str:
    """Check that `url` is an absolute http(s) URL; the error never echoes it."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port
    except ValueError:
        raise ValueError("the webhook URL cannot be parsed") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError("the webhook URL must be an absolute http:// or https:// URL")
    return url


def _host(hostname: str, ip: str | None) -> str:
    """`host (ip)`, or whichever of the two is known."""
    return f"{hostname or '?'} ({ip})" if ip else hostname


def event_from_entry(entry: ActivityEntry, *, now: datetime) -> FleetEvent | None:
    """The event an activity entry announces, or None for entries that are not
    worth a message (commands, unknown events). `now` stands in for a missing
    or unparseable entry timestamp."""
    name = entry.exchange_name or entry.stream
    when = entry.time or now
    if isinstance(entry, StateTransitionEntry):
        return FleetEvent(
            kind=EventKind.TRANSITION,
            exchange_name=name,
            exchange_id=entry.exchange_id_int,
            transition=f"{entry.from_state or '?'} → {entry.to_state or '?'}",
            host=_host(entry.hostname, entry.ip),
            time=when,
        )
    if isinstance(entry, ErrorEntry):
        return FleetEvent(
            kind=EventKind.ERROR,
            exchange_name=name,
            exchange_id=entry.exchange_id_int,
            transition=f"error while {entry.state or 'unknown'}",
            host=_host(entry.hostname, entry.ip),
            time=when,
            detail=entry.error,
        )
    return None


def offline_event(
    exchange_id: int,
    exchange_name: str,
    last_status: InstanceStatus | None,
    *,
    now: datetime,
) -> FleetEvent:
    """An instance whose key disappeared without a stop; `last_status` is the
    last payload seen while it was online (None if it was unreadable)."""
    state = last_status.connection_state.value if last_status else "unknown"
    host = ""
    detail = "Its status key expired without a stop."
    if last_status is not None:
        host = _host(last_status.hostname, last_status.ip_address)
        detail += f" Last heartbeat {format_ts(last_status.last_heartbeat)}."
    return FleetEvent(
        kind=EventKind.OFFLINE,
        exchange_name=exchange_name,
        exchange_id=exchange_id,
        transition=f"{state} → offline",
        host=host,
        time=now,
        detail=detail,
    )


def online_event(
    exchange_id: int, exchange_name: str, status: InstanceStatus | None, *, now: datetime
) -> FleetEvent:
    """An instance whose key is back after an offline notification."""
    state = status.connection_state.value if status else "unknown"
    host = _host(status.hostname, status.ip_address) if status else ""
    return FleetEvent(
        kind=EventKind.ONLINE,
        exchange_name=exchange_name,
        exchange_id=exchange_id,
        transition=f"offline → {state}",
        host=host,
        time=now,
        detail="Its status key is back.",
    )


def build_payload(event: FleetEvent) -> dict[str, Any]:
    """The Discord webhook body for one event: `content` plus one embed.

    Every string that came from Redis goes through `discord_text`, lengths stay
    well inside Discord's limits (content 2000, title 256, field value 1024,
    description 4096), and `allowed_mentions` forbids any ping.
    """
    name = discord_text(event.exchange_name, 100, default="unknown exchange")
    exchange = f"{name} (#{event.exchange_id})" if event.exchange_id is not None else name
    transition = discord_text(event.transition, 100)
    host = discord_text(event.host, 150)
    detail = discord_text(event.detail, 1000, default="")
    when = format_ts(event.time)

    if event.kind is EventKind.TRANSITION:
        content = f"{name}: {transition} on {host}"
        description = f"{name} moved {transition}."
    elif event.kind is EventKind.ERROR:
        content = f"{name}: {transition} on {host}: {discord_text(event.detail, 200)}"
        description = detail or "(no message)"
    elif event.kind is EventKind.OFFLINE:
        content = f"{name} went offline ({host})"
        description = detail
    else:
        content = f"{name} is back online ({host})"
        description = detail

    return {
        "content": content,
        "embeds": [
            {
                "title": f"{_TITLES[event.kind]}: {name}",
                "description": description,
                "color": COLOURS[event.kind],
                "timestamp": when,
                "fields": [
                    {"name": "exchange", "value": exchange, "inline": True},
                    {"name": "transition", "value": transition, "inline": True},
                    {"name": "host", "value": host, "inline": True},
                    {"name": "time", "value": when, "inline": False},
                ],
            }
        ],
        "allowed_mentions": {"parse": []},
    }


def retry_delay(response: httpx.Response, *, now: datetime) -> float | None:
    """Seconds the server asked us to wait, or None if it did not say.

    Discord's JSON `retry_after` (seconds, fractional) is more precise than its
    `Retry-After` header, so it wins; the header may be seconds or an HTTP date.
    """
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        body = response.json()
        if isinstance(body, dict):
            value = body.get("retry_after")
            if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
                return float(value)
    header = response.headers.get("retry-after")
    if not header:
        return None
    try:
        seconds = float(header)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            return None
        return max(0.0, (moment - now).total_seconds())
    return seconds if seconds >= 0 else None


# --- the notifier -------------------------------------------------------------


class _HideWebhook(logging.Filter):
    """Keeps a webhook URL's secret parts out of log lines.

    The token is in the URL's path (Discord) or, for some receivers, its query.
    httpx logs every request URL at INFO level, so while a notifier runs this
    filter sits on the `httpx` logger and rewrites records naming it; `scrub`
    does the same for text the notifier logs itself (an error body may echo
    the request path).
    """

    def __init__(self, url: str) -> None:
        super().__init__()
        parts = urlsplit(url)
        self._secrets = [part for part in (parts.path, parts.query) if len(part) > 1]
        self.shown = redact_webhook_url(url)

    def scrub(self, text: str) -> str:
        """`text` with every secret part replaced by `...`."""
        for secret in self._secrets:
            text = text.replace(secret, "/...")
        return text

    def _leaks(self, value: object) -> bool:
        text = str(value)
        return any(secret in text for secret in self._secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        if self._leaks(record.msg):
            record.msg = f"(log line hidden: it named the webhook {self.shown})"
            record.args = None
        elif isinstance(record.args, tuple):
            record.args = tuple(self.shown if self._leaks(a) else a for a in record.args)
        return True


@dataclass(slots=True)
class NotifierStats:
    """Counters for logs and tests: what was delivered, given up on or dropped."""

    delivered: int = 0
    failed: int = 0
    dropped: int = 0


@dataclass(slots=True)
class _Presence:
    """What the notifier last knew about one exchange slot."""

    name: str
    online: bool
    status: InstanceStatus | None = None
    state: str | None = None
    state_at: datetime | None = None
    offline_notified: bool = False

    def note_state(self, state: str, at: datetime | None) -> None:
        """Keep the newest state seen, whichever source (poll or stream) saw it
        first: a snapshot taken before a stop must not undo the stop."""
        if at is None or self.state_at is None or at >= self.state_at:
            self.state = state
            self.state_at = at or self.state_at


class Notifier:
    """Watch the fleet and post a webhook message per event worth knowing.

    Posts on every `state_transition` and `error` entry (once per stream entry
    ID, also across reconnects of the tail), when a status key disappears
    while its instance was not stopping (offline), and when such a key comes
    back (online). 429 and 5xx answers and network errors are retried with
    backoff, honouring Retry-After up to `max_retry_delay_s`; other answers are
    logged and given up on. Messages wait in a queue of `queue_size`; when it
    is full the oldest is dropped and logged.

    Args:
        settings: Redis target and timings; the snapshot is polled every
            `interval_ms`, defaulting to `settings.refresh_ms`.
        webhook_url: Where to post. Never logged: only `redact_webhook_url` of it.
            May be None with `dry_run`.
        exchanges: Only watch these exchange names (case-insensitive); all by default.
        http: Client to post with (the caller closes it); one is made otherwise.
        clock: Time source for events without a usable timestamp.
        dry_run: Write each payload as one JSON line to `output` instead of posting.
        output: Where dry-run payloads go (default: stdout).
        interval_ms: How often the status snapshot is compared with the last.
        queue_size: Messages waiting for the webhook at most.
        max_attempts: Posts of one message before it is given up on.
        backoff_s: First retry delay when the server names none; doubles.
        max_retry_delay_s: Cap of any retry delay, Retry-After included.
        request_timeout_s: Timeout of one post (for the client made here).
        drain_timeout_s: How long queued messages may still go out on stop.
        start: Where the tail starts: "$" (only new entries) or a mapping of
            exchange name to the last ID already handled (`ActivityTail`).

    One `run` per instance.
    """

    def __init__(
        self,
        settings: Settings,
        webhook_url: str | None,
        *,
        exchanges: Iterable[str] | None = None,
        http: httpx.AsyncClient | None = None,
        clock: Clock = system_clock,
        dry_run: bool = False,
        output: Callable[[str], None] | None = None,
        interval_ms: int | None = None,
        queue_size: int = 100,
        max_attempts: int = 5,
        backoff_s: float = 0.5,
        max_retry_delay_s: float = 30.0,
        request_timeout_s: float = 10.0,
        drain_timeout_s: float = 3.0,
        start: str | dict[str, str] = "$",
    ) -> None:
        if webhook_url is None and not dry_run:
            raise ValueError("a webhook URL is required unless dry_run is set")
        if webhook_url is not None:
            validate_webhook_url(webhook_url)
        self._settings = settings
        self._url = webhook_url
        self._hide = _HideWebhook(webhook_url) if webhook_url else None
        self._redacted = self._hide.shown if self._hide else "(dry run)"
        self._filter = {name.lower() for name in exchanges} if exchanges else None
        self._http = http
        self._clock = clock
        self._dry_run = dry_run
        self._output = output or (lambda line: print(line, flush=True))
        self._interval_s = (interval_ms or settings.refresh_ms) / 1000
        self._max_attempts = max(1, max_attempts)
        self._backoff_s = backoff_s
        self._max_retry_delay_s = max_retry_delay_s
        self._request_timeout_s = request_timeout_s
        self._drain_timeout_s = drain_timeout_s
        self._start: str | dict[str, str] = start
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=max(1, queue_size))
        self._last_ids: dict[str, tuple[int, int]] = {}
        self._presence: dict[int, _Presence] = {}
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._tail: ActivityTail | None = None
        self._redis_down = False
        self.stats = NotifierStats()

    # --- public control ----------------------------------------------------

    @property
    def webhook(self) -> str:
        """The webhook as it may be shown: `scheme://host/...`."""
        return self._redacted

    def stop(self) -> None:
        """Ask `run` to finish: watching stops, queued messages get a short
        chance to go out. Safe to call from a signal handler."""
        self._stop.set()

    async def wait_ready(self) -> None:
        """Return once the first snapshot has been taken (the baseline against
        which offline is judged) and the tail has been opened."""
        await self._ready.wait()

    async def run(self) -> None:
        """Watch until `stop()` or cancellation.

        Raises RedisUnavailable if Redis cannot be reached at start; later
        outages are logged and survived.
        """
        redis = connect(self._settings)
        http = self._http or httpx.AsyncClient(
            timeout=self._request_timeout_s,
            follow_redirects=False,
            headers={"User-Agent": f"perseus/{__version__} (notify)"},
        )
        tasks: list[asyncio.Task[None]] = []
        sender: asyncio.Task[None] | None = None
        stop = asyncio.create_task(self._stop.wait(), name="notify-stop")
        if self._hide is not None:
            logging.getLogger("httpx").addFilter(self._hide)
        try:
            await ping_or_raise(redis, self._settings)
            reader = NetworkReader(redis, self._settings)
            activity = ActivityLog(redis, self._settings)
            await self._poll(reader, activity)
            sender = asyncio.create_task(self._send_loop(http), name="notify-send")
            tasks = [
                asyncio.create_task(self._watch_activity(), name="notify-activity"),
                asyncio.create_task(self._watch_presence(reader, activity), name="notify-poll"),
            ]
            done, _ = await asyncio.wait(
                [*tasks, sender, stop], return_when=asyncio.FIRST_COMPLETED
            )
            for task in done:
                error = None if task is stop or task.cancelled() else task.exception()
                if error is not None:  # a bug: nothing here is meant to end on its own
                    raise error
        finally:
            # The loops end by themselves once stopped, and closing the tail
            # interrupts its blocked read; cancellation is only the fallback.
            self._stop.set()
            if self._tail is not None:
                await self._tail.aclose()
            _, pending = await asyncio.wait([stop, *tasks], timeout=self._drain_timeout_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(stop, *tasks, return_exceptions=True)
            if sender is not None:
                await self._drain(sender)
            if self._http is None:
                await http.aclose()
            await redis.aclose()
            if self._hide is not None:
                logging.getLogger("httpx").removeFilter(self._hide)

    # --- activity stream ----------------------------------------------------

    def _wanted(self, name: str) -> bool:
        return self._filter is None or name.lower() in self._filter

    def _names_source(self) -> Callable[[], Awaitable[list[str]]] | None:
        if self._filter is None:
            return None
        names = sorted(self._filter)

        async def filtered() -> list[str]:
            return names

        return filtered

    async def _watch_activity(self) -> None:
        """Tail every watched stream. The tail reconnects by itself; should it
        ever fail outright, a new one resumes where it stopped."""
        start: str | dict[str, str] = self._start
        while not self._stop.is_set():
            tail = self._tail = ActivityTail(
                self._settings, names=self._names_source(), start=start
            )
            try:
                await tail.start()  # entries appended from here on are delivered
                if not self._ready.is_set():
                    self._ready.set()
                    online = sum(1 for p in self._presence.values() if p.online)
                    log.info("ready: %d exchange(s) known, %d online", len(self._presence), online)
                async for entry in tail:
                    self.handle_entry(entry)
            except Exception as exc:  # noqa: BLE001 - a tail failure must not end the watching
                log.warning("activity tail failed (%s); reopening", _describe(exc))
            finally:
                positions = tail.positions
                await tail.aclose()
            start = positions or start
            await self._pause(min(5.0, self._settings.block_ms / 1000))

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when stopped."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    def handle_entry(self, entry: ActivityEntry) -> bool:
        """Queue the message for one activity entry; returns whether it did.

        An entry whose ID is not newer than the last one handled for its stream
        is a duplicate (a replay after a reconnect) and is skipped. Transitions
        also update the state used to tell a stop from a loss.
        """
        stream = (entry.stream or entry.exchange_name).lower()
        if not self._wanted(stream):
            return False
        try:
            key: tuple[int, int] | None = parse_stream_id(entry.id)
        except ValueError:  # built by hand rather than read: nothing to dedupe on
            key = None
        if key is not None:
            last = self._last_ids.get(stream)
            if last is not None and key <= last:
                return False
            self._last_ids[stream] = key
        if isinstance(entry, StateTransitionEntry) and entry.exchange_id_int is not None:
            presence = self._presence.get(entry.exchange_id_int)
            if presence is not None:
                presence.note_state(entry.to_state, entry.time)
        event = event_from_entry(entry, now=self._clock())
        if event is None:
            return False
        self.submit(event)
        return True

    # --- status snapshot -----------------------------------------------------

    async def _watch_presence(self, reader: NetworkReader, activity: ActivityLog) -> None:
        while True:
            await self._pause(self._interval_s)
            if self._stop.is_set():
                return
            try:
                await self._poll(reader, activity)
            except RedisError as exc:  # e.g. a key of the wrong type: log it, keep polling
                log.warning("status poll failed: %s", _describe(exc))

    async def _poll(self, reader: NetworkReader, activity: ActivityLog) -> None:
        """Compare one snapshot with the last; Redis errors skip the round (an
        unreachable Redis says nothing about the instances)."""
        try:
            snapshot = await reader.snapshot(last_known=False)
            views: dict[int, ExchangeView] = {
                view.exchange_id: view
                for view in snapshot.exchanges
                if view.exchange_id >= 0 and self._wanted(view.exchange_name)
            }
            for exchange_id in sorted(self._presence.keys() - views.keys()):
                # Not listed: gone, or listed only by a SCAN that is not due
                # (online but not in the catalog). Only a direct read can tell,
                # and only matters for slots that were online or are awaited back.
                presence = self._presence[exchange_id]
                if presence.online or presence.offline_notified:
                    views[exchange_id] = await reader.exchange(exchange_id)
                else:
                    del self._presence[exchange_id]
            for exchange_id, view in sorted(views.items()):
                await self._observe(exchange_id, view, activity)
        except TRANSIENT_ERRORS as exc:
            if not self._redis_down:
                log.warning("%s (still watching)", describe_redis_error(self._settings, exc))
                self._redis_down = True
            return
        if self._redis_down:
            log.info("Redis reachable again at %s", self._settings.redacted_redis_url)
            self._redis_down = False

    async def _observe(self, exchange_id: int, view: ExchangeView, activity: ActivityLog) -> None:
        """Move one slot's presence along and queue the edge it crossed, if any."""
        presence = self._presence.get(exchange_id)
        if presence is None:  # first sight: a baseline, not news
            presence = _Presence(name=view.exchange_name, online=view.online)
            self._presence[exchange_id] = presence
        if view.online:
            presence.name = view.exchange_name or presence.name
            if view.status is not None:
                presence.status = view.status
                presence.note_state(
                    view.status.connection_state.value, view.status.last_state_change
                )
            if not presence.online and presence.offline_notified:
                self.submit(
                    online_event(exchange_id, presence.name, view.status, now=self._clock())
                )
                presence.offline_notified = False
            presence.online = True
        elif presence.online:
            if not presence.offline_notified and not await self._stopped(presence, activity):
                self.submit(
                    offline_event(exchange_id, presence.name, presence.status, now=self._clock())
                )
                presence.offline_notified = True
            presence.online = False

    async def _stopped(self, presence: _Presence, activity: ActivityLog) -> bool:
        """Whether a vanished key was released by a stop rather than lost.

        The tail may lag behind the poll (or be reconnecting), so the newest
        transition in the exchange's own stream is read too; whichever of it
        and the last seen state is newer decides.
        """
        try:
            page = await activity.page(presence.name, count=20)
        except ResponseError as exc:  # not a stream: only the state seen so far can tell
            log.warning("cannot read the activity of %s: %s", clean(presence.name), _describe(exc))
            return presence.state in STOP_STATES
        for entry in page.entries:
            if isinstance(entry, StateTransitionEntry):
                presence.note_state(entry.to_state, entry.time)
                break
        return presence.state in STOP_STATES

    # --- delivery -------------------------------------------------------------

    def submit(self, event: FleetEvent) -> None:
        """Queue the payload for `event`; a full queue loses its oldest message."""
        payload = build_payload(event)
        if self._queue.full():
            dropped = self._queue.get_nowait()
            self._queue.task_done()
            self.stats.dropped += 1
            log.warning(
                "notification queue full (%d): dropped the oldest message: %s",
                self._queue.maxsize,
                dropped.get("content", ""),
            )
        self._queue.put_nowait(payload)

    async def _send_loop(self, http: httpx.AsyncClient) -> None:
        while True:
            payload = await self._queue.get()
            try:
                if await self._deliver(http, payload):
                    self.stats.delivered += 1
                else:
                    self.stats.failed += 1
            finally:
                self._queue.task_done()

    async def _drain(self, sender: asyncio.Task[None]) -> None:
        """Give queued messages a bounded chance to go out, then stop sending."""
        if not sender.done():
            try:
                await asyncio.wait_for(self._queue.join(), self._drain_timeout_s)
            except TimeoutError:
                pass
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        left = self._queue.qsize()
        if left:
            log.warning("shutting down with %d undelivered notification(s)", left)

    async def _deliver(self, http: httpx.AsyncClient, payload: dict[str, Any]) -> bool:
        """Post one payload, retrying what may succeed later; True when delivered."""
        if self._url is None or self._hide is None or self._dry_run:
            return self._print(payload)
        attempt = 0
        while True:
            attempt += 1
            asked: float | None = None
            try:
                response = await http.post(self._url, json=payload)
            except httpx.HTTPError as exc:  # network trouble: worth another try
                reason = self._hide.scrub(_describe(exc))
            except Exception as exc:  # noqa: BLE001 - never let one message end the sending
                log.warning(
                    "cannot post to webhook %s (%s); not retrying this message",
                    self._redacted,
                    self._hide.scrub(_describe(exc)),
                )
                return False
            else:
                if response.is_success:
                    return True
                status = response.status_code
                if status != 429 and status < 500:
                    log.warning(
                        "webhook %s answered %d (%s); not retrying this message",
                        self._redacted,
                        status,
                        self._hide.scrub(clean(response.text, 200)),
                    )
                    return False
                asked = retry_delay(response, now=self._clock())
                reason = f"HTTP {status}"
            if attempt >= self._max_attempts:
                log.warning(
                    "webhook %s failed %d times (last: %s); giving up on this message",
                    self._redacted,
                    attempt,
                    reason,
                )
                return False
            delay = asked if asked is not None else self._backoff_s * 2 ** (attempt - 1)
            delay = min(delay, self._max_retry_delay_s)
            log.info(
                "webhook %s: %s; retrying in %.1fs (attempt %d of %d)",
                self._redacted,
                reason,
                delay,
                attempt + 1,
                self._max_attempts,
            )
            await asyncio.sleep(delay)

    def _print(self, payload: dict[str, Any]) -> bool:
        """Dry run: one JSON line per payload. Output that is gone (a closed
        pipe) ends the run: nobody is reading any more."""
        try:
            self._output(json.dumps(payload, ensure_ascii=False, separators=(",", ":")))
        except OSError as exc:
            log.warning("cannot write payloads (%s); stopping", _describe(exc))
            self.stop()
            return False
        return True


def _describe(exc: BaseException) -> str:
    """An exception as one short line that cannot carry a URL (httpx puts the
    request URL, token included, into some messages)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    text = re.sub(r"\b[a-z][a-z0-9+.-]*://\S+", "<url>", text, flags=re.IGNORECASE)
    return f"{type(exc).__name__}: {clean(text, 200)}" if text else type(exc).__name__
