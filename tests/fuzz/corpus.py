"""The hostile corpus: values a hostile peer or a broken writer can leave in Redis.

Every case writes one hostile thing into a real Redis on top of the same
healthy baseline: exchange 1 (`coinbase`) live with its activity stream, and
exchange 2 (`kraken`) in the catalog. The hostile value always lands on
exchange 2's keys (or on a shared key such as the catalog), so every reader
surface must still show exchange 1 while it shows or reports the bad value.

The corpus is shared by the suite (`tests/fuzz/test_corpus.py`) and the long
form (`bench/fuzz_hostile.py`): one list of values, one definition of a pass.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import redis as sync_redis

from perseus_core.plumbing.processes import process_scope
from perseus_core.store.wanted import WANTED_FIELD
from perseus_core.wire import keys
from perseus_core.wire.timeutil import format_ts

Writer = Callable[[sync_redis.Redis], None]

LIVE_NAME = "coinbase"
"""Exchange 1, healthy in every case: every surface must keep showing it."""

VICTIM_ID = 2
VICTIM_NAME = "kraken"
"""Exchange 2, whose keys hold the hostile value."""

MARKUP = "[bold]x-bold[/]"
"""Textual/Rich markup that must be shown literally, never interpreted."""

STATUS_TTL_MS = 600_000
"""Baseline status keys outlive any run of the corpus."""

SECRET = "s3cr3t-pw"
"""A password that must never appear on any surface."""

MEGABYTE = "A" * 1_000_000
DEEP_JSON = "[" * 20_000 + "]" * 20_000


def _now() -> str:
    return format_ts(datetime.now(UTC))


def status_payload(exchange_id: int, name: str, **overrides: object) -> dict[str, object]:
    """A valid status payload, as the TypeScript writer produces it, with `overrides`."""
    now = _now()
    payload: dict[str, object] = {
        "exchangeId": exchange_id,
        "exchangeName": name,
        "hostname": f"{name}-host",
        "ipAddress": "203.0.113.7",
        "adminEmail": "ops@example.com",
        "adminDisplayName": "Ops Team",
        "connectionState": "active",
        "symbolCount": 25,
        "connectedAt": now,
        "lastHeartbeat": now,
        "lastStateChange": now,
        "registeredAt": now,
        "lastError": None,
        "lastErrorAt": None,
    }
    payload.update(overrides)
    return payload


def transition(name: str, exchange_id: int, **overrides: str) -> dict[str, str]:
    """A `state_transition` entry's fields, with `overrides`."""
    fields = {
        "event": "state_transition",
        "timestamp": _now(),
        "fromState": "warming",
        "toState": "active",
        "exchangeId": str(exchange_id),
        "exchangeName": name,
        "hostname": f"{name}-host",
        "ip": "203.0.113.7",
        "adminEmail": "ops@example.com",
    }
    fields.update(overrides)
    return fields


def error_entry(name: str, exchange_id: int, **overrides: str) -> dict[str, str]:
    """An `error` entry's fields, with `overrides`."""
    fields = {
        "event": "error",
        "timestamp": _now(),
        "error": "websocket closed (1006)",
        "exchangeId": str(exchange_id),
        "exchangeName": name,
        "hostname": f"{name}-host",
        "ip": "",
        "state": "active",
    }
    fields.update(overrides)
    return fields


def presence_member(exchange_id: int, name: str, **overrides: object) -> dict[str, object]:
    """A valid agent presence member, with `overrides`."""
    member: dict[str, object] = {
        "agentId": f"host:{exchange_id}:4242:1",
        "exchangeId": exchange_id,
        "exchangeName": name,
        "hostname": "agent-host",
        "pid": 4242,
        "state": "idle",
        "since": _now(),
        "version": "0.0.0",
    }
    member.update(overrides)
    return member


