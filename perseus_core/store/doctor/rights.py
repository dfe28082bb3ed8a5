"""Whether the connected user may run given commands, found out without
running them.

Redis judges a user's ACL rights before it runs a command, so the question
can be asked without changing anything, in the first of three ways this user
and server allow (`Method`):

- A script calling `redis.acl_check_cmd` (Redis 7): the server judges each
  command for the caller, from inside a script sent as `EVAL_RO`, `EVALSHA`
  (loaded first with `SCRIPT LOAD`, as an agent loads its own) or `EVAL`,
  whichever the user may run. Every documented Redis 7 role may run one.
- `ACL DRYRUN` (Redis 7), the same judgement for the user `ACL WHOAMI`
  names, for a user who may run no script but has those admin rights. On
  Redis 6.2, `ACL GETUSER` answers for a user who may run every command on
  every key and channel (the default user, an admin).
- Probes (Redis 6.2, which has neither, or a Redis 7 user who may run no
  script): each command sent in a form that Redis refuses on its own
  arguments, or that changes nothing, once the ACL check has passed: `SET
  ... PX 0`, `XADD key 0-0 ...`, `EVALSHA` of a script that does not exist,
  a `ZREM` of a member that cannot exist. NOPERM means no; any other answer
  (an argument refused, `NOSCRIPT`, out of memory, `MOVED`) means yes.
  `HSETNX`, `RPUSH` and a `DEL` of a key that may hold data have no such
  form. On 6.2, whose rules give a user's commands all of its keys alike,
  such a right is the command's right, asked on a key the user may not touch
  (refused either way, for the command or for the key, never run), together
  with the key's right, which the other probes of that key show. On Redis 7
  (read-only keys, selectors) that split would not be sound: they stay
  unchecked. Redis records each refused probe in its `ACL LOG`, as it
  records every refusal.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import NoScriptError, ResponseError

from perseus_core.plumbing.connection import is_acl_denial
from perseus_core.plumbing.topology import RedisClient, node_client
from perseus_core.wire.text import clean

ACL_CHECK_LUA = """
if redis.acl_check_cmd == nil then return -1 end
local answers, i = {}, 1
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  local ok, allowed = pcall(redis.acl_check_cmd, unpack(ARGV, i + 1, i + n))
  if not ok then answers[#answers + 1] = -1
  elseif allowed then answers[#answers + 1] = 1
  else answers[#answers + 1] = 0 end
  i = i + n + 1
end
return answers
"""
"""Judges each command in ARGV (a word count, then the words) for the caller:
1 allowed, 0 refused, -1 unknown to Redis; -1 alone before Redis 7."""

OUTSIDE_PREFIX = "perseus-doctor-probe:"
"""Names of the keys the 6.2 split asks a command's right on: outside every
Perseus pattern (`perseus:*` has a colon where this has a dash), and random."""

_KEY_REACH = (("EXISTS", "{}"), ("GET", "{}"), ("PTTL", "{}"), ("HGET", "{}", "f"), ("XLEN", "{}"))
"""Reads of a key that cannot exist: whether this user may touch a key at all."""

SUBSCRIBE_WAIT_S = 5.0
"""How long a probe of SUBSCRIBE waits for Redis's answer."""


class Method(StrEnum):
    """How the rights were found out (see the module docstring)."""

    SCRIPT = "redis.acl_check_cmd"
    DRYRUN = "ACL DRYRUN"
    GETUSER = "ACL GETUSER"
    PROBES = "probes"


@dataclass(frozen=True, slots=True)
class Right:
    """One command Perseus sends in some role.

    Attributes:
        command: its words as Perseus sends them (what `ACL DRYRUN` and
            `redis.acl_check_cmd` judge).
        probe: the same command on the same keys or channel, in a form that
            Redis refuses on its arguments or that changes nothing, once its
            ACL check has passed; None when there is none.
        key: the key or channel the right is about (None for a keyless
            command); `command` names it where a probe-less right's key is
            replaced by the 6.2 split.
        label: how a person reads it: `XADD logs:network:kraken`.
    """

    command: tuple[str, ...]
    probe: tuple[str, ...] | None
    key: str | None
    label: str


@dataclass(frozen=True, slots=True)
class Answer:
    """Whether the user may run one right's command.

    Attributes:
        allowed: True, False, or None when it could not be found out.
        reason: Redis's words for a refusal, or why it could not be found out.
    """

    allowed: bool | None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RightsCheck:
    """Every right's answer, and how they were found.

    Attributes:
        method: the way that answered.
        via: the way in a few words: `ACL DRYRUN as admin`, `EVALSHA`.
        answers: per right.
        out_of_memory: Redis's words when it refused a probe of a write for
            want of memory (probes only; "" otherwise).
    """

    method: Method
    via: str
    answers: Mapping[Right, Answer]
    out_of_memory: str = ""


async def check_rights(redis: RedisClient, rights: Sequence[Right]) -> RightsCheck:
    """Ask Redis, without running them, whether this user may run `rights`.

    On a cluster the rules of one node are asked (every node is given the same
    users); a probe that node does not serve answers `MOVED` after its ACL
    check, which is a yes like any other.
    """
    unique = list(dict.fromkeys(rights))
    async with _one_node(redis) as node:
        found = await _script(node, unique)
        if found is None and any(right.probe is None for right in unique):
            # Only then: where every right has a probe, the probes answer as
            # exactly, and asking ACL WHOAMI of a user who may not is one
            # more refusal in the ACL LOG.
            found = await _dry_run(node, unique)
        if found is None:
            found = await _probes(node, unique)
    return found


@asynccontextmanager
async def _one_node(redis: RedisClient) -> AsyncIterator[Redis]:
    if not isinstance(redis, RedisCluster):
        yield redis
        return
    client = node_client(redis.get_default_node())
    try:
        yield client
    finally:
        await client.aclose()


def _unknown(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "unknown command" in text or "unknown subcommand" in text


async def _dry_run(node: Redis, rights: list[Right]) -> RightsCheck | None:
    """`ACL DRYRUN` of every right, or None when this user or server cannot."""
    try:
        user = str(await node.execute_command("ACL", "WHOAMI"))  # type: ignore[no-untyped-call]
    except ResponseError:
        return None
    async with node.pipeline(transaction=False) as pipe:
        for right in rights:
            pipe.execute_command("ACL", "DRYRUN", user, *right.command)
        replies = await pipe.execute(raise_on_error=False)
    if replies and isinstance(replies[0], ResponseError) and _unknown(replies[0]):
        return await _unrestricted(node, user, rights)  # Redis 6.2: no DRYRUN
    answers: dict[Right, Answer] = {}
    for right, reply in zip(rights, replies, strict=True):
        if isinstance(reply, ResponseError):
            if is_acl_denial(reply) or _unknown(reply):
                return None  # this user may not ask
            answers[right] = Answer(None, clean(str(reply), 160))
        elif reply is True or str(reply) == "OK":
            answers[right] = Answer(True)
        else:
            answers[right] = Answer(False, clean(str(reply), 160))
    return RightsCheck(Method.DRYRUN, f"ACL DRYRUN as {clean(user, 80)}", answers)


async def _unrestricted(node: Redis, user: str, rights: list[Right]) -> RightsCheck | None:
    """Every right allowed when `ACL GETUSER` shows a user who may run every
    command on every key and channel (an admin, the default user); else None."""
    try:
        found = await node.execute_command("ACL", "GETUSER", user)  # type: ignore[no-untyped-call]
    except ResponseError:
        return None
    flags = found.get("flags", []) if isinstance(found, dict) else []
    if not {"allcommands", "allkeys", "allchannels"} <= {str(f) for f in flags}:
        return None
    answers = dict.fromkeys(rights, Answer(True))
    return RightsCheck(Method.GETUSER, f"ACL GETUSER {clean(user, 80)}", answers)


async def _script(node: Redis, rights: list[Right]) -> RightsCheck | None:
    """`ACL_CHECK_LUA` sent the first way this user may, or None.

    `EVAL_RO` first (every reader of the Redis 7 lines may), then `EVALSHA`
    (an agent may, after `SCRIPT LOAD`), then `EVAL` (the 6.2 lines kept on
    Redis 7): each way refused is one entry in the ACL LOG.
    """
    args: list[Any] = []
    for right in rights:
        args += [len(right.command), *right.command]
    try:
        reply = await node.execute_command("EVAL_RO", ACL_CHECK_LUA, 0, *args)  # type: ignore[no-untyped-call]
        return _scripted(rights, reply, "EVAL_RO")
    except ResponseError as exc:
        if _unknown(exc):
            return None  # before Redis 7, which has no redis.acl_check_cmd either
    sha = hashlib.sha1(ACL_CHECK_LUA.encode()).hexdigest()
    try:
        try:
            reply = await node.evalsha(sha, 0, *args)
        except NoScriptError:
            await node.script_load(ACL_CHECK_LUA)
            reply = await node.evalsha(sha, 0, *args)
        return _scripted(rights, reply, "EVALSHA")
    except ResponseError:
        pass
    try:
        reply = await node.execute_command("EVAL", ACL_CHECK_LUA, 0, *args)  # type: ignore[no-untyped-call]
    except ResponseError:
        return None
    return _scripted(rights, reply, "EVAL")


def _scripted(rights: list[Right], reply: Any, command: str) -> RightsCheck | None:
    if not isinstance(reply, list) or len(reply) != len(rights):
        return None  # -1: a Redis without redis.acl_check_cmd
    answers: dict[Right, Answer] = {}
    for right, verdict in zip(rights, reply, strict=True):
        if verdict == 1:
            answers[right] = Answer(True)
        elif verdict == 0:
            answers[right] = Answer(False)
        else:
            answers[right] = Answer(None, "Redis does not know the command")
    return RightsCheck(Method.SCRIPT, f"redis.acl_check_cmd in a script ({command})", answers)


def _judged(reply: Any) -> Answer:
    """A probe's answer: NOPERM is no, an unknown command unknown, all else yes."""
    if isinstance(reply, BaseException):
        if is_acl_denial(reply):
            return Answer(False, clean(str(reply), 160))
        if _unknown(reply):
            return Answer(None, "Redis does not know the command")
    return Answer(True)


def _refused_for(reply: Any, what: str) -> bool:
    """Whether a NOPERM reply refused the key (`what="key"`) or channel,
    rather than the command."""
    return isinstance(reply, BaseException) and is_acl_denial(reply) and what in str(reply).lower()


async def _probes(node: Redis, rights: list[Right]) -> RightsCheck:
    """Every right probed; see the module docstring."""
    formed = [r for r in rights if r.probe is not None and r.probe[0] != "SUBSCRIBE"]
    listens = [r for r in rights if r.probe is not None and r.probe[0] == "SUBSCRIBE"]
    unformed = [r for r in rights if r.probe is None]
    split = bool(unformed) and (await _version(node) or (7, 0)) < (7, 0)
    outside = f"{OUTSIDE_PREFIX}{uuid.uuid4().hex}"
    reach = [tuple(w.format(outside) for w in words) for words in _KEY_REACH] if split else []
    async with node.pipeline(transaction=False) as pipe:
        for right in formed:
            pipe.execute_command(*(right.probe or ()))
        for words in reach:
            pipe.execute_command(*words)
        replies = await pipe.execute(raise_on_error=False)
    answers = {right: _judged(reply) for right, reply in zip(formed, replies, strict=False)}
    memory = next(
        (
            clean(str(r), 160)
            for r in replies
            if isinstance(r, ResponseError) and str(r).startswith("OOM")
        ),
        "",
    )
    for right in listens:
        answers[right] = await _subscribe(node, right)
    if split:
        keys = _key_rights(formed, replies)
        outside_refused = any(_refused_for(r, "key") for r in replies[len(formed) :])
        answers.update(await _split(node, unformed, keys, outside, outside_refused))
    else:
        why = "no form of it changes nothing, and this user may not ask ACL DRYRUN or run a script"
        answers.update((right, Answer(None, why)) for right in unformed)
    return RightsCheck(Method.PROBES, "probes", answers, memory)


async def _subscribe(node: Redis, right: Right) -> Answer:
    """SUBSCRIBE on a connection of its own, then gone: nothing is changed."""
    pubsub = node.pubsub()
    try:
        await pubsub.subscribe(*(right.probe or ())[1:])
        reply = await pubsub.get_message(timeout=SUBSCRIBE_WAIT_S)
    except ResponseError as exc:
        return _judged(exc)
    finally:
        await pubsub.aclose()
    return Answer(True) if reply is not None else Answer(None, "Redis did not answer SUBSCRIBE")


def _key_rights(formed: list[Right], replies: list[Any]) -> dict[str, Answer]:
    """Per key, whether some probe of it showed this user may touch it."""
    found: dict[str, Answer] = {}
    for right, reply in zip(formed, replies, strict=False):
        if right.key is None or found.get(right.key, Answer(None)).allowed is True:
            continue
        if _refused_for(reply, "key"):
            found[right.key] = Answer(False, clean(str(reply), 160))
        elif not (isinstance(reply, BaseException) and is_acl_denial(reply)):
            found[right.key] = Answer(True)
    return found


async def _version(node: Redis) -> tuple[int, ...]:
    try:
        info = await node.info("server")
    except ResponseError:
        return ()
    return tuple(int(p) for p in str(info.get("redis_version", "")).split(".")[:2] if p.isdigit())


async def _split(
    node: Redis,
    rights: list[Right],
    keys: dict[str, Answer],
    outside: str,
    outside_refused: bool,
) -> dict[Right, Answer]:
    """The rights with no probe, on 6.2: the command asked on `outside`, a key
    the user may not touch (so it never runs), and the key from `keys`."""
    if not outside_refused:
        why = "this user may touch every key, and no form of it changes nothing"
        return {right: Answer(None, why) for right in rights}
    async with node.pipeline(transaction=False) as pipe:
        for right in rights:
            pipe.execute_command(*(outside if w == right.key else w for w in right.command))
        replies = await pipe.execute(raise_on_error=False)
    answers: dict[Right, Answer] = {}
    for right, reply in zip(rights, replies, strict=True):
        verdict = _judged(reply)
        if verdict.allowed is False and not _refused_for(reply, "key"):
            answers[right] = verdict  # the command itself
            continue
        key = keys.get(
            right.key or "",
            Answer(None, "no probe showed whether this user may touch the key"),
        )
        answers[right] = key
    return answers
