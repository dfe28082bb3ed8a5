"""Constants and types shared by the control client and server."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from perseus_core.plumbing.retry import Backoff
from perseus_core.wire.models import (
    Command,
    CommandType,
    ReplyStatus,
)
from perseus_core.wire.timeutil import Clock, to_epoch_ms

log = logging.getLogger(__name__)

APPEND_COMMAND_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local args = {'MINID', '~', string.format('%d', now - tonumber(ARGV[1])), '*'}
for i = 2, #ARGV do args[#args + 1] = ARGV[i] end
return redis.call('XADD', KEYS[1], unpack(args))
"""
"""KEYS: the command stream. ARGV: the command expiry in ms, then field, value...

Appends a command and trims the stream by age: entries older than the
command expiry, by the Redis server's clock (the clock of stream IDs). Those
would be answered `Command expired` anyway, so no unread live command is ever
dropped, however many are sent (a cap by length would drop the oldest unread
ones in a flood)."""

REPLY_TTL_S = 60
"""Expiry of a reply list, refreshed on every push."""

OUTCOME_RETENTION_MS = 600_000
"""How long a command's outcome is kept for de-duplication (10 minutes).

Long past the 30 s command expiry, so a repeat of the same command JSON is
either answered with the first outcome or, later, `Command expired`: never run.
"""

COMMAND_FIELD = "command"
"""The stream-entry field that holds the command JSON."""

MAX_MESSAGE_CHARS = 2_000
READ_COUNT = 100
PRUNE_EVERY = 100
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 2.0
KNOWN_TYPES = tuple(t.value for t in CommandType)

HandlerResult = tuple[ReplyStatus, str | None, dict[str, Any] | None]
"""What a handler returns: `success` or `error`, a message for a person, optional data."""

CommandHandler = Callable[[Command], Awaitable[HandlerResult]]
"""Runs one valid, unexpired, first-time command (start, stop or ping).

It may also raise `CommandRejected`, or any other `PerseusError` (such as a
claim conflict naming the holder): its message becomes the `error` reply. Any
other exception is answered as an internal error and logged; the server keeps
serving. It is never called for the same correlation id twice, and never
while another call for the same exchange is in progress.
"""

IdentityProvider = Callable[[], tuple[str, str | None]]
"""Returns `(hostname, ip or None)` for audit entries; called per entry so a
public IP detected after start-up shows up as soon as it is known."""

NO_RETRY = Retry(NoBackoff(), 0)


def now_ms(clock: Clock) -> int:
    """`clock()` in epoch milliseconds, the unit of command timestamps."""
    return to_epoch_ms(clock())


def new_backoff() -> Backoff:
    """The retry policy of the control channel: from 0.1 s up to 2 s, with
    jitter so that servers do not reconnect in lockstep."""
    return Backoff(initial_s=BACKOFF_FIRST_S, max_s=BACKOFF_MAX_S)
