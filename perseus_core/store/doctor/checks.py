"""`perseus doctor`: check a Redis target the way Perseus will use it.

Each check gives one row: what was found, and whether Perseus will work with
it (True), will not (False: a reason to exit 1), or it is only worth knowing
(None). Nothing is written: rights are asked of Redis without running
anything (see `rights`), and the rest only reads. A check this user may not
make says so and is left unknown: the doctor never fails for a right the
user's role does not need.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from perseus_core.plumbing.connection import is_acl_denial, is_sentinel_url, is_tls_url
from perseus_core.plumbing.memory import MemoryUse, memory_use
from perseus_core.plumbing.topology import RedisClient
from perseus_core.store.activity import exchange_stream_keys
from perseus_core.store.activity.reads import (
    BLOCKING_GROUPS_MAX,
    BLOCKING_STREAMS_MAX,
    POLL_MAX_S,
    notifies_stream_writes,
    slot_group_count,
)
from perseus_core.store.doctor.rights import Method
from perseus_core.store.doctor.roles import Role, Roles, find_target, probe_roles
from perseus_core.store.network import FleetReader
from perseus_core.wire import keys
from perseus_core.wire.settings import Settings
from perseus_core.wire.text import clean

MIN_VERSION = (6, 2)
"""Activity streams are trimmed with `XADD ... MINID`, new in Redis 6.2."""

HOST_SKEW_LIMIT_S = 10.0
"""Past this, commands (dated by the sender, checked by the agent against
`command_expiry_ms`) and retention cut-offs go wrong; Perseus does not work."""

WRITER_SKEW_LIMIT_S = 2.0
"""A writer whose clock is further off than this is listed (heartbeat ages
still come out right: they are dated by PTTL)."""

T = TypeVar("T")

NEAR_FULL = 0.9
"""Share of `maxmemory` past which a `noeviction` server is said to be close
to refusing writes."""

PINGS = 100
"""Round trips timed for the latency percentiles."""

TYPE_BATCH = 500
"""TYPE commands per pipeline when checking key types."""

EXPECTED_TYPES = {"exchange:*:status": "string", "logs:network:*": "stream"}
"""Key patterns Livermore and Perseus share, and the type each must have."""

PERSEUS_TYPES = {
    "perseus:activity:*": "stream",
    "perseus:commands:*": "stream",
    "perseus:agents:*": "zset",
    "perseus:epoch:*": "string",
    "perseus:outcomes:*": "hash",
    "perseus:replies:*": "list",
}


@dataclass(frozen=True, slots=True)
class Check:
    """One row of the report."""

    name: str
    value: str
    ok: bool | None = None
    """True: fine; False: Perseus will not work (a reason for exit 1); None: information."""
    details: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The row for `--json`."""
        return {"check": self.name, "value": self.value, "ok": self.ok, "details": self.details}


@dataclass(slots=True)
class Diagnosis:
    """Every check, in the order they ran; `facts` holds the raw figures for `--json`."""

    checks: list[Check] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """Whether Perseus will work: no check failed."""
        return all(check.ok is not False for check in self.checks)

    @property
    def reasons(self) -> list[str]:
        """One line per failed check."""
        return [f"{c.name}: {c.value}" for c in self.checks if c.ok is False]

    def to_dict(self) -> dict[str, Any]:
        """The whole report for `--json`."""
        return {
            "ok": self.ok,
            "checks": [c.to_dict() for c in self.checks],
            "reasons": self.reasons,
            "facts": self.facts,
        }


def _refused(exc: ResponseError, command: str) -> str:
    """A check's value when Redis refused to answer it."""
    if is_acl_denial(exc):
        return f"unknown (this user may not {command})"
    return f"unknown ({clean(str(exc), 120)})"


async def _guarded(report: Diagnosis, name: str, check: Awaitable[T]) -> T | None:
    """Run one check; a command Redis refuses (a right this user lacks, a
    disabled command) leaves its row unknown instead of ending the report."""
    try:
        return await check
    except ResponseError as exc:
        words = clean(str(exc), 160)
        why = f"this user may not: {words}" if is_acl_denial(exc) else words
        report.checks.append(Check(name, f"unknown ({why})"))
        return None


def _not_read(report: Diagnosis, *names: str) -> None:
    """Rows of checks that read the whole fleet, for a user who may not."""
    for name in names:
        report.checks.append(Check(name, "not checked: this user cannot read the fleet"))


