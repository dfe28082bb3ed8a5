"""Every Redis key and channel name Perseus reads or writes, in one place.

The first group is fixed by the existing TypeScript implementation (docs/wire-format.md 1);
the second group is Perseus's own (docs/wire-format.md 2).
"""

from __future__ import annotations

import re

STATUS_KEY_PATTERN = "exchange:*:status"
"""SCAN pattern matching every instance status key."""

CATALOG_KEY = "perseus:exchanges"
"""Hash of known exchanges: field = exchange id, value = catalog entry JSON."""

ACTIVITY_KEY_PREFIX = "logs:network:"
"""Prefix of the activity streams the TypeScript servers write and read: only
`state_transition` and `error` entries of the slot's holders go there."""

PERSEUS_ACTIVITY_KEY_PREFIX = "perseus:activity:"
"""Prefix of Perseus's own activity streams: every entry kind the TypeScript
servers' readers do not understand (docs/wire-format.md 2.3)."""

ACTIVITY_PREFIXES = (ACTIVITY_KEY_PREFIX, PERSEUS_ACTIVITY_KEY_PREFIX)
"""Both activity stream prefixes; every reader merges an exchange's two streams."""

LIVERMORE_COMMANDS_PREFIX = "livermore:commands:"
LIVERMORE_RESPONSES_PREFIX = "livermore:responses:"

_STATUS_KEY_RE = re.compile(r"^exchange:(\d{1,18}):status$")


def status_key(exchange_id: int) -> str:
    """The status key of one exchange slot (TTL = liveness)."""
    return f"exchange:{exchange_id}:status"


def parse_status_key(key: str) -> int | None:
    """The exchange id encoded in a status key, or None if it is not one."""
    match = _STATUS_KEY_RE.match(key)
    return int(match.group(1)) if match else None


def activity_key(exchange_name: str) -> str:
    """The activity stream of one exchange; names are lower-cased on the wire."""
    return f"{ACTIVITY_KEY_PREFIX}{exchange_name.lower()}"


def perseus_activity_key(exchange_name: str) -> str:
    """Perseus's own activity stream of one exchange (audit, refused claims, ...).

    Kept apart from `activity_key` because the TypeScript servers' admin feed
    shows every entry of `logs:network:{name}` as a line of its own.
    """
    return f"{PERSEUS_ACTIVITY_KEY_PREFIX}{exchange_name.lower()}"


def livermore_commands_channel(identity_sub: str) -> str:
    """The pub/sub channel a TypeScript server of one owner listens to for commands."""
    return f"{LIVERMORE_COMMANDS_PREFIX}{identity_sub}"


def livermore_responses_channel(identity_sub: str) -> str:
    """The pub/sub channel a TypeScript server of one owner answers on."""
    return f"{LIVERMORE_RESPONSES_PREFIX}{identity_sub}"


def epoch_key(exchange_id: int) -> str:
    """Fencing counter of one slot, incremented every time the slot changes hands.

    It lives in its own key (not only in the status payload) so that it keeps
    increasing across expiries of the status key.
    """
    return f"perseus:epoch:{exchange_id}"


def commands_key(exchange_id: int) -> str:
    """The command stream an agent reads for its exchange."""
    return f"perseus:commands:{exchange_id}"


def replies_key(correlation_id: str) -> str:
    """The reply list of one command (ack, then success or error)."""
    return f"perseus:replies:{correlation_id}"


def outcomes_key(exchange_id: int) -> str:
    """Hash of recent command outcomes by correlation id, for de-duplication."""
    return f"perseus:outcomes:{exchange_id}"


def agents_key(exchange_id: int) -> str:
    """The presence set of the agents watching one exchange (docs/wire-format.md 2.4).

    A sorted set, one member per running agent (its presence JSON) scored by
    when that member expires: it says an exchange whose status key is missing
    can still be started, and by how many agents.
    """
    return f"perseus:agents:{exchange_id}"


def output_key(exchange_id: int) -> str:
    """The last lines of one exchange's child output (docs/wire-format.md 2.5).

    A capped stream the agent writes as its child prints: `perseus output ID`
    and the dashboard read it.
    """
    return f"perseus:output:{exchange_id}"


def wanted_key(exchange_id: int) -> str:
    """What the operators last asked of one exchange: started or stopped
    (docs/wire-format.md 2.6).

    A hash whose one field `record` holds one JSON record, written by the sender of every `start`
    and `stop` (the CLI, the dashboard), read by every agent before it starts
    the exchange on its own (`--autostart`, a restart after a crash).
    """
    return f"perseus:wanted:{exchange_id}"
