"""What each Perseus role needs Redis to let it do, and whether the connected
user may: `probe_roles` asks Redis (without running anything: see `rights`)
about every command a role sends, grouped by what the role does with them.

- agent (of one exchange): hold its status key (claim, heartbeat and release
  scripts, the fencing epoch), write its activity streams, read its command
  stream and what the operators want of its exchange, answer commands and
  record their outcomes, announce its presence, add its exchange to the catalog;
- viewer: list the exchanges, read every exchange's status, its agents and
  its activity; dating heartbeats on Redis's clock takes read-only scripts,
  which a reader does without (less precisely) when refused;
- operator: all a viewer does, plus send commands to agents (recording
  what it wants of the exchange), edit the catalog and steer Livermore
  servers over their channels.

A role is fit for its purpose when nothing it requires is refused. The
commands are the ones the library sends; docs/production-redis.md grants
each role exactly these.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from redis.exceptions import ResponseError

from perseus_core.plumbing.scripts import read_script_command
from perseus_core.plumbing.topology import RedisClient
from perseus_core.store.control.scripts import (
    APPEND_COMMAND_LUA,
    CLAIM_LUA,
    RECORD_LUA,
    REPLY_LUA,
)
from perseus_core.store.doctor.rights import Answer, Method, Right, check_rights
from perseus_core.store.lease.scripts import EPOCH_FLOOR_LUA, HEARTBEAT_LUA
from perseus_core.store.network.catalog import field_id, parse_catalog_payload
from perseus_core.store.network.reader import LIVE_MEMBERS_LUA, PTTL_SCRIPT
from perseus_core.store.presence import PUBLISH_LUA
from perseus_core.store.wanted import WANTED_FIELD
from perseus_core.wire import keys
from perseus_core.wire.errors import PayloadError
from perseus_core.wire.models import CatalogEntry, InstanceStatus
from perseus_core.wire.text import clean

BROKEN_LUA = "return ("
"""A script that does not compile: `EVAL` of it is refused on its source,
after the ACL check of the command and its keys."""

NO_SUCH_SHA = "0" * 40
"""No script has this digest: `EVALSHA` of it answers NOSCRIPT after the ACL check."""


class Role(StrEnum):
    """The three documented roles of docs/production-redis.md."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    AGENT = "agent"


@dataclass(frozen=True, slots=True)
class Target:
    """What the roles are checked on.

    Attributes:
        exchange_id: the agent's exchange, and the exchange a reader's and an
            operator's commands name.
        exchange_name: its lower-cased name (the activity streams are named by
            it); None when nothing says it.
        other_id: another exchange, which an agent of `exchange_id` must not
            be able to read for the fleet's readers to be told apart from it.
    """

    exchange_id: int
    exchange_name: str | None
    other_id: int

    @property
    def described(self) -> str:
        """`exchange 4 (kraken)`."""
        name = f" ({clean(self.exchange_name, 60)})" if self.exchange_name else ""
        return f"exchange {self.exchange_id}{name}"


@dataclass(frozen=True, slots=True)
class Ability:
    """One thing a role does, and every command it takes.

    Attributes:
        does: what it is, in words that follow "can" and "cannot".
        rights: the commands.
        required: whether the role is unfit without it (a reader without its
            read-only scripts still works, less precisely).
        not_checked: why it could not be checked at all ("" when it was).
    """

    does: str
    rights: tuple[Right, ...]
    required: bool = True
    not_checked: str = ""