async def _info(redis: RedisClient, section: str) -> dict[str, Any]:
    """`INFO section` of one node (the default one on a cluster)."""
    if isinstance(redis, RedisCluster):
        reply = await redis.info(section, target_nodes=RedisCluster.DEFAULT_NODE)
    else:
        reply = await redis.info(section)
    return dict(reply)


async def _call(redis: RedisClient, *args: Any) -> Any:
    """A keyless command on one node (the default one on a cluster)."""
    if isinstance(redis, RedisCluster):
        return await redis.execute_command(*args, target_nodes=RedisCluster.DEFAULT_NODE)
    return await redis.execute_command(*args)  # type: ignore[no-untyped-call]


async def check_version(redis: RedisClient, report: Diagnosis) -> None:
    """The server version; 6.2 or newer is needed."""
    try:
        version = str((await _info(redis, "server")).get("redis_version", "?"))
    except ResponseError as exc:
        report.checks.append(Check("server version", _refused(exc, "INFO")))
        return
    numbers = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    report.facts["version"] = version
    ok = numbers >= MIN_VERSION
    note = () if ok else ("Perseus trims streams with XADD MINID: Redis 6.2 or newer",)
    report.checks.append(Check("server version", version, ok, note))


async def check_mode(redis: RedisClient, settings: Settings, report: Diagnosis) -> None:
    """Standalone, cluster (nodes, masters, slots, state) or Sentinel."""
    if isinstance(redis, RedisCluster):
        try:
            info = await _call(redis, "CLUSTER", "INFO")
        except ResponseError as exc:
            value = (
                f"cluster: {len(redis.get_nodes())} nodes, state {_refused(exc, 'CLUSTER INFO')}"
            )
            report.checks.append(Check("mode", value))
            return
        text = info if isinstance(info, str) else str(info)
        fields = dict(
            line.split(":", 1) for line in text.splitlines() if ":" in line and line.strip()
        )
        nodes = redis.get_nodes()
        masters = len(redis.get_primaries())
        slots = int(fields.get("cluster_slots_assigned", 0))
        state = fields.get("cluster_state", "?").strip()
        report.facts["cluster"] = {
            "nodes": len(nodes),
            "masters": masters,
            "slots_assigned": slots,
            "state": state,
        }
        value = f"cluster: {len(nodes)} nodes, {masters} masters, {slots}/16384 slots, {state}"
        ok = state == "ok" and slots == 16384
        report.checks.append(Check("mode", value, ok))
        return
    if is_sentinel_url(settings.redis_url):
        pool = redis.connection_pool
        address = await pool.get_master_address() if hasattr(pool, "get_master_address") else None
        where = f"{address[0]}:{address[1]}" if address else "?"
        report.facts["sentinel_master"] = where
        report.checks.append(Check("mode", f"sentinel: primary at {where}", True))
        return
    report.checks.append(Check("mode", "standalone", True))


def check_tls(settings: Settings, report: Diagnosis) -> None:
    """Whether the connection is encrypted, and how the server is verified."""
    if not is_tls_url(settings.redis_url):
        report.checks.append(Check("TLS", "off (redis://)"))
        return
    trust = "CA file" if settings.tls_ca_file else "system CAs"
    parts = [f"on, certificate verified against the {trust}"]
    if settings.tls_cert_file:
        parts.append("client certificate sent")
    if settings.tls_server_name:
        parts.append(f"server name {clean(settings.tls_server_name, 80)}")
    report.checks.append(Check("TLS", ", ".join(parts), True))


_METHODS = {
    Method.SCRIPT: "asked with {via}: nothing ran",
    Method.DRYRUN: "asked with {via}: nothing ran",
    Method.GETUSER: "read with {via}: this user may run every command on every key",
    Method.PROBES: "probed with commands Redis refuses after its ACL check, or that change"
    " nothing (no redis.acl_check_cmd or ACL DRYRUN for this user here); Redis logs the"
    " refusals in its ACL LOG",
}


async def check_roles(
    redis: RedisClient,
    report: Diagnosis,
    role: Role | None,
    exchange_id: int | None,
    exchange_name: str | None,
) -> Roles:
    """What the user may do in each role: one row per role, and a failure
    when it is fit for no role (none asked), or not for the one asked."""
    target = await find_target(redis, exchange_id, exchange_name)
    roles = await probe_roles(redis, target)
    report.facts["rights"] = {
        "method": roles.method.value,
        "via": roles.via,
        "roles": {r.value: result.to_dict() for r, result in roles.results.items()},
    }
    report.facts["roles"] = roles.names
    report.facts["role"] = role.value if role is not None else None
    report.facts["summary"] = roles.summary()
    report.checks.append(Check("rights", _METHODS[roles.method].format(via=roles.via)))
    shown: set[str] = set()  # an operator reads as a viewer does: said once
    for each in Role:
        result = roles.results[each]
        ok: bool | None = result.fit if each is role else (True if result.fit else None)
        details = tuple(d for d in result.details if d not in shown)
        shown.update(details)
        report.checks.append(Check(f"role: {each}", result.line(), ok, details))
    if role is None and not roles.names:
        hint = (
            "; for an agent's user, name its exchange: --role agent --exchange-id ID"
            if exchange_id is None
            else ""
        )
        report.checks.append(Check("role", f"fit for no Perseus role{hint}", False))
    return roles


