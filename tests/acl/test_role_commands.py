"""What each documented role may run, command by command, on each version's
lines (tests/acl/conftest.py): every command it needs is allowed and what it
must never do is refused, each run for real as the user; and the set of
commands the server lets it run is exactly the set Perseus uses, plus the
connection commands every client needs: nothing comes with a category.

Where 6.2 cannot draw a line that 7 draws (its commands apply to all of a
user's keys and channels), the row says so and the doc says so too."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import pytest
import redis as sync_redis
from redis.exceptions import NoPermissionError, ResponseError

from perseus_core.plumbing.connection import is_acl_denial
from perseus_core.store.control.scripts import APPEND_COMMAND_LUA
from perseus_core.store.network.reader import LIVE_MEMBERS_LUA, PTTL_SCRIPT
from tests.acl.conftest import USERS, AclServer

AGENT, OPERATOR, VIEWER = USERS
ALLOWED, REFUSED, UNKNOWN = "allowed", "refused", "unknown"

Expected = str | dict[str, str]
"""One outcome on both versions, or one per variant ("6.2", "7")."""

LOADED = "return 1"
"""A script the test loads first, for EVALSHA."""
WRITE = "return redis.call('SET', KEYS[1], 'x')"

ON_7_ONLY = {"6.2": UNKNOWN, "7": REFUSED}
"""Refused on 7; a command 6.2 does not have."""
LIMIT_OF_6 = {"6.2": ALLOWED, "7": REFUSED}
"""Refused on 7; 6.2 cannot refuse it without refusing what the role needs."""
READ_SCRIPT = {"6.2": ALLOWED, "7": REFUSED}
"""EVAL for a read: what 6.2 readers use; on 7 readers use EVAL_RO instead."""

NEVER: list[tuple[tuple[str, ...], Expected]] = [
    (("FLUSHALL",), REFUSED),
    (("FLUSHDB",), REFUSED),
    (("KEYS", "*"), REFUSED),
    (("CONFIG", "GET", "maxmemory"), REFUSED),
    (("SCRIPT", "FLUSH"), REFUSED),
    (("SCRIPT", "KILL"), REFUSED),
    (("CLIENT", "KILL", "ID", "999999"), REFUSED),
    (("ACL", "LIST"), REFUSED),
    (("SWAPDB", "0", "1"), REFUSED),
    (("FUNCTION", "FLUSH"), ON_7_ONLY),
    (("FUNCTION", "LOAD", "#!lua name=x\nredis.register_function('f', function() end)"), ON_7_ONLY),
    (("FUNCTION", "DELETE", "x"), ON_7_ONLY),
    (("FUNCTION", "RESTORE", "x"), ON_7_ONLY),
    (("FCALL", "f", "0"), ON_7_ONLY),
]
"""What no role may run: flushes, scans of every key, configuration, the script
cache and the function libraries (Redis 7's FUNCTION FLUSH deletes every
library on the server), other clients."""

READS: list[tuple[tuple[str, ...], Expected]] = [
    (("GET", "exchange:1:status"), ALLOWED),
    (("MGET", "exchange:1:status", "exchange:2:status"), ALLOWED),
    (("HGET", "perseus:wanted:1", "record"), ALLOWED),
    (("PTTL", "exchange:1:status"), ALLOWED),
    (("TYPE", "exchange:1:status"), ALLOWED),
    (("EXISTS", "logs:network:coinbase"), ALLOWED),
    (("SCAN", "0", "MATCH", "exchange:*:status", "COUNT", "100"), ALLOWED),
    (("HGETALL", "perseus:exchanges"), ALLOWED),
    (("HGET", "perseus:exchanges", "1"), ALLOWED),
    (("HLEN", "perseus:exchanges"), ALLOWED),
    (("XRANGE", "logs:network:coinbase", "-", "+", "COUNT", "1"), ALLOWED),
    (("XREVRANGE", "perseus:activity:coinbase", "+", "-", "COUNT", "1"), ALLOWED),
    (("XREAD", "COUNT", "1", "STREAMS", "logs:network:coinbase", "0-0"), ALLOWED),
    (("XLEN", "perseus:commands:1"), ALLOWED),
    (("ZRANGE", "perseus:agents:1", "0", "-1"), ALLOWED),
    (("ZREVRANGEBYSCORE", "perseus:agents:1", "+inf", "0"), ALLOWED),
    (("ZCARD", "perseus:agents:1"), ALLOWED),
    (("XREVRANGE", "perseus:output:1", "+", "-", "COUNT", "500"), ALLOWED),
    (("XREAD", "COUNT", "1", "BLOCK", "1", "STREAMS", "perseus:output:1", "$"), ALLOWED),
    (("EVAL_RO", PTTL_SCRIPT, "1", "exchange:1:status"), {"6.2": UNKNOWN, "7": ALLOWED}),
    (("EVAL_RO", LIVE_MEMBERS_LUA, "1", "perseus:agents:1", "64"), {"6.2": UNKNOWN, "7": ALLOWED}),
    (("INFO", "cluster"), ALLOWED),
    (("TIME",), ALLOWED),
    (("PING",), ALLOWED),
]
"""What the operator and the viewer read: `perseus status` and `log`, the
dashboard and its live feed, `perseus doctor`'s probes."""

