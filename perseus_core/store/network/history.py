"""Exchanges known only by their history: an activity stream, no status key,
no catalog entry.

A Livermore server never writes `perseus:exchanges`: while it runs, the
status-key SCAN finds it; once it dies, its key expires and only its
`logs:network:{name}` stream is left. Livermore's own admin lists exchanges
from its database and shows such one Offline; Perseus finds them by scanning
the activity streams (both `logs:network:*` and `perseus:activity:*`, on
every master of a cluster: the client's SCAN visits each) and reads the slot
id from their newest entries' `exchangeId`. The scan walks the keyspace, so
it runs with the status-key SCAN (first snapshot, then every `scan_every_s`,
or when asked), never on every poll.
"""

from __future__ import annotations

from perseus_core.store.network.catalog import RedisClient
from perseus_core.store.network.parsing import field_id
from perseus_core.store.network.views import NOT_AN_ID
from perseus_core.wire import keys

SCAN_COUNT = 1_000
"""SCAN COUNT hint: fewer round trips over a large keyspace."""

ID_SCAN = 10
"""Newest entries of a stream searched for one naming the slot (`exchangeId`)."""


async def history_names(redis: RedisClient) -> set[str]:
    """The exchange name of every activity stream (either kind), lowercase as
    the stream keys carry it; keys of another type are left out (`TYPE stream`)."""
    names: set[str] = set()
    for prefix in keys.ACTIVITY_PREFIXES:
        async for key in redis.scan_iter(match=f"{prefix}*", count=SCAN_COUNT, _type="stream"):
            name = str(key).removeprefix(prefix)
            if name:
                names.add(name)
    return names


async def history_ids(redis: RedisClient, names: set[str]) -> dict[int, str]:
    """Slot id -> name for the given exchange names, from the newest
    `ID_SCAN` entries of their two streams (one pipelined round trip; a
    stream that cannot be read, or whose entries name no id, is left out; of
    two names claiming one id, the first in order wins)."""
    ordered = sorted(names)
    if not ordered:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
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


def _named_id(result: object) -> int | None:
    """The slot id the newest entry naming one carries, or None."""
    if not isinstance(result, list):
        return None
    for _entry_id, fields in result:
        if isinstance(fields, dict):
            exchange_id = field_id(str(fields.get("exchangeId", "")))
            if exchange_id != NOT_AN_ID:
                return exchange_id
    return None