@dataclass(frozen=True, slots=True)
class AbilityResult:
    """An ability and what Redis answered for each of its commands."""

    ability: Ability
    refused: tuple[tuple[Right, Answer], ...]
    unchecked: tuple[tuple[Right, Answer], ...]

    @property
    def ok(self) -> bool | None:
        """False: a command is refused; None: nothing refused, not all checked."""
        if self.refused:
            return False
        return None if self.unchecked or self.ability.not_checked else True

    @property
    def labels(self) -> str:
        """The refused commands: `XADD perseus:commands:4, BLPOP perseus:replies:*`."""
        return ", ".join(dict.fromkeys(right.label for right, _ in self.refused))

    def to_dict(self) -> dict[str, Any]:
        """For `--json`."""
        return {
            "does": self.ability.does,
            "required": self.ability.required,
            "ok": self.ok,
            "refused": list(dict.fromkeys(_refusal(r, a) for r, a in self.refused)),
            "not_checked": [f"{r.label}: {a.reason}" for r, a in self.unchecked]
            + ([self.ability.not_checked] if self.ability.not_checked else []),
        }


def _refusal(right: Right, answer: Answer) -> str:
    """`this user may not XADD perseus:commands:4 (Redis's words)`."""
    words = f" ({answer.reason})" if answer.reason else ""
    return f"this user may not {right.label}{words}"


@dataclass(frozen=True, slots=True)
class RoleResult:
    """Whether the user may act as one role, ability by ability."""

    role: Role
    target: Target
    abilities: tuple[AbilityResult, ...]

    @property
    def fit(self) -> bool:
        """Nothing the role requires is refused."""
        return all(a.ok is not False for a in self.abilities if a.ability.required)

    @property
    def purpose(self) -> str:
        """What the role is for, after "can"."""
        if self.role is Role.AGENT:
            return f"run the agent of {self.target.described}"
        if self.role is Role.OPERATOR:
            return "read the fleet, send commands, edit the catalog and steer Livermore servers"
        return "read the fleet"

    @property
    def missing(self) -> list[AbilityResult]:
        """The required abilities refused."""
        return [a for a in self.abilities if a.ability.required and a.ok is False]

    @property
    def refusals(self) -> list[str]:
        """One line per refused command, with Redis's words."""
        lines = (_refusal(r, a) for ability in self.abilities for r, a in ability.refused)
        return list(dict.fromkeys(lines))

    def line(self) -> str:
        """One line: what this user can or cannot do in the role (the
        commands refused are in `details`)."""
        if self.fit:
            text = f"can {self.purpose}"
        else:
            text = "cannot " + ", ".join(a.ability.does for a in self.missing)
        optional = [
            a.ability.does for a in self.abilities if not a.ability.required and a.ok is False
        ]
        if optional:
            text += "; without " + ", ".join(optional)
        unchecked = [a.ability.does for a in self.abilities if a.ok is None]
        if unchecked:
            text += "; not checked: " + ", ".join(unchecked)
        return text

    @property
    def details(self) -> list[str]:
        """A line per ability refused (the commands refused; Redis's words
        are in `to_dict`), then per ability not wholly checked, and why."""
        lines = [f"{a.ability.does}: may not {a.labels}" for a in self.abilities if a.refused]
        for result in self.abilities:
            lines += [f"not checked: {r.label} ({a.reason})" for r, a in result.unchecked]
            if result.ability.not_checked:
                lines.append(f"not checked: {result.ability.does} ({result.ability.not_checked})")
        return lines

    def to_dict(self) -> dict[str, Any]:
        """For `--json`."""
        return {
            "fit": self.fit,
            "exchangeId": self.target.exchange_id,
            "exchangeName": self.target.exchange_name,
            "line": self.line(),
            "abilities": [a.to_dict() for a in self.abilities],
        }


