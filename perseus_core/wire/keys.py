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
