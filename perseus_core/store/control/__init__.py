"""The control channel (docs/wire-format.md 1.5 and 2.3): operators send commands, one
server per exchange runs them.

Transport, all single-key operations so it works on Redis Cluster:

- A command is one entry of the stream `perseus:commands:{exchangeId}`
  (trimmed by age: `MINID ~` the command expiry ago, on the server's clock)
  whose field `command` holds the command JSON. A stream,
  not a list or pub/sub, because entries stay after they are read: a server
  that was briefly disconnected, or started late, still finds them.
- Replies go to the list `perseus:replies:{correlationId}` (60 s expiry): `ack`
  as soon as a valid command is read, then `success` or `error`. A list keeps
  them until the sender pops them, so a sender that starts waiting late loses
  nothing.
- The hash `perseus:outcomes:{exchangeId}` maps correlation id to what
  happened to that command (running, then its outcome). Claiming a command is
  one `HSETNX`, so a command runs at most once however often it is read or
  written: after a reconnect, after a restart of the server, when two servers
  watch the same exchange, or when a sender's `XADD` went through twice.
- Every command and its outcome (ping excepted: it changes nothing) is
  appended to the exchange's Perseus-only activity stream
  `perseus:activity:{name}` as `event=command` (the audit trail).
- A slot held by a TypeScript (Livermore) server, or vacant with no agent of
  ours, is steered over Livermore's own pub/sub channel when the catalog
  names the owner's identity (`routing`, `livermore`).

Where a server starts reading: from the first entry added within the last
`command_expiry_ms` (by the Redis server's clock, which is also the clock of
stream IDs). Anything older would be answered `Command expired` anyway, so a
restart does not flood the audit trail with replies to old commands, and
anything newer is either still to run or already recorded in the outcomes
hash (a re-read of an entry that was handled is skipped without a word). So
no read position is persisted: the outcomes hash is the only state.
"""

from perseus_core.store.control.client import ControlClient
from perseus_core.store.control.common import (
    COMMAND_FIELD,
    OUTCOME_RETENTION_MS,
    REPLY_TTL_S,
    CommandHandler,
    HandlerResult,
    IdentityProvider,
)
from perseus_core.store.control.livermore import LivermoreBridge, NoLivermoreListener, NotSteerable
from perseus_core.store.control.outcome import CommandOutcome, NoAgentAnswered, OutcomeUnknown
from perseus_core.store.control.routing import Route, Via, decide, refused_line
from perseus_core.store.control.server import INTERRUPTED_MESSAGE, CommandServer

__all__ = [
    "COMMAND_FIELD",
    "INTERRUPTED_MESSAGE",
    "OUTCOME_RETENTION_MS",
    "REPLY_TTL_S",
    "CommandHandler",
    "CommandOutcome",
    "CommandServer",
    "ControlClient",
    "HandlerResult",
    "IdentityProvider",
    "LivermoreBridge",
    "NoAgentAnswered",
    "OutcomeUnknown",
    "NoLivermoreListener",
    "NotSteerable",
    "Route",
    "Via",
    "decide",
    "refused_line",
]
