"""Owner tokens and the wire's timestamps, shared by the lease and agent presence."""

from __future__ import annotations

import threading
from datetime import datetime

from perseus_core.wire.timeutil import Clock, to_epoch_ms

_start_lock = threading.Lock()
_last_start_ms = 0


def make_instance_id(hostname: str, exchange_id: int, pid: int, start_ms: int) -> str:
    """The owner token of docs/wire-format.md 2.2: `{hostname}:{exchangeId}:{pid}:{startMs}`."""
    return f"{hostname}:{exchange_id}:{pid}:{start_ms}"


def unique_start_ms(moment: datetime) -> int:
    """`moment` in epoch ms, bumped so no two calls in this process return the same value.

    Two `Instance`s created in the same millisecond (or under a fixed test
    clock) would otherwise get the same owner token and each would mistake the
    other's key for its own.
    """
    global _last_start_ms
    with _start_lock:
        value = max(to_epoch_ms(moment), _last_start_ms + 1)
        _last_start_ms = value
        return value


def wire_now(clock: Clock) -> datetime:
    """`clock()` cut to whole milliseconds, the precision the wire keeps.

    Every timestamp Perseus stores in memory goes through this, so the
    in-memory status always equals what a reader parses back from Redis.
    """
    moment = clock()
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