NO_KEYSPACE = [
    (("PSUBSCRIBE", "__keyspace@0__:*"), REFUSED),
    (("PSUBSCRIBE", "__keyspace@0__:logs:network:*"), REFUSED),
]
"""No role subscribes to keyspace notifications (the doc says why)."""

ROWS: dict[str, list[tuple[tuple[str, ...], Expected]]] = {
    AGENT: [
        # Its slot: claim, heartbeat (scripts), release, the fencing epoch.
        (("SET", "exchange:1:status", "{}", "PX", "1000", "NX"), ALLOWED),
        (("GET", "exchange:1:status"), ALLOWED),
        (("PTTL", "exchange:1:status"), ALLOWED),
        (("DEL", "exchange:1:status"), ALLOWED),
        (("INCRBY", "perseus:epoch:1", "1"), ALLOWED),
        (("SCRIPT", "LOAD", LOADED), ALLOWED),
        (("EVALSHA", hashlib.sha1(LOADED.encode()).hexdigest(), "1", "exchange:1:status"), ALLOWED),
        (("SCRIPT", "EXISTS", hashlib.sha1(LOADED.encode()).hexdigest()), REFUSED),
        # Its streams, its commands (read only, on 7), its outcomes and replies.
        (("XADD", "logs:network:coinbase", "*", "event", "error"), ALLOWED),
        (("XADD", "perseus:activity:coinbase", "*", "event", "command"), ALLOWED),
        (("XREAD", "COUNT", "1", "STREAMS", "perseus:commands:1", "0-0"), ALLOWED),
        (("XADD", "perseus:commands:1", "*", "command", "{}"), LIMIT_OF_6),
        (("HSETNX", "perseus:outcomes:1", "c", "{}"), ALLOWED),
        (("HSET", "perseus:outcomes:1", "c", "{}"), ALLOWED),
        (("PEXPIRE", "perseus:outcomes:1", "60000"), ALLOWED),
        (("HSCAN", "perseus:outcomes:1", "0"), ALLOWED),  # pruning past retention
        (("HDEL", "perseus:outcomes:1", "c"), ALLOWED),
        (("RPUSH", "perseus:replies:c", "{}"), ALLOWED),
        (("EXPIRE", "perseus:replies:c", "60"), ALLOWED),
        # Its presence.
        (("ZADD", "perseus:agents:1", "1", "m"), ALLOWED),
        (("ZRANGE", "perseus:agents:1", "0", "-1"), ALLOWED),
        (("ZREM", "perseus:agents:1", "m"), ALLOWED),
        (("ZREMRANGEBYSCORE", "perseus:agents:1", "-inf", "0"), ALLOWED),
        # What the operators want of its exchange: read only (on 7).
        (("HGET", "perseus:wanted:1", "record"), ALLOWED),
        (("HSET", "perseus:wanted:1", "record", "{}"), LIMIT_OF_6),
        (("HGET", "perseus:wanted:2", "record"), REFUSED),
        # Its child's output.
        (("XADD", "perseus:output:1", "MAXLEN", "~", "500", "*", "stream", "stdout"), ALLOWED),
        (("PEXPIRE", "perseus:output:1", "60000"), ALLOWED),
        # The catalog: its own entry, never overwriting or deleting one (7).
        (("HSETNX", "perseus:exchanges", "1", "{}"), ALLOWED),
        (("HGET", "perseus:exchanges", "1"), ALLOWED),
        (("HSET", "perseus:exchanges", "2", "{}"), LIMIT_OF_6),
        (("DEL", "perseus:exchanges"), LIMIT_OF_6),
        (("HDEL", "perseus:exchanges", "2"), LIMIT_OF_6),
        (("INFO", "cluster"), ALLOWED),
        (("TIME",), ALLOWED),
        # Another exchange's slot, streams and commands.
        (("SET", "exchange:2:status", "{}", "PX", "1000"), REFUSED),
        (("GET", "exchange:2:status"), REFUSED),
        (("XADD", "logs:network:binance", "*", "event", "error"), REFUSED),
        (("XADD", "perseus:commands:2", "*", "command", "{}"), REFUSED),
        (("ZADD", "perseus:agents:2", "1", "m"), REFUSED),
        (("XADD", "perseus:output:2", "*", "stream", "stdout"), REFUSED),
        (("EVAL", WRITE, "1", "exchange:2:status"), REFUSED),
        # Whatever it does not use.
        (("PUBLISH", "livermore:commands:x", "{}"), REFUSED),
        (("SUBSCRIBE", "livermore:responses:x"), REFUSED),
        (("XTRIM", "logs:network:coinbase", "MAXLEN", "0"), REFUSED),
        (("UNLINK", "exchange:1:status"), REFUSED),
        *NO_KEYSPACE,
        *NEVER,
    ],
    OPERATOR: [
        *READS,
        (("EVAL", PTTL_SCRIPT, "1", "exchange:1:status"), READ_SCRIPT),
        # Commands to Perseus agents: the append script, the reply list.
        (("EVAL", APPEND_COMMAND_LUA, "1", "perseus:commands:1", "30000", "c", "{}"), ALLOWED),
        (("XADD", "perseus:commands:1", "*", "command", "{}"), ALLOWED),
        (("BLPOP", "perseus:replies:c", "0.01"), ALLOWED),
        # What it wants of an exchange.
        (("HSET", "perseus:wanted:1", "record", "{}"), ALLOWED),
        # The catalog, and the audit of commands sent to Livermore servers.
        (("HSET", "perseus:exchanges", "9", "{}"), ALLOWED),
        (("HSETNX", "perseus:exchanges", "9", "{}"), ALLOWED),
        (("HDEL", "perseus:exchanges", "9"), ALLOWED),
        (("XADD", "perseus:activity:binance", "*", "event", "command"), ALLOWED),
        # The Livermore bridge: count the listeners, publish a command, hear the answers.
        (("PUBSUB", "NUMSUB", "livermore:commands:x"), ALLOWED),
        (("PUBLISH", "livermore:commands:x", "{}"), ALLOWED),
        (("SUBSCRIBE", "livermore:responses:x"), ALLOWED),
        # ...and no more of the channels than that.
        (("PUBLISH", "livermore:responses:x", "{}"), LIMIT_OF_6),
        (("SUBSCRIBE", "livermore:commands:x"), LIMIT_OF_6),
        (("PUBLISH", "__keyspace@0__:exchange:1:status", "set"), REFUSED),
        (("PUBLISH", "other", "{}"), REFUSED),
        (("SUBSCRIBE", "other"), REFUSED),
        (("PSUBSCRIBE", "livermore:*"), REFUSED),
        # No write to a status key or a stream Livermore reads, nothing deleted.
        (("SET", "exchange:1:status", "{}"), REFUSED),
        (("DEL", "exchange:1:status"), REFUSED),
        (("EXPIRE", "exchange:1:status", "1"), REFUSED),
        (("EVAL", WRITE, "1", "exchange:1:status"), REFUSED),
        (("XADD", "logs:network:coinbase", "*", "event", "error"), LIMIT_OF_6),
        (("HSET", "perseus:outcomes:1", "c", "{}"), LIMIT_OF_6),
        (("XTRIM", "logs:network:coinbase", "MAXLEN", "0"), REFUSED),
        (("XDEL", "logs:network:coinbase", "1-1"), REFUSED),
        (("UNLINK", "perseus:exchanges"), REFUSED),
        (("RPUSH", "perseus:replies:c", "{}"), REFUSED),
        (("XADD", "perseus:output:1", "*", "stream", "stdout"), LIMIT_OF_6),
        *NO_KEYSPACE,
        *NEVER,
    ],
    VIEWER: [
        *READS,
        (("EVAL", PTTL_SCRIPT, "1", "exchange:1:status"), READ_SCRIPT),
        (("EVAL", WRITE, "1", "exchange:1:status"), REFUSED),
        (("XADD", "perseus:commands:1", "*", "command", "{}"), REFUSED),
        (("BLPOP", "perseus:replies:c", "0.01"), REFUSED),
        (("HSET", "perseus:exchanges", "9", "{}"), REFUSED),
        (("HSETNX", "perseus:exchanges", "9", "{}"), REFUSED),
        (("SET", "exchange:1:status", "{}"), REFUSED),
        (("DEL", "exchange:1:status"), REFUSED),
        (("XADD", "perseus:output:1", "*", "stream", "stdout"), REFUSED),
        (("PUBSUB", "NUMSUB", "livermore:commands:x"), REFUSED),
        (("PUBLISH", "livermore:commands:x", "{}"), REFUSED),
        (("SUBSCRIBE", "livermore:responses:x"), REFUSED),
        (("PUBLISH", "__keyspace@0__:exchange:1:status", "set"), REFUSED),
        *NO_KEYSPACE,
        *NEVER,
    ],
}