async def check_memory(redis: RedisClient, report: Diagnosis, refused_write: str) -> None:
    """Used memory against `maxmemory` on every master: a server over it
    refuses every write, and then no agent can claim, heartbeat or answer."""
    if isinstance(redis, RedisCluster):
        infos = [await redis.info("memory", target_nodes=node) for node in redis.get_primaries()]
    else:
        infos = [await redis.info("memory")]
    uses: list[MemoryUse] = []
    for info in infos:
        use = memory_use(dict(info))
        if use is not None:
            uses.append(use)
    report.facts["memory"] = [
        {"used_memory": u.used, "maxmemory": u.limit, "maxmemory_policy": u.policy} for u in uses
    ]
    over = [u for u in uses if u.over]
    if over or refused_write:
        found = over[0].describe() if over else f"a write was refused ({refused_write})"
        value = f"full: {found}; Redis refuses every write"
        report.checks.append(Check("memory", value, False))
        return
    if not uses:
        report.checks.append(Check("memory", "unknown (INFO memory says nothing of it)"))
        return
    fullest = max(uses, key=lambda u: u.used / u.limit if u.limit else 0.0)
    notes: list[str] = []
    if (
        fullest.limit
        and fullest.policy == "noeviction"
        and fullest.used >= NEAR_FULL * fullest.limit
    ):
        notes.append("close to maxmemory: under noeviction every write is refused past it")
    elif fullest.limit and fullest.policy != "noeviction":
        notes.append(
            f"{fullest.policy} may evict status keys (they expire) or streams at maxmemory"
            if fullest.policy.startswith(("volatile", "allkeys"))
            else f"policy {fullest.policy}"
        )
    report.checks.append(Check("memory", fullest.describe(), True, tuple(notes)))


