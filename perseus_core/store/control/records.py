"""The records both sides of the control channel share (docs/wire-format.md 1.5
and 2.3): what a sent command came to, what a server records of a claimed
command, and the limits and timings the sender and the server agree on.

The transport, all single-key operations so that it works on Redis Cluster:

- A command is one entry of the stream `perseus:commands:{exchangeId}`
  (trimmed by age: `MINID ~` the command expiry ago, on the server's clock)
  whose field `command` holds the command JSON. A stream, not a list or
  pub/sub, because entries stay after they are read: a server that was
  briefly disconnected, or started late, still finds them.
- Replies go to the list `perseus:replies:{correlationId}` (60 s expiry): `ack`
  as soon as a valid command is read, then `success` or `error`. A list keeps
  them until the sender pops them, so a sender that starts waiting late loses
  nothing.
- The hash `perseus:outcomes:{exchangeId}` maps correlation id to what
  happened to that command (`OutcomeRecord`: running, then its outcome).
  Claiming a command is one `HSETNX`, so a command runs at most once however
  often it is read or written: after a reconnect, after a restart of the
  server, when two servers watch the same exchange, or when a sender's `XADD`
  went through twice.
- Every command and its outcome (ping excepted: it changes nothing) is
  appended to the exchange's Perseus-only activity stream
  `perseus:activity:{name}` as `event=command` (the audit trail).
- An exchange held by a TypeScript (Livermore) server, or vacant with no agent
  of ours, is steered over Livermore's own pub/sub channel when the catalog
  names the Livermore owner identity (`sender.decide`, `livermore`).

Where a server starts reading: from the first entry added within the last
`command_expiry_ms` (by the Redis server's clock, which is also the clock of
stream IDs). Anything older would be answered `Command expired` anyway, so a
restart does not flood the audit trail with replies to old commands, and
anything newer is either still to run or already recorded in the outcomes
hash (a re-read of an entry that was handled is skipped without a word). So
no read position is persisted: the outcomes hash is the only state.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic_core import from_json
from redis.asyncio.retry import Retry
from redis.backoff import EqualJitterBackoff, NoBackoff
from redis.exceptions import NoPermissionError, OutOfMemoryError, ResponseError

from perseus_core.wire.errors import PayloadError, PerseusError
from perseus_core.wire.models import (
    MAX_COUNT,
    MAX_PAYLOAD_BYTES,
    MAX_PID,
    CatalogEntry,
    Command,
    InstanceStatus,
    ReplyStatus,
)
from perseus_core.wire.text import clean
from perseus_core.wire.timeutil import Clock, to_epoch_ms

COMMAND_FIELD = "command"
"""The stream-entry field that holds the command JSON."""

REPLY_TTL_S = 60
"""Expiry of a reply list, refreshed on every push."""

OUTCOME_RETENTION_MS = 600_000
"""How long a command's outcome is kept for de-duplication (10 minutes).

Long past the 30 s command expiry, so a repeat of the same command JSON is
either answered with the first outcome or, later, `Command expired`: never run.
"""

MAX_MESSAGE_CHARS = 2_000
"""The longest message an audit entry or a recorded outcome keeps."""

MAX_OPERATOR_CHARS = 256
"""The longest operator name a command may carry; a longer one is rejected
(the audit trail keeps the name whole, so it must be bounded before it runs)."""

MAX_PAYLOAD_DEPTH = 8
"""How deeply a command's payload may nest (objects and arrays); deeper is
rejected. The commands carry flat payloads: depth is only ever an attack."""

SALVAGE_MAX_BYTES = 1024 * 1024
"""The largest command entry whose JSON is parsed to salvage its correlation id
after it failed validation (an oversized command still gets its error reply);
beyond it, and for JSON that does not parse, only its opening is scanned."""

SALVAGE_SCAN_CHARS = 4_096
"""How much of an unparseable command is scanned for its correlation id."""

BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 2.0

NO_RETRY = Retry(NoBackoff(), 0)
"""The retry policy of every connection the channel opens: none in redis-py,
since a write whose reply was lost is retried only where a retry is harmless
or checked (see `CommandServer` and `ControlClient.submit`)."""

RUNNING = "running"
"""`OutcomeRecord.state` of a claimed command that has no outcome yet."""

DONE = "done"
"""`OutcomeRecord.state` of a command whose outcome is recorded."""

INTERRUPTED_MESSAGE = (
    "interrupted: the agent stopped while running this command (it may have partly run); "
    "not run again"
)
"""The outcome of a command whose server stopped (or died) while running it."""


def now_ms(clock: Clock) -> int:
    """`clock()` in epoch milliseconds, the unit of command timestamps."""
    return to_epoch_ms(clock())


RETRY_BACKOFF = EqualJitterBackoff(cap=BACKOFF_MAX_S, base=BACKOFF_FIRST_S)
"""The retry policy of the control channel: from 0.1 s up to 2 s, with jitter
so that servers do not reconnect in lockstep (`compute(failures)`)."""


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether Redis refused a write for want of memory (`maxmemory` reached
    under `noeviction`), also inside a script (Redis 6.2 reports that as a
    script error quoting `-OOM`). Unlike other refusals it passes by itself
    once memory is freed, so the server waits it out."""
    return isinstance(exc, OutOfMemoryError) or (
        isinstance(exc, ResponseError) and "OOM command not allowed" in str(exc)
    )