CONNECTION_6 = frozenset({"auth", "hello", "ping", "echo", "reset", "command"})
"""What `+@connection -@dangerous` leaves on 6.2 (asserted against the server)."""

USES: dict[str, frozenset[str]] = {
    AGENT: frozenset(
        "info time get set del incrby pttl hget hset hsetnx xadd xread xrevrange zadd zrem "
        "zrange zremrangebyscore pexpire expire rpush hscan hdel evalsha script|load".split()
    ),
    OPERATOR: frozenset(
        "info time get mget hget hgetall hlen exists type pttl scan xrange xrevrange xread "
        "xlen zrange zcard zrevrangebyscore eval xadd blpop hset hsetnx hdel "
        "pubsub|numsub publish subscribe".split()
    ),
    VIEWER: frozenset(
        "info time get mget hget hgetall hlen exists type pttl scan xrange xrevrange xread "
        "xlen zrange zcard zrevrangebyscore".split()
    ),
}
"""The commands (and subcommands) Perseus runs as each role, on both versions;
readers add the read-only script command of their version (`EVAL_RO` on 7,
`EVAL` on 6.2: `perseus_core.plumbing.scripts.read_script_command`)."""


def uses(role: str, variant: str) -> frozenset[str]:
    """`USES` for the lines of `variant`."""
    if role == AGENT:
        return USES[role]
    return USES[role] | {"eval_ro" if variant == "7" else "eval"}


