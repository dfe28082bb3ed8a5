"""Reading many activity streams at once, on a single Redis or a Redis Cluster.

On a single Redis one `XREAD BLOCK` covers every stream. A cluster refuses a
multi-key command whose keys hash to different slots, even when one node owns
them all, and the stream names are fixed by the TypeScript servers (no hash
tags), so the tail reads there in one of three ways:

- a small fleet (up to `BLOCKING_GROUPS_MAX` slot groups): one blocking
  `XREAD` per group of streams that share a slot, each kept waiting across
  turns (a read that returns is re-issued from its new IDs; the others are
  left blocking, so no connection is torn down per event);
- a larger fleet on servers whose `notify-keyspace-events` include stream
  events (`K` and `t`, or `A`): one subscription per master wakes the reader
  when a followed stream is written, then one pipelined read (a round trip per
  node) fetches just the streams that changed; a quiet block time reads a
  slice of every stream in turn, in case a notification was lost;
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
from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ResponseError

from perseus_core.plumbing.errors import TRANSIENT_ERRORS
from perseus_core.plumbing.streams import StreamRow, xread_rows
from perseus_core.plumbing.topology import RedisClient, node_client

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


def stream_reader(client: RedisClient) -> StreamReader:
    """The reader that suits `client`: one XREAD, or per slot group on a cluster."""
    if isinstance(client, RedisCluster):
        return ClusterStreamReader(client)
    return StreamReader(client)


class StreamReader:
    """Many streams in one blocking `XREAD` (a single Redis)."""

    def __init__(self, client: RedisClient) -> None:
        """Read through `client` (a blocking client: see `connect_blocking`)."""
        self._client = client

    async def read(self, streams: Mapping[str, str], *, count: int, block_ms: int) -> Any:
        """New entries after each stream's ID, waiting up to `block_ms` for one."""
        return await self._client.xread(dict(streams), count=count, block=block_ms)  # type: ignore[arg-type]

    async def aclose(self) -> None:
        """Stop any read left waiting (none here)."""


