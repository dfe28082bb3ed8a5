"""What the operators want of an exchange: started or stopped (docs/wire-format.md 2.6).

A `stop` ends the run of the agent that holds the slot; without a record of
it, another agent started with `--autostart` (a standby on another host)
would claim the freed slot a few seconds later, and the operator's stop
would not hold. So the sender of every `start` and `stop` (the CLI and the
dashboard, through `ControlClient.send`) first records the operator's word
in `perseus:wanted:{exchangeId}`, and every agent asks it before it starts
the exchange on its own: `--autostart`, and a restart after its child
crashed (`may_start_on_its_own`). A `start` records that it is wanted
started, which lifts the stop everywhere.

The record is written by the operator's side, not by an agent: it holds when
no agent listens at all (the exchange stays stopped when its agents come up
later), and it is one `HSET` of one key, so it works on Redis Cluster.

A record that cannot be read (not JSON, wrong fields, a key of the wrong
type, no right to read it) says nothing: the exchange is then treated as
wanted started, as before this record existed, and the problem is logged
once per distinct problem, never raised.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Literal

from pydantic import Field

from perseus_core.plumbing.errors import REDIS_ERRORS
from perseus_core.plumbing.topology import RedisClient
from perseus_core.wire import keys
from perseus_core.wire.errors import PayloadError
from perseus_core.wire.models.base import MAX_COUNT, WireModel, load_json_object
from perseus_core.wire.text import clean
from perseus_core.wire.timeutil import Clock, format_duration, system_clock, to_epoch_ms

log = logging.getLogger(__name__)

MAX_WANTED_OPERATOR_CHARS = 256
"""Longest operator name a record may carry (a command's own limit)."""


class Want(StrEnum):
    """What an operator asked last."""

    START = "start"
    STOP = "stop"


class WantedRecord(WireModel):
    """The JSON of `perseus:wanted:{exchangeId}`: `{"want": "stop", "operator":
    "root@vm", "at": 1770700000000}`."""

    want: Literal["start", "stop"]
    operator: str = Field(default="", max_length=MAX_WANTED_OPERATOR_CHARS)
    at: int = Field(ge=0, le=MAX_COUNT)
    """When the operator asked, in milliseconds since the epoch (the sender's clock)."""


@dataclass(frozen=True, slots=True)
class Wanted:
    """What the operators last asked of one exchange, as read.

    Attributes:
        want: start or stop.
        operator: who asked (as the command's audit names them), raw: clean it to show it.
        at: when they asked; None when the moment cannot be represented.
    """

    want: Want
    operator: str
    at: datetime | None

    @property
    def stopped(self) -> bool:
        """An operator stopped the exchange: nothing starts it on its own."""
        return self.want is Want.STOP

    def describe(self, now: datetime) -> str:
        """`stopped by root@vm 3m 12s ago` (or `started by ...`): the words every
        surface and the agent's note use, one place."""
        who = clean(self.operator, 80) or "an operator"
        verb = "stopped" if self.stopped else "started"
        if self.at is None:
            return f"{verb} by {who}"
        seconds = (now - self.at).total_seconds()
        return f"{verb} by {who} " + (
            "just now" if seconds < 1 else f"{format_duration(seconds)} ago"
        )

    def to_json(self) -> str:
        """The record as written."""
        at = to_epoch_ms(self.at) if self.at is not None else 0
        record = WantedRecord(want=self.want.value, operator=self.operator, at=at)
        return record.model_dump_json(by_alias=True)

    @classmethod
    def parse(cls, raw: str | bytes) -> Wanted:
        """A record as read; raises PayloadError saying what is wrong with it."""
        record = WantedRecord.validated(load_json_object(raw, "wanted state"), "wanted state")
        try:
            at: datetime | None = datetime.fromtimestamp(record.at / 1000, UTC)
        except (OverflowError, ValueError, OSError):
            at = None
        return cls(Want(record.want), record.operator, at)


def parse_wanted(exchange_id: int, raw: object) -> Wanted | None:
    """The record of one exchange from a raw reply (a GET, a pipeline's reply),
    or None when there is none or it cannot be read: logged, never raised.

    Args:
        exchange_id: the exchange, to name its key in the log line.
        raw: the reply to `HGET key record`: None (no record), a string, or
            the error Redis answered.
    """
    if raw is None:
        return None
    key = keys.wanted_key(exchange_id)
    if isinstance(raw, BaseException):
        _told(key, clean(str(raw), 200))
        return None
    if not isinstance(raw, str | bytes):
        _told(key, f"unexpected reply {type(raw).__name__}")
        return None
    try:
        return Wanted.parse(raw)
    except PayloadError as exc:
        _told(key, clean(str(exc), 200))
        return None


WANTED_FIELD = "record"
"""The one field of the wanted hash: the record's JSON. A hash, not a string,
so the roles write and read it with commands they already hold (`HSET`,
`HGET`): a `SET` right would reach every status key on Redis 6.2, where
rights cannot differ per key."""

_TOLD: dict[str, str] = {}
"""The problem last logged per key: a poll every few seconds logs a bad
record once, not on every read."""


def _told(key: str, problem: str) -> None:
    if _TOLD.get(key) == problem:
        return
    if len(_TOLD) > 10_000:
        _TOLD.clear()
    _TOLD[key] = problem
    log.warning("%s is unreadable, treated as wanted started: %s", key, problem)


async def read_wanted(redis: RedisClient, exchange_id: int) -> Wanted | None:
    """What the operators last asked of `exchange_id` (None: nothing readable).

    Never raises for Redis: an outage or a refusal reads as None (logged),
    so a caller deciding whether to start treats it as no stop recorded.
    """
    try:
        raw = await redis.hget(keys.wanted_key(exchange_id), WANTED_FIELD)
    except REDIS_ERRORS as exc:
        return parse_wanted(exchange_id, exc)
    return parse_wanted(exchange_id, raw)


async def may_start_on_its_own(redis: RedisClient, exchange_id: int) -> Wanted | None:
    """Ask before an agent starts `exchange_id` without an operator asking now
    (`--autostart`, a restart after a crash): the stop record that forbids
    it, or None when it may start.

    Returns:
        The record saying an operator stopped the exchange (`Wanted.describe`
        words it: `stopped by root@vm 3m ago`), else None.
    """
    wanted = await read_wanted(redis, exchange_id)
    return wanted if wanted is not None and wanted.stopped else None


async def write_wanted(
    redis: RedisClient,
    exchange_id: int,
    want: Want,
    operator: str,
    *,
    clock: Clock = system_clock,
) -> Wanted:
    """Record what an operator asked: one `HSET` of one key, kept until the
    next `start` or `stop` replaces it (no expiry: a stop holds until it is
    lifted).

    Raises:
        redis errors: the record was not written (the caller says so).
    """
    wanted = Wanted(want, operator[:MAX_WANTED_OPERATOR_CHARS], clock())
    await redis.hset(keys.wanted_key(exchange_id), WANTED_FIELD, wanted.to_json())
    return wanted