_SCRIPT_WRAPPER_RE = re.compile(
    r"^Error running script \(call to [^)]*\):(?: ?@user_script: ?\d+:)* -?"
)


def refusal_reason(exc: BaseException) -> str:
    """Redis's refusal in one short line with its error code first (`OOM
    command not allowed ...`, `WRONGTYPE Operation against ...`, `NOPERM ...`):
    without the wrapping a script adds (its sha, its line), and with the code
    redis-py strips from the errors it maps to classes."""
    text = _SCRIPT_WRAPPER_RE.sub("", str(exc).strip())
    text = text.split(" script: ")[0].rstrip(". ")
    if isinstance(exc, OutOfMemoryError) and not text.startswith("OOM"):
        text = f"OOM {text}"
    elif isinstance(exc, NoPermissionError) and not text.startswith("NOPERM"):
        text = f"NOPERM {text}"
    return clean(text, 200) or type(exc).__name__


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """How a sent command ended, whichever channel carried it.

    `status` is None when the command was acknowledged but no result came
    within the result timeout (it may still be running); `message` says so.
    `acked` is False when the first answer was already final, as for a
    command rejected before it was accepted (malformed, unknown type, expired).
    """

    correlation_id: str
    acked: bool
    status: ReplyStatus | None
    message: str | None
    data: dict[str, Any] | None

    @classmethod
    def no_result(cls, correlation_id: str, result_ms: int) -> CommandOutcome:
        """Acknowledged, but no final answer within the result timeout."""
        return cls(
            correlation_id,
            True,
            None,
            f"acknowledged, but no result within {result_ms / 1000:g} s "
            "(the command may still be running)",
            None,
        )

    @property
    def ok(self) -> bool:
        """True when the command succeeded."""
        return self.status is ReplyStatus.SUCCESS


class NoAgentAnswered(PerseusError):
    """No server acknowledged a command within the ack timeout."""

    def __init__(
        self, exchange_id: int, timeout_ms: int, correlation_id: str, *, who: str | None = None
    ) -> None:
        self.exchange_id = exchange_id
        self.timeout_ms = timeout_ms
        self.correlation_id = correlation_id
        super().__init__(
            f"no agent answered in {timeout_ms / 1000:g} s: check that "
            + (who or f"an agent for exchange {exchange_id}")
            + " is running"
        )


class OutcomeUnknown(PerseusError):
    """The command was sent (or may have been), then the connection to Redis was
    lost before its outcome arrived: it may have run, or may still run (at most
    once). Not the same as "not sent" (`RedisUnavailable`): retrying blindly
    could act twice, so the operator should look (ping, status) first."""

    def __init__(self, correlation_id: str, detail: str) -> None:
        self.correlation_id = correlation_id
        super().__init__(
            f"sent, outcome unknown (Redis connection lost): {detail}; "
            f"correlation id {correlation_id}"
        )


class CommandNotSent(PerseusError):
    """Redis refused to append the command to its stream (a key of the wrong
    type, out of memory): it was not sent, nothing will run.
    `__cause__` is Redis's error."""

    def __init__(self, key: str, exc: BaseException) -> None:
        self.key = key
        super().__init__(
            f"Redis refused XADD {clean(key, 200)}: {refusal_reason(exc)}; the command was not sent"
        )


class RedisOutOfMemory(PerseusError):
    """The command was sent, no agent acknowledged it, and Redis is out of
    memory: no agent can take or answer a command until memory is freed. The
    command waits in its stream: it runs if memory is freed before it
    expires, and is answered `Command expired` (not run) otherwise."""

    def __init__(self, correlation_id: str, timeout_ms: int, memory: str) -> None:
        self.correlation_id = correlation_id
        super().__init__(
            f"sent, but not acknowledged in {timeout_ms / 1000:g} s: Redis is out of memory "
            f"({memory}), so no agent can take or answer a command; it runs if memory is "
            f"freed before it expires, else it is answered 'Command expired' (not run); "
            f"correlation id {correlation_id}"
        )


