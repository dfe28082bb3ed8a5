"""Whose error an entry is: the exchange's holder's, or another writer's.

An exchange's streams do not hold only its holder's words. A Livermore
server whose claim was refused writes an `error` entry (its own host, state
idle) into the holder's `logs:network:{name}` (docs/wire-format.md part 4);
a Perseus agent whose claim was refused, or that was fenced, writes its own
into `perseus:activity:{name}`. While the status key's holder is healthy,
none of them is the exchange's error: "refused claim by lm-host-09" is what
happened, naming the host, and the exchange runs on. Decided here once, for
every surface that reports errors (the notifier first).
"""

from __future__ import annotations

from dataclasses import dataclass

from perseus_core.store.network import ExchangeView, ViewKind, same_writer
from perseus_core.wire.models import ActivityEntry, ConnectionState, ErrorEntry

_CLAIMANT_STATES = frozenset({"", ConnectionState.IDLE.value})
"""States a writer that never held the slot reports its error in."""


@dataclass(frozen=True, slots=True)
class OtherWriter:
    """An error entry another host wrote while the exchange's holder is healthy.

    All strings are raw, as read from Redis: show them as plain text.

    Attributes:
        host: the entry's writer.
        ip: its IP, or "" when the entry names none.
        holder: the status key holder's hostname.
        refused_claim: the writer was idle: a claim of the slot that was refused.
    """

    host: str
    ip: str
    holder: str
    refused_claim: bool

    @property
    def summary(self) -> str:
        """`refused claim by lm-host-09`, or `error from lm-host-09, not the holder`."""
        if self.refused_claim:
            return f"refused claim by {self.host}"
        return f"error from {self.host}, not the holder"


def other_writer(entry: ActivityEntry, view: ExchangeView | None) -> OtherWriter | None:
    """The other writer of an error entry, or None when it is the exchange's own.

    Args:
        entry: an activity entry (only `error` entries are judged).
        view: the exchange as read now; its status names the holder.

    Returns:
        None for anything but an error, an entry without a hostname, an
        exchange whose key is missing or unreadable (no healthy holder to
        speak for it: the error may be its next holder's), and an entry from
        the holder's own host (`same_writer`).
    """
    if not isinstance(entry, ErrorEntry) or not entry.hostname:
        return None
    if view is None or view.kind is not ViewKind.LIVE or view.status is None:
        return None
    holder = view.status
    if same_writer(entry.hostname, entry.ip, holder.hostname, holder.ip_address or ""):
        return None
    return OtherWriter(entry.hostname, entry.ip, holder.hostname, entry.state in _CLAIMANT_STATES)
