"""Which Perseus roles the connected user can act as, found out by asking
Redis for commands it refuses before they change anything.

Redis checks a user's ACL before it runs a command, so a command that would
fail on its own arguments tells the two cases apart without writing: NOPERM
means the user may not, any other error means the user may (and nothing was
written). Works on every Redis from 6.0, with no admin rights (ACL DRYRUN
would need them, and Redis 7).
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.exceptions import NoPermissionError, ResponseError

from perseus_core.plumbing.topology import RedisClient
from perseus_core.wire import keys


@dataclass(frozen=True, slots=True)
class Roles:
    """What the user may do, for one exchange id.

    Attributes:
        exchange_id: the id the write probes name (ACLs are often per exchange).
        viewer: may read status keys, the catalog and streams.
        operator: may also send commands (`XADD perseus:commands:{id}`).
        agent: may also write the status key (`SET exchange:{id}:status`).
        refusals: one line per refused probe, naming command and key.
    """

    exchange_id: int
    viewer: bool
    operator: bool
    agent: bool
    refusals: tuple[str, ...]

    @property
    def names(self) -> list[str]:
        """The roles held, `viewer` first."""
        held = (("viewer", self.viewer), ("operator", self.operator), ("agent", self.agent))
        return [name for name, ok in held if ok]


async def _allowed(redis: RedisClient, refusals: list[str], *args: str | int) -> bool:
    """Whether Redis lets this user run `args` (an error other than NOPERM,
    or success, both mean yes)."""
    try:
        await redis.execute_command(*args)
    except NoPermissionError as exc:
        refusals.append(f"this user may not {str(args[0]).upper()} {args[1]} ({exc})")
        return False
    except ResponseError:
        return True  # refused on its arguments, after the ACL check passed
    return True


async def probe_roles(redis: RedisClient, exchange_id: int) -> Roles:
    """Probe the three roles for `exchange_id` without writing anything.

    The write probes are an `XADD` with the ID `0-0` (always refused: IDs
    must be greater) and a `SET ... PX 0` (refused: an expiry must be
    positive); the read probes are plain reads.
    """
    refusals: list[str] = []
    status = keys.status_key(exchange_id)
    viewer = all(
        [
            await _allowed(redis, refusals, "GET", status),
            await _allowed(redis, refusals, "HLEN", keys.CATALOG_KEY),
            await _allowed(redis, refusals, "XLEN", keys.commands_key(exchange_id)),
        ]
    )
    operator = await _allowed(
        redis, refusals, "XADD", keys.commands_key(exchange_id), "0-0", "probe", "1"
    )
    agent = await _allowed(redis, refusals, "SET", status, "probe", "PX", "0")
    return Roles(exchange_id, viewer, viewer and operator, viewer and agent, tuple(refusals))