class ClusterStreamReader(StreamReader):
    """Many streams on a Redis Cluster, never with one command across slots.

    See the module docstring for the three ways it waits. `read` returns the
    same shape as `XREAD`, so the tail handles both alike.
    """

    def __init__(self, client: RedisCluster) -> None:
        """Read through the cluster `client`."""
        super().__init__(client)
        self._cluster = client
        self._waiting: dict[tuple[tuple[str, str], ...], asyncio.Task[Any]] = {}
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
        self._slots: dict[str, int] = {}
        """Hash slot of every stream key seen: a fleet of 10,000 exchanges has
        20,000 keys, and hashing them all again on every turn took 50 ms."""
        self._group_count = (0, 0)
        """(streams, slot groups) of the last read: recounted when the number
        of streams changes (they are only ever added, or set aside)."""

    async def read(self, streams: Mapping[str, str], *, count: int, block_ms: int) -> Any:
        """New entries after each stream's ID, waiting up to `block_ms` for one."""
        if self._groups_in(streams) <= BLOCKING_GROUPS_MAX:
            return await self._read_blocking(self._slot_groups(streams), count, block_ms)
        if (
            self._notifications is None
            or (self._notifications and any(task.done() for task in self._subscribers))
            or (self._notifications is False and time.monotonic() >= self._recheck_at)
        ):
            # (Re)subscribe, e.g. after a failover ended a subscription, then
            # read everything once: nothing written meanwhile is missed. A
            # failure to reach a master leaves the question open for the next
            # read; polling is chosen only for what the servers answered.
            await self._unsubscribe()
            self._notifications = None
            self._notifications = await self._subscribe(streams)
            self._recheck_at = time.monotonic() + RECHECK_S
            return await self._read_now(streams, count, only=None)
        changed = self._take_changed()
        if changed:
            return await self._read_now(streams, count, only=changed)
        if not self._notifications:
            await asyncio.sleep(min(block_ms / 1000, POLL_MAX_S))
            return await self._read_now(streams, count, only=None)
        try:
            await asyncio.wait_for(self._wake.wait(), block_ms / 1000)
        except TimeoutError:  # the safety net: a notification may have been lost
            return await self._read_now(streams, count, only=self._next_sweep(streams))
        return await self._read_now(streams, count, only=self._take_changed())

    def _groups_in(self, streams: Mapping[str, str]) -> int:
        """How many slot groups `streams` make (see `_group_count`)."""
        size, groups = self._group_count
        if size != len(streams):
            groups = len({self._slot(key) for key in streams})
            self._group_count = (len(streams), groups)
        return groups

    def _slot(self, key: str) -> int:
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = key_slot(key.encode())
        return slot

    def _slot_groups(
        self, streams: Mapping[str, str], only: set[str] | None = None
    ) -> list[dict[str, str]]:
        """The streams (those in `only`, when given) split by hash slot: one
        multi-key XREAD is allowed per group. With `only` the work is in
        proportion to the streams that changed, not to the fleet."""
        groups: dict[int, dict[str, str]] = {}
        for key in streams if only is None else only:
            last_id = streams.get(key)
            if last_id is not None:
                groups.setdefault(self._slot(key), {})[key] = last_id
        return list(groups.values())

    async def aclose(self) -> None:
        """Cancel every read left waiting and every subscription."""
        tasks = list(self._waiting.values())
        self._waiting.clear()
        await _cancel(tasks)
        await self._unsubscribe()

    async def _unsubscribe(self) -> None:
        tasks, self._subscribers = self._subscribers, []
        await _cancel(tasks)

    # --- small fleet: a blocking read per slot group -------------------------

    async def _read_blocking(
        self, groups: list[dict[str, str]], count: int, block_ms: int
    ) -> StreamReply:
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

    # --- larger fleet: wake-ups from keyspace notifications, or a poll --------

    async def _read_now(
        self, streams: Mapping[str, str], count: int, only: set[str] | None
    ) -> StreamReply:
        """One pipelined, non-blocking read (a round trip per node) of the
        streams in `only`; None: every stream, `READ_MAX_STREAMS` now and the
        others on the next turns, at once."""
        if only is None:
            self._changed.update(dict.fromkeys(streams))
            only = self._take_changed()
        groups = self._slot_groups(streams, only)
        if not groups:
            return []
        async with self._cluster.pipeline() as pipe:
            for group in groups:
                pipe.xread(group, count=count)  # type: ignore[arg-type]
            replies = await pipe.execute()
        found = [pair for reply in replies for pair in xread_rows(reply)]
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

        Returns False (poll instead) unless every master has keyspace
        notifications for streams on: a master without them would never
        wake the reader for its streams.
        """
        masters = self._cluster.get_primaries()
        try:
            configs = [
                await self._cluster.config_get(
                    "notify-keyspace-events",
                    target_nodes=master,
                )
                for master in masters
            ]
        except ResponseError:  # e.g. a user without CONFIG: poll
            return False
        if not all(notifies_stream_writes(c.get("notify-keyspace-events")) for c in configs):
            return False
        # One pattern per key prefix (`logs:network:*`...), not every key event.
        patterns = sorted({f"__keyspace@0__:{key.rpartition(':')[0]}:*" for key in streams})
        for master in masters:
            listener = self._listen(node_client(master), patterns)
            self._subscribers.append(asyncio.ensure_future(listener))
        return True

    async def _listen(self, node: Redis, patterns: list[str]) -> None:
        """Note every stream written on one master until cancelled.

        A lost subscription (its master failed) ends the task; the next read
        notices and subscribes again on the masters of the moment.

        Each notification is taken as the raw reply (`parse_response`), not
        as the message dict `listen()` builds: a fleet under load sends tens
        of thousands a second, and only the channel and the event are needed.
        """
        pubsub: PubSub = node.pubsub()
        try:
            await pubsub.psubscribe(*patterns)
            while True:
                message = await pubsub.parse_response(block=True)
                # ["pmessage", pattern, "__keyspace@0__:{key}", event]
                if (
                    isinstance(message, list)
                    and len(message) == 4
                    and message[0] == "pmessage"
                    and message[3] == "xadd"
                ):
                    self._changed[str(message[2]).split(":", 1)[1]] = None
                    self._wake.set()
        except TRANSIENT_ERRORS:
            return
        finally:
            await pubsub.aclose()
            await node.aclose()


def notifies_stream_writes(flags: object) -> bool:
    """Whether a server's `notify-keyspace-events` flags announce stream writes
    on keyspace channels (`K`, and `t` or `A`): what the tail of a large fleet
    on a cluster needs from every master to wake instead of polling."""
    text = str(flags or "")
    return "K" in text and ("t" in text or "A" in text)


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