def seed_baseline(r: sync_redis.Redis) -> None:
    """Exchange 1 live with a short history; exchange 2 in the catalog, offline."""
    for exchange_id, name in ((1, LIVE_NAME), (VICTIM_ID, VICTIM_NAME)):
        entry = {"id": exchange_id, "name": name, "displayName": name.title(), "isActive": True}
        r.hset(keys.CATALOG_KEY, str(exchange_id), json.dumps(entry))
    r.set(keys.status_key(1), json.dumps(status_payload(1, LIVE_NAME)), px=STATUS_TTL_MS)
    r.xadd(keys.activity_key(LIVE_NAME), transition(LIVE_NAME, 1))  # type: ignore[arg-type]
    r.xadd(keys.activity_key(LIVE_NAME), error_entry(LIVE_NAME, 1))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Hostile:
    """One hostile thing written into Redis.

    Attributes:
        name: short identifier (test ids, bench figures).
        write: writes it, on top of `seed_baseline`.
        literal: text that a surface showing the value must show literally
            (markup cases); None when there is nothing to look for.
        reported: the key a key-type case makes unreadable: the surfaces that
            read it must name it (`REPORTING`).
        breaks_catalog: the catalog itself is unreadable, so `catalog list`
            has nothing to show but the one line naming it.
    """

    name: str
    write: Writer
    literal: str | None = None
    reported: str | None = None
    breaks_catalog: bool = False


def _status(**overrides: object) -> Writer:
    def write(r: sync_redis.Redis) -> None:
        payload = json.dumps(status_payload(VICTIM_ID, VICTIM_NAME, **overrides))
        r.set(keys.status_key(VICTIM_ID), payload, px=STATUS_TTL_MS)

    return write


def _raw_status(raw: str | bytes) -> Writer:
    def write(r: sync_redis.Redis) -> None:
        r.set(keys.status_key(VICTIM_ID), raw, px=STATUS_TTL_MS)

    return write


def _entry(fields: dict[str, str | bytes]) -> Writer:
    def write(r: sync_redis.Redis) -> None:
        r.xadd(keys.activity_key(VICTIM_NAME), fields)  # type: ignore[arg-type]

    return write


def _perseus_entry(fields: dict[str, str | bytes]) -> Writer:
    def write(r: sync_redis.Redis) -> None:
        r.xadd(keys.perseus_activity_key(VICTIM_NAME), fields)  # type: ignore[arg-type]

    return write


def _catalog(raw: str | bytes, field: str = str(VICTIM_ID)) -> Writer:
    def write(r: sync_redis.Redis) -> None:
        r.hset(keys.CATALOG_KEY, field, raw)

    return write


def _presence(raw: str | bytes) -> Writer:
    def write(r: sync_redis.Redis) -> None:
        r.zadd(keys.agents_key(VICTIM_ID), {raw: 10**13})
        r.pexpire(keys.agents_key(VICTIM_ID), STATUS_TTL_MS)

    return write


def _wanted(raw: str | bytes) -> Writer:
    def write(r: sync_redis.Redis) -> None:
        r.hset(keys.wanted_key(VICTIM_ID), WANTED_FIELD, raw)

    return write


def _outcome(raw: str | bytes) -> Writer:
    def write(r: sync_redis.Redis) -> None:
        r.hset(keys.outcomes_key(VICTIM_ID), "cid-hostile", raw)

    return write


def _wrong_type(key: str, kind: str) -> Writer:
    def write(r: sync_redis.Redis) -> None:
        r.delete(key)
        if kind == "list":
            r.rpush(key, "a")
        elif kind == "hash":
            r.hset(key, "a", "b")
        elif kind == "string":
            r.set(key, "a")
        elif kind == "set":
            r.sadd(key, "a")
        else:
            r.xadd(key, {"a": "b"})

    return write


def _both(*writers: Writer) -> Writer:
    def write(r: sync_redis.Redis) -> None:
        for writer in writers:
            writer(r)

    return write