@dataclass(frozen=True, slots=True)
class Roles:
    """Every role probed, and how.

    Attributes:
        method: how Redis was asked (`rights.Method`).
        via: the same in a few words, for the report.
        results: per role probed.
        out_of_memory: Redis's words when it refused a probe for want of memory.
    """

    method: Method
    via: str
    results: dict[Role, RoleResult]
    out_of_memory: str = ""

    def fit(self, role: Role) -> bool:
        """Whether the user may act as `role` (False when it was not probed)."""
        result = self.results.get(role)
        return result is not None and result.fit

    @property
    def names(self) -> list[str]:
        """The roles the user is fit for, `viewer` first."""
        return [role.value for role in Role if self.fit(role)]

    @property
    def refusals(self) -> list[str]:
        """Every refused command of every role probed, without repeats."""
        return list(dict.fromkeys(r for result in self.results.values() for r in result.refusals))

    def summary(self) -> str:
        """`This user can run the agent of exchange 4 (kraken); it cannot list
        the exchanges, read every exchange's status, ...`."""
        fit = [self.results[role] for role in Role if self.fit(role)]
        if any(r.role is Role.OPERATOR for r in fit):
            fit = [r for r in fit if r.role is not Role.VIEWER]  # the operator reads too
        cannot = list(
            dict.fromkeys(
                a.ability.does
                for result in self.results.values()
                if not result.fit
                for a in result.missing
            )
        )
        if not fit:
            return "This user can act as no Perseus role: it cannot " + ", ".join(cannot) + "."
        text = "This user can " + "; it can also ".join(r.purpose for r in fit)
        return text + (f"; it cannot {', '.join(cannot)}." if cannot else ".")


async def find_target(
    redis: RedisClient, exchange_id: int | None, exchange_name: str | None
) -> Target:
    """The exchange to check the roles on: `exchange_id`, else the catalog's
    lowest id, else 1; its name from `exchange_name`, else the catalog, else
    the status key of whoever holds it. Reads this user may not make are
    skipped (an agent may read only its own entry and status key)."""
    catalog: dict[str, str] = {}
    if exchange_id is None:
        try:
            catalog = {str(k): str(v) for k, v in (await redis.hgetall(keys.CATALOG_KEY)).items()}
        except ResponseError:
            catalog = {}
    ids = sorted(i for i in (field_id(f) for f in catalog) if i >= 0)
    chosen = exchange_id if exchange_id is not None else (ids[0] if ids else 1)
    others = [i for i in ids if i != chosen]
    other = others[0] if others else chosen + 1
    name = exchange_name.lower() if exchange_name else await _name_of(redis, chosen, catalog)
    return Target(chosen, name, other)


async def _name_of(redis: RedisClient, exchange_id: int, catalog: dict[str, str]) -> str | None:
    """The exchange's name in the catalog, else in its status key."""
    raw: Any = catalog.get(str(exchange_id))
    try:
        if raw is None and not catalog:  # not read as a whole: ask for the one entry
            raw = await redis.hget(keys.CATALOG_KEY, str(exchange_id))
    except ResponseError:
        raw = None
    if raw is not None:
        entry = parse_catalog_payload(str(raw))
        if isinstance(entry, CatalogEntry):
            return entry.name.lower()
    try:
        status = await redis.get(keys.status_key(exchange_id))
    except ResponseError:
        return None
    if status is None:
        return None
    try:
        return InstanceStatus.from_json(status).exchange_name.lower() or None
    except PayloadError:
        return None


async def probe_roles(
    redis: RedisClient, target: Target, roles: Iterable[Role] = tuple(Role)
) -> Roles:
    """Whether the user may act as each of `roles` on `target`, asked of
    Redis without running anything (see `rights`)."""
    wanted = list(dict.fromkeys(roles))
    reader_script = "EVAL"
    if Role.VIEWER in wanted or Role.OPERATOR in wanted:
        reader_script = await read_script_command(redis)
    plans = {role: abilities(role, target, reader_script) for role in wanted}
    rights = [right for plan in plans.values() for ability in plan for right in ability.rights]
    checked = await check_rights(redis, rights)
    results = {
        role: RoleResult(role, target, tuple(_result(a, checked.answers) for a in plan))
        for role, plan in plans.items()
    }
    return Roles(checked.method, checked.via, results, checked.out_of_memory)


