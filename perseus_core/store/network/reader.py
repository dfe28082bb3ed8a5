"""`NetworkReader`: the read side used by the CLI and the dashboard, and catalog edits.

Which exchanges a snapshot lists (docs/wire-format.md 2.1: every active
catalog entry plus any exchange found online that is not in the catalog):

- Catalog entries are read on every snapshot (one `HGETALL`).
- Online exchanges that are *not* in the catalog can only be found by scanning
  the keyspace for `exchange:*:status`. A SCAN walks the whole keyspace, far
  too expensive for a 5 s poll on a large Redis, so the reader scans at most
  every `scan_every_s` (30 s by default, and on the first snapshot) and
  remembers the ids it found; between scans those ids are simply included in
  the `MGET`, and an id whose key has gone is forgotten. `snapshot(
  discover_online=True)` forces a scan, `False` never scans. Perseus agents
  add themselves to the catalog when they start, so only exchanges run by
  other writers depend on the scan.
- Exchanges with history but neither a key nor a catalog entry (a dead
  Livermore server's) are found by the same scans, over the activity
  streams (`history`), and listed offline with their last-known info.

"last seen" of an exchange that is not online is the newest heartbeat this
reader saw while it was online (`ExchangeView.seen_at`), else its stream's.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime
from operator import attrgetter
from typing import cast

from redis.exceptions import NoPermissionError, ResponseError

from perseus_core.store.network.catalog import (
    CatalogParser,
    RedisClient,
    add_missing,
    delete_entry,
    importable,
    importable_name,
    write_entry,
)
from perseus_core.store.network.history import SCAN_COUNT, history_ids, history_names
from perseus_core.store.network.offline import OfflineDetails
from perseus_core.store.network.parsing import (
    catalog_problem,
    catalog_unreadable,
    field_id,
    parse_catalog_payload,
    status_result,
)
from perseus_core.store.network.reads import StatusReads, heartbeat_moment
from perseus_core.store.network.snapshot import SnapshotAssembly
from perseus_core.store.network.views import ExchangeView, NetworkSnapshot, assemble
from perseus_core.wire import keys
from perseus_core.wire.errors import PayloadError
from perseus_core.wire.models import CatalogEntry, InstanceStatus
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import Clock, system_clock

_view_order = attrgetter("exchange_id")


def _entry_order(entry: CatalogEntry) -> int:
    return entry.id


class NetworkReader:
    """Reads the fleet's state for the CLI and the dashboard; also edits the catalog.

    Validated payloads are cached by their exact bytes between snapshots (the
    cache holds only what the latest snapshot read). An exchange whose
    catalog value and status payload are both unchanged gets the very same
    `ExchangeView` object as in the previous snapshot: treat views and their
    statuses as read-only.

    A reader may be shared by tasks: caches are consulted only in code that
    never awaits, and every cached result is checked against what was just
    read, so concurrent calls can only make a cache less effective.
    """

    def __init__(
        self,
        redis: RedisClient,
        settings: Settings,
        *,
        clock: Clock = system_clock,
        scan_every_s: float = 30.0,
    ) -> None:
        """Create a reader.

        Args:
            redis: a client from `connection.connect` (decoded responses), or a
                `RedisCluster` with decoded responses.
            settings: Perseus settings: the status key TTL dates each
                heartbeat from its key's PTTL (`ExchangeView.heartbeat_at`).
            clock: source of `NetworkSnapshot.taken_at` and of the read
                times the heartbeats are dated from.
            scan_every_s: minimum time between SCANs for online exchanges
                that are not in the catalog (see the module docstring).
        """
        self._redis = redis
        self._settings = settings
        self._clock = clock
        self._scan_every_s = scan_every_s
        self._last_scan: float | None = None
        self._extra_ids: set[int] = set()
        self._catalog = CatalogParser()
        self._reads = StatusReads(redis)
        self._assembly = SnapshotAssembly(self._reads, self._catalog, clock=clock)
        self._offline = OfflineDetails(redis)
        self._history: dict[int, str] = {}
        self._seen: dict[int, datetime] = {}
        self._previous: list[ExchangeView] = []
        self._stream_names: set[str] = set()

    @property
    def catalog_errors(self) -> dict[str, str]:
        """What was wrong with each corrupt catalog field at the last read."""
        return self._catalog.errors

    # --- reading ---------------------------------------------------------

    async def catalog(self) -> list[CatalogEntry]:
        """Every valid catalog entry, sorted by id.

        Corrupt entries are not raised: they are logged as warnings and kept in
        `catalog_errors` (field -> message) for the caller to show.
        """
        return sorted(self._catalog.entries(await self._read_catalog()), key=_entry_order)

    async def _read_catalog(self, *, strict: bool = True) -> dict[str, str]:
        """The catalog's raw fields. A catalog key Redis refuses to read as a
        hash (WRONGTYPE) raises PayloadError naming the key when `strict`;
        otherwise it reads as empty and is reported (`catalog_unreadable`),
        so readers of everything else go on. ACL refusals always raise."""
        try:
            raw = await self._redis.hgetall(keys.CATALOG_KEY)
        except NoPermissionError:
            raise
        except ResponseError as exc:
            if strict:
                raise PayloadError(catalog_unreadable(exc)) from exc
            return self._catalog.readable(exc)
        return self._catalog.readable(cast(dict[str, str], raw))

    async def exchange_names(self) -> list[str]:
        """Names of every catalog exchange (active or not), online ones not in
        the catalog and ones with history only: the streams a live activity
        tail should follow. The online and history parts use the same cached
        SCANs as `snapshot` (a dead Livermore server's history stays followed).
        """
        if self._scan_due(None):
            await self._scan()
            self._stream_names = await history_names(self._redis)
        raw_catalog = await self._read_catalog(strict=False)
        entries = sorted(self._catalog.entries(raw_catalog), key=_entry_order)
        self._assembly.catalog_ids = [entry.id for entry in entries]
        names = {name: name for name in self._stream_names}
        names.update((entry.name.lower(), entry.name) for entry in entries)
        extra = sorted(self._extra_ids.difference(self._assembly.catalog_ids))
        if extra:
            values, _ = await self._reads.mget(extra)
            found = set()
            for exchange_id, raw in zip(extra, values, strict=True):
                if raw is None:
                    continue
                found.add(exchange_id)
                status = self._assembly.parse_status(exchange_id, raw)
                if isinstance(status, InstanceStatus) and status.exchange_name:
                    names.setdefault(status.exchange_name.lower(), status.exchange_name)
            self._extra_ids = found
        return sorted(names.values())

    async def snapshot(
        self,
        *,
        last_known: bool = True,
        agents: bool | None = None,
        discover_online: bool | None = None,
    ) -> NetworkSnapshot:
        """The dashboard's list: every active catalog entry plus every online
        exchange (inactive or not in the catalog), with their statuses.

        Args:
            last_known: read the last-known info of every exchange that has no
                valid status (one more pipelined round trip).
            agents: read the agent presence of every exchange that has no valid
                status; None (default) does so whenever `last_known` is read,
                in the same round trip.
            discover_online: True to SCAN for online exchanges that are not in
                the catalog now, False never to, None (default) to SCAN when
                the last scan is older than `scan_every_s`.

        Round trips on a single Redis, steady state: one for the catalog and
        every status, one for the last-known entries and agents of the
        exchanges without a status (none when every exchange is online). Extra
        ones only when the catalog gained ids since the previous snapshot, and
        for a SCAN.
        """
        scan = self._scan_due(discover_online)
        if scan:
            await self._scan()
        wanted = self._extra_ids.union(self._history) if self._history else self._extra_ids
        if scan:
            (views, found), names = await asyncio.gather(
                self._assembly.read(wanted), history_names(self._redis)
            )
            listed = {view.exchange_name.lower() for view in views}
            self._history = await history_ids(self._redis, names - listed)
        else:
            views, found = await self._assembly.read(wanted)
        gone = self._extra_ids - found
        if gone:  # online outside the catalog a moment ago: kept if it has history
            gone.difference_update(self._assembly.catalog_ids)
            names = {v.exchange_name.lower() for v in self._previous if v.exchange_id in gone}
            self._history.update(await history_ids(self._redis, names - {""}))
        self._extra_ids = found
        if self._history:
            views = self._with_history(views)
        with_agents = last_known if agents is None else agents
        if last_known or with_agents:
            views = await self._offline.fill(
                views, last_known=last_known, agents=with_agents, remember=True
            )
        if self._previous:  # what was online then and is not now: its newest heartbeat
            self._note_seen(views, self._previous)
        self._previous = views
        views.sort(key=_view_order)
        problems = (self._catalog.unreadable,) if self._catalog.unreadable else ()
        return NetworkSnapshot(views, self._clock(), problems)

    def _with_history(self, views: list[ExchangeView]) -> list[ExchangeView]:
        """`views` and an offline view of each exchange found only by its
        history (`history`) that no listed view has the id or name of."""
        ids = {view.exchange_id for view in views}
        names = {view.exchange_name.lower() for view in views}
        extra = [
            ExchangeView(exchange_id, name, name, False)
            for exchange_id, name in self._history.items()
            if exchange_id not in ids and name not in names
        ]
        return views + extra if extra else views

    def _note_seen(self, views: list[ExchangeView], previous: list[ExchangeView]) -> None:
        """Remember the newest heartbeat of each exchange seen going offline
        since the `previous` snapshot (the PTTL-dated one, else its
        `lastHeartbeat`), and give it to the views of exchanges not online as
        `seen_at`. Costs a pass over the views, and an index of the previous
        ones only when some exchange is not online."""
        seen = self._seen
        by_id: dict[int, ExchangeView] | None = None
        for view in views:
            if view.online:
                continue
            if by_id is None:
                by_id = {before.exchange_id: before for before in previous}
            before = by_id.get(view.exchange_id)
            if before is not None and before.online:
                moment = before.heartbeat_at or (
                    before.status.last_heartbeat if before.status is not None else None
                )
                if moment is not None:
                    seen[view.exchange_id] = moment
            view.seen_at = seen.get(view.exchange_id)

    async def exchange(self, exchange_id: int) -> ExchangeView:
        """One exchange, listed or not: its catalog entry, status and, when it
        has no valid status, its last-known info and agents. Two round trips
        at most."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.CATALOG_KEY, str(exchange_id))
            pipe.get(keys.status_key(exchange_id))
            pipe.pttl(keys.status_key(exchange_id))
            raw_entry, raw_status, pttl = await pipe.execute()
        field_name = str(exchange_id) if raw_entry is not None else None
        token = parse_catalog_payload(raw_entry) if raw_entry is not None else None
        problem = catalog_problem(exchange_id, token) if token is not None else None
        entry = token if problem is None and isinstance(token, CatalogEntry) else None
        parsed = status_result(exchange_id, raw_status) if raw_status is not None else None
        status = None if isinstance(parsed, str) else parsed
        status_problem = parsed if isinstance(parsed, str) else None
        view = assemble(exchange_id, field_name, entry, problem, raw_status, status, status_problem)
        view.heartbeat_at = heartbeat_moment(self._clock(), status, pttl)
        if not view.online:
            view.seen_at = self._seen.get(exchange_id)
        return (await self._offline.fill([view], last_known=True, agents=True))[0]

    async def discover(self) -> list[CatalogEntry]:
        """Add every exchange that is online, or has history, but is missing
        from the catalog.

        SCANs the status keys (never KEYS), reads them, and adds an entry for
        each valid payload whose id is not in the catalog yet (HSETNX: an entry
        written meanwhile by an operator or agent is kept). Payloads that are
        corrupt or carry a name Perseus would not write are skipped and logged.
        Then the same for exchanges found only by their activity streams
        (`history`: a dead Livermore server's), named as their streams are.

        Returns:
            The entries actually added, sorted by id.
        """
        await self._scan()
        raw_catalog = await self._read_catalog()
        known = {field_id(f) for f in raw_catalog}
        candidates = sorted(self._extra_ids - known)
        to_add: list[CatalogEntry] = []
        if candidates:
            values, _ = await self._reads.mget(candidates)
            for exchange_id, raw in zip(candidates, values, strict=True):
                if raw is None:
                    continue
                entry = importable(exchange_id, self._assembly.parse_status(exchange_id, raw))
                if entry is not None:
                    to_add.append(entry)
        taken = known | {entry.id for entry in to_add}
        names = {entry.name.lower() for entry in self._catalog.entries(raw_catalog)}
        names.update(entry.name.lower() for entry in to_add)
        history = await history_ids(self._redis, await history_names(self._redis) - names)
        for exchange_id, name in sorted(history.items()):
            entry = importable_name(exchange_id, name)
            if exchange_id not in taken and entry is not None:
                to_add.append(entry)
        return sorted(await add_missing(self._redis, to_add), key=_entry_order)

    # --- writing the catalog -----------------------------------------------

    async def add_to_catalog(self, entry: CatalogEntry, *, overwrite: bool = True) -> bool:
        """Write one catalog entry.

        Args:
            entry: the entry; its name must be one Perseus writes
                (`validate_exchange_name`), else ValueError.
            overwrite: False for an agent registering itself: HSETNX, so an
                operator's entry (display name, isActive) is never replaced.

        Returns:
            True if the entry was written; False if `overwrite` is False and
            an entry for that id already existed.
        """
        return await write_entry(self._redis, entry, overwrite=overwrite)

    async def remove_from_catalog(self, exchange_id: int) -> bool:
        """Delete one catalog entry; True if there was one. The exchange still
        shows while it is online (as not in the catalog)."""
        return await delete_entry(self._redis, exchange_id)

    # --- internals ---------------------------------------------------------

    def _scan_due(self, discover_online: bool | None) -> bool:
        if discover_online is not None:
            return discover_online
        return self._last_scan is None or time.monotonic() - self._last_scan >= self._scan_every_s

    async def _scan(self) -> None:
        """Remember the id of every status key (SCAN; on a cluster, every node)."""
        found: set[int] = set()
        async for key in self._redis.scan_iter(match=keys.STATUS_KEY_PATTERN, count=SCAN_COUNT):
            exchange_id = keys.parse_status_key(key)
            if exchange_id is not None:
                found.add(exchange_id)
        self._extra_ids = found
        self._last_scan = time.monotonic()