async def check_latency(redis: RedisClient, report: Diagnosis) -> None:
    """Round-trip time of `PINGS` sequential PINGs: p50 and p99."""
    samples: list[float] = []
    for _ in range(PINGS):
        start = time.perf_counter()
        await redis.ping()
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    p50, p99 = samples[len(samples) // 2], samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    report.facts["latency_ms"] = {"p50": round(p50, 3), "p99": round(p99, 3)}
    report.checks.append(Check("latency", f"p50 {p50:.2f} ms, p99 {p99:.2f} ms ({PINGS} PINGs)"))


async def check_live_tail(redis: RedisClient, names: list[str] | None, report: Diagnosis) -> None:
    """How the live feed waits for new entries (`activity.reads`): one blocking
    read on a single Redis of up to `BLOCKING_STREAMS_MAX` streams; on a
    cluster a blocking read per slot group up to `BLOCKING_GROUPS_MAX`; past
    either, a wake-up from keyspace notifications when every master sends
    them, else one blocking read of every stream (single) or a poll (cluster)."""
    name = "live tail"
    cluster = isinstance(redis, RedisCluster)
    if names is None:
        if cluster:
            _not_read(report, name)
        else:
            report.checks.append(Check(name, SINGLE_BLOCKS))
        return
    stream_keys = exchange_stream_keys(names)
    if cluster:
        groups = slot_group_count(stream_keys)
        report.facts["tail_slot_groups"] = groups
        if groups <= BLOCKING_GROUPS_MAX:
            value = (
                f"blocks: one blocking XREAD per slot group of streams"
                f" ({groups}, of at most {BLOCKING_GROUPS_MAX} read so)"
            )
            report.checks.append(Check(name, value))
            return
        size = f"{groups} slot groups"
        without = f"polls every {POLL_MAX_S:g} s ({size})"
    else:
        if len(stream_keys) <= BLOCKING_STREAMS_MAX:
            report.checks.append(Check(name, SINGLE_BLOCKS))
            return
        size = f"{len(stream_keys)} streams"
        without = f"blocks: one XREAD BLOCK of all {size}, each key sent again every turn"
    flags: dict[str, str] = {}
    try:
        if isinstance(redis, RedisCluster):
            for node in redis.get_primaries():
                reply = await redis.config_get("notify-keyspace-events", target_nodes=node)
                flags[node.name] = str(dict(reply).get("notify-keyspace-events", ""))
        else:
            reply = await redis.config_get("notify-keyspace-events")
            flags["the server"] = str(dict(reply).get("notify-keyspace-events", ""))
    except ResponseError as exc:
        why = "this user may not CONFIG GET to see" if is_acl_denial(exc) else clean(str(exc), 80)
        report.checks.append(Check(name, f"{without}: {why} whether keyspace notifications are on"))
        return
    report.facts["notify_keyspace_events"] = flags
    off = sorted(node for node, value in flags.items() if not notifies_stream_writes(value))
    if off:
        value = f"{without}: notify-keyspace-events lacks K and t on {', '.join(off)}"
    else:
        every = "every master sends them" if cluster else "the server sends them"
        value = f"wakes on keyspace notifications ({size}; {every})"
    report.checks.append(Check(name, value))


SINGLE_BLOCKS = "blocks: one XREAD BLOCK follows every stream (no keyspace notifications needed)"
"""How a single Redis's tail waits for a fleet of up to `BLOCKING_STREAMS_MAX` streams."""


async def check_host_clock(redis: RedisClient, report: Diagnosis) -> None:
    """This host's clock against Redis's `TIME`, corrected for the round trip."""
    before = time.time()
    seconds, micros = await _call(redis, "TIME")
    after = time.time()
    skew = int(seconds) + int(micros) / 1e6 - (before + after) / 2
    report.facts["host_clock_skew_s"] = round(skew, 3)
    side = "ahead of" if skew < 0 else "behind"
    ok = abs(skew) <= HOST_SKEW_LIMIT_S
    value = f"{abs(skew):.3f} s {side} Redis"
    report.checks.append(Check("clock (this host)", value, None if ok else False))


async def check_fleet(redis: RedisClient, settings: Settings, report: Diagnosis) -> list[str]:
    """Writers' clocks (lastHeartbeat against PTTL), stream sizes and
    retention; returns the exchanges' names (whose streams the tail follows)."""
    reader = FleetReader(redis)
    snapshot = await reader.snapshot(last_known=False)
    skewed: list[str] = []
    for view in snapshot.exchanges:
        skew = view.clock_skew_s
        if view.status is not None and skew is not None and abs(skew) > WRITER_SKEW_LIMIT_S:
            side = "ahead of" if skew > 0 else "behind"
            skewed.append(
                f"{clean(view.display_name, 40)} ({clean(view.status.hostname, 40)}):"
                f" {abs(skew):.1f} s {side} Redis"
            )
    live = sum(1 for v in snapshot.exchanges if v.online)
    report.facts["exchanges"] = {"listed": len(snapshot.exchanges), "online": live}
    report.facts["skewed_writers"] = skewed
    value = f"{len(skewed)} of {live} online off by more than {WRITER_SKEW_LIMIT_S:g} s"
    report.checks.append(Check("clock (writers)", value, None, tuple(skewed)))
    names = sorted({v.exchange_name.lower() for v in snapshot.exchanges if v.exchange_name})
    await _check_streams(redis, settings, names, report)
    return names


async def _check_streams(
    redis: RedisClient, settings: Settings, names: list[str], report: Diagnosis
) -> None:
    """Entries per activity stream and the age of the oldest against retention."""
    streams = [keys.activity_key(n) for n in names] + [keys.perseus_activity_key(n) for n in names]
    async with redis.pipeline(transaction=False) as pipe:
        for key in streams:
            pipe.xlen(key)
            pipe.xrange(key, count=1)
        replies = await pipe.execute(raise_on_error=False)
    now_ms = datetime.now(UTC).timestamp() * 1000
    total, largest, oldest_days = 0, ("-", 0), 0.0
    sizes: dict[str, int] = {}
    for index, key in enumerate(streams):
        length, first = replies[2 * index], replies[2 * index + 1]
        if isinstance(length, Exception) or isinstance(first, Exception):
            continue
        sizes[key] = int(length)
        total += int(length)
        if int(length) > largest[1]:
            largest = (key, int(length))
        if first:
            first_ms = int(str(first[0][0]).split("-")[0])
            oldest_days = max(oldest_days, (now_ms - first_ms) / 86_400_000)
    report.facts["streams"] = sizes
    retention = settings.retention_days
    value = (
        f"{len(sizes)} streams, {total} entries (largest {clean(largest[0], 60)}: {largest[1]});"
        f" oldest entry {oldest_days:.1f} days, retention {retention:g} days"
    )
    late = oldest_days > retention + 1
    notes = ("older entries than the retention: a writer appends without MINID",) if late else ()
    report.checks.append(Check("streams", value, None, notes))


async def check_no_exchange(redis: RedisClient, report: Diagnosis) -> None:
    """Activity entries that belong to no exchange (exchangeId 0, or the
    exchange `unknown`: a Livermore server whose start failed before it knew
    its exchange). No reader lists an exchange for them, so this is the one
    place their number shows; the feed and `perseus log` show the entries."""
    try:
        streams = await FleetReader(redis).streams_of_no_exchange()
    except ResponseError as exc:
        report.checks.append(Check("entries of no exchange", _refused(exc, "read the streams")))
        return
    entries = sum(streams.values())
    report.facts["streams_of_no_exchange"] = streams
    value = (
        f"{entries} entr{'y' if entries == 1 else 'ies'} in {len(streams)} "
        f"stream{'' if len(streams) == 1 else 's'} (exchangeId 0 or exchange unknown)"
        if streams
        else "none"
    )
    details = tuple(f"{clean(key, 80)}: {length}" for key, length in sorted(streams.items()))
    report.checks.append(Check("entries of no exchange", value, None, details[:20]))


async def check_types(redis: RedisClient, report: Diagnosis, limit: int = 10_000) -> None:
    """Keys of the wrong type among the shared and Perseus patterns (SCAN,
    never KEYS; at most `limit` keys per pattern)."""
    wrong: list[str] = []
    try:
        catalog_type = str(await redis.type(keys.CATALOG_KEY))
    except ResponseError as exc:
        report.checks.append(Check("key types", _refused(exc, "TYPE")))
        return
    if catalog_type not in ("hash", "none"):
        wrong.append(f"{keys.CATALOG_KEY} is a {catalog_type}, not a hash")
    for pattern, expected in {**EXPECTED_TYPES, **PERSEUS_TYPES}.items():
        found: list[str] = []
        async for key in redis.scan_iter(match=pattern, count=1000):
            found.append(key)
            if len(found) >= limit:
                break
        for start in range(0, len(found), TYPE_BATCH):
            batch = found[start : start + TYPE_BATCH]
            async with redis.pipeline(transaction=False) as pipe:
                for key in batch:
                    pipe.type(key)
                types = await pipe.execute()
            for key, actual in zip(batch, types, strict=True):
                if str(actual) not in (expected, "none"):
                    wrong.append(f"{clean(key, 80)} is a {actual}, not a {expected}")
    report.facts["wrong_types"] = wrong
    value = f"{len(wrong)} of the wrong type" if wrong else "all as expected"
    report.checks.append(Check("key types", value, not wrong, tuple(wrong[:20])))


async def diagnose(
    redis: RedisClient,
    settings: Settings,
    exchange_id: int | None = None,
    *,
    role: Role | None = None,
    exchange_name: str | None = None,
) -> Diagnosis:
    """Every check against a client that has answered PING.

    Args:
        redis: from `connection.connect(settings)`.
        settings: the settings the client was made from.
        exchange_id: the exchange the roles are checked on (an agent's own);
            None for the catalog's lowest id (1 when the catalog is empty or
            this user may not read it).
        role: the role the user must be fit for; None: any one of them.
        exchange_name: the exchange's name (its streams are named by it);
            None to read it from the catalog or its status key.
    """
    report = Diagnosis()
    report.checks.append(Check("reachable", settings.redacted_redis_url, True))
    await _guarded(report, "server version", check_version(redis, report))
    await check_mode(redis, settings, report)
    check_tls(settings, report)
    roles = await check_roles(redis, report, role, exchange_id, exchange_name)
    await _guarded(report, "memory", check_memory(redis, report, roles.out_of_memory))
    await _guarded(report, "latency", check_latency(redis, report))
    await _guarded(report, "clock (this host)", check_host_clock(redis, report))
    if not (roles.fit(Role.VIEWER) or roles.fit(Role.OPERATOR)):
        _not_read(report, "clock (writers)", "streams")
        await check_live_tail(redis, None, report)
        _not_read(report, "entries of no exchange", "key types")
        return report
    names = await _guarded(report, "clock (writers)", check_fleet(redis, settings, report))
    await _guarded(report, "live tail", check_live_tail(redis, names, report))
    await check_no_exchange(redis, report)
    await _guarded(report, "key types", check_types(redis, report))
    return report