def _result(ability: Ability, answers: Mapping[Right, Answer]) -> AbilityResult:
    found = [(right, answers[right]) for right in ability.rights]
    return AbilityResult(
        ability,
        tuple((r, a) for r, a in found if a.allowed is False),
        tuple((r, a) for r, a in found if a.allowed is None),
    )


# --- what each role sends ---------------------------------------------------------------


_SAME: tuple[str, ...] = ()


def _right(
    *command: str,
    probe: tuple[str, ...] | None = _SAME,
    key: str | None = None,
    shown: str | None = None,
) -> Right:
    """A right whose key is `command[1]` unless given, labelled `VERB key`
    (`shown` in place of a random key name), probed as sent unless given."""
    key = key if key is not None else (command[1] if len(command) > 1 else None)
    label = f"{command[0]} {shown or key}" if shown or key else command[0]
    return Right(command, command if probe is _SAME else probe, key or None, label)


def _evalsha(source: str, key: str, shown: str | None = None) -> Right:
    """A write script run by digest on one key, as the agent runs them."""
    digest = hashlib.sha1(source.encode()).hexdigest()
    return _right(
        "EVALSHA", digest, "1", key, probe=("EVALSHA", NO_SUCH_SHA, "1", key), key=key, shown=shown
    )


def _random() -> str:
    return f"perseus-doctor-{uuid.uuid4().hex}"


def abilities(role: Role, target: Target, reader_script: str = "EVAL") -> tuple[Ability, ...]:
    """What `role` does on `target`, command by command; `reader_script` is
    the command a reader sends its read-only scripts with (`EVAL_RO` where
    Redis has it and the user may run it)."""
    if role is Role.AGENT:
        return _agent(target)
    fleet = _reader(target, reader_script)
    return fleet if role is Role.VIEWER else fleet + _operator(target)