@dataclass(frozen=True, slots=True)
class CommandMeta:
    """What an audit entry and a reply need to know about a command, even a
    malformed one (whatever could be salvaged from it)."""

    correlation_id: str
    command: str
    operator: str

    @classmethod
    def of(cls, command: Command) -> CommandMeta:
        return cls(command.correlation_id, command.type, command.operator[:MAX_OPERATOR_CHARS])

    @classmethod
    def salvage(cls, raw: str | None) -> CommandMeta:
        """Best-effort fields of an unparseable command, so that its sender
        still gets an error reply when its correlation id can be read.

        Bounded whatever the input: pydantic-core's parser limits nesting
        depth (a ValueError, never a RecursionError), only entries up to
        `SALVAGE_MAX_BYTES` are parsed, and what does not parse (too deep,
        too large, broken) is scanned in its first `SALVAGE_SCAN_CHARS` for
        `"correlationId":"..."` and `"type":"..."`.
        """
        if raw is None:
            return cls("", "", "")
        data: Any = None
        if len(raw) <= SALVAGE_MAX_BYTES:
            with contextlib.suppress(ValueError):
                data = from_json(raw)
        if not isinstance(data, dict):
            head = raw[:SALVAGE_SCAN_CHARS]
            data = {
                name: match.group(1)
                for name, match in (
                    ("correlationId", _CID_RE.search(head)),
                    ("type", _TYPE_RE.search(head)),
                )
                if match is not None
            }
        cid = data.get("correlationId")
        kind = data.get("type")
        payload = data.get("payload")
        operator = payload.get("operator") if isinstance(payload, dict) else None
        return cls(
            cid if isinstance(cid, str) and 0 < len(cid) <= 128 else "",
            kind[:64] if isinstance(kind, str) else "",
            operator[:MAX_OPERATOR_CHARS] if isinstance(operator, str) else "",
        )


_CID_RE = re.compile(r'"correlationId"\s*:\s*"([^"\\]{1,128})"')
_TYPE_RE = re.compile(r'"type"\s*:\s*"([^"\\]{1,64})"')


@dataclass(frozen=True, slots=True)
class OutcomeRecord:
    """One field of the outcomes hash: a command that was claimed.

    `entry` is the stream ID it was read from: the same ID again means a re-read
    (after a reconnect or restart, or by a second server) and is skipped; a
    different ID means the command was written twice and the repeat is
    answered with the first outcome. `server`, `hostname` and `pid` say who
    claimed it, so that a server can recognise its own claim after a lost
    reply, and a command left `running` by a process that died on this host.
    """

    state: str
    entry: str
    server: str
    hostname: str
    pid: int
    at: int
    command: str = ""
    status: str = ""
    message: str = ""
    data: dict[str, Any] | None = None

    def to_json(self) -> str:
        body = {
            "state": self.state,
            "entry": self.entry,
            "server": self.server,
            "hostname": self.hostname,
            "pid": self.pid,
            "at": self.at,
            "command": self.command,
        }
        if self.state == DONE:
            body.update(status=self.status, message=self.message, data=self.data)
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | None) -> OutcomeRecord:
        """Parse a record; an unreadable one counts as handled (never re-run)."""
        data: Any = None
        if raw is not None and len(raw) <= 4 * MAX_PAYLOAD_BYTES:
            with contextlib.suppress(ValueError, RecursionError):
                data = json.loads(raw)
        if not isinstance(data, dict):
            return cls(
                DONE,
                "",
                "",
                "",
                0,
                0,
                status=ReplyStatus.ERROR.value,
                message="already handled (its recorded outcome is unreadable)",
            )

        def text(name: str) -> str:
            value = data.get(name)
            return value if isinstance(value, str) else ""

        def number(name: str, limit: int) -> int:
            """An integer within 0..limit; anything else reads as 0 (unknown)."""
            value = data.get(name)
            if isinstance(value, bool) or not isinstance(value, int):
                return 0
            return value if 0 <= value <= limit else 0

        status = text("status")
        if status not in (ReplyStatus.SUCCESS.value, ReplyStatus.ERROR.value):
            status = ReplyStatus.ERROR.value
        extra = data.get("data")
        return cls(
            RUNNING if text("state") == RUNNING else DONE,
            text("entry"),
            text("server"),
            text("hostname"),
            number("pid", MAX_PID),
            number("at", MAX_COUNT),
            text("command"),
            status,
            text("message"),
            extra if isinstance(extra, dict) else None,
        )


_Payload = TypeVar("_Payload", InstanceStatus, CatalogEntry)


def parse_or_none(model: type[_Payload], raw: object) -> _Payload | None:
    """A status or catalog payload read as part of sending a command, or None
    for a missing, unreadable or wrong-type key (a read of the exchange's
    holder or entry that must not stop the command: what it cannot tell is
    treated as unknown)."""
    if not isinstance(raw, str | bytes):
        return None
    try:
        return model.from_json(raw)
    except PayloadError:
        return None
