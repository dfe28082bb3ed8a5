"""Whether a start or stop can succeed, decided from what a reader already
knows, and how a refusal reads.

An agent answers a command it cannot carry out with an error, but only after
the command has travelled to it (or, with no agent at all, after the sender
has waited out its ack timeout). The dashboard and the CLI both hold a fresh
view of the exchange: when that view already says the command cannot work,
they refuse it at once with the reason, and the same words on both surfaces.
The store decides the route (`perseus_core.store.control.sender.decide`);
the words for a route nothing can carry are here.
"""

from __future__ import annotations

from perseus_core.store.control.sender import Route, Via, decide
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


def unsteerable(route: Route) -> str:
    """Why nothing can carry a command over `route` (its `via` is `NONE`): who
    holds the exchange, and how to enable steering it over Livermore's channel."""
    return (
        f"the slot is held by {route.holder} (not a Perseus agent), and the catalog entry "
        f"names no Livermore owner to ask; enable steering with "
        f"`perseus catalog set {route.exchange_id} --livermore-sub SUB`"
    )


def refused_line(route: Route, command: str) -> str:
    """`cannot stop exchange 2: ...`: a route nothing can carry, as the CLI and
    the dashboard's command line say it."""
    return f"cannot {command} exchange {route.exchange_id}: {unsteerable(route)}"


def route_of(view: ExchangeView, command: CommandType) -> Route:
    """The channel `command` would take (`perseus_core.store.control.sender.decide`),
    judged from the view: its holder, catalog entry and agents."""
    return decide(
        view.exchange_id,
        command,
        holder=view.status,
        occupied=view.key_exists,
        entry=view.catalog_entry,
        agents=len(view.agents),
    )


def refusal(view: ExchangeView, command: CommandType) -> str | None:
    """Why `command` cannot succeed on `view`, or None when it may.

    The reasons mirror the agent's own refusals (it starts only when idle,
    stops only a run), so refusing early never refuses what would work:

    - start or stop: the slot is held by another writer and the catalog names
      no Livermore owner to ask (`route_of`, the same words as the CLI's);
    - start: an instance already holds the slot (live or unreadable), or no
      agent runs for the exchange (and no Livermore owner is named for it);
    - stop: no instance runs (ready or offline), or it is already stopping;
    - ping: nobody could answer (offline: no instance and no agent).

    Args:
        view: the exchange as last read.
        command: `start`, `stop` or `ping`.
    """
    route = route_of(view, command)
    if route.via is Via.NONE:
        return unsteerable(route)
    kind = view.kind
    if command is CommandType.START:
        if kind is ViewKind.LIVE and view.status is not None:
            return f"it is already {clean(view.status.connection_state.value, 16)}"
        if kind is ViewKind.UNREADABLE:
            return "an instance holds its slot (its status is unreadable)"
        if kind is ViewKind.OFFLINE and route.via is not Via.LIVERMORE:
            return _nobody_there(view)
        return None
    if command is CommandType.STOP:
        if kind is ViewKind.OFFLINE and not view.in_catalog:
            return _nobody_there(view)
        if kind in (ViewKind.READY, ViewKind.OFFLINE):
            return "no instance of it is running"
        if view.status is not None and view.status.connection_state in _STOP_REFUSED_STATES:
            return f"it is already {view.status.connection_state.value}"
    if command is CommandType.PING and kind is ViewKind.OFFLINE and route.via is not Via.LIVERMORE:
        return _nobody_there(view)
    return None
