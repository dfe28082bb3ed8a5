"""`FleetReader`: the one read of the fleet, for the CLI, the dashboard and the notifier.

One reader holds the whole read and what it remembers between reads:

- **Statuses.** The catalog's `HGETALL` and every status key's payload and
  `PTTL` go out in one pipeline per node (chunked `MGET`s and one small
  read-only script per chunk for the `PTTL`s; on Redis Cluster one
  read-only script per hash slot returns both, so no command ever spans
  slots and a slot costs one command, not two). A
  reader's first snapshot does not know the catalog's ids yet: its `MGET`s
  follow the `HGETALL` in a second round trip, during which it validates the
  catalog.
- **Heartbeat dating.** Every writer resets its key's TTL on each heartbeat,
  so the heartbeat happened `TTL - PTTL` ago on Redis's clock, whatever the
  writer's clock says (`heartbeat_moment`; the TTL is the writer's own,
  never this reader's setting).
- **Reuse.** Validated payloads are cached by their exact bytes between
  snapshots: a status payload changes only on a heartbeat or an update, so a
  poll every few seconds re-validates only what changed. An exchange whose
  catalog value and status payload are both unchanged gets the very same
  `ExchangeView` object as in the previous snapshot.
- **Discovery.** Which exchanges a snapshot lists (docs/wire-format.md 2.1:
  every active catalog entry plus any exchange found online that is not in
  the catalog). Online exchanges that are *not* in the catalog can only be
  found by scanning the keyspace for `exchange:*:status`. A SCAN walks the
  whole keyspace, far too expensive for a 5 s poll on a large Redis, so the
  reader scans at most every `scan_every_s` (30 s by default, and on the
  first snapshot) and remembers the ids it found; between scans those ids
  are simply included in the `MGET`, and an id whose key has gone is
  forgotten. `snapshot(discover_online=True)` forces a scan, `False` never
  scans. Perseus agents add themselves to the catalog when they start, so
  only exchanges run by other writers depend on the scan.
- **History.** A Livermore server never writes `perseus:exchanges`: while it
  runs, the status-key SCAN finds it; once it dies, its key expires and only
  its `logs:network:{name}` stream is left. The same scans walk the activity
  streams (both kinds, on every master of a cluster) and read the exchange
  id from their newest entries' `exchangeId`, so such an exchange is listed
  offline with its last-known info, as Livermore's own admin lists it.
- **Offline details.** Exchanges without a valid status (normally few) get,
  in one more pipelined round trip, their last-known host, IP and state
  (`LastKnown.pick` over the shared stream: the newest transition, or a
  newer error of that same host; a refused claimant's error never counts)
  and the agents running for them (docs/wire-format.md 2.4: an idle agent
  holds no status key, and its presence is what tells "a start would work"
  apart from "nobody runs this") and what the operators want of them
  (docs/wire-format.md 2.6: `stopped by root@vm`). Presence is also read,
  in the same round trip, for exchanges with a holder, to list its standbys:
  one read-only script per `PRESENCE_CHUNK` presence sets.
- **Changes only.** `refresh` re-reads just the exchanges a `StatusWatcher`
  was told changed (keyspace notifications) and keeps every other view of
  the latest snapshot, so a steady dashboard reads what changed, not the
  fleet.
- **Last seen.** For an exchange that is not online: the newest heartbeat
  this reader saw while it was online (`ExchangeView.seen_at`), else its
  stream's.

Everything read is untrusted: a corrupt payload becomes a message on its own
exchange's view, never an exception, so one bad writer cannot blank the
whole dashboard.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from itertools import chain
from operator import attrgetter
from typing import Any, cast

from pydantic import ValidationError
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import NoPermissionError, ResponseError

from perseus_core.plumbing.connection import refused
from perseus_core.plumbing.processes import gone_from_here
from perseus_core.plumbing.scripts import read_script_command
from perseus_core.plumbing.tasks import gather_all
from perseus_core.plumbing.topology import RedisClient
from perseus_core.store.network.catalog import (
    CatalogParser,
    Token,
    add_missing,
    catalog_problem,
    catalog_unreadable,
    delete_entry,
    field_id,
    not_an_id,
    parse_catalog_payload,
    parse_untrusted,
    write_entry,
)
from perseus_core.store.network.views import (
    NOT_AN_ID,
    ExchangeView,
    FleetSnapshot,
    LastKnown,
    assemble,
)
from perseus_core.store.wanted import WANTED_FIELD, Wanted, parse_wanted
from perseus_core.wire import keys
from perseus_core.wire.errors import PayloadError
from perseus_core.wire.models import (
    MAX_PAYLOAD_BYTES,
    NO_EXCHANGE_NAME,
    AgentPresence,
    CatalogEntry,
    InstanceStatus,
    names_no_exchange,
    parse_entry,
    shared_json_validator,
    validate_exchange_name,
)
from perseus_core.wire.text import clean
from perseus_core.wire.timeutil import Clock, system_clock

log = logging.getLogger(__name__)

SCAN_COUNT = 1_000
"""SCAN COUNT hint: fewer round trips over a large keyspace."""

ID_SCAN = 10
"""Newest entries of a stream searched for one naming its exchange (`exchangeId`)."""

MGET_CHUNK = 1_000
"""Keys per MGET: large enough to keep commands few, small enough that one
command never holds the server for long (other clients interleave between
the pipeline's commands)."""

CATALOG_SLICE = 500
"""Fewest catalog values validated between two yields to the event loop while
the status MGETs of a first snapshot are in flight (there are at most 8 such
slices)."""

LAST_KNOWN_SCAN = 10
"""Newest activity entries searched for one that carries a state: a stop
leaves one `command` audit entry above its transitions, a failed start two
or three entries, so ten reach past what a few commands in a row leave."""

MAX_AGENTS = 64
"""Presence members read per exchange (the freshest first): more agents than
this on one exchange is a misconfiguration, not something to list in full."""

PTTL_SCRIPT = "local t = {} for i, k in ipairs(KEYS) do t[i] = redis.call('PTTL', k) end return t"
"""The PTTLs of all its KEYS in one command. One PTTL command per key would
quadruple a 10,000-key steady-state snapshot (the client's per-command cost);
this adds one small script per MGET. It is sent as `EVAL_RO` where the server
has it (`read_script_command`): Redis 7 judges the keys of a plain `EVAL` as
written, and refuses it to a user whose keys are read-only (`%R~`). Either
way it runs with the caller's ACL rights, so a reader can run it and still
write nothing."""

SLOT_STATUS_LUA = """
local n = #KEYS
local t = {}
for i, key in ipairs(KEYS) do
  local value = redis.pcall('GET', key)
  if type(value) == 'table' then value = false end
  t[i] = value
  t[n + i] = redis.call('PTTL', key)
end
return t
"""
"""On a cluster: the payloads of all its KEYS (one hash slot), then their
PTTLs, in one command; a key of another type reads as missing (nil), as
MGET reads it. The status keys carry no hash tag, so 10,000 of them fall in
some 7,400 slots and an MGET per slot is almost a GET: an MGET and a
`PTTL_SCRIPT` per slot sent 7,400 commands more, a quarter of a cold
snapshot's time there (1,371 against 1,040 ms, measured side by side). A
single Redis keeps the MGETs: there they are few, and this script would
cost about 80 ms more on 10,000 payloads (Redis copies each into Lua and
back). Sent like `PTTL_SCRIPT`; a user who may not run it gets the payloads
by MGET, undated (`_status_reads`)."""

LIVE_MEMBERS_LUA = """
local t = redis.call('TIME')
local after = '(' .. (tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local out = {}
for i, key in ipairs(KEYS) do
  out[i] = redis.pcall('ZRANGE', key, '+inf', after, 'BYSCORE', 'REV', 'LIMIT', 0, ARGV[1])
end
return out
"""
"""KEYS: presence sets (one hash slot on a cluster). ARGV: how many members
each. Per set, the members whose expiry (their score, Redis server ms) has
not passed, freshest first, or the error of a set Redis cannot read (a key of
another type: `pcall`, so one bad key never hides the others). A member is
pruned only when some agent writes the set again, so an agent killed with -9
beside a live one would otherwise be listed (as ready, with its dead pid)
until that write: the expiry is judged here, on the server's clock, like the
writers judge it.

One script reads `PRESENCE_CHUNK` sets: a holder's standbys are read for
every listed exchange, and one script per exchange cost a 10,000-exchange
snapshot 10,000 replies, each with the client's per-reply cost (about 60% of
the whole snapshot); a set that does not exist costs Redis one lookup and the
reply four bytes. Sent as EVAL_RO (or EVAL: `read_script_command`), not by
its SHA: it rides in a pipeline, where a cluster client cannot load a script
the server lost."""

PRESENCE_CHUNK = 1_000
"""Presence sets per `LIVE_MEMBERS_LUA` call: like `MGET_CHUNK`, few commands,
none holding the server for long."""

Reads = tuple[list[str | None], list[int]]
"""Status payloads (None: no key) and their PTTLs in milliseconds, by id order."""

_Wanted = tuple[int, str | None, str | None, str | None]
"""(index of the view, its activity stream or None, its presence key or None,
its wanted-state key or None)."""


@dataclass(slots=True)
class _OfflineRead:
    """What one round of `_fill_offline`'s reads said, by index of the view."""

    known: dict[int, LastKnown] = field(default_factory=dict)
    """The last-known info from each stream's newest entry."""
    found: dict[int, tuple[AgentPresence, ...]] = field(default_factory=dict)
    """The live agents of each presence set that has any."""
    wanted: dict[int, Wanted] = field(default_factory=dict)
    """What the operators last asked, for each view with a readable record."""
    problems: dict[int, list[str]] = field(default_factory=dict)
    """What could not be read, per view."""
    deeper: list[tuple[int, str, str]] = field(default_factory=list)
    """(index, stream, newest id) of each stream to read deeper (`_look_deeper`)."""
    entry_cache: dict[tuple[str, str], LastKnown] = field(default_factory=dict)
    """The parsed newest entry of each stream, by (stream, entry id), for the next snapshot."""
    presence_cache: dict[str, AgentPresence | str] = field(default_factory=dict)
    """Each presence member parsed (or what is wrong with it), for the next snapshot."""


_view_order = attrgetter("exchange_id")


# --- status payloads --------------------------------------------------------------

validate_status_json = shared_json_validator(InstanceStatus)
"""A status payload straight into `InstanceStatus`: the fast path."""


def parse_status_payload(raw: str) -> InstanceStatus | str:
    """A status payload validated, or the message of the `PayloadError` that
    `InstanceStatus.from_json` raises for it (the fast path of
    `parse_untrusted`)."""
    return parse_untrusted(raw, validate_status_json, InstanceStatus.from_json)


def status_result(exchange_id: int, raw: str) -> InstanceStatus | str:
    """A status payload read under `exchange_id`: the validated status, or
    what is wrong with it (invalid, or naming another exchange)."""
    parsed = parse_status_payload(raw)
    if isinstance(parsed, str) or parsed.exchange_id == exchange_id:
        return parsed
    return id_mismatch(parsed, exchange_id)


def id_mismatch(status: InstanceStatus, exchange_id: int) -> str:
    """What is wrong with a valid payload stored under another exchange's key."""
    return (
        f"status payload names exchange {status.exchange_id}, but it is stored under "
        f"{keys.status_key(exchange_id)}"
    )


def writer_ttl_ms(status: InstanceStatus | None) -> int | None:
    """The TTL the holder of `status` sets on every heartbeat
    (`InstanceStatus.writer_timing`): its own `ttlMs`, Livermore's fixed 45 s
    for a payload with no `instanceId` (another writer), None when unknown
    (an older Perseus writer, an unreadable payload).

    Never this reader's own setting: a dashboard at the default 45 s watching
    agents at 6 s would otherwise call every fresh heartbeat 39 s old.
    """
    timing = status.writer_timing() if status is not None else None
    return timing.ttl_ms if timing is not None else None


def heartbeat_moment(
    read_at: datetime, status: InstanceStatus | None, pttl_ms: int | None
) -> datetime | None:
    """When the key's last heartbeat happened on this host's clock, from its
    PTTL read at `read_at`: the writer's TTL minus the PTTL earlier. None when
    the PTTL cannot date it: no key (-2), no expiry (-1), an unknown writer TTL
    (`writer_ttl_ms`), or more time left than that TTL."""
    ttl_ms = writer_ttl_ms(status)
    if pttl_ms is None or ttl_ms is None or pttl_ms < 0 or pttl_ms > ttl_ms:
        return None
    return read_at - timedelta(milliseconds=ttl_ms - pttl_ms)


# --- discovery ---------------------------------------------------------------------


def importable(exchange_id: int, status: InstanceStatus | str) -> CatalogEntry | None:
    """The catalog entry `discover` adds for an online exchange missing from
    the catalog, or None (logged) when its payload is corrupt, names another
    exchange or carries a name Perseus would not write."""
    if isinstance(status, str):
        log.warning("not importing exchange %d: %s", exchange_id, status)
        return None
    if status.exchange_id != exchange_id:
        log.warning("not importing exchange %d: %s", exchange_id, id_mismatch(status, exchange_id))
        return None
    return importable_name(exchange_id, status.exchange_name)


def importable_name(exchange_id: int, name: str) -> CatalogEntry | None:
    """The catalog entry `discover` adds for an exchange of that id and name,
    or None (logged) when the name is not one Perseus would write."""
    try:
        valid = validate_exchange_name(name)
    except ValueError as exc:
        log.warning("not importing exchange %d: %s", exchange_id, exc)
        return None
    return CatalogEntry(id=exchange_id, name=valid, display_name=valid)


def _entry_order(entry: CatalogEntry) -> int:
    return entry.id


class FleetReader:
    """Reads the fleet's state for the CLI, the dashboard and the notifier;
    also edits the catalog.

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
        *,
        clock: Clock = system_clock,
        scan_every_s: float = 30.0,
    ) -> None:
        """Create a reader.

        Args:
            redis: a client from `connection.connect` (decoded responses), or a
                `RedisCluster` with decoded responses.
            clock: source of `FleetSnapshot.taken_at` and of the read times
                the heartbeats are dated from (`ExchangeView.heartbeat_at`).
            scan_every_s: minimum time between SCANs for online exchanges
                that are not in the catalog (see the module docstring).
        """
        self._redis = redis
        self._cluster = isinstance(redis, RedisCluster)
        self._clock = clock
        self._scan_every_s = scan_every_s
        self._last_scan: float | None = None
        self._catalog = CatalogParser()
        self._catalog_ids: list[int] = []
        """The catalog's ids at the latest read, in the catalog's own order:
        the status keys the next snapshot reads together with the catalog."""
        self._extra_ids: set[int] = set()
        """Online exchanges outside the catalog, found by the latest SCAN."""
        self._history: dict[int, str] = {}
        """Exchanges known only by their activity streams: id -> name."""
        self._stream_names: set[str] = set()
        self._seen: dict[int, datetime] = {}
        self._previous: list[ExchangeView] = []
        self._pttls: dict[int, int] = {}
        self._pttl_read_at = clock()
        # What the previous snapshot built, by id: its view, the parsed
        # catalog value it was built from (None outside the catalog), and
        # every status payload it read (None: no key). Three dicts rather
        # than a tuple per exchange: 10,000 fewer objects for the garbage
        # collector to walk on every snapshot.
        self._built_views: dict[int, ExchangeView] = {}
        self._built_tokens: dict[int, Token | None] = {}
        self._built_raws: dict[int, str | None] = {}
        # What a stream's newest entry said, and each presence member parsed,
        # as the latest snapshot read them.
        self._entry_cache: dict[tuple[str, str], LastKnown] = {}
        self._presence_cache: dict[str, AgentPresence | str] = {}

    @property
    def catalog_errors(self) -> dict[str, str]:
        """What was wrong with each corrupt catalog field at the last read."""
        return self._catalog.errors

    # --- the catalog -----------------------------------------------------------

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

    # --- the fleet ---------------------------------------------------------------

    async def exchange_names(self) -> list[str]:
        """Names of every catalog exchange (active or not), online ones not in
        the catalog and ones with history only: the streams a live activity
        tail should follow. The online and history parts use the same cached
        SCANs as `snapshot` (a dead Livermore server's history stays followed).
        """
        if self._scan_due(None):
            await self._scan()
            self._stream_names = await self._history_names()
        raw_catalog = await self._read_catalog(strict=False)
        entries = sorted(self._catalog.entries(raw_catalog), key=_entry_order)
        previous = self._catalog_ids
        self._catalog_ids = [entry.id for entry in entries]
        names = {name: name for name in self._stream_names}
        names.update((entry.name.lower(), entry.name) for entry in entries)
        extra = sorted(self._outside(previous))
        if extra:
            values, _ = await self._mget(extra)
            found = set()
            for exchange_id, raw in zip(extra, values, strict=True):
                if raw is None:
                    continue
                found.add(exchange_id)
                status = self._parse_status(exchange_id, raw)
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
    ) -> FleetSnapshot:
        """The dashboard's list: every active catalog entry plus every online
        exchange (inactive or not in the catalog), with their statuses.

        Args:
            last_known: read the last-known info of every exchange that has no
                valid status (one more pipelined round trip).
            agents: read the agent presence of every exchange (a holder's
                standbys too) and the wanted state of those without a valid
                status; None (default) does so whenever `last_known` is read,
                in the same round trip.
            discover_online: True to SCAN for online exchanges that are not in
                the catalog now, False never to, None (default) to SCAN when
                the last scan is older than `scan_every_s`.

        Round trips on a single Redis, steady state: one for the catalog and
        every status, one for the agents of every exchange and the last-known
        entries of those without a status. Extra
        ones only when the catalog gained ids since the previous snapshot, and
        for a SCAN.
        """
        scan = self._scan_due(discover_online)
        if scan:
            await self._scan()
        wanted = self._extra_ids.union(self._history) if self._history else self._extra_ids
        if scan:
            (views, found), names = await gather_all(
                self._read_views(wanted), self._history_names()
            )
            listed = {view.exchange_name.lower() for view in views}
            self._history = await self._history_ids(names - listed)
        else:
            views, found = await self._read_views(wanted)
        gone = self._extra_ids - found
        if gone:  # online outside the catalog a moment ago: kept if it has history
            gone.difference_update(self._catalog_ids)
            names = {v.exchange_name.lower() for v in self._previous if v.exchange_id in gone}
            self._history.update(await self._history_ids(names - {""}))
        self._extra_ids = found
        if self._history:
            views = self._with_history(views)
        with_agents = last_known if agents is None else agents
        if last_known or with_agents:
            views = await self._fill_offline(
                views, last_known=last_known, agents=with_agents, remember=True
            )
        if self._previous:  # what was online then and is not now: its newest heartbeat
            self._note_seen(views, self._previous)
        self._previous = views
        views.sort(key=_view_order)
        problems = (self._catalog.unreadable,) if self._catalog.unreadable else ()
        return FleetSnapshot(views, self._clock(), problems)

    async def refresh(self, exchange_ids: Iterable[int]) -> list[ExchangeView] | None:
        """Re-read only these exchanges (those a `StatusWatcher` saw change)
        and return their new views, by id; the latest snapshot's other views
        stay as they are, heartbeat moments included: a key not written
        since was not heartbeated since, so the moment its PTTL dated then
        has not moved.

        Two round trips: the statuses (MGETs and PTTLs of these keys only),
        then their agents, wanted state and last-known info. Returns None
        when only a full snapshot can answer: none was taken yet, or one of
        the exchanges is not listed, or listed only while online (outside
        the catalog, inactive in it), so that whether it is listed may have
        changed too.
        """
        ids = sorted(set(exchange_ids))
        listed = {view.exchange_id: view for view in self._previous}
        for exchange_id in ids:
            before = listed.get(exchange_id)
            if before is None or before.catalog_entry is None or not before.catalog_entry.is_active:
                return None
        if not ids:
            return []
        values, pttls = await self._mget(ids)
        read_at = self._clock()
        statuses = self._statuses(dict(zip(ids, values, strict=True)))
        built: list[ExchangeView] = []
        for exchange_id, raw, pttl in zip(ids, values, pttls, strict=True):
            parsed = statuses.get(exchange_id)
            status = parsed if isinstance(parsed, InstanceStatus) else None
            problem = parsed if isinstance(parsed, str) else None
            entry = listed[exchange_id].catalog_entry
            view = assemble(exchange_id, str(exchange_id), entry, None, raw, status, problem)
            view.heartbeat_at = heartbeat_moment(read_at, status, pttl)
            self._built_views[exchange_id] = view
            self._built_raws[exchange_id] = raw
            built.append(view)
        views = await self._fill_offline(built, last_known=True, agents=True)
        self._note_seen(views, [listed[exchange_id] for exchange_id in ids])
        fresh = {view.exchange_id: view for view in views}
        self._previous = [fresh.get(view.exchange_id, view) for view in self._previous]
        return views

    async def exchange(self, exchange_id: int) -> ExchangeView:
        """One exchange, listed or not: its catalog entry, status and, when it
        has no valid status, its last-known info and agents. Two round trips
        at most."""
        status_key = keys.status_key(exchange_id)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.CATALOG_KEY, str(exchange_id))
            pipe.get(status_key)
            pipe.pttl(status_key)
            results = await pipe.execute(raise_on_error=False)
        commands = (("HGET", keys.CATALOG_KEY), ("GET", status_key), ("PTTL", status_key))
        raw_entry, raw_status, pttl = (
            _readable(result, *command) for command, result in zip(commands, results, strict=True)
        )
        problem: str | None = None
        if isinstance(raw_entry, ResponseError):  # a catalog of the wrong type: named on the view
            problem, raw_entry = catalog_unreadable(raw_entry), None
        if isinstance(raw_status, ResponseError):  # read as missing: `_fill_offline` names its type
            raw_status = None
        field_name = str(exchange_id) if raw_entry is not None else None
        token = parse_catalog_payload(raw_entry) if raw_entry is not None else None
        if token is not None:
            problem = catalog_problem(exchange_id, token)
        entry = token if problem is None and isinstance(token, CatalogEntry) else None
        parsed = status_result(exchange_id, raw_status) if raw_status is not None else None
        status = None if isinstance(parsed, str) else parsed
        status_problem = parsed if isinstance(parsed, str) else None
        view = assemble(exchange_id, field_name, entry, problem, raw_status, status, status_problem)
        view.heartbeat_at = heartbeat_moment(self._clock(), status, pttl)
        if not view.online:
            view.seen_at = self._seen.get(exchange_id)
        return (await self._fill_offline([view], last_known=True, agents=True))[0]

    async def discover(self) -> list[CatalogEntry]:
        """Add every exchange that is online, or has history, but is missing
        from the catalog.

        SCANs the status keys (never KEYS), reads them, and adds an entry for
        each valid payload whose id is not in the catalog yet (HSETNX: an entry
        written meanwhile by an operator or agent is kept). Payloads that are
        corrupt or carry a name Perseus would not write are skipped and logged.
        Then the same for exchanges found only by their activity streams (a
        dead Livermore server's), named as their streams are.

        Returns:
            The entries actually added, sorted by id.
        """
        await self._scan()
        raw_catalog = await self._read_catalog()
        known = {field_id(f) for f in raw_catalog}
        candidates = sorted(self._extra_ids - known)
        to_add: list[CatalogEntry] = []
        if candidates:
            values, _ = await self._mget(candidates)
            for exchange_id, raw in zip(candidates, values, strict=True):
                if raw is None:
                    continue
                entry = importable(exchange_id, self._parse_status(exchange_id, raw))
                if entry is not None:
                    to_add.append(entry)
        taken = known | {entry.id for entry in to_add}
        names = {entry.name.lower() for entry in self._catalog.entries(raw_catalog)}
        names.update(entry.name.lower() for entry in to_add)
        history = await self._history_ids(await self._history_names() - names)
        for exchange_id, name in sorted(history.items()):
            entry = importable_name(exchange_id, name)
            if exchange_id not in taken and entry is not None:
                to_add.append(entry)
        return sorted(await add_missing(self._redis, to_add), key=_entry_order)

    # --- discovery: scans of the keyspace ------------------------------------------

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

    async def _history_names(self) -> set[str]:
        """The exchange name of every activity stream (either kind), lowercase as
        the stream keys carry it; keys of another type are left out (`TYPE stream`)."""
        names: set[str] = set()
        for prefix in keys.ACTIVITY_PREFIXES:
            async for key in self._redis.scan_iter(
                match=f"{prefix}*", count=SCAN_COUNT, _type="stream"
            ):
                name = str(key).removeprefix(prefix)
                if name:
                    names.add(name)
        return names

    async def _history_ids(self, names: set[str]) -> dict[int, str]:
        """Exchange id -> name for the given exchange names, from the newest
        `ID_SCAN` entries of their two streams (one pipelined round trip; a
        stream that cannot be read, or whose entries name no id, is left out; of
        two names claiming one id, the first in order wins).

        Entries that belong to no exchange (`names_no_exchange`: exchangeId 0,
        or the streams of the name `unknown` a Livermore server logs into when
        its start fails early) never make one: no phantom "0 unknown" card.
        """
        ordered = sorted(name for name in names if name != NO_EXCHANGE_NAME)
        if not ordered:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for name in ordered:
                pipe.xrevrange(keys.activity_key(name), count=ID_SCAN)
                pipe.xrevrange(keys.perseus_activity_key(name), count=ID_SCAN)
            results = await pipe.execute(raise_on_error=False)
        found: dict[int, str] = {}
        for index, name in enumerate(ordered):
            exchange_id = _named_id(results[2 * index])
            if exchange_id is None:
                exchange_id = _named_id(results[2 * index + 1])
            if exchange_id is not None:
                found.setdefault(exchange_id, name)
        return found

    async def streams_of_no_exchange(self) -> dict[str, int]:
        """Activity streams (either kind) whose entries belong to no exchange,
        with how many entries each holds: the streams of the name `unknown`,
        and any other whose newest `ID_SCAN` entries name exchange 0 and no
        other (while neither of its name's two streams names a real id).

        A Livermore server whose start fails before it knows its exchange logs
        there. No reader lists an exchange for them (`_history_ids`);
        `perseus doctor` counts them. SCANs the stream keys (every master of a
        cluster) and reads each name's two streams in one pipelined round trip.
        """
        names = sorted(await self._history_names())
        if not names:
            return {}
        async with self._redis.pipeline(transaction=False) as pipe:
            for name in names:
                for key in (keys.activity_key(name), keys.perseus_activity_key(name)):
                    pipe.xrevrange(key, count=ID_SCAN)
                    pipe.xlen(key)
            results = await pipe.execute(raise_on_error=False)
        found: dict[str, int] = {}
        for index, name in enumerate(names):
            shared, shared_len, ours, ours_len = results[4 * index : 4 * index + 4]
            if name != NO_EXCHANGE_NAME:
                if _named_id(shared) is not None or _named_id(ours) is not None:
                    continue
                if not (_names_nothing_else(shared) or _names_nothing_else(ours)):
                    continue
            pairs = (
                (keys.activity_key(name), shared_len),
                (keys.perseus_activity_key(name), ours_len),
            )
            for key, length in pairs:
                if isinstance(length, int) and length > 0:
                    found[key] = length
        return found

    def _with_history(self, views: list[ExchangeView]) -> list[ExchangeView]:
        """`views` and an offline view of each exchange found only by its
        history that no listed view has the id or name of."""
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

    # --- statuses: the pipelined reads -------------------------------------------------

    def _queue_mgets(self, pipe: Any, ids: Sequence[int], script: str) -> list[list[int]] | None:
        """Queue the reads of the given ids' status keys on `pipe` (scripts sent
        with the `script` command: `read_script_command`): on a single Redis
        the MGETs, in order, `MGET_CHUNK` keys each, then their PTTLs in the
        same chunks (`PTTL_SCRIPT`; returns None); on a cluster, where no
        command may span slots, one `SLOT_STATUS_LUA` per hash slot (then
        chunked; returns the index groups, for `_ungroup`).

        Keys are passed as bytes: redis-py would otherwise encode each one
        while packing the command, a tenth of a 10,000-key read.
        """
        status_keys = [keys.status_key(i).encode() for i in ids]
        if not self._cluster:
            chunks = [
                status_keys[start : start + MGET_CHUNK]
                for start in range(0, len(status_keys), MGET_CHUNK)
            ]
            for chunk in chunks:
                pipe.execute_command("MGET", *chunk)
            for chunk in chunks:
                pipe.execute_command(script, PTTL_SCRIPT, len(chunk), *chunk)
            return None
        groups = _slot_groups(status_keys, MGET_CHUNK)
        for group in groups:
            chunk = [status_keys[i] for i in group]
            pipe.execute_command(script, SLOT_STATUS_LUA, len(chunk), *chunk)
        return groups

    async def _status_reads(
        self, ids: Sequence[int], groups: list[list[int]] | None, replies: list[Any]
    ) -> Reads:
        """The payloads and PTTLs (both in id order) from the replies of
        `_queue_mgets`: on a single Redis its MGETs and PTTL scripts (a
        failed MGET raises; a refused PTTL script, a user without scripts,
        leaves those keys undated: -1, aged by `lastHeartbeat`); on a
        cluster its `SLOT_STATUS_LUA` calls, a refused one read again by
        MGET in one more round trip, undated too (a refused MGET raises)."""
        if groups is None:
            return _split(len(ids), groups, replies)
        refused = [n for n, reply in enumerate(replies) if isinstance(reply, Exception)]
        if refused:
            async with self._redis.pipeline(transaction=False) as pipe:
                for n in refused:
                    pipe.execute_command("MGET", *(keys.status_key(ids[i]) for i in groups[n]))
                again = await pipe.execute(raise_on_error=False)
            for n, reply in zip(refused, again, strict=True):
                if isinstance(reply, Exception):
                    raise reply
                replies[n] = [*reply, *([-1] * len(reply))]
        sizes = [len(group) for group in groups]
        values = [reply[:size] for reply, size in zip(replies, sizes, strict=True)]
        pttls = [reply[size:] for reply, size in zip(replies, sizes, strict=True)]
        return _ungroup(len(ids), groups, values), _ungroup(len(ids), groups, pttls)

    async def _catalog_and_statuses(
        self, ids: Sequence[int]
    ) -> tuple[dict[str, str] | ResponseError, Reads]:
        """HGETALL of the catalog, MGETs and PTTLs of the given ids' status
        keys, one pipeline.

        A catalog Redis refuses to read (a key of the wrong type, an ACL) is
        returned as its error, not raised: the statuses read in the same
        pipeline still make a snapshot. Any other failure raises.
        """
        script = await read_script_command(self._redis)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.CATALOG_KEY)
            groups = self._queue_mgets(pipe, ids, script)
            results = await pipe.execute(raise_on_error=False)
        catalog = results[0]
        if isinstance(catalog, Exception) and not isinstance(catalog, ResponseError):
            raise catalog
        return catalog, await self._status_reads(ids, groups, results[1:])

    async def _mget(self, ids: Sequence[int]) -> Reads:
        """The status payloads of the given ids (None where there is no key)
        and their PTTLs."""
        script = await read_script_command(self._redis)
        async with self._redis.pipeline(transaction=False) as pipe:
            groups = self._queue_mgets(pipe, ids, script)
            results = await pipe.execute(raise_on_error=False)
        return await self._status_reads(ids, groups, results)

    # --- statuses: building the views -------------------------------------------------

    async def _read_views(self, extra_ids: set[int]) -> tuple[list[ExchangeView], set[int]]:
        """Every listed exchange's view (catalog order, then `extra_ids`), and
        which of `extra_ids` (online exchanges outside the catalog) still are.

        Status keys are read in catalog order: the payloads then lie in
        memory in the order the views are built and later freed, which on
        10,000 payloads saves about a tenth of the validation and freeing.
        """
        guess = self._catalog_ids + sorted(extra_ids.difference(self._catalog_ids))
        self._pttls = {}
        catalog_read, (guessed_values, ttls) = await self._catalog_and_statuses(guess)
        raw_catalog = self._catalog.readable(catalog_read)
        self._date_heartbeats(guess, ttls)
        field_ids = [field_id(f) for f in raw_catalog]
        catalog_ids = list(dict.fromkeys(field_ids))
        if NOT_AN_ID in catalog_ids:
            catalog_ids.remove(NOT_AN_ID)
        values: dict[int, str | None] = dict(zip(guess, guessed_values, strict=True))
        missing = [i for i in catalog_ids if i not in values]
        if missing:
            tokens = await self._tokens_while_reading(raw_catalog, missing, values)
        else:
            tokens = self._catalog.tokens(raw_catalog.values(), {})
        previous = self._catalog_ids
        self._catalog_ids = catalog_ids
        extra = sorted(self._outside(previous, extra_ids))
        return self._build_views(raw_catalog, field_ids, tokens, values, extra)

    def _outside(self, previous: Sequence[int], extra_ids: set[int] | None = None) -> set[int]:
        """The ids to read outside the catalog just read: the online ones the
        last scan found (`extra_ids`, default `_extra_ids`), and those the
        `previous` catalog listed and this one does not. An exchange removed
        from the catalog while it runs stays listed (as not in the catalog)
        until its key goes, instead of vanishing until the next scan finds it.
        """
        ids = self._extra_ids if extra_ids is None else extra_ids
        listed = set(self._catalog_ids)
        return ids.union(previous).difference(listed)

    async def _tokens_while_reading(
        self, raw_catalog: dict[str, str], missing: list[int], values: dict[int, str | None]
    ) -> dict[str, Token]:
        """The catalog's parsed values, validated while the statuses of the
        `missing` ids (new: a first snapshot, or the catalog grew) are read
        into `values`: their MGETs go out first, and Redis serves them while
        the catalog is validated here, in slices that let the request out and
        the replies in between them. Cancelled or failing, it ends only once
        both have (`gather_all`): a read left unwinding met the client its
        caller closes next, and could reconnect it."""
        (fetched, ttls), parsed = await gather_all(
            self._mget(missing), self._tokens_in_slices(list(raw_catalog.values()))
        )
        self._date_heartbeats(missing, ttls)
        values.update(zip(missing, fetched, strict=True))
        tokens: dict[str, Token] = parsed
        return tokens

    async def _tokens_in_slices(self, catalog_values: list[str]) -> dict[str, Token]:
        """The catalog's parsed values, a slice per turn of the event loop."""
        tokens: dict[str, Token] = {}
        step = max(CATALOG_SLICE, len(catalog_values) // 8 + 1)
        for start in range(0, len(catalog_values), step):
            await asyncio.sleep(0)
            self._catalog.tokens(catalog_values[start : start + step], tokens)
        return tokens

    def _date_heartbeats(self, ids: Sequence[int], ttls: Sequence[int]) -> None:
        """Keep each key's PTTL and when it was read, to date its latest
        heartbeat once its payload says which TTL its writer uses."""
        self._pttl_read_at = self._clock()
        self._pttls.update(zip(ids, ttls, strict=True))

    def _parse_status(self, exchange_id: int, raw: str) -> InstanceStatus | str:
        """The validated payload, or the PayloadError message; reuses the
        latest snapshot's result when it read the same bytes for this id."""
        known = self._built_views.get(exchange_id)
        if known is not None and known.status is not None and self._built_raws[exchange_id] == raw:
            return known.status
        return parse_status_payload(raw)

    def _statuses(self, values: dict[int, str | None]) -> dict[int, InstanceStatus | str]:
        """Every payload read, validated (or what is wrong with it), in the
        order Redis returned them, which is the order they lie in memory: on a
        cold read that alone saves a tenth of the validation time. An
        unchanged payload keeps its validated status."""
        previous_views = self._built_views
        previous_raws = self._built_raws
        validate = validate_status_json
        limit = MAX_PAYLOAD_BYTES
        statuses: dict[int, InstanceStatus | str] = {}
        for exchange_id, raw in values.items():
            if raw is None:
                continue
            known = previous_views.get(exchange_id)
            if known is not None:
                status = known.status
                if status is not None and previous_raws[exchange_id] == raw:
                    statuses[exchange_id] = status
                    continue
            status = None
            if len(raw) <= limit:
                try:
                    status = validate(raw)
                except ValidationError:
                    pass
            if status is None or status.exchange_id != exchange_id:
                statuses[exchange_id] = status_result(exchange_id, raw)
            else:
                statuses[exchange_id] = status
        return statuses

    def _build_views(
        self,
        raw_catalog: dict[str, str],
        field_ids: list[int],
        tokens: dict[str, Token],
        values: dict[int, str | None],
        extra_ids: list[int],
    ) -> tuple[list[ExchangeView], set[int]]:
        """Every listed exchange's view, in catalog order then `extra_ids`, and
        the `extra_ids` found online; `field_ids` are the ids the catalog's
        fields name (`field_id`).

        The snapshot's hot path (10,000 exchanges on a large fleet), written
        for speed: one loop per phase (the catalog's exchanges, then those
        outside it), no call per exchange that can be avoided. An exchange
        whose catalog value and status bytes are both unchanged since the
        previous snapshot gets its previous view.
        """
        statuses = self._statuses(values)
        view_cache: dict[int, ExchangeView] = {}
        token_cache: dict[int, Token | None] = {}
        views, errors = self._catalog_views(
            raw_catalog, field_ids, tokens, values, statuses, view_cache, token_cache
        )
        found = self._outside_views(extra_ids, values, statuses, views, view_cache, token_cache)
        self._built_views, self._built_tokens, self._built_raws = view_cache, token_cache, values
        self._catalog.remember(tokens, errors)
        return views, found

    def _catalog_views(
        self,
        raw_catalog: dict[str, str],
        field_ids: list[int],
        tokens: dict[str, Token],
        values: dict[int, str | None],
        statuses: dict[int, InstanceStatus | str],
        view_cache: dict[int, ExchangeView],
        token_cache: dict[int, Token | None],
    ) -> tuple[list[ExchangeView], dict[str, str]]:
        """The view of every exchange the catalog lists (an inactive one only
        while it is online), in catalog order, each also put in `view_cache`
        and its catalog token in `token_cache`; and what is wrong with each
        catalog field that is wrong, by field."""
        previous_views, previous_tokens = self._built_views, self._built_tokens
        previous_raws = self._built_raws
        pttls, read_at = self._pttls, self._pttl_read_at
        views: list[ExchangeView] = []
        errors: dict[str, str] = {}
        for (field_name, value), exchange_id in zip(raw_catalog.items(), field_ids, strict=True):
            if exchange_id == NOT_AN_ID:
                errors[field_name] = message = not_an_id(field_name)
                views.append(assemble(NOT_AN_ID, field_name, None, message, None, None, None))
                continue
            token = tokens[value]
            entry: CatalogEntry | None = None
            if isinstance(token, str):
                errors[field_name] = token
            elif token.id != exchange_id:
                errors[field_name] = f"catalog entry under id {exchange_id} says id {token.id}"
            else:
                entry = token
            raw = values.get(exchange_id)
            if raw is None and entry is not None and not entry.is_active:
                continue  # inactive and offline: not listed
            parsed = statuses.get(exchange_id)
            if isinstance(parsed, str):
                status, problem = None, parsed
            else:
                status, problem = parsed, None
            known = previous_views.get(exchange_id)
            if known is not None and previous_tokens[exchange_id] is token:
                # The very same status object means the very same bytes.
                if previous_raws[exchange_id] == raw if status is None else known.status is status:
                    view_cache[exchange_id] = known
                    token_cache[exchange_id] = token
                    views.append(known)
                    continue
            view = assemble(
                exchange_id, field_name, entry, errors.get(field_name), raw, status, problem
            )
            view.heartbeat_at = heartbeat_moment(read_at, status, pttls.get(exchange_id))
            view_cache[exchange_id] = view
            token_cache[exchange_id] = token
            views.append(view)
        return views, errors

    def _outside_views(
        self,
        extra_ids: list[int],
        values: dict[int, str | None],
        statuses: dict[int, InstanceStatus | str],
        views: list[ExchangeView],
        view_cache: dict[int, ExchangeView],
        token_cache: dict[int, Token | None],
    ) -> set[int]:
        """Append to `views` (and to `view_cache`) the view of each of
        `extra_ids`, exchanges outside the catalog, that is online; return
        those ids."""
        previous_views, previous_tokens = self._built_views, self._built_tokens
        previous_raws = self._built_raws
        pttls, read_at = self._pttls, self._pttl_read_at
        found: set[int] = set()
        for exchange_id in extra_ids:
            raw = values.get(exchange_id)
            if raw is None:
                continue
            found.add(exchange_id)
            known = previous_views.get(exchange_id)
            if (
                known is not None
                and previous_tokens[exchange_id] is None
                and previous_raws[exchange_id] == raw
            ):
                view = known
            else:
                parsed = statuses[exchange_id]
                if isinstance(parsed, str):
                    view = assemble(exchange_id, None, None, None, raw, None, parsed)
                else:
                    view = assemble(exchange_id, None, None, None, raw, parsed, None)
                view.heartbeat_at = heartbeat_moment(read_at, view.status, pttls.get(exchange_id))
            view_cache[exchange_id] = view
            token_cache[exchange_id] = None
            views.append(view)
        return found

    # --- exchanges without a valid status: last-known info and agents -------------------

    async def _fill_offline(
        self,
        views: list[ExchangeView],
        *,
        last_known: bool,
        agents: bool,
        remember: bool = False,
    ) -> list[ExchangeView]:
        """Fill `last_known` and `agents` of every view without a valid status.

        One pipelined round trip: the newest entry of each stream (XREVRANGE
        COUNT 1) and the unexpired members of the presence sets
        (`LIVE_MEMBERS_LUA`, `PRESENCE_CHUNK` sets a call). Only a stream whose newest
        entry is new since the previous snapshot and names no state (the
        audit entry of a stop) is read deeper, `LAST_KNOWN_SCAN` entries, in
        one more round trip. Reading ten entries of every offline stream on
        every poll would cost a 10,000-exchange fleet with 1,000 offline ones
        about 40 ms per snapshot, for an answer that only changes when the
        stream does.

        A stream or presence key that cannot be read (wrong type, ACL) is
        reported on its view's `error`; the other views are unaffected.

        Args:
            views: the views; those with a valid status are left alone.
            last_known: read the activity streams.
            agents: read the presence sets.
            remember: keep what was read for the next call (a snapshot's
                reads replace the caches; a single lookup does not).
        """
        wanted = _offline_wanted(views, last_known=last_known, agents=agents)
        if not wanted:
            return views
        script = await read_script_command(self._redis)
        presence_keys = [presence.encode() for _, _, presence, _ in wanted if presence is not None]
        groups = self._presence_groups(presence_keys)
        async with self._redis.pipeline(transaction=False) as pipe:
            _queue_offline_reads(pipe, views, wanted)
            for group in groups:
                chunk = [presence_keys[i] for i in group]
                pipe.execute_command(script, LIVE_MEMBERS_LUA, len(chunk), *chunk, MAX_AGENTS)
            replies = await pipe.execute(raise_on_error=False)
        own = len(replies) - len(groups)
        members = await self._live_members(presence_keys, groups, replies[own:])
        read = self._offline_replies(views, wanted, replies[:own], iter(members))
        if read.deeper:
            await self._look_deeper(read.deeper, read.known, read.entry_cache)
        if remember:
            self._entry_cache = read.entry_cache
            self._presence_cache = read.presence_cache
        return _with_details(views, wanted, read)

    def _offline_replies(
        self,
        views: list[ExchangeView],
        wanted: list[_Wanted],
        replies: list[Any],
        members: Iterator[Any],
    ) -> _OfflineRead:
        """What the replies of `_queue_offline_reads` say, in the order they
        were queued, with the live `members` of each presence set in `wanted`
        order: per wanted view, its stream's newest entry (from the entry
        cache when already parsed), its agents, and a status key of the
        wrong type; each unreadable key is a problem of its view's."""
        read = _OfflineRead()
        results = iter(replies)
        for index, stream, presence, wanted_key in wanted:
            view = views[index]
            if stream is not None:
                self._newest_entry(read, index, stream, next(results))
            if presence is not None:
                result = next(members)
                if isinstance(result, Exception):
                    message = f"{presence} (agent presence) is unreadable: {result}"
                    read.problems.setdefault(index, []).append(message)
                elif result:
                    read.found[index] = self._agents(
                        view.exchange_id,
                        result,
                        read.presence_cache,
                        read.problems.setdefault(index, []),
                    )
            if wanted_key is not None:
                result = next(results)
                record = parse_wanted(view.exchange_id, result)
                if record is not None:
                    read.wanted[index] = record
                elif isinstance(result, Exception):
                    message = f"{wanted_key} (wanted state) is unreadable: {result}"
                    read.problems.setdefault(index, []).append(message)
            if _checks_type(view, presence):
                wrong = _wrong_type(view.exchange_id, next(results))
                if wrong is not None:  # first: it explains why the exchange looks offline
                    read.problems.setdefault(index, []).insert(0, wrong)
        return read

    def _newest_entry(self, read: _OfflineRead, index: int, stream: str, result: Any) -> None:
        """Note what a stream's newest entry (an XREVRANGE COUNT 1 reply) says
        in `read`: its last-known info (parsed once per entry id), or the
        stream as a problem of its view's when Redis refused to read it."""
        if isinstance(result, Exception):
            message = f"{clean(stream, 80)} (activity stream) is unreadable: {result}"
            read.problems.setdefault(index, []).append(message)
            return
        if not result:
            return
        entry_id, fields = result[0]
        cached = self._entry_cache.get((stream, entry_id))
        if cached is None:
            name = stream.removeprefix(keys.ACTIVITY_KEY_PREFIX)
            cached = LastKnown.from_entry(parse_entry(entry_id, fields or {}, name))
            if cached.event != "state_transition" or cached.state == "idle":
                # Who held it? Or, back to idle: did its child crash? Look back.
                read.deeper.append((index, stream, entry_id))
        read.entry_cache[(stream, entry_id)] = read.known[index] = cached

    def _presence_groups(self, presence_keys: list[bytes]) -> list[list[int]]:
        """The presence keys' indexes, `PRESENCE_CHUNK` to a `LIVE_MEMBERS_LUA`
        call, one hash slot per call on a cluster."""
        if self._cluster:
            return _slot_groups(presence_keys, PRESENCE_CHUNK)
        size = len(presence_keys)
        return [
            list(range(start, min(size, start + PRESENCE_CHUNK)))
            for start in range(0, size, PRESENCE_CHUNK)
        ]

    async def _live_members(
        self, presence_keys: list[bytes], groups: list[list[int]], replies: list[Any]
    ) -> list[Any]:
        """Each presence set's live members (or the error of a set Redis could
        not read), in `presence_keys` order, from the `LIVE_MEMBERS_LUA` calls
        on `groups`.

        The sets of a call Redis refused as a whole (a user who may not run
        scripts, or may not read one of its keys; a server with scripting
        disabled) are read again, each with a plain ZRANGE. Without the
        script the expiry is judged on this host's clock: a skew only moves
        the moment an expired member stops being listed. Saying "no agent"
        because a script was refused would be wrong while an agent runs.
        """
        members: list[Any] = [None] * len(presence_keys)
        refused: list[int] = []
        for group, reply in zip(groups, replies, strict=True):
            if isinstance(reply, Exception):  # kept where the plain read fails too
                refused.extend(group)
                for index in group:
                    members[index] = reply
                continue
            for index, result in zip(group, reply, strict=True):
                members[index] = result
        if not refused:
            return members
        now_ms = int(self._clock().timestamp() * 1000)
        async with self._redis.pipeline(transaction=False) as pipe:
            for index in refused:
                key = presence_keys[index].decode()
                pipe.zrevrangebyscore(key, "+inf", f"({now_ms}", start=0, num=MAX_AGENTS)
            again = await pipe.execute(raise_on_error=False)
        for index, result in zip(refused, again, strict=True):
            if not isinstance(result, Exception):
                members[index] = result
        return members

    async def _look_deeper(
        self,
        deeper: list[tuple[int, str, str]],
        known: dict[int, LastKnown],
        entry_cache: dict[tuple[str, str], LastKnown],
    ) -> None:
        """Replace the stateless newest entry of each stream in `deeper` by
        `LastKnown.pick` over its newest `LAST_KNOWN_SCAN` entries; cached
        under the newest ID, so it is done once per new entry. A stream that
        fails now keeps its newest entry (it was readable a moment ago) and is
        looked at again by the next snapshot."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for _, stream, _ in deeper:
                pipe.xrevrange(stream, max="+", min="-", count=LAST_KNOWN_SCAN)
            results = await pipe.execute(raise_on_error=False)
        for (index, stream, newest_id), result in zip(deeper, results, strict=True):
            if isinstance(result, Exception) or not result:
                entry_cache.pop((stream, newest_id), None)
                continue
            name = stream.removeprefix(keys.ACTIVITY_KEY_PREFIX)
            picked = LastKnown.pick(
                parse_entry(entry_id, fields or {}, name) for entry_id, fields in result
            )
            if picked is not None:
                # Keyed by the ID seen first: an entry appended in between is
                # picked up by the next snapshot.
                entry_cache[(stream, newest_id)] = known[index] = picked

    def _agents(
        self,
        exchange_id: int,
        members: list[str],
        cache: dict[str, AgentPresence | str],
        problems: list[str],
    ) -> tuple[AgentPresence, ...]:
        """The valid presence members of one exchange, one per agent (the
        freshest, members arrive freshest first), sorted by host and pid.
        Unreadable members are added to `problems`, never raised. An agent
        whose process this host can see is gone is left out: a member of an
        agent killed with -9 lives on until its expiry."""
        by_agent: dict[str, AgentPresence] = {}
        bad: list[str] = []
        for member in members:
            parsed = self._presence_cache.get(member) or cache.get(member)
            if parsed is None:
                try:
                    parsed = AgentPresence.from_json(member)
                except PayloadError as exc:
                    parsed = str(exc)
            cache[member] = parsed
            if isinstance(parsed, str):
                bad.append(parsed)
            elif parsed.exchange_id != exchange_id:
                bad.append(f"a member names exchange {parsed.exchange_id}")
            elif not gone_from_here(parsed.pid_scope, parsed.pid):  # killed: gone before expiry
                by_agent.setdefault(parsed.agent_id, parsed)
        if bad:
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            problems.append(f"{keys.agents_key(exchange_id)}: {bad[0]}{more}")
        return tuple(sorted(by_agent.values(), key=_agent_order))


def _split(size: int, groups: list[list[int]] | None, results: Sequence[Any]) -> Reads:
    """The payloads and the PTTLs (both in id order) from the MGETs and PTTL
    scripts of `_queue_mgets`. A failed MGET raises; a refused PTTL script (a
    user without scripts) only leaves those keys undated (-1), to be aged by
    `lastHeartbeat`."""
    half = len(results) // 2
    for result in results[:half]:
        if isinstance(result, Exception):
            raise result
    pttls = [
        [-1] * len(mget) if isinstance(r, Exception) else r
        for mget, r in zip(results[:half], results[half:], strict=True)
    ]
    return _ungroup(size, groups, results[:half]), _ungroup(size, groups, pttls)


def _ungroup(size: int, groups: Iterable[list[int]] | None, results: Sequence[Any]) -> list[Any]:
    """The chunked replies (MGETs, PTTL scripts) back in the order of the ids
    they were queued for."""
    if groups is None:  # in order
        return list(chain.from_iterable(results))
    values: list[Any] = [None] * size
    for group, chunk in zip(groups, results, strict=True):
        for index, value in zip(group, chunk, strict=True):
            values[index] = value
    return values


def _named_id(result: object) -> int | None:
    """The exchange id the newest entry naming one carries, or None (an entry
    that names no exchange, `names_no_exchange`, is passed over)."""
    if not isinstance(result, list):
        return None
    for _entry_id, fields in result:
        if isinstance(fields, dict):
            raw_id = str(fields.get("exchangeId", ""))
            if names_no_exchange(raw_id, str(fields.get("exchangeName", ""))):
                continue
            exchange_id = field_id(raw_id)
            if exchange_id != NOT_AN_ID:
                return exchange_id
    return None


def _names_nothing_else(result: object) -> bool:
    """Whether a stream's newest entries (an XREVRANGE reply) name no exchange
    but some name none explicitly (`names_no_exchange`)."""
    if not isinstance(result, list) or _named_id(result) is not None:
        return False
    return any(
        isinstance(fields, dict)
        and names_no_exchange(
            str(fields.get("exchangeId", "")), str(fields.get("exchangeName", ""))
        )
        for _entry_id, fields in result
    )


def _readable(result: Any, command: str, key: str) -> Any:
    """One reply of a pipeline run with `raise_on_error=False`: the value, or
    the WRONGTYPE error of a broken key (the caller reports it on the view).
    An ACL refusal is raised as it is (the caller decides what a user without
    the right gets); any other refusal as the error naming command and key."""
    if not isinstance(result, Exception):
        return result
    if isinstance(result, ResponseError) and not isinstance(result, NoPermissionError):
        if "WRONGTYPE" in str(result):
            return result
        raise refused(result, command, key)
    raise result


def _offline_wanted(views: list[ExchangeView], *, last_known: bool, agents: bool) -> list[_Wanted]:
    """Which reads `_fill_offline` makes for each view: for a view without a
    valid status, its activity stream (when `last_known` and it has a name),
    its presence set and its wanted state (when `agents` and its id is a
    number); for a view with one, its presence set only (when `agents`: the
    holder's standbys)."""
    wanted: list[_Wanted] = []
    for index, view in enumerate(views):
        numbered = agents and view.exchange_id != NOT_AN_ID
        if view.status is not None:
            if numbered:
                wanted.append((index, None, keys.agents_key(view.exchange_id), None))
            continue
        stream = (
            keys.activity_key(view.exchange_name) if last_known and view.exchange_name else None
        )
        presence = keys.agents_key(view.exchange_id) if numbered else None
        intent = keys.wanted_key(view.exchange_id) if numbered else None
        if stream is not None or presence is not None:
            wanted.append((index, stream, presence, intent))
    return wanted


def _queue_offline_reads(pipe: Any, views: list[ExchangeView], wanted: list[_Wanted]) -> None:
    """Queue `_fill_offline`'s reads on `pipe` but the presence sets (read
    `PRESENCE_CHUNK` at a time after these): per wanted view, its stream's
    newest entry, its wanted state and its status key's TYPE, each when
    wanted."""
    for index, stream, presence, intent in wanted:
        if stream is not None:
            pipe.xrevrange(stream, max="+", min="-", count=1)
        if intent is not None:
            pipe.hget(intent, WANTED_FIELD)
        if _checks_type(views[index], presence):
            pipe.type(keys.status_key(views[index].exchange_id))


def _slot_groups(key_list: list[bytes], size: int) -> list[list[int]]:
    """The keys' indexes grouped by hash slot, then cut to `size`: on a
    cluster a multi-key command (or script) holds keys of one slot only."""
    by_slot: dict[int, list[int]] = {}
    for index, key in enumerate(key_list):
        by_slot.setdefault(key_slot(key), []).append(index)
    groups: list[list[int]] = []
    for indexes in by_slot.values():
        groups.extend(indexes[i : i + size] for i in range(0, len(indexes), size))
    return groups


def _checks_type(view: ExchangeView, presence: str | None) -> bool:
    """Whether to ask the TYPE of a view's status key: MGET reads a key of
    another type as missing, so an exchange without a status key is checked
    (with its presence read, which is skipped only for fields that are no id)."""
    return presence is not None and not view.key_exists


def _wrong_type(exchange_id: int, key_type: object) -> str | None:
    """What is wrong with a status key of the type TYPE answered, or None."""
    if isinstance(key_type, Exception):
        return f"{keys.status_key(exchange_id)} is unreadable: {key_type}"
    if key_type in ("none", "string"):
        return None
    return f"{keys.status_key(exchange_id)} is a {key_type}, not a string: it is ignored"


def _with_details(
    views: list[ExchangeView], wanted: list[_Wanted], read: _OfflineRead
) -> list[ExchangeView]:
    """`views` with what was read for the wanted ones; a view that gained
    nothing is kept as it is (the very same object)."""
    out = list(views)
    for index, _, _, _ in wanted:
        view = views[index]
        issues = read.problems.get(index, [])
        known, found, record = read.known.get(index), read.found.get(index), read.wanted.get(index)
        if known is None and found is None and record is None and not issues:
            continue
        error = "; ".join([view.error, *issues] if view.error else issues) or None
        out[index] = replace(view, last_known=known, agents=found or (), error=error, wanted=record)
    return out


def _agent_order(agent: AgentPresence) -> tuple[str, int, str]:
    return (agent.hostname, agent.pid or 0, agent.agent_id)
