"""Whether a start or stop can succeed, decided from what a reader already knows.

An agent answers a command it cannot carry out with an error, but only after
the command has travelled to it (or, with no agent at all, after the sender
has waited out its ack timeout). The dashboard and the CLI both hold a fresh
view of the exchange: when that view already says the command cannot work,
they refuse it at once with the reason, and the same words on both surfaces.
"""

from __future__ import annotations

from perseus_core.store.network import ExchangeView, ViewKind
from perseus_core.wire.models import CommandType, ConnectionState
from perseus_core.wire.text import clean

_STOP_REFUSED_STATES = frozenset({ConnectionState.STOPPING, ConnectionState.STOPPED})
"""States in which a stop is already under way."""


def _nobody_there(view: ExchangeView) -> str:
    """Offline: an exchange nobody knows (a typo?) or one with no agent."""
    if not view.in_catalog:
        return "no such exchange: it is not in the catalog and no agent runs for it"
    return "no agent runs for it (start one with `perseus agent`)"


def refusal(view: ExchangeView, command: CommandType) -> str | None:
    """Why `command` cannot succeed on `view`, or None when it may.

    The reasons mirror the agent's own refusals (it starts only when idle,
    stops only a run), so refusing early never refuses what would work:

    - start: an instance already holds the slot (live or unreadable), or no
      agent runs for the exchange;
    - stop: no instance runs (ready or offline), or it is already stopping.

    Args:
        view: the exchange as last read.
        command: `start` or `stop`; other commands are never refused here.
    """
    kind = view.kind
    if command is CommandType.START:
        if kind is ViewKind.LIVE and view.status is not None:
            return f"it is already {clean(view.status.connection_state.value, 16)}"
        if kind is ViewKind.UNREADABLE:
            return "an instance holds its slot (its status is unreadable)"
        if kind is ViewKind.OFFLINE:
            return _nobody_there(view)
        return None
    if command is CommandType.STOP:
        if kind is ViewKind.OFFLINE and not view.in_catalog:
            return _nobody_there(view)
        if kind in (ViewKind.READY, ViewKind.OFFLINE):
            return "no instance of it is running"
        if view.status is not None and view.status.connection_state in _STOP_REFUSED_STATES:
            return f"it is already {view.status.connection_state.value}"
    return None
