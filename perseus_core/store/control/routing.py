"""Which channel can carry a command to an exchange: a Perseus agent's command
stream, a Livermore server's pub/sub channel, or none (refused at once)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar

from perseus_core.plumbing.topology import RedisClient
from perseus_core.wire import keys
from perseus_core.wire.errors import PayloadError
from perseus_core.wire.models import CatalogEntry, CommandType, InstanceStatus
from perseus_core.wire.text import clean


class Via(StrEnum):
    """The channel a command goes over."""

    PERSEUS = "perseus"
    LIVERMORE = "livermore"
    NONE = "none"


@dataclass(frozen=True, slots=True)
class Route:
    """Where a command for one exchange goes, and what the operator should know first.

    Attributes:
        via: the channel; `NONE` means refused, with `refusal` saying why.
        exchange_id: the slot.
        exchange_name: its name, from the holder's key or the catalog ("" if unknown).
        holder: the hostname of a holder that is not a Perseus agent, else None.
        identity_sub: the Livermore owner identity from the catalog, if any.
        refusal: for `via=NONE`, why, naming the holder and how to steer it
            (`refused_line` makes it a whole line).
        listeners: for `via=LIVERMORE`, how many Livermore servers are
            subscribed to the owner's channel (each would run the command).
    """

    via: Via
    exchange_id: int
    exchange_name: str = ""
    holder: str | None = None
    identity_sub: str | None = None
    refusal: str | None = None
    listeners: int = 0


async def read_route(redis: RedisClient, exchange_id: int, command: str) -> Route:
    """Read the slot's holder, its agents and its catalog entry, and `decide`.

    Three single-key reads, one round trip. An unreadable or wrong-type key
    reads as unknown (a status key that exists but cannot be parsed is a
    holder of unknown kind: Perseus's own channel, as before).
    """
    if command not in (CommandType.START, CommandType.STOP):
        return Route(Via.PERSEUS, exchange_id)
    async with redis.pipeline(transaction=False) as pipe:
        pipe.get(keys.status_key(exchange_id))
        pipe.hget(keys.CATALOG_KEY, str(exchange_id))
        pipe.zcard(keys.agents_key(exchange_id))
        raw_status, raw_entry, agents = await pipe.execute(raise_on_error=False)
    return decide(
        exchange_id,
        command,
        holder=_parse(InstanceStatus, raw_status),
        occupied=raw_status is not None and not isinstance(raw_status, Exception),
        entry=_parse(CatalogEntry, raw_entry),
        agents=agents if isinstance(agents, int) else 0,
    )


def decide(
    exchange_id: int,
    command: str,
    *,
    holder: InstanceStatus | None,
    occupied: bool,
    entry: CatalogEntry | None,
    agents: int,
) -> Route:
    """The one decision of which channel carries a command, for every surface
    (the CLI, the dashboard and their early refusals say the same thing).

    A Perseus holder, or an agent waiting idle, is reached over Perseus's own
    command stream. A slot held by another writer (a Livermore server: no
    `instanceId`), or vacant with no agent of ours, is reached over
    Livermore's channel when the catalog entry names the owner's identity; a
    foreign holder without one is refused with a line saying how to enable
    steering. Anything else (`ping`, an unreadable key) goes to Perseus.

    Args:
        exchange_id: the slot.
        command: the command type.
        holder: the valid status payload of the slot, if any.
        occupied: the status key exists (valid or not).
        entry: the valid catalog entry, if any.
        agents: how many Perseus agents announce themselves for the slot.
    """
    if command not in (CommandType.START, CommandType.STOP):
        return Route(Via.PERSEUS, exchange_id)
    sub = entry.livermore_sub if entry is not None else None
    name = holder.exchange_name if holder is not None else (entry.name if entry else "")
    if holder is not None and holder.instance_id is None:
        host = clean(holder.hostname, 128) or "an unnamed host"
        if sub:
            return Route(Via.LIVERMORE, exchange_id, name, host, sub)
        return Route(
            Via.NONE,
            exchange_id,
            name,
            host,
            refusal=(
                f"the slot is held by {host} (not a Perseus agent), and the catalog entry "
                f"names no Livermore owner to ask; enable steering with "
                f"`perseus catalog set {exchange_id} --livermore-sub SUB`"
            ),
        )
    if not occupied and sub and agents == 0:  # vacant, and no agent of ours waits
        return Route(Via.LIVERMORE, exchange_id, name, None, sub)
    return Route(Via.PERSEUS, exchange_id, name)


def refused_line(route: Route, command: str) -> str:
    """`cannot stop exchange 2: ...`: a refused route as the CLI and the
    command client say it (the dashboard shows the reason on the command's line)."""
    return f"cannot {command} exchange {route.exchange_id}: {route.refusal or 'nothing can run it'}"


_Model = TypeVar("_Model", InstanceStatus, CatalogEntry)


def _parse(model: type[_Model], raw: object) -> _Model | None:
    """The parsed payload, or None for a missing, unreadable or wrong-type key."""
    if not isinstance(raw, str | bytes):
        return None
    try:
        return model.from_json(raw)
    except PayloadError:
        return None
