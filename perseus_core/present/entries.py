"""How an activity entry reads, where every surface must say the same.

An error entry carries its message and the state its writer was in; a
Perseus agent's message often names that state already (`child command
exited with code 75 while active`). Whether a surface adds the state beside
the message is decided here once, so the dashboard's feed, `perseus log`
and the notifier never print it twice (`... while active  in active`).
"""

from __future__ import annotations

import re

from perseus_core.wire.models import ErrorEntry


def error_state(entry: ErrorEntry) -> str | None:
    """The state to name beside an error's message, raw as read: the state
    the writer was in, unless it is missing or the message already names it
    (`while active`, `in active`, any case)."""
    state = entry.state.strip()
    if not state:
        return None
    named = re.compile(rf"\b(?:while|in) {re.escape(state)}\b", re.IGNORECASE)
    return None if named.search(entry.error) else state
