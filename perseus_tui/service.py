"""The fleet data service: every Redis conversation of the dashboard, apart from its screens.

Three kinds of async workers talk to Redis, none on a thread (redis.asyncio
must stay on the app's event loop):

- the fleet poller re-reads every status every `--refresh` seconds, and at
  once the exchanges whose streams just had activity;
- the activity follower loads the recent history, then follows every stream
  with blocking reads (`ActivityTail`), so a new entry shows at once;
- one worker per start/stop command, posting each step (sent -> acknowledged
  -> result, or why it ended) as `perseus_core.present.commands` words it.

Workers only post messages (`perseus_tui.messages`) to the node that hosts
them (the app); what a message changes on screen is decided there. A worker
that fails is reported by the host (`Worker.StateChanged`), which calls
`restart` for the long-running ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections.abc import Coroutine, Iterable
from typing import Any

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from textual.dom import DOMNode
from textual.worker import Worker

from perseus_core.plumbing.connection import connect, describe_redis_error
from perseus_core.plumbing.errors import REDIS_ERRORS, TRANSIENT_ERRORS
from perseus_core.plumbing.tasks import raise_if_cancelling
from perseus_core.plumbing.topology import RedisClient
from perseus_core.present.commands import (
    COMMAND_ERRORS,
    SENT,
    CommandStep,
    ack_step,
    failure_step,
    outcome_step,
)
from perseus_core.present.timeline import DAY
from perseus_core.store.activity import ActivityLog, ActivityPage, ActivityTail
from perseus_core.store.activity.windows import read_windows
from perseus_core.store.control.sender import ControlClient
from perseus_core.store.doctor import command_refusal
from perseus_core.store.network import ExchangeView, FleetReader, FleetSnapshot, StatusWatcher
from perseus_core.wire.models import ActivityEntry, CommandType
from perseus_core.wire.settings import Settings
from perseus_core.wire.text import clean
from perseus_core.wire.timeutil import Clock
from perseus_tui.heap import collector_paused
from perseus_tui.messages import (
    CommandProgress,
    ConnectionLost,
    ExchangesRefreshed,
    FeedEntries,
    FeedHistory,
    ReadOnlyDetected,
    SnapshotLoaded,
    TimelineWindows,
)

RETRY_MAX_S = 4.0
"""Longest wait between reconnect attempts (shorter when --refresh is shorter)."""
PARTIAL_REFRESH_MAX = 20
"""More exchanges than this with fresh activity: re-read the whole fleet instead."""
TAIL_YIELD_EVERY = 200
"""Entries taken from the tail between two turns of the event loop."""
WATCH_BATCH_S = 1.0
"""Shortest time between two re-reads of the exchanges Redis said changed: a
large fleet's heartbeats come by the hundred a second, and are read together."""
WATCH_RECHECK_S = 60.0
"""While Redis tells no changes (notifications off, or refused to this user),
how often to ask it again."""
TIMELINE_READ_COUNT = 500
"""Entries read per stream for an exchange's state timeline (the window read);
an exchange that wrote more in a day shows the time before them as unknown."""
TIMELINE_BATCH = 200
"""Exchanges whose windows are read in one pipeline: the fleet's first reads
go out a batch at a time, so the dashboard keeps answering keys meanwhile."""
FEED_WAITING_MAX = 2_000
"""Live entries that may wait while a feed batch is on its way: beyond it
the tail stops reading until the app has shown that batch. Under a flood the
entries then wait in Redis, not in this process, and no batch grows so large
that handling it keeps key presses waiting."""
WORKERS_CLOSE_S = 15.0
"""How long closing waits for the workers to close their own connections: a
worker still closing when the app's loop ends is cancelled a second time,
which cuts its clean-up short (5 s was not always enough on a loaded CI
machine)."""

POLL_GROUP = "poll"
ACTIVITY_GROUP = "activity"
COMMAND_GROUP = "commands"


