"""Whether a start or stop can succeed, decided from what a reader already
knows, and how a command's refusal, progress and outcome read.

An agent answers a command it cannot carry out with an error, but only after
the command has travelled to it (or, with no agent at all, after the sender
has waited out its ack timeout). The dashboard and the CLI both hold a fresh
view of the exchange: when that view already says the command cannot work,
they refuse it at once with the reason, and the same words on both surfaces.
The store decides the route (`perseus_core.store.control.sender.decide`);
the words for a route nothing can carry are here.

Once a command is sent, every way it can end (a result, an error reply, no
agent, a refusal, Redis failing or refusing this user) is told as a
`CommandStep`: its stage and its words, decided here, so the surface that
runs the command only passes the steps on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from redis.exceptions import NoPermissionError

from perseus_core.plumbing.connection import describe_redis_error
from perseus_core.plumbing.errors import REDIS_ERRORS
from perseus_core.store.control.livermore import NoLivermoreListener
from perseus_core.store.control.records import CommandOutcome, NoAgentAnswered
from perseus_core.store.control.sender import NotSteerable, Route, Via, decide
from perseus_core.store.network import ExchangeView, ViewKind
from perseus_core.wire.errors import PerseusError
from perseus_core.wire.models import CommandReply, CommandType, ConnectionState, ReplyStatus
from perseus_core.wire.settings import Settings
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


def cannot(command: str, exchange_id: int, reason: str) -> str:
    """`cannot stop exchange 2: <reason>`: a command refused before it was
    sent, as the CLI and the dashboard's command line say it."""
    return f"cannot {command} exchange {exchange_id}: {reason}"


def refused_line(route: Route, command: str) -> str:
    """`cannot stop exchange 2: ...`: a route nothing can carry."""
    return cannot(command, route.exchange_id, unsteerable(route))


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
    - stop: no instance runs and no agent would answer (offline), an operator
      already stopped it, or it is already stopping; an idle agent (ready)
      answers a stop itself (it calls off a pending restart, and the stop
      keeps its autostart and restarts from starting it);
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
        if kind in (ViewKind.READY, ViewKind.OFFLINE) and view.stopped_by is not None:
            return "an operator already stopped it: its agents start it only on a `start`"
        if kind is ViewKind.OFFLINE:
            return "no instance of it is running"
        if view.status is not None and view.status.connection_state in _STOP_REFUSED_STATES:
            return f"it is already {view.status.connection_state.value}"
    if command is CommandType.PING and kind is ViewKind.OFFLINE and route.via is not Via.LIVERMORE:
        return _nobody_there(view)
    return None


# --- a sent command, step by step ---------------------------------------------------------

CommandStage = Literal["sent", "acknowledged", "success", "error", "no-agent", "failed"]
"""How far a sent command got: sent -> acknowledged -> success or error (the
agent's result), or no-agent / failed (it ended without a result)."""

COMMAND_ERRORS: tuple[type[BaseException], ...] = (PerseusError, *REDIS_ERRORS)
"""What sending a command can fail with; `failure_step` words each of them."""


@dataclass(frozen=True, slots=True)
class CommandStep:
    """One step of a sent command: its stage, and what it says.

    Attributes:
        stage: how far the command got.
        detail: the step's words (an agent's ack or result message, or why it
            ended); "" when the stage says it all.
        read_only: set when Redis refused the command for this user: why,
            so the surface can stop offering commands.
    """

    stage: CommandStage
    detail: str = ""
    read_only: str | None = None


SENT = CommandStep("sent")
"""The command is in the exchange's command stream (or published to Livermore's channel)."""


def ack_step(reply: CommandReply) -> CommandStep:
    """The agent acknowledged the command: its ack message (`acknowledged by vm`)."""
    return CommandStep("acknowledged", reply.message or "")


def outcome_step(outcome: CommandOutcome) -> CommandStep:
    """The agent's result: success with its message, or the error it reported."""
    if outcome.status is ReplyStatus.SUCCESS:
        return CommandStep("success", outcome.message or "")
    return CommandStep("error", outcome.message or "the agent reported an error")


def step_text(step: CommandStep) -> str:
    """How a step reads in one line: `sent`, `Acknowledged by vm`, `done: coinbase
    is active`, or the error (`failed` when it says nothing). `detail` must be
    clean text already (the caller shortens and strips it)."""
    detail = step.detail
    if step.stage == "sent":
        return "sent"
    if step.stage == "acknowledged":
        return acknowledgement(detail)
    if step.stage == "success":
        return "done" + (f": {detail}" if detail else "")
    return detail or "failed"


def acknowledgement(detail: str) -> str:
    """An agent's ack as a sentence: `Acknowledged by vm`, not `Acknowledged by the
    agent: acknowledged by vm`."""
    if not detail:
        return "Acknowledged by the agent"
    if detail.lower().startswith("acknowledged"):
        return detail[0].upper() + detail[1:]
    return f"Acknowledged: {detail}"


def failure_step(exc: BaseException, settings: Settings) -> CommandStep:
    """A command that ended without a result, by what `ControlClient.send` raised
    (one of `COMMAND_ERRORS`).

    Args:
        exc: the exception.
        settings: to name the Redis server when the error itself says nothing.
    """
    if isinstance(exc, NoAgentAnswered | NoLivermoreListener):
        return CommandStep("no-agent", str(exc))
    if isinstance(exc, NotSteerable):
        return CommandStep("failed", refused_line(exc.route, exc.command))
    if isinstance(exc, NoPermissionError):
        reason = f"Redis refuses commands from this user ({str(exc).splitlines()[0]})"
        return CommandStep("failed", reason, read_only=reason)
    return CommandStep("failed", str(exc) or describe_redis_error(settings, exc))
