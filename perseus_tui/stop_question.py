"""What the stop confirmation says: who would be asked, over which channel.

A stop published on the Livermore holder's channel reaches every server of
that holder's identity that listens (`PUBSUB NUMSUB`, one key), and any one of
them takes it. So it is asked about only when exactly one listens; with none,
or several (`StopNotAimed`), it is refused at once instead of being confirmed,
sent and waited for.
"""

from __future__ import annotations

from dataclasses import dataclass

from perseus_core.plumbing.connection import describe_redis_error
from perseus_core.plumbing.errors import REDIS_ERRORS
from perseus_core.plumbing.topology import RedisClient
from perseus_core.store.control.livermore import NoLivermoreListener
from perseus_core.store.control.sender import ControlClient, Route, StopNotAimed, Via
from perseus_core.store.network import ExchangeView
from perseus_core.wire import keys
from perseus_core.wire.errors import AccessDenied
from perseus_core.wire.models import CommandType
from perseus_core.wire.settings import Settings
from perseus_tui import render


@dataclass(frozen=True, slots=True)
class StopQuestion:
    """The confirmation's explanation, or why the stop is not even asked about.

    Attributes:
        explanation: the text under "Stop X?".
        stage: with `refused`, the command line's stage (`no-agent`, `failed`).
        refused: the stop cannot be sent: why, for the command's line.
    """

    explanation: str = ""
    stage: str = ""
    refused: str | None = None


def explanation(view: ExchangeView | None, route: Route | None = None) -> str:
    """Who a stop would reach: a Perseus agent, or the one Livermore server
    `route` counted; never a promise when nothing could answer."""
    host = render.label(view.status.hostname) if view is not None and view.status else ""
    if route is not None and route.via is Via.LIVERMORE:
        # Asked only with one listener: none, or several, is refused before.
        channel = render.label(keys.livermore_commands_channel(route.identity_sub or ""), "", 160)
        held = f"It is held by {host or 'another writer'}, not a Perseus agent"
        text = f"{held}: the stop goes to the one Livermore server listening on {channel}."
    elif host:
        text = f"The Perseus agent on {host} will be asked to stop."
    else:
        text = "No instance of it is online right now."
    return text + " Its card follows the transitions."


async def livermore_question(
    redis: RedisClient, settings: Settings, view: ExchangeView
) -> StopQuestion:
    """The question for a stop going over Livermore's channel, after counting
    its listeners now; refused when none listens or Redis cannot be read."""
    try:
        route = await ControlClient(redis, settings).route(view.exchange_id, CommandType.STOP)
    except AccessDenied as exc:  # it names the refused command (PUBSUB NUMSUB ...)
        return StopQuestion(stage="failed", refused=str(exc))
    except REDIS_ERRORS as exc:
        return StopQuestion(stage="failed", refused=describe_redis_error(settings, exc))
    if route.via is Via.LIVERMORE and route.listeners == 0:
        return StopQuestion(
            stage="no-agent", refused=str(NoLivermoreListener(route.identity_sub or ""))
        )
    if route.via is Via.LIVERMORE and route.listeners > 1:
        return StopQuestion(stage="failed", refused=str(StopNotAimed(route)))
    return StopQuestion(explanation(view, route))
