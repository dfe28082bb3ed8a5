"""Details of exchanges without a valid status: last-known info and running agents.

Exchanges without a valid status (normally few) get two more things, read
together in one more pipelined round trip:

- their last-known host, IP and state, from the last holder
  (`LastKnown.pick`: the newest transition, or a newer error of that same
  host; a refused claimant's error never counts), among the newest
  `LAST_KNOWN_SCAN` entries of the shared stream. The round trip reads each
  stream's newest entry; only a stream whose newest entry is new and not a
  transition is read deeper, in one more round trip,
  and what that finds is kept until the stream changes;
- the agents that are running for them (docs/wire-format.md 2.4): an idle
  agent holds no status key, and its presence is what tells "a start would
  work" apart from "nobody runs this". Reading presence for every listed
  exchange would add one command per exchange to the first pipeline (10,000
  on a large fleet) for information the dashboard shows only on cards
  without a status, so it is read only for those.
"""

from __future__ import annotations

from dataclasses import replace

from perseus_core.plumbing.processes import gone_from_here
from perseus_core.store.network.catalog import RedisClient
from perseus_core.store.network.views import NOT_AN_ID, ExchangeView, LastKnown
from perseus_core.wire import keys
from perseus_core.wire.errors import PayloadError
from perseus_core.wire.models import AgentPresence, parse_entry
from perseus_core.wire.text import clean

LAST_KNOWN_SCAN = 10
"""Newest activity entries searched for one that carries a state: a stop
leaves one `command` audit entry above its transitions, a failed start two
or three entries, so ten reach past what a few commands in a row leave."""

MAX_AGENTS = 64
"""Presence members read per exchange (the freshest first): more agents than
this on one exchange is a misconfiguration, not something to list in full."""

LIVE_MEMBERS_LUA = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGE', KEYS[1], '+inf', '(' .. now_ms, 'BYSCORE', 'REV', 'LIMIT', 0, ARGV[1])
"""
"""KEYS: presence set. ARGV: how many. The members whose expiry (their score,
Redis server ms) has not passed, freshest first. A member is pruned only when
some agent writes the set again, so an agent killed with -9 beside a live one
would otherwise be listed (as ready, with its dead pid) until that write:
the expiry is judged here, on the server's clock, like the writers judge it.
Sent as EVAL, not EVALSHA: it rides in a pipeline, where a cluster client
cannot load a script the server lost."""

_Wanted = tuple[int, str | None, str | None]
"""(index of the view, its activity stream or None, its presence key or None)."""


class OfflineDetails:
    """Fills in `last_known` and `agents` of views without a valid status.

    What a stream's newest entry said, and each presence member parsed, are
    kept from one snapshot to the next (only what the latest snapshot read).
    """

    def __init__(self, redis: RedisClient) -> None:
        """Read through `redis` (decoded responses)."""
        self._redis = redis
        self._entry_cache: dict[tuple[str, str], LastKnown] = {}
        self._presence_cache: dict[str, AgentPresence | str] = {}

    async def fill(
        self,
        views: list[ExchangeView],
        *,
        last_known: bool,
        agents: bool,
        remember: bool = False,
    ) -> list[ExchangeView]:
        """Fill `last_known` and `agents` of every view without a valid status.

        One pipelined round trip: the newest entry of each stream (XREVRANGE
        COUNT 1) and the unexpired members of the presence set
        (`LIVE_MEMBERS_LUA`). Only a stream whose newest
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
        wanted: list[_Wanted] = []
        for index, view in enumerate(views):
            if view.status is not None:
                continue
            stream = (
                keys.activity_key(view.exchange_name) if last_known and view.exchange_name else None
            )
            presence = (
                keys.agents_key(view.exchange_id)
                if agents and view.exchange_id != NOT_AN_ID
                else None
            )
            if stream is not None or presence is not None:
                wanted.append((index, stream, presence))
        if not wanted:
            return views
        async with self._redis.pipeline(transaction=False) as pipe:
            for index, stream, presence in wanted:
                if stream is not None:
                    pipe.xrevrange(stream, max="+", min="-", count=1)
                if presence is not None:
                    pipe.eval(LIVE_MEMBERS_LUA, 1, presence, MAX_AGENTS)
                if _checks_type(views[index], presence):
                    pipe.type(keys.status_key(views[index].exchange_id))
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
                    message = f"{clean(stream, 80)} (activity stream) is unreadable: {result}"
                    problems.setdefault(index, []).append(message)
                elif result:
                    entry_id, fields = result[0]
                    cached = self._entry_cache.get((stream, entry_id))
                    if cached is None:
                        name = stream.removeprefix(keys.ACTIVITY_KEY_PREFIX)
                        cached = LastKnown.from_entry(parse_entry(entry_id, fields or {}, name))
                        if cached.event != "state_transition":  # who held it? look back
                            deeper.append((index, stream, entry_id))
                    entry_cache[(stream, entry_id)] = known[index] = cached
            if presence is not None:
                result = next(results)
                if isinstance(result, Exception):
                    message = f"{presence} (agent presence) is unreadable: {result}"
                    problems.setdefault(index, []).append(message)
                elif result:
                    found[index] = self._agents(
                        view.exchange_id, result, presence_cache, problems.setdefault(index, [])
                    )
            if _checks_type(view, presence):
                wrong = _wrong_type(view.exchange_id, next(results))
                if wrong is not None:  # first: it explains why the exchange looks offline
                    problems.setdefault(index, []).insert(0, wrong)
        if deeper:
            await self._look_deeper(deeper, known, entry_cache)
        if remember:
            self._entry_cache = entry_cache
            self._presence_cache = presence_cache
        return _with_details(views, wanted, known, found, problems)

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
    views: list[ExchangeView],
    wanted: list[_Wanted],
    known: dict[int, LastKnown],
    found: dict[int, tuple[AgentPresence, ...]],
    problems: dict[int, list[str]],
) -> list[ExchangeView]:
    """`views` with what was read for the wanted ones; a view that gained
    nothing is kept as it is (the very same object)."""
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
    return out


def _agent_order(agent: AgentPresence) -> tuple[str, int, str]:
    return (agent.hostname, agent.pid or 0, agent.agent_id)
