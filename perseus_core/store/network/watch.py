"""`StatusWatcher`: which exchanges changed, as Redis tells it, so that a poll
reads only those.

A dashboard polls the whole fleet every few seconds; on 10,000 exchanges
that is 10,000 payloads read, and most of them have not changed. Redis can
say what changed: with keyspace notifications on (`notify-keyspace-events`
holding `K` and the classes in `WATCH_CLASSES`, or `KA`), every write, expiry
and deletion of a key is published on its keyspace channel. The watcher
subscribes, on every master of a cluster, to the channels of the keys a
snapshot reads per exchange (status, presence, wanted state) and of the
catalog, and collects the exchange ids written since the last `take`; the
reader then re-reads just those (`FleetReader.refresh`). An idle fleet costs
nothing between events.

Nothing here is trusted more than the full read: a subscription can be lost
(a failover, a dropped connection) and a notification with it, so callers
keep a full read at a longer interval as the safety net, and subscribe again
(then read everything) when `watching` turns false. A server without the
notifications, or a user refused `CONFIG GET` or `PSUBSCRIBE` (Perseus's
roles are, docs/production-redis.md), gets no subscription: `start` answers
False and the caller polls as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from redis.asyncio.cluster import RedisCluster

from perseus_core.plumbing.topology import RedisClient
from perseus_core.store.activity.reads import subscribe_keyspace
from perseus_core.store.network.catalog import field_id
from perseus_core.store.network.views import NOT_AN_ID
from perseus_core.wire import keys

WATCH_CLASSES = "$gxzh"
"""The `notify-keyspace-events` classes the watcher needs: strings (a status
key set), generic (deleted, its TTL changed), expired (an instance gone
offline), sorted sets (agent presence) and hashes (the wanted state, the
catalog)."""

_PER_EXCHANGE_PREFIXES = (keys.agents_key(0)[:-1], keys.wanted_key(0)[:-1])
"""The keys besides the status key that a snapshot reads per exchange, by
prefix (the id follows it)."""


def changed_exchange(key: str) -> int | None:
    """The exchange whose snapshot a write of `key` changes (its status,
    presence or wanted state), or None for any other key."""
    exchange_id = keys.parse_status_key(key)
    if exchange_id is not None:
        return exchange_id
    for prefix in _PER_EXCHANGE_PREFIXES:
        if key.startswith(prefix):
            exchange_id = field_id(key.removeprefix(prefix))
            return None if exchange_id == NOT_AN_ID else exchange_id
    return None


class StatusWatcher:
    """Collects the exchanges whose keys were written, expired or deleted,
    from keyspace notifications (see the module docstring)."""

    def __init__(self, redis: RedisClient, on_change: Callable[[], None] | None = None) -> None:
        """Watch through `redis` (a single Redis or a cluster).

        Args:
            redis: the client whose servers are watched.
            on_change: called when a change arrives while none is pending
                (nothing collected since the last `take`), and when a
                subscription is lost: a poll loop's wake-up. Events come by
                the hundred a second on a large fleet; the loop is woken
                once per batch it takes.
        """
        self._redis = redis
        self._on_change = on_change
        self._listeners: list[asyncio.Task[None]] = []
        self._changed: set[int] = set()
        self._catalog_changed = False

    @property
    def watching(self) -> bool:
        """Whether every master's subscription is alive: changes are told."""
        return bool(self._listeners) and not any(task.done() for task in self._listeners)

    @property
    def lost(self) -> bool:
        """Whether a subscription ended (a failover, a dropped connection):
        changes may go untold until `start` subscribes again."""
        return any(task.done() for task in self._listeners)

    @property
    def pending(self) -> bool:
        """Whether changes were collected since the last `take`."""
        return bool(self._changed) or self._catalog_changed

    async def start(self) -> bool:
        """Subscribe on every master (again, after a lost subscription).

        Returns whether changes are now told; False (no subscription) when a
        master does not announce `WATCH_CLASSES` or refuses to say or to
        subscribe. What was collected before is dropped: the caller reads
        the whole fleet next, and the subscriptions are confirmed before
        this returns, so that read misses no change. A master out of reach
        raises, as the read would.
        """
        await self.aclose()
        redis = self._redis
        # A cluster has database 0 only; a single Redis may use another.
        db = (
            0
            if isinstance(redis, RedisCluster)
            else redis.connection_pool.connection_kwargs.get("db")
        )
        watched = (
            keys.STATUS_KEY_PATTERN,
            *(f"{p}*" for p in _PER_EXCHANGE_PREFIXES),
            keys.CATALOG_KEY,
        )
        patterns = [f"__keyspace@{db or 0}__:{pattern}" for pattern in watched]
        listeners = await subscribe_keyspace(self._redis, patterns, WATCH_CLASSES, self._note)
        self._listeners = listeners or []
        for task in self._listeners:
            task.add_done_callback(self._ended)
        self.take()
        return bool(listeners)

    def take(self) -> tuple[set[int], bool]:
        """The exchanges changed since the last `take` and whether the catalog
        changed (then only a full read lists the fleet right); both cleared."""
        changed, catalog = self._changed, self._catalog_changed
        self._changed, self._catalog_changed = set(), False
        return changed, catalog

    async def aclose(self) -> None:
        """End every subscription."""
        listeners, self._listeners = self._listeners, []
        for task in listeners:
            task.cancel()
        if listeners:
            await asyncio.gather(*listeners, return_exceptions=True)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """A subscription ended: unless `aclose` ended it, changes may go
        untold from now on, which the poll loop must hear at once (a Redis
        that went away says so here first, between full reads)."""
        if task in self._listeners and self._on_change is not None:
            self._on_change()

    def _note(self, key: str, _event: str) -> None:
        """One keyspace event: any event of a watched key is a change."""
        was_pending = self.pending
        if key == keys.CATALOG_KEY:
            self._catalog_changed = True
        else:
            exchange_id = changed_exchange(key)
            if exchange_id is None:
                return
            self._changed.add(exchange_id)
        if not was_pending and self._on_change is not None:
            self._on_change()