def _agent(target: Target) -> tuple[Ability, ...]:
    n = target.exchange_id
    status, epoch = keys.status_key(n), keys.epoch_key(n)
    outcomes, presence, commands = keys.outcomes_key(n), keys.agents_key(n), keys.commands_key(n)
    replies, field = keys.replies_key(_random()), _random()
    shown_replies = keys.replies_key("*")
    in_script = "(in a script)"
    hold = Ability(
        "hold its status key (claim, heartbeat, release, fencing epoch)",
        (
            _right(
                "SET", status, "{}", "PX", "45000", "NX", probe=("SET", status, "{}", "PX", "0")
            ),
            _right("GET", status),
            _right("PTTL", status),
            _right(
                "SCRIPT",
                "LOAD",
                HEARTBEAT_LUA,
                probe=("SCRIPT", "LOAD", BROKEN_LUA),
                key="",
                shown="LOAD",
            ),
            _evalsha(HEARTBEAT_LUA, status),
            _right("DEL", status, probe=None, shown=f"{status} {in_script}"),
            _right("INCRBY", epoch, "1", probe=("INCRBY", epoch, "x")),
            _evalsha(EPOCH_FLOOR_LUA, epoch),
            _right("GET", epoch),
            _right("SET", epoch, "1", probe=("SET", epoch, "1", "PX", "0")),
        ),
    )
    if target.exchange_name:
        streams = tuple(
            right
            for key in (
                keys.activity_key(target.exchange_name),
                keys.perseus_activity_key(target.exchange_name),
            )
            for right in (
                _right(
                    "XADD",
                    key,
                    "MINID",
                    "~",
                    "0",
                    "*",
                    "event",
                    "error",
                    probe=("XADD", key, "0-0", "event", "error"),
                ),
                _right("XREVRANGE", key, "+", "-", "COUNT", "1"),
            )
        )
        write = Ability("write its activity streams", (*streams, _right("TIME")))
    else:
        write = Ability(
            "write its activity streams",
            (),
            not_checked=f"no name for exchange {n} in the catalog or a status key:"
            " give --exchange-name",
        )
    read = Ability(
        "read its commands",
        (
            _right("HGET", keys.wanted_key(n), WANTED_FIELD),
            _right(
                "XREAD",
                "COUNT",
                "1",
                "BLOCK",
                "1",
                "STREAMS",
                commands,
                "$",
                key=commands,
                probe=("XREAD", "COUNT", "1", "STREAMS", commands, "$"),
            ),
        ),
    )
    answer = Ability(
        "answer commands and record their outcomes",
        (
            _evalsha(REPLY_LUA, replies, shown=shown_replies),
            _right("RPUSH", replies, "{}", probe=None, shown=shown_replies),
            _right("EXPIRE", replies, "60", probe=("EXPIRE", replies, "x"), shown=shown_replies),
            _evalsha(CLAIM_LUA, outcomes),
            _evalsha(RECORD_LUA, outcomes),
            _right("HSETNX", outcomes, field, "{}", probe=None),
            _right("HGET", outcomes, field),
            _right("HSET", outcomes, field, "{}", probe=("HSET", outcomes, field, "{}", field)),
            _right("PEXPIRE", outcomes, "60000", probe=("PEXPIRE", outcomes, "x")),
            # Pruning the records past their retention: a scan, and a field
            # that cannot exist is deleted for the probe.
            _right("HSCAN", outcomes, "0", "COUNT", "1"),
            _right("HDEL", outcomes, field),
        ),
    )
    announce = Ability(
        "announce its presence",
        (
            _evalsha(PUBLISH_LUA, presence),
            _right(
                "ZREMRANGEBYSCORE",
                presence,
                "-inf",
                "0",
                probe=("ZREMRANGEBYSCORE", presence, "x", "x"),
            ),
            _right("ZRANGE", presence, "0", "-1"),
            _right("ZREM", presence, field),
            _right("ZADD", presence, "1", field, probe=("ZADD", presence, "NX", "XX", "1", field)),
            _right("PTTL", presence),
            _right("PEXPIRE", presence, "60000", probe=("PEXPIRE", presence, "x")),
        ),
    )
    output = keys.output_key(n)
    keep = Ability(
        "keep its child's output",
        (
            _right(
                "XADD",
                output,
                "MAXLEN",
                "~",
                "500",
                "*",
                "stream",
                "stdout",
                probe=("XADD", output, "0-0", "stream", "stdout"),
            ),
            _right("PEXPIRE", output, "60000", probe=("PEXPIRE", output, "x")),
        ),
    )
    register = Ability(
        "add its exchange to the catalog",
        (
            _right("HGET", keys.CATALOG_KEY, str(n)),
            _right("HSETNX", keys.CATALOG_KEY, str(n), "{}", probe=None),
        ),
    )
    return (hold, write, read, answer, announce, keep, register)


def _reader(target: Target, script: str) -> tuple[Ability, ...]:
    n, other = target.exchange_id, target.other_id
    status, presence = keys.status_key(n), keys.agents_key(n)
    name = target.exchange_name or f"exchange-{n}"
    listing = Ability(
        "list the exchanges",
        (
            _right("HGETALL", keys.CATALOG_KEY),
            _right("SCAN", "0", "MATCH", keys.STATUS_KEY_PATTERN, "COUNT", "100", key=""),
        ),
    )
    statuses = Ability(
        "read every exchange's status",
        (
            _right("MGET", status),
            _right("MGET", keys.status_key(other)),
            _right("TYPE", status),
            _right("ZREVRANGEBYSCORE", presence, "+inf", "0", "LIMIT", "0", "1"),
            _right("HGET", keys.wanted_key(n), WANTED_FIELD),
        ),
    )
    activity = Ability(
        "read the activity and the children's output",
        (
            *(
                right
                for key in (keys.activity_key(name), keys.perseus_activity_key(name))
                for right in (
                    _right("XREVRANGE", key, "+", "-", "COUNT", "1"),
                    _right("XREAD", "COUNT", "1", "STREAMS", key, "0-0", key=key),
                    _right("XLEN", key),
                )
            ),
            _right("XREVRANGE", keys.output_key(n), "+", "-", "COUNT", "1"),
            _right("TIME"),
        ),
    )
    clock = Ability(
        "dating heartbeats and presence on Redis's clock (read-only scripts)",
        (
            _right(
                script,
                PTTL_SCRIPT,
                "1",
                status,
                probe=(script, BROKEN_LUA, "1", status),
                key=status,
            ),
            _right("PTTL", status),
            _right(
                script,
                LIVE_MEMBERS_LUA,
                "1",
                presence,
                "1",
                probe=(script, BROKEN_LUA, "1", presence),
                key=presence,
            ),
            _right("ZRANGE", presence, "0", "-1"),
        ),
        required=False,
    )
    return (listing, statuses, activity, clock)