HOSTILE_TEXTS: dict[str, str] = {
    "markup": MARKUP,
    "markup-link": "[link=https://evil.example]click-me[/link]",
    "markup-action": "[@click=app.quit]quit-now[/]",
    "ansi-colour": "\x1b[31mred\x1b[0m",
    "ansi-clear": "\x1b[2J\x1b[Hcleared",
    "osc-title": "\x1b]0;pwned\x07title",
    "osc-hyperlink": "\x1b]8;;https://evil.example\x1b\\link\x1b]8;;\x1b\\",
    "c1-csi": "\x9b2Jc1",
    "bidi-override": "\u202eoverride\u202c",
    "bidi-isolate": "\u2066isolate\u2069",
    "newline-forgery": "ok\r\n2026-01-01 FAKE line",
    "nul-bell-backspace": "a\x00b\x07c\x08d\x7f",
    "wide-and-emoji": "東京-feed 🚀",
    "combining-flood": "e" + "\u0301" * 2_000,
    "megabyte": MEGABYTE,
}
"""Strings that must reach no terminal raw (and no markup parser)."""

BAD_TIMESTAMPS: dict[str, str] = {
    "ts-year1-offset": "0001-01-01T00:00:00+01:00",
    "ts-year1-utc": "0001-01-01T00:00:00Z",
    "ts-year9999": "9999-12-31T23:59:59.999Z",
    "ts-js-max": "+275760-09-13T00:00:00.000Z",
    "ts-garbage": "yesterday-ish",
}
"""Timestamps that overflow a conversion to some time zone, or parse as nothing."""


WRONG_TYPES = {
    "catalog": (keys.CATALOG_KEY, ("list", "string", "stream")),
    "status": (keys.status_key(VICTIM_ID), ("hash", "stream")),
    "stream": (keys.activity_key(VICTIM_NAME), ("string", "hash")),
    "presence": (keys.agents_key(VICTIM_ID), ("string", "set")),
}
"""Every kind of key a reader reads, and types it must not have."""


UNREAD_WRONG_TYPES = {
    keys.outcomes_key(VICTIM_ID): ("string", "stream"),
    keys.commands_key(VICTIM_ID): ("string", "hash"),
    keys.perseus_activity_key(VICTIM_NAME): ("string", "hash"),
    keys.replies_key("cid-hostile"): ("string", "hash"),
}
"""Keys of the other families (the control channel's, the Perseus-only stream),
of the wrong type: no reader surface may fail for them."""