class FleetService:
    """Polls the fleet, follows the activity streams and sends commands for one host node.

    The workers run on `host` (`DOMNode.run_worker`, async, exclusive per
    group, `exit_on_error=False`), so their failures reach the host's
    `on_worker_state_changed`, the one place they are reported.
    """

    def __init__(
        self,
        host: DOMNode,
        settings: Settings,
        *,
        clock: Clock,
        operator: str,
        feed_max_lines: int,
    ) -> None:
        self._host = host
        self.settings = settings
        self._clock = clock
        self._operator = operator
        self._feed_max_lines = feed_max_lines
        self._redis: RedisClient | None = None
        self._closed = False
        self._reads: set[asyncio.Task[ActivityPage]] = set()
        self._wake = asyncio.Event()
        self._dirty: set[int] = set()
        self._full_due = False
        self._discover_due = False
        self._feed_batch: FeedEntries | None = None
        """The live entries posted and not yet shown (None: none on their way)."""
        self._feed_waiting: list[ActivityEntry] = []
        """Live entries that arrived while a batch was on its way: the next batch."""
        self._feed_shown = asyncio.Event()
        """Set when the app has shown the batch on its way (see `FEED_WAITING_MAX`)."""
        self._ids_by_name: dict[str, int] = {}
        """Stream name -> exchange id of every exchange read so far."""
        self._online: set[int] = set()
        """The exchanges with a status key as last read: while Redis tells
        status writes (`StatusWatcher`), a flood of their activity needs no
        re-read of its own (`_to_reread`)."""
        self._problems: set[str] = set()
        """What the latest fleet read could not read (shown once each)."""
        self._rights_known = False
        """Whether this user's right to send commands was probed yet."""
        self._tail_started = False
        """The live tail follows every stream: a window read now misses nothing."""
        self._windows_read: set[str] = set()
        """Stream names whose timeline window was read since the tail (re)started."""

    @property
    def redis(self) -> RedisClient:
        """The client for short commands (blocking reads use their own)."""
        if self._closed:  # a screen's late read must not open a client nobody closes
            raise RedisConnectionError("the dashboard is closing")
        if self._redis is None:
            # One immediate retry replaces a pooled connection that went stale
            # (server restarted); redis-py's default backoff retries would hide
            # an outage from the banner for seconds.
            self._redis = connect(self.settings, retry=Retry(NoBackoff(), 1))
        return self._redis

    @property
    def refresh_s(self) -> float:
        """Seconds between full fleet reads."""
        return self.settings.refresh_ms / 1000

    @property
    def retry_s(self) -> float:
        """Seconds between reconnect attempts while Redis is unreachable."""
        return min(RETRY_MAX_S, self.refresh_s)

    # --- lifecycle ---------------------------------------------------------------------

    def _run(self, work: Coroutine[Any, Any, None], name: str, group: str) -> Worker[None]:
        exclusive = group != COMMAND_GROUP  # commands run side by side
        return self._host.run_worker(
            work, name=name, group=group, exclusive=exclusive, exit_on_error=False
        )

    def start(self) -> None:
        """Start the poller and the activity follower."""
        self._run(self._poll_fleet(), "fleet poll", POLL_GROUP)
        self._run(self._follow_activity(), "activity feed", ACTIVITY_GROUP)

    def restart(self, worker: Worker[Any]) -> None:
        """Start a failed long-running worker again after `retry_s` (commands are not retried)."""
        if worker.group == POLL_GROUP:
            self._host.set_timer(
                self.retry_s, lambda: self._run(self._poll_fleet(), "fleet poll", POLL_GROUP)
            )
        elif worker.group == ACTIVITY_GROUP:
            self._host.set_timer(
                self.retry_s,
                lambda: self._run(self._follow_activity(), "activity feed", ACTIVITY_GROUP),
            )

    async def aclose(self) -> None:
        """Cancel every worker, let each close its own connections, then close the client."""
        self._closed = True
        workers = [w for w in self._host.workers if w.node is self._host]
        for worker in workers:
            # Once only: a second cancellation (Textual cancels every worker
            # when its loop ends) would cut short the worker's own clean-up,
            # leaving a connection it was closing open.
            if not worker.is_cancelled:
                worker.cancel()
        waits = [asyncio.ensure_future(worker.wait()) for worker in workers]
        for future in waits:
            # A cancelled or failed worker has nothing left to report, also when
            # it ends after this wait gave up or was itself cancelled (the app's
            # shutdown): unretrieved, its WorkerCancelled was printed as a
            # traceback when the loop closed.
            future.add_done_callback(_retrieve)
        if waits:
            await asyncio.wait(waits, timeout=WORKERS_CLOSE_S)
        reads = list(self._reads)
        for read in reads:
            read.cancel()
        if reads:  # before the client closes: a read finishing later would reopen a connection
            await asyncio.wait(reads, timeout=5)
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    # --- fleet polling -----------------------------------------------------------------

    def request_refresh(self) -> None:
        """Re-read the whole fleet now."""
        self._full_due = True
        self._wake.set()

    def refresh_soon(self, entries: Iterable[ActivityEntry]) -> None:
        """Re-read the exchanges these entries belong to without waiting for the poll.

        Activity on more exchanges than a partial refresh reads
        (`PARTIAL_REFRESH_MAX`) does not wake the poller, unless an unlisted
        exchange is to be found: under a flood it would read and show the
        whole fleet after every feed batch, each time holding the screen
        (160 ms at 1,000 exchanges) while key presses wait. The poll takes
        them on its next turn (`_to_reread`).
        """
        for entry in entries:
            exchange_id = self._ids_by_name.get(entry.stream)
            if exchange_id is None:
                if entry.names_no_exchange:
                    continue  # `logs:network:unknown`: an entry, never an exchange to find
                # An exchange the dashboard does not list yet: read everything, scan included.
                self._full_due = self._discover_due = True
            else:
                self._dirty.add(exchange_id)
        if self._full_due or len(self._dirty) <= PARTIAL_REFRESH_MAX:
            self._wake.set()

    def _tell_once(self, problems: Iterable[str]) -> None:
        """Show each problem that the previous read did not have, one line
        each. Only a lost connection raises the "unreachable" banner: an
        unreadable key (wrong type, ACL) leaves the rest of the fleet shown."""
        current = set(problems)
        for problem in sorted(current - self._problems):
            self._host.app.notify(
                clean(problem, 300),
                title="Part of the fleet is unreadable",
                severity="warning",
                timeout=10,
                markup=False,
            )
        self._problems = current

    def _remember(self, snapshot: FleetSnapshot) -> None:
        self._ids_by_name = {
            view.exchange_name.lower(): view.exchange_id for view in snapshot.exchanges
        }
        self._online = {view.exchange_id for view in snapshot.exchanges if view.key_exists}

    async def _poll_fleet(self) -> None:
        """Read the fleet every `refresh_s`, and changed exchanges as soon as they change.

        When Redis tells which keys change (keyspace notifications:
        `StatusWatcher`), the exchanges whose status, presence or wanted
        state was written, expired or deleted are re-read on their own, a
        batch at most every `WATCH_BATCH_S`, and the whole fleet only every
        `full_refresh_ms` in case a notification was lost: an idle fleet then
        costs the dashboard and Redis nothing between events. While Redis is
        unreachable, retry every `retry_s` and say so each time.
        """
        reader = FleetReader(self.redis, clock=self._clock)
        watcher = StatusWatcher(self.redis, on_change=self._wake.set)
        next_full = next_watched = recheck_at = relisten_at = 0.0
        failing = False
        try:
            while True:
                timeout = self.retry_s
                try:
                    now = time.monotonic()
                    # A lost subscription (Redis went away, a failover) is taken up
                    # at once, with a full read, but at most every `retry_s`: a
                    # subscription that keeps dropping must not become a busy loop.
                    relisten = watcher.lost and now >= relisten_at
                    if failing or self._full_due or relisten or now >= next_full:
                        if watcher.lost or (not watcher.watching and now >= recheck_at):
                            relisten_at = now + self.retry_s
                            # Subscribed before the read, so no change after it goes
                            # untold; asked again now and then (an operator may turn
                            # notifications on), never on every poll: a refused
                            # CONFIG GET lands in the server's ACL log.
                            recheck_at = now + WATCH_RECHECK_S
                            await watcher.start()
                        watcher.take()  # the full read covers them
                        await self._read_fleet(reader, after_outage=failing)
                        full_s = self.settings.full_refresh_ms / 1000
                        next_full = time.monotonic() + (
                            full_s if watcher.watching else self.refresh_s
                        )
                    elif self._dirty:
                        ids = self._to_reread(watching=watcher.watching)
                        if ids is None:
                            self._full_due = True
                            continue
                        views = [await reader.exchange(exchange_id) for exchange_id in ids]
                        self._refreshed(views)
                    elif watcher.pending and now >= next_watched:
                        changed, catalog_changed = watcher.take()
                        fresh = None if catalog_changed else await reader.refresh(changed)
                        if fresh is None:  # the catalog, or which exchanges are listed
                            self._full_due = True
                            continue
                        next_watched = time.monotonic() + WATCH_BATCH_S
                        self._refreshed(fresh)
                    await self._read_windows(self._ids_by_name)
                    failing = False
                    timeout = max(0.0, next_full - time.monotonic())
                    if watcher.pending:
                        timeout = min(timeout, max(0.0, next_watched - time.monotonic()))
                    if watcher.lost:
                        timeout = min(timeout, max(0.0, relisten_at - time.monotonic()))
                except TRANSIENT_ERRORS as exc:
                    raise_if_cancelling()  # a cancellation redis-py turned into an error
                    failing = True
                    reason = describe_redis_error(self.settings, exc)
                    self._host.post_message(ConnectionLost(reason, self.retry_s))
                except RedisError as exc:  # an error reply: Redis answers, it refuses this read
                    raise_if_cancelling()
                    failing = True
                    self._tell_once([f"the fleet read was refused: {exc}"])
                await self._sleep(timeout)
        finally:
            await watcher.aclose()

    def _to_reread(self, *, watching: bool) -> list[int] | None:
        """The exchanges with fresh activity to read again (taken), or None
        when there are more than a partial re-read takes: read the fleet.

        Activity on many exchanges (a flood): while Redis tells the status
        writes (`watching`), those online need no read of their own, only
        the others do (their last-known entry); a full read after every
        batch cost a 10,000-exchange dashboard about 200 ms of CPU each time.
        """
        ids = sorted(self._dirty)
        self._dirty.clear()
        if len(ids) > PARTIAL_REFRESH_MAX and watching:
            ids = [exchange_id for exchange_id in ids if exchange_id not in self._online]
        return None if len(ids) > PARTIAL_REFRESH_MAX else ids

    async def _sleep(self, seconds: float) -> None:
        """The poll's wait: until woken (`_wake`) or for `seconds`.

        Never while cancelled, before and after, as the tail's sleep
        (`CloseGuard.sleep`): redis-py can swallow a cancellation and return the
        reply, and Python 3.11's `wait_for` loses one that lands with the wake-up.
        """
        raise_if_cancelling()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        raise_if_cancelling()
        self._wake.clear()

    async def _read_fleet(self, reader: FleetReader, *, after_outage: bool) -> None:
        """Read the whole fleet and post it."""
        # After an outage (Redis may have restarted empty) or activity from an
        # unlisted exchange, look for online exchanges now instead of at the
        # reader's next periodic scan.
        discover = True if after_outage or self._discover_due else None
        self._full_due = self._discover_due = False
        self._dirty.clear()
        with collector_paused():  # see perseus_tui.heap
            snapshot = await reader.snapshot(discover_online=discover)
        self._remember(snapshot)
        self._tell_once(snapshot.problems)
        self._host.post_message(SnapshotLoaded(snapshot))
        if not self._rights_known:
            await self._probe_rights(snapshot)

    def _refreshed(self, views: list[ExchangeView]) -> None:
        """Post the views of exchanges re-read on their own."""
        if not views:
            return
        for view in views:
            self._ids_by_name[view.exchange_name.lower()] = view.exchange_id
            if view.key_exists:
                self._online.add(view.exchange_id)
            else:
                self._online.discard(view.exchange_id)
        self._host.post_message(ExchangesRefreshed(views))

    async def _probe_rights(self, snapshot: FleetSnapshot) -> None:
        """Once connected, ask Redis (without writing) whether this user may
        send commands; a viewer's dashboard then starts read-only and never
        offers start or stop."""
        ids = [view.exchange_id for view in snapshot.exchanges if view.exchange_id >= 0]
        refusal = await command_refusal(self.redis, ids[0] if ids else 1)
        self._rights_known = True
        if refusal is not None:
            self._host.post_message(ReadOnlyDetected(f"Redis refuses commands: {refusal}"))

    async def _read_windows(self, names: Iterable[str]) -> None:
        """Read the timeline window of every exchange not read yet, once the
        tail runs (so no entry falls between the read and the tail); the tail
        keeps them up to date from then on. At most one read per exchange per
        tail: a poll re-reads none of them."""
        if not self._tail_started:
            return
        wanted = sorted({name.lower() for name in names if name} - self._windows_read)
        since = self._clock() - DAY
        for start in range(0, len(wanted), TIMELINE_BATCH):
            batch = wanted[start : start + TIMELINE_BATCH]
            windows = await read_windows(self.redis, batch, since=since, count=TIMELINE_READ_COUNT)
            self._windows_read.update(batch)
            self._host.post_message(TimelineWindows(windows))

    # --- activity ----------------------------------------------------------------------

    def feed_batch_shown(self, batch: FeedEntries) -> None:
        """The host handled `batch`: the entries that arrived meanwhile go now, as one batch."""
        if batch is not self._feed_batch:
            return
        self._feed_batch = None
        self._feed_shown.set()
        if self._feed_waiting:
            self._post_feed()

    def _post_feed(self) -> None:
        batch = self._feed_batch = FeedEntries(tuple(self._feed_waiting))
        self._feed_waiting = []
        self._host.post_message(batch)

    async def _follow_activity(self) -> None:
        """Load the recent history, then follow every stream live (blocking reads).

        The tail fixes its starting point *before* the history is read, so an
        entry written in between is in one or both; the feed drops duplicates.
        """
        # The tail lists the streams to follow itself, on a client that fails fast:
        # it retries and reports an outage on its own.
        names_client = connect(self.settings, retry=Retry(NoBackoff(), 0))
        names = FleetReader(names_client, clock=self._clock).exchange_names
        tail = ActivityTail(self.settings, names=names)
        self._tail_started = False
        self._windows_read.clear()  # a new tail starts at "$": what came between is read again
        try:
            await tail.start()
            self._tail_started = True
            self._wake.set()  # the poller reads the windows now
            await self._load_history()
            taken = 0
            async for entry in tail:
                self._feed_waiting.append(entry)
                if self._feed_batch is None:
                    self._post_feed()
                elif len(self._feed_waiting) >= FEED_WAITING_MAX:
                    self._feed_shown.clear()
                    await self._feed_shown.wait()
                taken += 1
                if taken % TAIL_YIELD_EVERY == 0:
                    # The tail hands over a read's entries without waiting; under a
                    # flood one read holds thousands: let key presses in between.
                    await asyncio.sleep(0)
        finally:
            self._tail_started = False
            try:
                await tail.aclose()
            finally:  # even when closing the tail was interrupted
                await names_client.aclose()

    async def _load_history(self) -> None:
        reader = FleetReader(self.redis, clock=self._clock)
        log = ActivityLog(self.redis, self.settings)
        while True:
            try:
                names = await reader.exchange_names()
                # Many streams: fewer entries each, so start-up stays one cheap round trip.
                per_stream = max(50, 20_000 // max(1, len(names)))
                page = await log.merged_page(names, count=min(self._feed_max_lines, per_stream))
            except REDIS_ERRORS:
                raise_if_cancelling()
                await asyncio.sleep(self.retry_s)  # the poller reports the outage
                continue
            self._host.post_message(FeedHistory(page.entries))
            return

    async def history_page(
        self, exchange_name: str, count: int, before: str | None
    ) -> ActivityPage:
        """One page of an exchange's history, newest first (raises the Redis errors).

        The read is a task of the service's own, which `aclose` waits for
        before it closes the client, so a screen closed mid-read never leaves a
        connection open behind it. It runs in a context of its own: a
        connection it opens stays in the pool, and its socket callbacks keep
        the context they were made in, which would otherwise keep the asking
        screen in memory after it is closed.
        """
        read = ActivityLog(self.redis, self.settings).page(
            exchange_name, count=count, before=before
        )
        task = asyncio.create_task(read, context=contextvars.Context())
        self._reads.add(task)
        task.add_done_callback(self._reads.discard)
        return await task

    # --- commands ----------------------------------------------------------------------

    def send_command(self, exchange_id: int, label: str, command: CommandType) -> None:
        """Send start/stop to an exchange's agent; each step is posted as `CommandProgress`."""
        self._run(
            self._send(exchange_id, label, command), f"{command.value} {label}", COMMAND_GROUP
        )

    async def _send(self, exchange_id: int, label: str, command: CommandType) -> None:
        """Send `command`, posting each step the presenter words; once an outcome
        came back, re-read the exchange. Commands carry the real time: the
        agent judges expiry by it, whatever clock the display uses."""

        def post(step: CommandStep) -> None:
            if step.read_only is not None:
                self._host.post_message(ReadOnlyDetected(step.read_only))
            self._host.post_message(
                CommandProgress(exchange_id, label, command.value, step.stage, step.detail)
            )

        client = ControlClient(self.redis, self.settings)
        try:
            outcome = await client.send(
                exchange_id,
                command,
                operator=self._operator,
                on_ack=lambda reply: post(ack_step(reply)),
                on_sent=lambda _command: post(SENT),
            )
        except COMMAND_ERRORS as exc:
            post(failure_step(exc, self.settings))
            return
        post(outcome_step(outcome))
        self._dirty.add(exchange_id)
        self._wake.set()


def _retrieve(future: asyncio.Future[object]) -> None:
    """Mark a finished future's outcome as seen (see `FleetService.aclose`)."""
    if not future.cancelled():
        future.exception()