def run_as(url: str, *command: str) -> str:
    """Run one command for real as the user of `url`: `allowed` when Redis ran
    it or refused it for another reason than the user's rights (a key of the
    wrong type, bad arguments), `refused` for a NOPERM (or the refusal of a
    call inside a script), `unknown` when the server has no such command."""
    with sync_redis.Redis.from_url(url, socket_timeout=5, single_connection_client=True) as client:
        try:
            if command[0] in ("SUBSCRIBE", "PSUBSCRIBE"):  # a reply only a PubSub reads
                with client.pubsub() as pubsub:
                    getattr(pubsub, command[0].lower())(*command[1:])
                    assert pubsub.get_message(timeout=5) is not None
            else:
                client.execute_command(*command)
        except NoPermissionError:
            return REFUSED
        except ResponseError as exc:
            if is_acl_denial(exc):
                return REFUSED
            text = str(exc).lower()
            if "unknown command" in text or "unknown subcommand" in text:
                return UNKNOWN
    return ALLOWED


def expected_for(expected: Expected, variant: str) -> str:
    return expected if isinstance(expected, str) else expected[variant]


@pytest.mark.parametrize("role", USERS)
def test_each_command_a_role_needs_is_allowed_and_none_it_must_not_run(
    acl: AclServer, role: str
) -> None:
    url = {AGENT: acl.agent, OPERATOR: acl.operator, VIEWER: acl.viewer}[role]
    with acl.admin() as admin:  # keys of the types Perseus writes, as far as a row reads them
        admin.xadd("logs:network:coinbase", {"event": "state_transition"})
        admin.hset("perseus:exchanges", "2", "{}")
    wrong = []
    for command, expected in ROWS[role]:
        want = expected_for(expected, acl.variant)
        got = run_as(url, *command)
        if got != want:
            wrong.append(f"{' '.join(command)[:70]!r}: {got}, expected {want}")
    assert wrong == [], f"{role} on the {acl.variant} lines:\n" + "\n".join(wrong)


