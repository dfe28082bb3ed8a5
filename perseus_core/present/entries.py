"""How an activity entry reads, where every surface must say the same.

An error entry carries its message and the state its writer was in; a
Perseus agent's message often names that state already (`child command
exited with code 75 while active`). Whether a surface adds the state beside
the message is decided here once, so the dashboard's feed, `perseus log`
and the notifier never print it twice (`... while active  in active`).
A holder entry and a restart entry read the same everywhere too
(`holder_text`, `restart_text`).
"""

from __future__ import annotations

import re

from perseus_core.wire.models import ErrorEntry, HolderEntry, RestartEntry, restart_words
from perseus_core.wire.text import clean


def error_state(entry: ErrorEntry) -> str | None:
    """The state to name beside an error's message, raw as read: the state
    the writer was in, unless it is missing or the message already names it
    (`while active`, `in active`, any case)."""
    state = entry.state.strip()
    if not state:
        return None
    named = re.compile(rf"\b(?:while|in) {re.escape(state)}\b", re.IGNORECASE)
    return None if named.search(entry.error) else state


def _who(hostname: str, pid: str) -> str:
    host = clean(hostname, 100) or "?"
    number = clean(pid, 12)
    return f"{host} pid {number}" if number else host


def holder_text(entry: HolderEntry) -> str:
    """What a holder entry says, cleaned, for every surface alike:
    `holder changed: vm pid 29183 took over from vm pid 28770`, with
    `(its process was gone)` after a takeover, or `holder: vm pid 28770
    (no earlier holder on record)` for the first holder on record."""
    new = _who(entry.hostname, entry.pid)
    if not entry.previous_instance_id and not entry.previous_hostname:
        return f"holder: {new} (no earlier holder on record)"
    old = _who(entry.previous_hostname, entry.previous_pid)
    if not entry.changed:
        return f"holder: {new} claimed again after {old}"
    text = f"holder changed: {new} took over from {old}"
    if entry.via == "takeover":
        text += " (its process was gone)"
    return text


RESTART_REASON_CHARS = 300
"""Longest reason a restart entry's words carry (what the agent writes is shorter)."""


def restart_text(entry: RestartEntry) -> str:
    """What a restart entry says, cleaned, in the agent's own words
    (`restart_words`); a field missing or malformed is left out."""
    reason = clean(entry.reason, RESTART_REASON_CHARS)
    return restart_words(entry.delay_s, entry.attempt_count, entry.retries_count, reason)
