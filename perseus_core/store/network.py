"""The read side used by the CLI and the dashboard: catalog, statuses, last-known info.

A snapshot reads the catalog (WIRE.md 2.1) and the status key (WIRE.md 1.1) of
every exchange in one round trip per Redis node: `HGETALL` and chunked `MGET`s
go out in one pipeline, and on Redis Cluster every `MGET` holds keys of one
hash slot only, so no command ever spans slots. A reader's first snapshot
does not know the catalog's ids yet: its `MGET`s follow the `HGETALL` in a
second round trip, during which it validates the catalog.

Exchanges without a valid status (normally few) get two more things, read
together in one more pipelined round trip:

- their last-known host, IP and state, from the newest activity entry that
  says what state the exchange was left in (a `command` audit entry, newest
  after every stop, carries none), among the newest `LAST_KNOWN_SCAN`. The
  round trip reads each stream's newest entry; only a stream whose newest
  entry is new and names no state is read deeper, in one more round trip,
  and what that finds is kept until the stream changes;
- the agents that are running for them (WIRE.md 2.4): an idle agent holds
  no status key, and its presence is what tells "a start would work" apart
  from "nobody runs this". Reading presence for every listed exchange would
  add one command per exchange to the first pipeline (10,000 on a large
  fleet) for information the dashboard shows only on cards without a
  status, so it is read only for those.

Everything read is untrusted. A corrupt status payload or catalog entry is
reported on its own `ExchangeView` (`error`), never raised, so one bad writer
cannot blank the whole dashboard.

Which exchanges a snapshot lists (WIRE.md 2.1: every active catalog entry plus
any exchange found online that is not in the catalog):

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
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from itertools import chain
from operator import attrgetter
from typing import Any, cast

from pydantic import ValidationError
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from perseus_core.wire import keys
from perseus_core.wire.errors import PayloadError
from perseus_core.wire.models import (
    MAX_PAYLOAD_BYTES,
    ActivityEntry,
    AgentPresence,
    CatalogEntry,
    ErrorEntry,
    InstanceStatus,
    OtherEntry,
    StateTransitionEntry,
    parse_entry,
    validate_exchange_name,
)
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import Clock, parse_ts_or_none, system_clock

log = logging.getLogger(__name__)

RedisClient = Redis | RedisCluster
"""A single Redis or a Redis Cluster; every read here works on both."""

MGET_CHUNK = 1_000
"""Keys per MGET: large enough to keep commands few, small enough that one
command never holds the server for long (other clients interleave between
the pipeline's commands)."""

SCAN_COUNT = 1_000
"""SCAN COUNT hint: fewer round trips over a large keyspace."""

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

_NOT_AN_ID = -1


@dataclass(frozen=True, slots=True)
class LastKnown:
    """What the activity stream says about an exchange that is not online: the
    newest entry that names a state (see `pick`), else the newest entry.

    All values are the stream's raw strings (empty when the entry lacks them);
    show them as plain text.
    """

    hostname: str
    ip: str
    state: str
    timestamp: str
    event: str
    id: str

    @property
    def time(self) -> datetime | None:
        """`timestamp` parsed, or None if missing or unparseable."""
        return parse_ts_or_none(self.timestamp)

    @classmethod
    def from_entry(cls, entry: ActivityEntry) -> LastKnown:
        """The last-known info carried by one entry.

        The state is the state the entry leaves the exchange in: `toState` of a
        transition, `state` of an error, and for other events whichever of
        those two fields they happen to carry.
        """
        if isinstance(entry, StateTransitionEntry):
            state = entry.to_state
        elif isinstance(entry, ErrorEntry):
            state = entry.state
        elif isinstance(entry, OtherEntry):
            extra = entry.extra_fields
            state = extra.get("toState") or extra.get("state") or ""
        else:
            state = ""
        return cls(
            hostname=entry.hostname,
            ip=entry.ip,
            state=state,
            timestamp=entry.timestamp,
            event=entry.event,
            id=entry.id,
        )

    @classmethod
    def pick(cls, entries: Iterable[ActivityEntry]) -> LastKnown | None:
        """The last-known info of entries given newest first: from the newest
        one that carries a state, else from the newest one (None if none).

        A `command` audit entry follows every stop and names no state; taking
        the newest entry blindly would show "unknown" after each one.
        """
        newest: LastKnown | None = None
        for entry in entries:
            known = cls.from_entry(entry)
            if known.state:
                return known
            if newest is None:
                newest = known
        return newest

    def to_dict(self) -> dict[str, str]:
        """The `lastKnown` object of `perseus status --json`."""
        return {
            "hostname": self.hostname,
            "ip": self.ip,
            "state": self.state,
            "timestamp": self.timestamp,
            "event": self.event,
            "id": self.id,
        }


class ViewKind(StrEnum):
    """What an exchange is, as far as a reader can tell: decided once, in
    `ExchangeView.kind`, and shown the same way by every surface."""

    LIVE = "live"
    """Its status key exists and its payload is valid."""
    UNREADABLE = "unreadable"
    """Its status key exists (the instance is alive) but the payload is not valid."""
    READY = "ready"
    """No status key, but an agent runs for it and would answer a start."""
    OFFLINE = "offline"
    """No status key and no agent."""


@dataclass(slots=True)
class ExchangeView:
    """One exchange as the dashboard shows it (treat as read-only: a snapshot
    of 10,000 is built on every poll, and frozen dataclasses cost a third more
    to build).

    Attributes:
        exchange_id: the slot id (-1 for a catalog field that is not a number).
        exchange_name: the catalog name, else the name in the status payload,
            else empty (unknown).
        display_name: what to show as its title; never empty.
        in_catalog: whether the catalog has an entry (valid or not) for it.
        status: the validated status payload, None if offline or corrupt.
        error: what is wrong with its catalog entry, status payload or stream,
            or None.
        last_known: what the activity stream last said, when there is no
            valid status.
        key_exists: the status key exists (the instance is alive), even if its
            payload could not be read.
        catalog_entry: the valid catalog entry, if any.
        agents: the agents running for it (WIRE.md 2.4), read only when there
            is no valid status; sorted by hostname and pid. A tuple: views
            are shared between snapshots.
    """

    exchange_id: int
    exchange_name: str
    display_name: str
    in_catalog: bool
    status: InstanceStatus | None = None
    error: str | None = None
    last_known: LastKnown | None = None
    key_exists: bool = False
    catalog_entry: CatalogEntry | None = None
    agents: tuple[AgentPresence, ...] = ()

    @property
    def online(self) -> bool:
        """The status key exists: its TTL is the liveness signal, so an
        instance with a corrupt payload is still online."""
        return self.key_exists or self.status is not None

    @property
    def ready(self) -> bool:
        """Offline, but an agent is running for it: a `start` would be answered."""
        return bool(self.agents) and not self.online

    @property
    def kind(self) -> ViewKind:
        """Live, unreadable, ready or offline: the one place this is decided."""
        if self.status is not None:
            return ViewKind.LIVE
        if self.key_exists:
            return ViewKind.UNREADABLE
        return ViewKind.READY if self.agents else ViewKind.OFFLINE

    @property
    def is_active(self) -> bool:
        """The catalog's `isActive` (True when there is no valid entry)."""
        return self.catalog_entry.is_active if self.catalog_entry is not None else True

    def to_dict(self) -> dict[str, Any]:
        """The per-instance object of `perseus status --json`."""
        return {
            "exchangeId": self.exchange_id,
            "exchangeName": self.exchange_name,
            "displayName": self.display_name,
            "online": self.online,
            "status": self.status.to_wire() if self.status is not None else None,
            "lastKnown": self.last_known.to_dict() if self.last_known is not None else None,
            "agents": [agent.to_wire() for agent in self.agents],
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class NetworkSnapshot:
    """Every listed exchange at one moment, sorted by id."""

    exchanges: list[ExchangeView] = field(default_factory=list)
    taken_at: datetime = field(default_factory=system_clock)

    def get(self, exchange_id: int) -> ExchangeView | None:
        """The view of one exchange, if the snapshot lists it."""
        for view in self.exchanges:
            if view.exchange_id == exchange_id:
                return view
        return None

    @property
    def online_count(self) -> int:
        """How many listed exchanges are online."""
        return sum(1 for view in self.exchanges if view.online)


_validate_status_json = InstanceStatus.__pydantic_validator__.validate_json
_validate_catalog_json = CatalogEntry.__pydantic_validator__.validate_json

_Token = CatalogEntry | str | None
"""What a view was built from on the catalog side: the parsed catalog value (a
valid entry, or what is wrong with it), None outside the catalog. Parsed values
are cached by their bytes, so an unchanged catalog value is the same object."""


def parse_status_payload(raw: str) -> InstanceStatus | str:
    """A status payload validated, or the message of the `PayloadError` that
    `InstanceStatus.from_json` raises for it.

    Valid payloads go through pydantic-core's JSON parser straight into the
    same model (about twice as fast as `json.loads` plus `model_validate`,
    which matters at 10,000 payloads per poll); both paths are strict, ignore
    unknown fields and accept the same payloads, and anything the fast path
    rejects is handed to `from_json` so the reported error is exactly its.
    """
    if len(raw) <= MAX_PAYLOAD_BYTES:
        try:
            return _validate_status_json(raw)  # type: ignore[no-any-return]
        except ValidationError:
            pass
    return _status_from_json(raw)


def _status_from_json(raw: str) -> InstanceStatus | str:
    try:
        return InstanceStatus.from_json(raw)
    except PayloadError as exc:
        return str(exc)


def parse_catalog_payload(raw: str) -> CatalogEntry | str:
    """A catalog value validated, or the `CatalogEntry.from_json` error message
    (same fast path as `parse_status_payload`)."""
    if len(raw) <= MAX_PAYLOAD_BYTES:
        try:
            return _validate_catalog_json(raw)  # type: ignore[no-any-return]
        except ValidationError:
            pass
    try:
        return CatalogEntry.from_json(raw)
    except PayloadError as exc:
        return str(exc)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Keep the cyclic garbage collector away from a bulk parse and what it builds.

    A snapshot of 10,000 exchanges allocates some 70,000 container objects
    (models, their `__dict__` and fields-set, views) that live until the next
    poll, are freed by reference counting, and can never be part of a
    reference cycle. The collector cannot free any of them, yet left alone it
    would walk them all: several times during the parse, then once more as a
    young generation, again in the middle one, and their arrival would
    trigger full collections of the whole heap. On a 10,000-exchange fleet
    that walking costs as much as the whole Redis read.

    So the collector is held during the section (which never awaits, so
    nothing else runs meanwhile), after a collection of the young
    generations, so that what the section finds young is what it made. What
    the section built is then moved, without being walked, to the oldest
    generation (`gc.freeze()` + `gc.unfreeze()`, both constant time), where
    only full collections look at it; it is freed as soon as the next poll
    drops it. If the process keeps objects frozen on purpose (a pre-fork
    server calling `gc.freeze()`), the move is skipped, since unfreezing
    would undo that, and the collector simply resumes.
    """
    if not gc.isenabled():  # the application manages the collector itself
        yield
        return
    gc.collect(1)
    gc.disable()
    try:
        yield
    finally:
        if gc.get_freeze_count() == 0:
            gc.freeze()
            gc.unfreeze()
        gc.enable()


def _field_id(field_name: str) -> int:
    """The exchange id a catalog field names, or `_NOT_AN_ID`."""
    # isdecimal, not isdigit: int() rejects digits such as superscripts.
    if field_name.isdecimal() and len(field_name) <= 18:
        return int(field_name)
    return _NOT_AN_ID


def _not_an_id(field_name: str) -> str:
    return f"catalog field {field_name[:40]!r} is not an exchange id"


def _catalog_problem(exchange_id: int, token: CatalogEntry | str) -> str | None:
    """What is wrong with a parsed catalog value stored under `exchange_id`."""
    if isinstance(token, str):
        return token
    if token.id != exchange_id:
        return f"catalog entry under id {exchange_id} says id {token.id}"
    return None


def _status_result(exchange_id: int, raw: str) -> InstanceStatus | str:
    """A status payload read under `exchange_id`: the validated status, or
    what is wrong with it (invalid, or naming another exchange)."""
    parsed = parse_status_payload(raw)
    if isinstance(parsed, str) or parsed.exchange_id == exchange_id:
        return parsed
    return _id_mismatch(parsed, exchange_id)


def _assemble(
    exchange_id: int,
    field_name: str | None,
    entry: CatalogEntry | None,
    catalog_problem: str | None,
    raw: str | None,
    status: InstanceStatus | None,
    problem: str | None,
) -> ExchangeView:
    """A view from its parts; `field_name` is None outside the catalog."""
    if entry is not None:
        return ExchangeView(
            exchange_id,
            entry.name,
            entry.display_name or entry.name,
            True,
            status,
            problem,
            None,
            raw is not None,
            entry,
        )
    errors = [e for e in (catalog_problem, problem) if e]
    name = status.exchange_name if status is not None else ""
    if field_name is not None and exchange_id == _NOT_AN_ID:
        display = field_name
    else:
        display = name or f"exchange {exchange_id}"
    return ExchangeView(
        exchange_id=exchange_id,
        exchange_name=name,
        display_name=display,
        in_catalog=field_name is not None,
        status=status,
        error="; ".join(errors) if errors else None,
        key_exists=raw is not None,
    )


class NetworkReader:
    """Reads the fleet's state for the CLI and the dashboard; also edits the catalog.

    Validated payloads are cached by their exact bytes between snapshots: a
    status payload changes only on a heartbeat or an update, so a poll every
    few seconds re-validates only what changed. The cache holds only what the
    latest snapshot read. An exchange whose catalog value and status payload
    are both unchanged gets the very same `ExchangeView` object as in the
    previous snapshot: treat views and their statuses as read-only.

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
            settings: Perseus settings (kept for the callers' symmetry; the
                reader has no timing of its own but `scan_every_s`).
            clock: source of `NetworkSnapshot.taken_at`.
            scan_every_s: minimum time between SCANs for online exchanges
                that are not in the catalog (see the module docstring).
        """
        self._redis = redis
        self._settings = settings
        self._clock = clock
        self._scan_every_s = scan_every_s
        self._cluster = isinstance(redis, RedisCluster)
        self._last_scan: float | None = None
        self._catalog_ids: list[int] = []
        """The catalog's ids at the last read, in the catalog's own order."""
        self._extra_ids: set[int] = set()
        self._catalog_cache: dict[str, CatalogEntry | str] = {}
        self._views: dict[int, tuple[_Token, str | None, ExchangeView]] = {}
        self._entry_cache: dict[tuple[str, str], LastKnown] = {}
        self._presence_cache: dict[str, AgentPresence | str] = {}
        self.catalog_errors: dict[str, str] = {}
        """What was wrong with each corrupt catalog field at the last read."""

    # --- reading ---------------------------------------------------------

    async def catalog(self) -> list[CatalogEntry]:
        """Every valid catalog entry, sorted by id.

        Corrupt entries are not raised: they are logged as warnings and kept in
        `catalog_errors` (field -> message) for the caller to show.
        """
        raw = cast(dict[str, str], await self._redis.hgetall(keys.CATALOG_KEY))
        return sorted(self._parse_catalog(raw), key=_entry_order)

    async def exchange_names(self) -> list[str]:
        """Names of every catalog exchange (active or not) plus online ones not
        in the catalog: the streams a live activity tail should follow.

        The online part uses the same cached SCAN as `snapshot`.
        """
        entries = await self.catalog()
        self._catalog_ids = [entry.id for entry in entries]
        names = {entry.name.lower(): entry.name for entry in entries}
        if self._scan_due(None):
            await self._scan()
        extra = sorted(self._extra_ids.difference(self._catalog_ids))
        if extra:
            values = await self._mget(extra)
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
        if self._scan_due(discover_online):
            await self._scan()
        # Status keys are read in catalog order: the payloads then lie in
        # memory in the order the views are built and later freed, which on
        # 10,000 payloads saves about a tenth of the validation and freeing.
        guess = self._catalog_ids + sorted(self._extra_ids.difference(self._catalog_ids))
        raw_catalog, guessed_values = await self._catalog_and_statuses(guess)
        field_ids = [_field_id(f) for f in raw_catalog]
        catalog_ids = list(dict.fromkeys(field_ids))
        if _NOT_AN_ID in catalog_ids:
            catalog_ids.remove(_NOT_AN_ID)
        values: dict[int, str | None] = dict(zip(guess, guessed_values, strict=True))
        missing = [i for i in catalog_ids if i not in values]
        tokens: dict[str, CatalogEntry | str] | None = None
        if missing:
            # The ids are new (a first snapshot, or the catalog grew): their
            # MGETs go out now, and Redis serves them while the catalog is
            # validated here, in slices that let the request out and the
            # replies in between them.
            fetch = asyncio.ensure_future(self._mget(missing))
            try:
                tokens = {}
                catalog_values = list(raw_catalog.values())
                step = max(CATALOG_SLICE, len(catalog_values) // 8 + 1)
                for start in range(0, len(catalog_values), step):
                    await asyncio.sleep(0)
                    with _gc_paused():
                        self._catalog_tokens(catalog_values[start : start + step], tokens)
                fetched = await fetch
            finally:
                if not fetch.done():  # this snapshot was cancelled or failed meanwhile
                    fetch.cancel()
                elif not fetch.cancelled():
                    fetch.exception()  # seen: asyncio would log an unseen failure
            values.update(zip(missing, fetched, strict=True))
        self._catalog_ids = catalog_ids
        with _gc_paused():
            if tokens is None:
                tokens = self._catalog_tokens(raw_catalog.values(), {})
            views = self._build_views(
                raw_catalog,
                field_ids,
                tokens,
                values,
                sorted(self._extra_ids.difference(catalog_ids)),
            )
        with_agents = last_known if agents is None else agents
        if last_known or with_agents:
            views = await self._with_offline_details(
                views, last_known=last_known, agents=with_agents, remember=True
            )
        views.sort(key=_view_order)
        return NetworkSnapshot(views, self._clock())

    async def exchange(self, exchange_id: int) -> ExchangeView:
        """One exchange, listed or not: its catalog entry, status and, when it
        has no valid status, its last-known info and agents. Two round trips
        at most."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hget(keys.CATALOG_KEY, str(exchange_id))
            pipe.get(keys.status_key(exchange_id))
            raw_entry, raw_status = await pipe.execute()
        field_name = str(exchange_id) if raw_entry is not None else None
        token = parse_catalog_payload(raw_entry) if raw_entry is not None else None
        problem = _catalog_problem(exchange_id, token) if token is not None else None
        entry = token if problem is None and isinstance(token, CatalogEntry) else None
        parsed = _status_result(exchange_id, raw_status) if raw_status is not None else None
        status = None if isinstance(parsed, str) else parsed
        status_problem = parsed if isinstance(parsed, str) else None
        view = _assemble(
            exchange_id, field_name, entry, problem, raw_status, status, status_problem
        )
        return (await self._with_offline_details([view], last_known=True, agents=True))[0]

    async def discover(self) -> list[CatalogEntry]:
        """Add every online exchange that is missing from the catalog.

        SCANs the status keys (never KEYS), reads them, and adds an entry for
        each valid payload whose id is not in the catalog yet (HSETNX: an entry
        written meanwhile by an operator or agent is kept). Payloads that are
        corrupt or carry a name Perseus would not write are skipped and logged.

        Returns:
            The entries actually added, sorted by id.
        """
        await self._scan()
        raw_catalog = cast(dict[str, str], await self._redis.hgetall(keys.CATALOG_KEY))
        known = {_field_id(f) for f in raw_catalog}
        candidates = sorted(self._extra_ids - known)
        if not candidates:
            return []
        values = await self._mget(candidates)
        to_add: list[CatalogEntry] = []
        for exchange_id, raw in zip(candidates, values, strict=True):
            if raw is None:
                continue
            status = self._parse_status(exchange_id, raw)
            if isinstance(status, str):
                log.warning("not importing exchange %d: %s", exchange_id, status)
                continue
            if status.exchange_id != exchange_id:
                log.warning(
                    "not importing exchange %d: %s", exchange_id, _id_mismatch(status, exchange_id)
                )
                continue
            try:
                name = validate_exchange_name(status.exchange_name)
            except ValueError as exc:
                log.warning("not importing exchange %d: %s", exchange_id, exc)
                continue
            to_add.append(CatalogEntry(id=exchange_id, name=name, display_name=name))
        if not to_add:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for entry in to_add:
                pipe.hsetnx(keys.CATALOG_KEY, str(entry.id), entry.to_json())
            added = await pipe.execute()
        return [entry for entry, ok in zip(to_add, added, strict=True) if ok]

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
        validate_exchange_name(entry.name)
        field_name = str(entry.id)
        if overwrite:
            await self._redis.hset(keys.CATALOG_KEY, field_name, entry.to_json())
            return True
        return bool(await self._redis.hsetnx(keys.CATALOG_KEY, field_name, entry.to_json()))

    async def remove_from_catalog(self, exchange_id: int) -> bool:
        """Delete one catalog entry; True if there was one. The exchange still
        shows while it is online (as not in the catalog)."""
        removed = await self._redis.hdel(keys.CATALOG_KEY, str(exchange_id))
        return bool(removed)

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

    def _queue_mgets(self, pipe: Any, ids: Sequence[int]) -> list[list[int]] | None:
        """Queue the MGETs of the given ids' status keys on `pipe`: in order,
        `MGET_CHUNK` keys each, on a single Redis (returns None); one hash slot
        per group (then chunked) on a cluster, where MGET must not span slots
        (returns the index groups, for `_ungroup`).

        Keys are passed as bytes: redis-py would otherwise encode each one
        while packing the command, a tenth of a 10,000-key read.
        """
        status_keys = [keys.status_key(i).encode() for i in ids]
        if not self._cluster:
            for start in range(0, len(status_keys), MGET_CHUNK):
                pipe.execute_command("MGET", *status_keys[start : start + MGET_CHUNK])
            return None
        by_slot: dict[int, list[int]] = {}
        for index, key in enumerate(status_keys):
            by_slot.setdefault(key_slot(key), []).append(index)
        groups: list[list[int]] = []
        for indexes in by_slot.values():
            groups.extend(indexes[i : i + MGET_CHUNK] for i in range(0, len(indexes), MGET_CHUNK))
        for group in groups:
            pipe.execute_command("MGET", *(status_keys[i] for i in group))
        return groups

    async def _catalog_and_statuses(
        self, ids: Sequence[int]
    ) -> tuple[dict[str, str], list[str | None]]:
        """HGETALL of the catalog and MGETs of the given ids' status keys, one pipeline."""
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(keys.CATALOG_KEY)
            groups = self._queue_mgets(pipe, ids)
            results = await pipe.execute()
        return cast(dict[str, str], results[0]), _ungroup(len(ids), groups, results[1:])

    async def _mget(self, ids: Sequence[int]) -> list[str | None]:
        """The status payloads of the given ids (None where there is no key)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            groups = self._queue_mgets(pipe, ids)
            results = await pipe.execute()
        return _ungroup(len(ids), groups, results)

    def _parse_catalog(self, raw: dict[str, str]) -> list[CatalogEntry]:
        """The valid entries of a catalog read (in hash order); what is wrong
        with the others goes to `catalog_errors`."""
        tokens = self._catalog_tokens(raw.values(), {})
        entries: list[CatalogEntry] = []
        errors: dict[str, str] = {}
        for field_name, value in raw.items():
            exchange_id = _field_id(field_name)
            if exchange_id == _NOT_AN_ID:
                errors[field_name] = _not_an_id(field_name)
                continue
            token = tokens[value]
            problem = _catalog_problem(exchange_id, token)
            if problem is not None:
                errors[field_name] = problem
            elif isinstance(token, CatalogEntry):
                entries.append(token)
        self._catalog_cache = tokens
        self._report_catalog_errors(errors)
        return entries

    def _catalog_tokens(
        self, values: Iterable[str], tokens: dict[str, CatalogEntry | str]
    ) -> dict[str, CatalogEntry | str]:
        """Add every distinct catalog value to `tokens`, parsed: the entry, or
        what is wrong with it. A value the previous read saw keeps its parsed
        object."""
        previous = self._catalog_cache
        validate = _validate_catalog_json
        limit = MAX_PAYLOAD_BYTES
        for value in values:
            if value in tokens:
                continue
            token = previous.get(value)
            if token is None and len(value) <= limit:
                try:
                    token = validate(value)
                except ValidationError:
                    pass
            tokens[value] = token if token is not None else parse_catalog_payload(value)
        return tokens

    def _report_catalog_errors(self, errors: dict[str, str]) -> None:
        for field_name, message in errors.items():
            if self.catalog_errors.get(field_name) != message:
                log.warning("catalog field %r: %s", field_name[:40], message)
        self.catalog_errors = errors

    def _build_views(
        self,
        raw_catalog: dict[str, str],
        field_ids: list[int],
        tokens: dict[str, CatalogEntry | str],
        values: dict[int, str | None],
        extra_ids: list[int],
    ) -> list[ExchangeView]:
        """Every listed exchange's view, in catalog order then `extra_ids`;
        `field_ids` are the ids the catalog's fields name (`_field_id`).

        The snapshot's hot loops (10,000 iterations each on a large fleet),
        written for speed. Status payloads are validated first, in the order
        Redis returned them (which is the order they lie in memory: on a cold
        read that alone saves a tenth of the validation time), then the views
        are built in catalog order, the common case (a valid catalog entry, a
        valid status or none) inline. An exchange whose catalog value and
        status bytes are both unchanged since the previous snapshot gets its
        previous view; an unchanged payload keeps its validated status.
        """
        previous_views = self._views
        validate = _validate_status_json
        limit = MAX_PAYLOAD_BYTES
        statuses: dict[int, InstanceStatus | str] = {}
        for exchange_id, raw in values.items():
            if raw is None:
                continue
            known = previous_views.get(exchange_id)
            if known is not None:
                status = known[2].status
                if status is not None and known[1] == raw:
                    statuses[exchange_id] = status
                    continue
            status = None
            if len(raw) <= limit:
                try:
                    status = validate(raw)
                except ValidationError:
                    pass
            if status is None or status.exchange_id != exchange_id:
                statuses[exchange_id] = _status_result(exchange_id, raw)
            else:
                statuses[exchange_id] = status

        view_cache: dict[int, tuple[_Token, str | None, ExchangeView]] = {}
        views: list[ExchangeView] = []
        errors: dict[str, str] = {}
        new_view = ExchangeView
        for (field_name, value), exchange_id in zip(raw_catalog.items(), field_ids, strict=True):
            if exchange_id == _NOT_AN_ID:
                errors[field_name] = message = _not_an_id(field_name)
                views.append(_assemble(_NOT_AN_ID, field_name, None, message, None, None, None))
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
            known = previous_views.get(exchange_id)
            if known is not None and known[0] is token:
                # The very same status object means the very same bytes.
                if parsed is None or isinstance(parsed, str):
                    unchanged = known[1] == raw
                else:
                    unchanged = known[2].status is parsed
                if unchanged:
                    view_cache[exchange_id] = known
                    views.append(known[2])
                    continue
            if parsed is None:
                status = problem = None
            elif isinstance(parsed, str):
                status, problem = None, parsed
            else:
                status, problem = parsed, None
            if entry is not None:
                view = new_view(
                    exchange_id,
                    entry.name,
                    entry.display_name or entry.name,
                    True,
                    status,
                    problem,
                    None,
                    raw is not None,
                    entry,
                )
            else:
                view = _assemble(
                    exchange_id, field_name, None, errors[field_name], raw, status, problem
                )
            view_cache[exchange_id] = (token, raw, view)
            views.append(view)

        found: set[int] = set()
        for exchange_id in extra_ids:
            raw = values.get(exchange_id)
            if raw is None:
                continue
            found.add(exchange_id)
            known = previous_views.get(exchange_id)
            if known is not None and known[0] is None and known[1] == raw:
                view = known[2]
            else:
                parsed = statuses[exchange_id]
                if isinstance(parsed, str):
                    view = _assemble(exchange_id, None, None, None, raw, None, parsed)
                else:
                    view = _assemble(exchange_id, None, None, None, raw, parsed, None)
            view_cache[exchange_id] = (None, raw, view)
            views.append(view)
        self._catalog_cache = tokens
        self._views = view_cache
        self._extra_ids = found
        self._report_catalog_errors(errors)
        return views

    def _parse_status(self, exchange_id: int, raw: str) -> InstanceStatus | str:
        """The validated payload, or the PayloadError message; reuses the
        latest snapshot's result when it read the same bytes for this id."""
        known = self._views.get(exchange_id)
        if known is not None and known[1] == raw and known[2].status is not None:
            return known[2].status
        return parse_status_payload(raw)

    async def _with_offline_details(
        self,
        views: list[ExchangeView],
        *,
        last_known: bool,
        agents: bool,
        remember: bool = False,
    ) -> list[ExchangeView]:
        """Fill `last_known` and `agents` of every view without a valid status.

        One pipelined round trip: the newest entry of each stream (XREVRANGE
        COUNT 1) and the presence set (ZREVRANGE). Only a stream whose newest
        entry is new since the previous snapshot and names no state (the
        audit entry of a stop) is read deeper, `LAST_KNOWN_SCAN` entries, in
        one more round trip. Reading ten entries of every offline stream on
        every poll would cost a 10,000-exchange fleet with 1,000 offline ones
        about 40 ms per snapshot, for an answer that only changes when the
        stream does.

        A stream or presence key that cannot be read (wrong type, ACL) is
        reported on its view's `error`; the other views are unaffected.
        """
        wanted: list[tuple[int, str | None, str | None]] = []
        for index, view in enumerate(views):
            if view.status is not None:
                continue
            stream = (
                keys.activity_key(view.exchange_name) if last_known and view.exchange_name else None
            )
            presence = (
                keys.agents_key(view.exchange_id)
                if agents and view.exchange_id != _NOT_AN_ID
                else None
            )
            if stream is not None or presence is not None:
                wanted.append((index, stream, presence))
        if not wanted:
            return views
        async with self._redis.pipeline(transaction=False) as pipe:
            for _, stream, presence in wanted:
                if stream is not None:
                    pipe.xrevrange(stream, max="+", min="-", count=1)
                if presence is not None:
                    pipe.zrange(presence, 0, MAX_AGENTS - 1, desc=True)
            results = iter(await pipe.execute(raise_on_error=False))

        entry_cache: dict[tuple[str, str], LastKnown] = {}
        presence_cache: dict[str, AgentPresence | str] = {}
        known: dict[int, LastKnown] = {}
        found: dict[int, tuple[AgentPresence, ...]] = {}
        problems: dict[int, list[str]] = {}
        deeper: list[tuple[int, str, str]] = []  # (index, stream, newest id)
        for index, stream, presence in wanted:
            view = views[index]
            if stream is not None:
                result = next(results)
                if isinstance(result, Exception):
                    message = f"activity stream {stream[:80]!r} is unreadable: {result}"
                    problems.setdefault(index, []).append(message)
                elif result:
                    entry_id, fields = result[0]
                    cached = self._entry_cache.get((stream, entry_id))
                    if cached is None:
                        name = stream.removeprefix(keys.ACTIVITY_KEY_PREFIX)
                        cached = LastKnown.from_entry(parse_entry(entry_id, fields or {}, name))
                        if not cached.state:
                            deeper.append((index, stream, entry_id))
                    entry_cache[(stream, entry_id)] = known[index] = cached
            if presence is not None:
                result = next(results)
                if isinstance(result, Exception):
                    message = f"agent presence {presence!r} is unreadable: {result}"
                    problems.setdefault(index, []).append(message)
                elif result:
                    found[index] = self._agents(
                        view.exchange_id, result, presence_cache, problems.setdefault(index, [])
                    )
        if deeper:
            await self._look_deeper(deeper, known, entry_cache)

        out = list(views)
        for index, _, _ in wanted:
            view = views[index]
            issues = problems.get(index, [])
            if index not in known and index not in found and not issues:
                continue
            error = "; ".join([view.error, *issues] if view.error else issues) or None
            out[index] = replace(
                view, last_known=known.get(index), agents=found.get(index, ()), error=error
            )
        if remember:  # a snapshot's sets replace the caches; a single lookup does not
            self._entry_cache = entry_cache
            self._presence_cache = presence_cache
        return out

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
        Unreadable members are added to `problems`, never raised."""
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
            else:
                by_agent.setdefault(parsed.agent_id, parsed)
        if bad:
            more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
            problems.append(f"{keys.agents_key(exchange_id)}: {bad[0]}{more}")
        return tuple(sorted(by_agent.values(), key=_agent_order))


_view_order = attrgetter("exchange_id")


def _entry_order(entry: CatalogEntry) -> int:
    return entry.id


def _agent_order(agent: AgentPresence) -> tuple[str, int, str]:
    return (agent.hostname, agent.pid or 0, agent.agent_id)


def _id_mismatch(status: InstanceStatus, exchange_id: int) -> str:
    return (
        f"status payload names exchange {status.exchange_id}, but it is stored under "
        f"{keys.status_key(exchange_id)}"
    )


def _ungroup(
    size: int, groups: Iterable[list[int]] | None, results: Sequence[Any]
) -> list[str | None]:
    if groups is None:  # in order
        return list(chain.from_iterable(results))
    values: list[str | None] = [None] * size
    for group, chunk in zip(groups, results, strict=True):
        for index, value in zip(group, chunk, strict=True):
            values[index] = value
    return values