def build_corpus() -> list[Hostile]:
    """Every hostile case, each with a unique name."""
    cases: list[Hostile] = []
    for label, text in HOSTILE_TEXTS.items():
        literal = text if text.startswith("[") else None
        cases.append(
            Hostile(
                f"status-text-{label}",
                _status(hostname=text, lastError=text, lastErrorAt=_now(), adminEmail=text),
                literal,
            )
        )
        cases.append(
            Hostile(
                f"entry-text-{label}",
                _entry(error_entry(VICTIM_NAME, VICTIM_ID, error=text, hostname=text)),
                literal,
            )
        )
    cases.append(Hostile("catalog-markup-name", _catalog(_catalog_json(MARKUP)), MARKUP))
    cases.append(Hostile("presence-markup-host", _presence(_presence_json(hostname=MARKUP))))
    for label, stamp in BAD_TIMESTAMPS.items():
        cases += [
            Hostile(f"status-{label}", _status(lastHeartbeat=stamp)),
            Hostile(f"entry-{label}", _entry(error_entry(VICTIM_NAME, VICTIM_ID, timestamp=stamp))),
            Hostile(f"presence-{label}", _presence(_presence_json(since=stamp))),
        ]
    cases += [
        Hostile("status-connected-year1", _status(connectedAt="0001-01-01T00:00:00Z")),
        Hostile(
            "status-error-at-year9999",
            _status(lastError="x", lastErrorAt=BAD_TIMESTAMPS["ts-year9999"]),
        ),
        # wrong JSON types, NaN, unknown values
        Hostile("status-id-string", _status(exchangeId="2")),
        Hostile("status-count-string", _status(symbolCount="25")),
        Hostile("status-host-number", _status(hostname=42)),
        Hostile("status-state-unknown", _status(connectionState="exploding")),
        Hostile("status-state-number", _status(connectionState=3)),
        Hostile("status-nan", _raw_status(_nan_payload("NaN"))),
        Hostile("status-infinity", _raw_status(_nan_payload("Infinity"))),
        Hostile("status-huge-count", _status(symbolCount=10**100)),
        Hostile("status-negative-count", _status(symbolCount=-5)),
        Hostile("status-array", _raw_status("[1, 2, 3]")),
        Hostile("status-null", _raw_status("null")),
        Hostile("status-string-json", _raw_status('"just a string"')),
        Hostile("status-empty", _raw_status("")),
        Hostile("status-empty-object", _raw_status("{}")),
        Hostile("status-only-id", _raw_status('{"exchangeId": 2}')),
        Hostile("status-not-json", _raw_status("{not json")),
        Hostile("status-deep-nesting", _raw_status(DEEP_JSON)),
        Hostile("status-deep-field", _raw_status('{"exchangeId": 2, "x": ' + DEEP_JSON + "}")),
        Hostile(
            "status-oversized", _raw_status(json.dumps(status_payload(2, "kraken", pad=MEGABYTE)))
        ),
        Hostile(
            "status-invalid-utf8", _raw_status(b'{"exchangeId": 2, "hostname": "\xff\xfe\xc3("}')
        ),
        Hostile("status-lone-surrogate", _raw_status('{"exchangeId": 2, "hostname": "\\ud800"}')),
        Hostile("status-other-id", _status(exchangeId=7)),
        Hostile("status-huge-id", _status(exchangeId=10**30)),
        Hostile("status-negative-id", _status(exchangeId=-1)),
        Hostile("status-key-huge-id", _huge_id_key()),
        # stream entries
        Hostile("entry-unknown-event", _entry({"event": "explode", "boom": MARKUP})),
        Hostile("entry-no-event", _entry({"hostname": "x"})),
        Hostile("entry-only-event", _entry({"event": "state_transition"})),
        Hostile(
            "entry-unknown-states",
            _entry(transition(VICTIM_NAME, 2, fromState="?", toState="exploding")),
        ),
        Hostile("entry-id-huge", _entry(error_entry(VICTIM_NAME, 2, exchangeId="9" * 40))),
        Hostile("entry-id-negative", _entry(error_entry(VICTIM_NAME, 2, exchangeId="-1"))),
        Hostile(
            "entry-invalid-utf8",
            _entry({"event": "error", "error": b"\xff\xfe\xc3(", "hostname": b"\xc0"}),
        ),
        Hostile(
            "entry-many-fields", _entry({f"f{i}": "v" for i in range(1_000)} | {"event": "error"})
        ),
        # holder changes (docs/wire-format.md 2.7): every field read
        Hostile(
            "entry-holder-hostile",
            _perseus_entry(
                {
                    "event": "holder",
                    "hostname": MARKUP + "\x1b[31m",
                    "pid": "-" + "9" * 40,
                    "instanceId": MARKUP,
                    "previousInstanceId": MEGABYTE,
                    "previousHostname": "\x1b]0;owned\x07" + MARKUP,
                    "previousPid": MARKUP,
                    "via": "takeover",
                    "exchangeId": "2",
                    "exchangeName": VICTIM_NAME,
                }
            ),
        ),
        Hostile("entry-holder-bare", _perseus_entry({"event": "holder"})),
        Hostile(
            "entry-holder-bad-bytes",
            _perseus_entry({"event": "holder", "previousHostname": b"\xff\xfe", "pid": b"\xc0"}),
        ),
        # automatic restarts (docs/wire-format.md 2.8): every field read
        Hostile(
            "entry-restart-hostile",
            _perseus_entry(
                {
                    "event": "restart",
                    "hostname": MARKUP + "\x1b[31m",
                    "attempt": "9" * 40,
                    "startRetries": "-3",
                    "delayMs": "NaN",
                    "reason": MEGABYTE,
                    "exchangeId": "2",
                    "exchangeName": VICTIM_NAME,
                }
            ),
        ),
        Hostile("entry-restart-bare", _perseus_entry({"event": "restart"})),
        Hostile(
            "entry-restart-bad-bytes",
            _perseus_entry(
                {"event": "restart", "reason": b"\xff\xfe", "delayMs": b"\xc0", "attempt": "²"}
            ),
        ),
        # catalog values
        Hostile("catalog-not-json", _catalog("{not json")),
        Hostile("catalog-deep-nesting", _catalog(DEEP_JSON)),
        Hostile("catalog-wrong-types", _catalog('{"id": "2", "name": 5, "isActive": "yes"}')),
        Hostile("catalog-nan", _catalog('{"id": NaN, "name": "kraken", "isActive": true}')),
        Hostile("catalog-field-not-id", _catalog(_catalog_json("x"), field="not-an-id")),
        Hostile("catalog-field-huge-id", _catalog(_catalog_json("x"), field="9" * 30)),
        Hostile("catalog-field-negative", _catalog(_catalog_json("x"), field="-1")),
        Hostile("catalog-invalid-utf8", _catalog(b"\xff\xfe{")),
        # presence members
        Hostile("presence-not-json", _presence("{not json")),
        Hostile("presence-deep-nesting", _presence(DEEP_JSON)),
        Hostile("presence-wrong-types", _presence('{"agentId": 5, "exchangeId": "2"}')),
        Hostile("presence-other-exchange", _presence(_presence_json(exchangeId=9))),
        # presence members out of range: this host's own pid scope, so that a
        # reader checks the pid (an out-of-range one overflowed that check)
        Hostile("presence-pid-overflow", _presence(_here_json(pid=2**70))),
        Hostile("presence-pid-int64-max", _presence(_here_json(pid=2**63 - 1))),
        Hostile("presence-pid-negative", _presence(_here_json(pid=-1))),
        Hostile("presence-pid-float", _presence(_here_json(pid=4242.5))),
        Hostile("presence-huge-id", _presence(_presence_json(exchangeId=10**30))),
        Hostile("presence-empty-agent-id", _presence(_presence_json(agentId=""))),
        Hostile("presence-null", _presence("null")),
        Hostile("presence-array", _presence("[1, 2]")),
        Hostile("presence-oversized", _presence(_presence_json(note=MEGABYTE))),
        Hostile("presence-invalid-utf8", _presence(b'{"agentId": "\xff\xfe", "exchangeId": 2}')),
        Hostile("presence-scope-markup", _presence(_presence_json(pidScope=MARKUP))),
        # status extras out of range
        Hostile("status-pid-overflow", _status(pid=2**70, instanceId="h:2:1:1", epoch=1)),
        Hostile("status-epoch-overflow", _status(epoch=2**70, instanceId="h:2:1:1")),
        Hostile("status-ttl-overflow", _status(ttlMs=2**70, instanceId="h:2:1:1")),
        Hostile("status-ttl-huge", _status(ttlMs=10**17, instanceId="h:2:1:1")),
        Hostile(
            "status-interval-overflow", _status(heartbeatIntervalMs=2**70, instanceId="h:2:1:1")
        ),
        Hostile("status-interval-zero", _status(heartbeatIntervalMs=0, instanceId="h:2:1:1")),
        Hostile("status-interval-text", _status(heartbeatIntervalMs="5000", ttlMs=1)),
        Hostile("status-interval-tiny", _status(heartbeatIntervalMs=1, instanceId="h:2:1:1")),
        Hostile("entry-id-superscript", _entry(error_entry(VICTIM_NAME, 2, exchangeId="\u00b2"))),
        # what the operators want: unreadable records read as none
        Hostile("wanted-not-json", _wanted("{not json")),
        Hostile("wanted-wrong-types", _wanted('{"want": 5, "operator": [], "at": "soon"}')),
        Hostile("wanted-unknown-want", _wanted('{"want": "pause", "operator": "x", "at": 1}')),
        Hostile("wanted-at-overflow", _wanted('{"want": "stop", "operator": "x", "at": 1e40}')),
        Hostile("wanted-huge", _wanted(json.dumps({"want": "stop", "operator": MEGABYTE}))),
        Hostile(
            "wanted-markup", _wanted(json.dumps({"operator": MARKUP, "want": "stop", "at": 1}))
        ),
        Hostile("wanted-deep-nesting", _wanted(DEEP_JSON)),
        Hostile("wanted-invalid-utf8", _wanted(b"\xff\xfe{")),
        Hostile("type-wanted-string", _wrong_type(keys.wanted_key(VICTIM_ID), "string")),
        # command outcomes: read by the agent only; no reader may trip over them
        Hostile("outcome-pid-overflow", _outcome(_outcome_json(pid=2**70))),
        Hostile("outcome-at-overflow", _outcome(_outcome_json(at=2**70))),
        Hostile("outcome-not-json", _outcome("{not json")),
        Hostile("outcome-deep-nesting", _outcome(DEEP_JSON)),
        Hostile("outcome-invalid-utf8", _outcome(b"\xff\xfe{")),
        # keys of the wrong type
        Hostile(
            "type-status-hash-and-stream-string",
            _both(
                _wrong_type(keys.status_key(VICTIM_ID), "hash"),
                _wrong_type(keys.activity_key(VICTIM_NAME), "string"),
            ),
            reported=keys.status_key(VICTIM_ID),
        ),
    ]
    for key, kinds in UNREAD_WRONG_TYPES.items():
        cases += [Hostile(f"type-{key}-{kind}", _wrong_type(key, kind)) for kind in kinds]
    for label, (key, kinds) in WRONG_TYPES.items():
        for kind in kinds:
            cases.append(
                Hostile(
                    f"type-{label}-{kind}",
                    _wrong_type(key, kind),
                    reported=key,
                    breaks_catalog=label == "catalog",
                )
            )
    names = [case.name for case in cases]
    assert len(names) == len(set(names)), "corpus names must be unique"
    return cases


def _catalog_json(name: str) -> str:
    return json.dumps({"id": VICTIM_ID, "name": name, "displayName": name, "isActive": True})


def _presence_json(**overrides: object) -> str:
    return json.dumps(presence_member(VICTIM_ID, VICTIM_NAME, **overrides))


def _here_json(**overrides: object) -> str:
    """A presence member in this host's pid scope, with `overrides`."""
    return _presence_json(pidScope=process_scope(), **overrides)


def _outcome_json(**overrides: object) -> str:
    record: dict[str, object] = {
        "state": "running",
        "entry": "1-0",
        "server": "agent-host:4242:abc",
        "hostname": "agent-host",
        "pid": 4242,
        "at": 1,
        "command": "start",
    }
    record.update(overrides)
    return json.dumps(record)


def _nan_payload(token: str) -> str:
    return json.dumps(status_payload(VICTIM_ID, VICTIM_NAME, symbolCount=0)).replace(
        '"symbolCount": 0', f'"symbolCount": {token}'
    )


def _huge_id_key() -> Writer:
    def write(r: sync_redis.Redis) -> None:
        key = f"exchange:{'9' * 40}:status"
        r.set(key, json.dumps(status_payload(10**30, "huge")), px=STATUS_TTL_MS)

    return write