@pytest.mark.parametrize("role", USERS)
def test_a_role_may_run_exactly_what_perseus_uses(acl: AclServer, role: str) -> None:
    allowed = allowed_commands(acl, role)
    connection = connection_commands(acl)
    needed = uses(role, acl.variant)
    assert needed - allowed == set(), f"{role} lacks what Perseus runs"
    assert allowed - needed - connection == set(), f"{role} may run more than Perseus uses"


def connection_commands(acl: AclServer) -> frozenset[str]:
    """What `+@connection -@dangerous` grants on this server."""
    with acl.admin() as admin:
        connection = set(admin.acl_cat("connection"))
        dangerous = set(admin.acl_cat("dangerous"))
    names = frozenset(connection - dangerous)
    if acl.version < (7, 0):
        assert names == CONNECTION_6
    return names


def allowed_commands(acl: AclServer, user: str) -> frozenset[str]:
    """Every command and subcommand the server lets `user` run (for some key
    or channel): on 7 asked of the server itself for each one (`ACL DRYRUN`,
    which runs nothing); on 6.2, which has no DRYRUN, read from the server's
    own account of the user's command rules (`ACL GETUSER`), in order."""
    if acl.version >= (7, 0):
        return _dry_run_all(acl, user)
    with acl.admin() as admin:
        rules = str(admin.execute_command("ACL", "GETUSER", user)["commands"]).split()
        categories = {
            rule[2:]: set(admin.acl_cat(rule[2:]))
            for rule in rules
            if rule[1:2] == "@" and rule != "-@all"
        }
        categories["all"] = {name.lower() for name in admin.command()}
    allowed: set[str] = set()
    for rule in rules:
        sign, name = rule[0], rule[1:]
        names = categories[name[1:]] if name.startswith("@") else {name}
        if sign == "+":
            allowed |= names
        else:
            allowed -= names
            allowed -= {n for n in allowed if n.split("|")[0] in names}
    return frozenset(allowed)


def _dry_run_all(acl: AclServer, user: str) -> frozenset[str]:
    allowed: set[str] = set()
    with acl.admin() as admin:
        for name, arity in _runnable(admin.command().values()):
            words = name.split("|")
            args = [*words, *["x"] * (abs(arity) - len(words))]
            try:
                reply = admin.execute_command("ACL", "DRYRUN", user, *args)
            except ResponseError as exc:
                raise AssertionError(f"ACL DRYRUN {user} {' '.join(args)}: {exc}") from None
            if "to run the" not in str(reply):  # OK, or only a key or channel refused
                allowed.add(name)
    return frozenset(allowed)


def _runnable(table: Iterable[dict[str, Any]]) -> Iterable[tuple[str, int]]:
    """(name, arity) of every command and subcommand `COMMAND` lists; a
    command with subcommands is not runnable by itself."""
    for entry in table:
        subcommands = entry.get("subcommands") or []
        if subcommands:
            yield from ((str(sub[0]).lower(), int(sub[1])) for sub in subcommands)
        else:
            yield str(entry["name"]).lower(), int(entry["arity"])