def _operator(target: Target) -> tuple[Ability, ...]:
    n = target.exchange_id
    commands, replies = keys.commands_key(n), keys.replies_key(_random())
    name = target.exchange_name or f"exchange-{n}"
    identity = _random()
    send = Ability(
        "send commands to agents",
        (
            _right(
                "XADD",
                commands,
                "MAXLEN",
                "~",
                "1000",
                "*",
                "command",
                "{}",
                probe=("XADD", commands, "0-0", "command", "{}"),
            ),
            _right(
                "EVAL",
                APPEND_COMMAND_LUA,
                "1",
                commands,
                "30000",
                probe=("EVAL", BROKEN_LUA, "1", commands),
                key=commands,
            ),
            _right(
                "BLPOP", replies, "1", probe=("BLPOP", replies, "x"), shown=keys.replies_key("*")
            ),
            _right("ZCARD", keys.agents_key(n)),
            _right(
                "HSET",
                keys.wanted_key(n),
                WANTED_FIELD,
                "{}",
                probe=("HSET", keys.wanted_key(n), WANTED_FIELD, "{}", "x"),
            ),
        ),
    )
    field = _random()
    edit = Ability(
        "edit the catalog",
        (
            _right(
                "HSET",
                keys.CATALOG_KEY,
                str(n),
                "{}",
                probe=("HSET", keys.CATALOG_KEY, str(n), "{}", "x"),
            ),
            _right("HSETNX", keys.CATALOG_KEY, str(n), "{}", probe=None),
            _right("HGET", keys.CATALOG_KEY, str(n)),
            _right("HDEL", keys.CATALOG_KEY, str(n), probe=("HDEL", keys.CATALOG_KEY, field)),
        ),
    )
    sent, heard = (
        keys.livermore_commands_channel(identity),
        keys.livermore_responses_channel(identity),
    )
    steer = Ability(
        "steer Livermore servers",
        (
            _right(
                "PUBSUB",
                "NUMSUB",
                sent,
                key=sent,
                shown=f"NUMSUB {keys.livermore_commands_channel('*')}",
            ),
            _right("PUBLISH", sent, "", shown=keys.livermore_commands_channel("*")),
            _right("SUBSCRIBE", heard, shown=keys.livermore_responses_channel("*")),
            _right(
                "XADD",
                keys.perseus_activity_key(name),
                "*",
                "event",
                "command",
                probe=("XADD", keys.perseus_activity_key(name), "0-0", "event", "command"),
            ),
        ),
    )
    return (send, edit, steer)


async def command_refusal(redis: RedisClient, exchange_id: int) -> str | None:
    """Why this user may not send commands to `exchange_id`'s agent (the first
    command refused, with Redis's words), or None when it may; asked without
    sending anything. The dashboard asks it to start read-only for a viewer."""
    send = _operator(Target(exchange_id, None, exchange_id))[0]
    checked = await check_rights(redis, send.rights)
    refused = [r for r in send.rights if checked.answers[r].allowed is False]
    return _refusal(refused[0], checked.answers[refused[0]]) if refused else None
