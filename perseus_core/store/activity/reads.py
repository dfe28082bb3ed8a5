"""Reading many activity streams at once, on a single Redis or a Redis Cluster.

On a single Redis one `XREAD BLOCK` covers every stream of a fleet of up to
`BLOCKING_STREAMS_MAX` streams. Each turn of it sends every stream's key and
ID again, so a larger fleet on a server whose `notify-keyspace-events`
include stream events (`K` and `t`, or `A`) is followed by a subscription
that wakes the reader when a followed stream is written, then one read
fetches just the streams that changed; a quiet block time reads a slice of
every stream in turn, in case a notification was lost. A server without the
notifications is still read with the one blocking XREAD.

A cluster refuses a multi-key command whose keys hash to different slots,
even when one node owns them all, and the stream names are fixed by the
TypeScript servers (no hash tags), so the tail reads there in one of three
ways:

- a small fleet (up to `BLOCKING_GROUPS_MAX` slot groups): one blocking
  `XREAD` per group of streams that share a slot, each kept waiting across
  turns (a read that returns is re-issued from its new IDs; the others are
  left blocking, so no connection is torn down per event);
- a larger fleet on servers that announce stream writes: as on a single
  Redis, with one subscription per master and one pipelined read (a round
  trip per node) of the streams that changed;
- otherwise a pipelined read of every stream at a bounded interval.

Every read starts from the last ID delivered per stream, so a slot that moves
or a master that fails over costs neither a gap nor a duplicate: the cluster
client follows the move, and the next read resumes where the last one ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Callable, Mapping
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from perseus_core.plumbing.errors import TRANSIENT_ERRORS
from perseus_core.plumbing.scripts import read_script_command
from perseus_core.plumbing.streams import StreamRow, xread_rows
from perseus_core.plumbing.topology import RedisClient, node_client

BLOCKING_STREAMS_MAX = 1_000
"""Streams up to which a single Redis follows them all in one `XREAD BLOCK`
(500 exchanges). Past that, with keyspace notifications, the tail is woken
and reads only the streams written: every turn of one blocking XREAD sends
every stream's key and ID again, and over 20,000 streams packing and
parsing that took about 150 ms of the dashboard's CPU, several times a
second under a feed."""

BLOCKING_GROUPS_MAX = 64
"""Slot groups up to which every group gets its own blocking read (and holds a
connection while it waits): about 30 exchanges, two streams each."""

POLL_MAX_S = 0.5
"""Longest wait between two reads of every stream on a cluster without
keyspace notifications."""

RECHECK_S = 60.0
"""While polling because the servers announce no stream writes, how often to
ask them again: an operator may turn keyspace notifications on meanwhile."""

SWEEP_CHUNK = 250
"""With keyspace notifications, streams read per quiet block time (`block_ms`
without a wake-up) in case a notification was lost: the fleet is swept a
slice at a time, so the sweep never holds the event loop for long (reading
2,000 streams at once took about 100 ms, and an event arriving meanwhile
waited for it)."""


READ_MAX_STREAMS = 500
"""Streams read in one turn on a large fleet; more that changed are read on
the next turns. A flood over 10,000 exchanges changes thousands of streams
between two turns, and reading and parsing them all at once held the event
loop (and every key press) for close to a second."""


StreamReply = list[tuple[str, list[StreamRow]]]
"""What `XREAD` returns (RESP2 shape): (stream key, rows) per stream."""


async def time_and_newest(client: RedisClient, stream_keys: list[str]) -> list[Any]:
    """The server's `TIME`, then the newest entry of each stream, errors in place.

    One pipeline on a single Redis; on a cluster `TIME` (which has no key) is
    asked of one node and the `XREVRANGE`s go out in one pipeline that the
    cluster client splits per node.
    """
    if isinstance(client, RedisCluster):
        try:
            now: Any = await client.time()
        except TRANSIENT_ERRORS as exc:
            now = exc
        if not stream_keys:
            return [now]
        async with client.pipeline() as cluster_pipe:
            for key in stream_keys:
                cluster_pipe.xrevrange(key, max="+", min="-", count=1)
            return [now, *await cluster_pipe.execute(raise_on_error=False)]
    async with client.pipeline(transaction=False) as pipe:
        pipe.time()
        for key in stream_keys:
            pipe.xrevrange(key, max="+", min="-", count=1)
        return list(await pipe.execute(raise_on_error=False))


READ_TOTAL = 5_000
"""Entries one read may return across all its streams: XREAD's COUNT is per
stream, and over 20,000 streams a flood would come back as one reply of
millions of entries, held in memory and handed over all at once."""


def per_stream(count: int, streams: int) -> int:
    """The COUNT for one XREAD of `streams` streams: at most `count` each and
    `READ_TOTAL` in all, at least one each. A stream that had more is read
    again from its new position on the next turn."""
    return max(1, min(count, READ_TOTAL // max(1, streams)))


def stream_reader(client: RedisClient) -> StreamReader:
    """The reader that suits `client`: one XREAD, or per slot group on a cluster."""
    if isinstance(client, RedisCluster):
        return ClusterStreamReader(client)
    return StreamReader(client)


class StreamReader:
    """Many streams on a single Redis (Sentinel's master included).

    Up to `BLOCKING_STREAMS_MAX` streams, one `XREAD BLOCK` of them all. A
    larger fleet is woken by keyspace notifications where the server sends
    them and reads only the streams written (see the module docstring); a
    server without them is still read with the one blocking XREAD, which
    then costs in proportion to the fleet on every turn.
    """

    def __init__(self, client: RedisClient) -> None:
        """Read through `client` (a blocking client: see `connect_blocking`)."""
        self._client = client
        self._changed: dict[str, None] = {}
        """Streams to read on the next turns, in the order they changed (a
        turn takes the oldest `READ_MAX_STREAMS`: none waits behind streams
        that keep changing)."""
        self._wake = asyncio.Event()
        self._subscribers: list[asyncio.Task[None]] = []
        self._notifications: bool | None = None
        self._recheck_at = 0.0
        self._sweep_at = 0
        self._sweep_order: list[str] = []

    async def read(self, streams: Mapping[str, str], *, count: int, block_ms: int) -> Any:
        """New entries after each stream's ID, waiting up to `block_ms` for one."""
        if self._blocks(streams):
            return await self._read_blocking(streams, count, block_ms)
        if (
            self._notifications is None
            or (self._notifications and any(task.done() for task in self._subscribers))
            or (self._notifications is False and time.monotonic() >= self._recheck_at)
        ):
            # (Re)subscribe, e.g. after a failover ended a subscription, then
            # read everything once: nothing written meanwhile is missed. A
            # failure to reach a server leaves the question open for the next
            # read; waiting without notifications is chosen only for what the
            # servers answered.
            await self._unsubscribe()
            self._notifications = None
            self._notifications = await self._subscribe(streams)
            self._recheck_at = time.monotonic() + RECHECK_S
            return await self._read_now(streams, count, only=None)
        changed = self._take_changed()
        if changed:
            return await self._read_now(streams, count, only=changed)
        if not self._notifications:
            return await self._read_unannounced(streams, count, block_ms)
        try:
            await asyncio.wait_for(self._wake.wait(), block_ms / 1000)
        except TimeoutError:  # the safety net: a notification may have been lost
            return await self._read_now(streams, count, only=self._next_sweep(streams))
        return await self._read_now(streams, count, only=self._take_changed())

    async def aclose(self) -> None:
        """End every subscription."""
        await self._unsubscribe()

    # --- what differs on a cluster -------------------------------------------

    def _blocks(self, streams: Mapping[str, str]) -> bool:
        """Whether `streams` are few enough to wait for in blocking reads."""
        return len(streams) <= BLOCKING_STREAMS_MAX

    async def _read_blocking(
        self, streams: Mapping[str, str], count: int, block_ms: int
    ) -> StreamReply:
        """Every stream in one `XREAD BLOCK`."""
        count = per_stream(count, len(streams))
        reply = await self._client.xread(dict(streams), count=count, block=block_ms)  # type: ignore[arg-type]
        return xread_rows(reply)

    async def _read_unannounced(
        self, streams: Mapping[str, str], count: int, block_ms: int
    ) -> StreamReply:
        """A large fleet on a server that announces no stream writes: the one
        blocking XREAD of every stream still waits best."""
        return await self._read_blocking(streams, count, block_ms)

    async def _fetch(self, groups: list[dict[str, str]], count: int) -> StreamReply:
        """One non-blocking read of `groups` (one group on a single Redis)."""
        (group,) = groups
        return xread_rows(await self._client.xread(group, count=count))  # type: ignore[arg-type]

    def _groups(self, streams: Mapping[str, str], only: set[str]) -> list[dict[str, str]]:
        """The streams of `only` with their IDs, as the groups one `_fetch` reads."""
        group = {key: streams[key] for key in only if key in streams}
        return [group] if group else []

    def _keyspace_db(self) -> int:
        """The database whose keyspace channels tell of the streams."""
        kwargs = self._client.connection_pool.connection_kwargs  # type: ignore[union-attr]
        return int(kwargs.get("db") or 0)

    # --- a large fleet: wake-ups from keyspace notifications ------------------

    async def _read_now(
        self, streams: Mapping[str, str], count: int, only: set[str] | None
    ) -> StreamReply:
        """One non-blocking read (a round trip per node) of the streams in
        `only`; None: every stream, `READ_MAX_STREAMS` now and the others on
        the next turns, at once."""
        if only is None:
            self._changed.update(dict.fromkeys(streams))
            only = self._take_changed()
        groups = self._groups(streams, only)
        if not groups:
            return []
        count = per_stream(count, sum(map(len, groups)))
        found = await self._fetch(groups, count)
        # A stream with `count` new rows may have more: read it again next turn.
        self._changed.update((key, None) for key, rows in found if len(rows) >= count)
        if self._changed:
            self._wake.set()
        return found

    def _next_sweep(self, streams: Mapping[str, str]) -> set[str]:
        """The next `SWEEP_CHUNK` streams of the safety net, in key order,
        round the fleet (and whatever changed meanwhile)."""
        if len(self._sweep_order) != len(streams):
            self._sweep_order = sorted(streams)
        ordered = self._sweep_order
        start = self._sweep_at if self._sweep_at < len(ordered) else 0
        self._sweep_at = start + SWEEP_CHUNK
        return set(ordered[start : start + SWEEP_CHUNK]) | self._take_changed()

    def _take_changed(self) -> set[str]:
        """The `READ_MAX_STREAMS` streams that changed first; the wake-up
        stays set while others wait."""
        pending = self._changed
        if len(pending) <= READ_MAX_STREAMS:
            self._changed = {}
            self._wake.clear()
            return set(pending)
        taken = set(itertools.islice(pending, READ_MAX_STREAMS))
        for key in taken:
            del pending[key]
        return taken

    async def _subscribe(self, streams: Mapping[str, str]) -> bool:
        """Subscribe to writes of the followed streams on every master.

        Returns False (wait without them) unless every master has keyspace
        notifications for streams on: a master without them would never
        wake the reader for its streams.
        """
        # One pattern per key prefix (`logs:network:*`...), not every key event.
        db = self._keyspace_db()
        patterns = sorted({f"__keyspace@{db}__:{key.rpartition(':')[0]}:*" for key in streams})
        listeners = await subscribe_keyspace(self._client, patterns, STREAM_CLASSES, self._note)
        if listeners is None:
            return False
        self._subscribers.extend(listeners)
        return True

    async def _unsubscribe(self) -> None:
        tasks, self._subscribers = self._subscribers, []
        await _cancel(tasks)

    def _note(self, key: str, event: str) -> None:
        """A keyspace event: a followed stream was written (`xadd`)."""
        if event == "xadd":
            self._changed[key] = None
            self._wake.set()


class ClusterStreamReader(StreamReader):
    """Many streams on a Redis Cluster, never with one command across slots.

    See the module docstring for the three ways it waits. `read` returns the
    same shape as on a single Redis, so the tail handles both alike.
    """

    def __init__(self, client: RedisCluster) -> None:
        """Read through the cluster `client`."""
        super().__init__(client)
        self._cluster = client
        self._waiting: dict[tuple[tuple[str, str], ...], asyncio.Task[Any]] = {}
        self._slots: dict[str, int] = {}
        """Hash slot of every stream key seen: a fleet of 10,000 exchanges has
        20,000 keys, and hashing them all again on every turn took 50 ms."""
        self._group_count = (0, 0)
        """(streams, slot groups) of the last read: recounted when the number
        of streams changes (they are only ever added, or set aside)."""

    async def aclose(self) -> None:
        """Cancel every read left waiting and every subscription."""
        tasks = list(self._waiting.values())
        self._waiting.clear()
        await _cancel(tasks)
        await super().aclose()

    def _blocks(self, streams: Mapping[str, str]) -> bool:
        """Whether `streams` make few enough slot groups (see `_group_count`)
        for a blocking read each."""
        size, groups = self._group_count
        if size != len(streams):
            groups = len({self._slot(key) for key in streams})
            self._group_count = (len(streams), groups)
        return groups <= BLOCKING_GROUPS_MAX

    def _slot(self, key: str) -> int:
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = key_slot(key.encode())
        return slot

    def _groups(self, streams: Mapping[str, str], only: set[str]) -> list[dict[str, str]]:
        """The streams of `only` split by hash slot: one multi-key XREAD is
        allowed per group. The work is in proportion to the streams that
        changed, not to the fleet."""
        groups: dict[int, dict[str, str]] = {}
        for key in only:
            last_id = streams.get(key)
            if last_id is not None:
                groups.setdefault(self._slot(key), {})[key] = last_id
        return list(groups.values())

    def _keyspace_db(self) -> int:
        return 0  # a cluster has database 0 only

    async def _read_blocking(
        self, streams: Mapping[str, str], count: int, block_ms: int
    ) -> StreamReply:
        """A blocking read per slot group, each kept waiting across turns."""
        count = per_stream(count, len(streams))
        groups = self._groups(streams, set(streams))
        wanted = {tuple(sorted(group.items())): group for group in groups}
        for stale in [key for key in self._waiting if key not in wanted]:
            self._waiting.pop(stale).cancel()  # its streams moved on (or were set aside)
        for key, group in wanted.items():
            if key not in self._waiting:
                self._waiting[key] = asyncio.ensure_future(
                    self._cluster.xread(group, count=count, block=block_ms)  # type: ignore[arg-type]
                )
        done, _ = await asyncio.wait(self._waiting.values(), return_when=asyncio.FIRST_COMPLETED)
        reply: StreamReply = []
        failure: BaseException | None = None
        for key in [key for key, task in self._waiting.items() if task in done]:
            task = self._waiting.pop(key)
            if task.cancelled():
                continue
            error = task.exception()
            if error is not None:
                failure = failure or error
                continue
            reply.extend(xread_rows(task.result()))
        if failure is not None and not reply:
            raise failure
        return reply

    async def _read_unannounced(
        self, streams: Mapping[str, str], count: int, block_ms: int
    ) -> StreamReply:
        """Too many slot groups to block on each, and no notifications: poll."""
        await asyncio.sleep(min(block_ms / 1000, POLL_MAX_S))
        return await self._read_now(streams, count, only=None)

    async def _fetch(self, groups: list[dict[str, str]], count: int) -> StreamReply:
        """One pipeline of a non-blocking XREAD per slot group (a round trip per node)."""
        async with self._cluster.pipeline() as pipe:
            for group in groups:
                pipe.xread(group, count=count)  # type: ignore[arg-type]
            replies = await pipe.execute()
        return [pair for reply in replies for pair in xread_rows(reply)]


STREAM_CLASSES = "t"
"""The `notify-keyspace-events` class of stream commands (`XADD`)."""

KEYSPACE_SUBSCRIBE_S = 5.0
"""Longest wait for a master to confirm a keyspace subscription."""

MAY_SUBSCRIBE_LUA = """
if redis.acl_check_cmd == nil then return -1 end
if not redis.acl_check_cmd('config', 'get', 'notify-keyspace-events') then return 0 end
for _, pattern in ipairs(ARGV) do
  if not redis.acl_check_cmd('psubscribe', pattern) then return 0 end
end
return 1
"""
"""ARGV: keyspace patterns. 1 when the caller may ask whether notifications
are on and subscribe to every pattern, 0 when not, -1 before Redis 7 (which
has no `redis.acl_check_cmd`). Asked first, because a refused `CONFIG GET`
is recorded in the server's ACL log, and the documented roles may not run
it: their dashboards and tails must leave no refusal behind."""

KeyEvent = Callable[[str, str], None]
"""Told of one keyspace event: the key, and what happened to it (`set`, `del`,
`expired`, `xadd`, ...)."""


def keyspace_announces(flags: object, classes: str) -> bool:
    """Whether a server's `notify-keyspace-events` flags announce events of
    every class in `classes` on keyspace channels (`K`, and each class or
    `A`, which stands for all of them)."""
    text = str(flags or "")
    return "K" in text and ("A" in text or all(c in text for c in classes))


def notifies_stream_writes(flags: object) -> bool:
    """Whether a server's `notify-keyspace-events` flags announce stream writes
    on keyspace channels (`K`, and `t` or `A`): what the tail of a large fleet
    on a cluster needs from every master to wake instead of polling."""
    return keyspace_announces(flags, STREAM_CLASSES)


async def subscribe_keyspace(
    client: RedisClient, patterns: list[str], classes: str, note: KeyEvent
) -> list[asyncio.Task[None]] | None:
    """Subscribe to the keyspace channels `patterns` on every master (the one
    server of a single Redis), each on a connection of its own, and tell
    `note` of every event until the returned tasks are cancelled.

    Returns None, subscribing nowhere, unless every master announces events
    of `classes` (`keyspace_announces`) and accepts the subscription: a
    master without them would never tell of its keys. A user refused
    `CONFIG GET` (it also shows secrets) or `PSUBSCRIBE` gets None too; a
    master out of reach raises (the question stays open). Once this returns,
    every master has confirmed its subscription, so a read made afterwards
    misses no event. A lost subscription (its master
    failed, the connection dropped) ends its task: callers check their
    tasks and subscribe again.
    """
    if not await _may_subscribe(client, patterns):
        return None
    if isinstance(client, RedisCluster):
        masters = client.get_primaries()
        try:
            configs = [
                await client.config_get("notify-keyspace-events", target_nodes=master)
                for master in masters
            ]
        except ResponseError:
            return None
    else:
        try:
            configs = [await client.config_get("notify-keyspace-events")]
        except ResponseError:
            return None
    if not all(keyspace_announces(c.get("notify-keyspace-events"), classes) for c in configs):
        return None
    # A cluster's masters each on a client of their own (closed with the
    # subscription); a single Redis (Sentinel's master included) on a
    # connection of its client's pool.
    nodes = [node_client(m) for m in masters] if isinstance(client, RedisCluster) else [client]
    subscriptions: list[PubSub] = []
    try:
        for node in nodes:
            subscriptions.append(await _confirmed(node, patterns))
    except BaseException as exc:
        for pubsub in subscriptions:
            await pubsub.aclose()
        if isinstance(client, RedisCluster):
            await asyncio.gather(*(node.aclose() for node in nodes))
        if isinstance(exc, ResponseError):  # refused (NOPERM): the answer is no
            return None
        raise  # out of reach now: the question stays open for the next attempt
    own = isinstance(client, RedisCluster)
    return [
        asyncio.ensure_future(_listen(node if own else None, pubsub, note))
        for node, pubsub in zip(nodes, subscriptions, strict=True)
    ]


async def _may_subscribe(client: RedisClient, patterns: list[str]) -> bool:
    """Whether this user may ask for the notifications and subscribe, found
    out without a refusal where the server can tell (`MAY_SUBSCRIBE_LUA`).
    Redis 6.2 cannot: there only the default user (no user name) asks; a
    named user (one of the documented roles) is taken to be refused."""
    try:
        verdict = await client.execute_command(
            await read_script_command(client), MAY_SUBSCRIBE_LUA, 0, *patterns
        )
    except ResponseError:  # may not run scripts: a restricted user
        return False
    if verdict != -1:
        return bool(verdict == 1)
    if isinstance(client, RedisCluster):
        kwargs = client.get_connection_kwargs()
    else:
        kwargs = client.connection_pool.connection_kwargs
    return not kwargs.get("username")


async def _confirmed(node: Redis, patterns: list[str]) -> PubSub:
    """A subscription to `patterns` on `node`, once the server confirmed each
    (a refusal, an ACL's NOPERM, raises ResponseError)."""
    pubsub: PubSub = node.pubsub()
    try:
        await pubsub.psubscribe(*patterns)
        confirmed = 0
        deadline = time.monotonic() + KEYSPACE_SUBSCRIBE_S
        while confirmed < len(patterns):
            left = deadline - time.monotonic()
            if left <= 0:
                raise RedisTimeoutError("no keyspace subscription confirmed")
            message = await pubsub.get_message(timeout=left)
            if message is not None and message.get("type") == "psubscribe":
                confirmed += 1
    except BaseException:
        await pubsub.aclose()
        raise
    return pubsub


async def _listen(node: Redis | None, pubsub: PubSub, note: KeyEvent) -> None:
    """Tell `note` of every keyspace event of one subscription until cancelled
    or lost, then close it (and `node`, the client made for it, if any).

    Each notification is taken as the raw reply (`parse_response`), not as
    the message dict `listen()` builds: a fleet under load sends tens of
    thousands a second, and only the channel and the event are needed.
    """
    try:
        while True:
            message = await pubsub.parse_response(block=True)
            # ["pmessage", pattern, "__keyspace@0__:{key}", event]
            if isinstance(message, list) and len(message) == 4 and message[0] == "pmessage":
                note(str(message[2]).split(":", 1)[1], str(message[3]))
    except TRANSIENT_ERRORS:
        return
    finally:
        await pubsub.aclose()
        if node is not None:
            await node.aclose()


def slot_group_count(stream_keys: list[str]) -> int:
    """In how many slot groups a cluster tail reads `stream_keys`: up to
    `BLOCKING_GROUPS_MAX` it waits in one blocking read per group."""
    return len({key_slot(key.encode()) for key in stream_keys})


async def _cancel(tasks: list[asyncio.Task[Any]] | list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, *TRANSIENT_ERRORS):
            await task
