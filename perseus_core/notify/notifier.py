"""The notifier: watch the fleet, post a webhook message per event worth knowing.

Two sources feed it. The activity streams, tailed live, carry every state
transition and error an instance reports about itself (`handle_entry`). The
status snapshot, polled, reveals what no instance can report: its status key
expiring without a stop and reappearing afterwards (`PresenceWatch`).
An exchange's transitions and errors that come together are told as one
message (`Episodes`: a crash and its restart are one post, not seven), the
kinds not asked for are left out, and delivery goes through `Sender`'s
bounded queue.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

import httpx
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from perseus_core import __version__
from perseus_core.notify.discord import (
    WebhookSecrets,
    build_payload,
    describe_error,
    validate_webhook_url,
)
from perseus_core.notify.episodes import Episodes
from perseus_core.notify.events import EventKind, FleetEvent, event_from_entry
from perseus_core.notify.presence import PresenceWatch
from perseus_core.notify.sender import NotifierStats, RetryPolicy, Sender
from perseus_core.plumbing.connection import connect, ping_or_raise
from perseus_core.plumbing.tasks import raise_if_cancelling, wait_event
from perseus_core.present import other_writer
from perseus_core.store.activity import ActivityLog, ActivityTail, NamesProvider, parse_stream_id
from perseus_core.store.network import FleetReader
from perseus_core.wire.models import ActivityEntry, ErrorEntry, StateTransitionEntry
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import Clock, system_clock

log = logging.getLogger(__name__)


class Notifier:
    """Watch the fleet and post a webhook message per event worth knowing.

    Posts on `state_transition` and `error` entries (each entry once, by its
    stream entry ID, also across reconnects of the tail; an exchange's
    entries that come together are one message, see `Episodes`; an error
    another host wrote while the exchange's holder is healthy, such as a
    refused claim, is posted at once as that host's, not as the exchange's),
    when a status key disappears while its instance was not stopping
    (offline), and when such a key comes back (online). 429 and 5xx answers
    and network errors are retried with
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
        settle_s: An exchange's transitions and errors are held while they
            keep coming and told as one message once it is at rest, or after
            this long without a new one (`Episodes`); 0 tells each at once.
        longest_s: An episode is told at the latest this long after it began.
        only: Post only messages of these kinds (an episode with an error is
            an error); all by default.

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
        settle_s: float = 10.0,
        longest_s: float = 60.0,
        only: Iterable[EventKind] | None = None,
    ) -> None:
        if webhook_url is None and not dry_run:
            raise ValueError("a webhook URL is required unless dry_run is set")
        if webhook_url is not None:
            validate_webhook_url(webhook_url)
        self._settings = settings
        self._hide = WebhookSecrets(webhook_url) if webhook_url else None
        self._redacted = self._hide.shown if self._hide else "(dry run)"
        self._filter = {name.lower() for name in exchanges} if exchanges else None
        self._http = http
        self._clock = clock
        self._interval_s = (interval_ms or settings.refresh_ms) / 1000
        self._request_timeout_s = request_timeout_s
        self._drain_timeout_s = drain_timeout_s
        self._start: str | dict[str, str] = start
        self._last_ids: dict[str, tuple[int, int]] = {}
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._tail: ActivityTail | None = None
        self._presence: PresenceWatch | None = None
        self._episodes = Episodes(settle_s, longest_s)
        self._episode_opened = asyncio.Event()
        self._only = frozenset(only) if only is not None else None
        self.stats = NotifierStats()
        self._sender = Sender(
            None if dry_run else webhook_url,
            self._hide,
            RetryPolicy(max(1, max_attempts), backoff_s, max_retry_delay_s),
            clock=clock,
            queue_size=queue_size,
            output=output or (lambda line: print(line, flush=True)),
            on_output_gone=self.stop,
            stats=self.stats,
        )

    # --- public control ----------------------------------------------------

    @property
    def webhook(self) -> str:
        """The webhook as it may be shown: `scheme://host/...`."""
        return self._redacted

    def stop(self) -> None:
        """Ask `run` to finish: watching stops, held episodes are told, and
        queued messages get a short chance to go out. Safe to call from a
        signal handler."""
        self._stop.set()
        self._episode_opened.set()

    async def wait_ready(self) -> None:
        """Return once the first snapshot has been taken (the baseline against
        which offline is judged) and the tail has been opened."""
        await self._ready.wait()

    def submit(self, event: FleetEvent) -> None:
        """Tell `event`: at once, or with the other events of its exchange's
        episode once that ends (`Episodes`)."""
        for told in self._episodes.add(event, time.monotonic()):
            self._post(told)
        if self._episodes:
            self._episode_opened.set()

    def _post(self, event: FleetEvent) -> None:
        """Queue the payload for `event` unless its kind is left out; a full
        queue loses its oldest message."""
        if self._only is not None and event.kind not in self._only:
            self.stats.skipped += 1
            return
        self._sender.submit(build_payload(event))

    async def _tell_episodes(self) -> None:
        """Tell each held episode when it falls due, until stopped."""
        while not self._stop.is_set():
            for event in self._episodes.due(time.monotonic()):
                self._post(event)
            due = self._episodes.next_due()
            self._episode_opened.clear()
            if due is None:
                await self._episode_opened.wait()
            else:
                await wait_event(self._episode_opened, due - time.monotonic())

    async def run(self) -> None:
        """Watch until `stop()` or cancellation.

        Raises RedisUnavailable if Redis cannot be reached at start; later
        outages are logged and survived.
        """
        redis = connect(self._settings)
        # Listing the exchanges fails fast: the tail asks again on its next refresh.
        names_client = connect(self._settings, retry=Retry(NoBackoff(), 0))
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
            presence = self._presence = PresenceWatch(
                FleetReader(redis),
                ActivityLog(redis, self._settings),
                self._settings,
                wanted=self._wanted,
                clock=self._clock,
                submit=self.submit,
            )
            await self._poll(presence)
            sender = asyncio.create_task(self._sender.send_forever(http), name="notify-send")
            tasks = [
                asyncio.create_task(
                    self._watch_activity(self._names_source(FleetReader(names_client))),
                    name="notify-activity",
                ),
                asyncio.create_task(self._watch_presence(presence), name="notify-poll"),
                asyncio.create_task(self._tell_episodes(), name="notify-episodes"),
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
            for event in self._episodes.close_all():
                self._post(event)
            if sender is not None:
                await self._sender.drain(sender, self._drain_timeout_s)
            if self._http is None:
                await http.aclose()
            await redis.aclose()
            await names_client.aclose()
            if self._hide is not None:
                logging.getLogger("httpx").removeFilter(self._hide)

    # --- activity stream ----------------------------------------------------

    def _wanted(self, name: str) -> bool:
        return self._filter is None or name.lower() in self._filter

    def _names_source(self, everything: FleetReader) -> NamesProvider:
        """The streams to tail: the filter's, or the catalog's and online ones."""
        if self._filter is None:
            return everything.exchange_names
        names = sorted(self._filter)

        async def filtered() -> list[str]:
            return names

        return filtered

    async def _watch_activity(self, names: NamesProvider) -> None:
        """Tail every watched stream. The tail reconnects by itself; should it
        ever fail outright, a new one resumes where it stopped."""
        start: str | dict[str, str] = self._start
        while not self._stop.is_set():
            tail = self._tail = ActivityTail(self._settings, names=names, start=start)
            try:
                await tail.start()  # entries appended from here on are delivered
                if not self._ready.is_set():
                    self._ready.set()
                    known, online = self._presence.counts() if self._presence else (0, 0)
                    log.info("ready: %d exchange(s) known, %d online", known, online)
                async for entry in tail:
                    await self._judge(entry)
                    self.handle_entry(entry)
            except Exception as exc:
                raise_if_cancelling()  # a cancellation redis-py turned into an error
                log.warning("activity tail failed (%s); reopening", describe_error(exc))
            finally:
                positions = tail.positions
                await tail.aclose()
            start = positions or start
            await wait_event(self._stop, min(5.0, self._settings.block_ms / 1000))

    async def _judge(self, entry: ActivityEntry) -> None:
        """Before an error is worded: read its exchange's holder now, so a
        refused claimant's error is told from the exchange's own
        (`handle_entry`) by the holder of the moment, not of the last poll."""
        stream = (entry.stream or entry.exchange_name).lower()
        if isinstance(entry, ErrorEntry) and self._presence is not None and self._wanted(stream):
            await self._presence.recheck(entry)

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
            # IDs are ordered within one stream only: an exchange's shared and
            # Perseus-only streams can hold the same ID for different entries.
            source = entry.key or stream
            last = self._last_ids.get(source)
            if last is not None and key <= last:
                return False
            self._last_ids[source] = key
        if isinstance(entry, StateTransitionEntry) and self._presence is not None:
            self._presence.note_transition(entry)
        # Another host's error while the holder is healthy is not the exchange's.
        view = self._presence.view_of(entry) if self._presence is not None else None
        event = event_from_entry(entry, now=self._clock(), other=other_writer(entry, view))
        if event is None:
            return False
        self.submit(event)
        return True

    # --- status snapshot -----------------------------------------------------

    async def _watch_presence(self, presence: PresenceWatch) -> None:
        while not await wait_event(self._stop, self._interval_s):
            try:
                await self._poll(presence)
            except RedisError as exc:  # e.g. a key of the wrong type: log it, keep polling
                log.warning("status poll failed: %s", describe_error(exc))

    async def _poll(self, presence: PresenceWatch) -> None:
        await presence.poll()
        self.stats.polls += 1
