"""One start/stop command from the dashboard, told step by step as `CommandProgress`.

Kept apart from the fleet service: it decides how every way a command can
end reads on screen (sent -> acknowledged -> result, no agent, refused,
failed), while the service only runs it and re-reads the exchange after.
"""

from __future__ import annotations

from redis.exceptions import NoPermissionError
from textual.dom import DOMNode

from perseus_core.plumbing.connection import describe_redis_error
from perseus_core.plumbing.errors import REDIS_ERRORS
from perseus_core.present.commands import refused_line
from perseus_core.store.control.livermore import NoLivermoreListener
from perseus_core.store.control.records import NoAgentAnswered
from perseus_core.store.control.sender import ControlClient, NotSteerable
from perseus_core.wire.errors import PerseusError
from perseus_core.wire.models import CommandReply, CommandType, ReplyStatus
from perseus_core.wire.settings import Settings
from perseus_tui.messages import CommandProgress, CommandStage, ReadOnlyDetected

COMMAND_ERRORS: tuple[type[BaseException], ...] = (PerseusError, *REDIS_ERRORS)
"""What sending a command can fail with, apart from the cases reported on their own."""


async def run_command(
    host: DOMNode,
    client: ControlClient,
    settings: Settings,
    *,
    exchange_id: int,
    label: str,
    command: CommandType,
    operator: str,
) -> bool:
    """Send `command`, posting each step to `host`; True once an outcome came back.

    Commands carry the real time: the agent judges expiry by it, whatever
    clock the display uses.
    """

    def progress(stage: CommandStage, detail: str = "") -> None:
        host.post_message(CommandProgress(exchange_id, label, command.value, stage, detail))

    def acked(reply: CommandReply) -> None:
        progress("acknowledged", reply.message or "")

    try:
        outcome = await client.send(
            exchange_id,
            command,
            operator=operator,
            on_ack=acked,
            on_sent=lambda _cmd: progress("sent"),
        )
    except (NoAgentAnswered, NoLivermoreListener) as exc:
        progress("no-agent", str(exc))
        return False
    except NotSteerable as exc:
        progress("failed", refused_line(exc.route, exc.command))
        return False
    except NoPermissionError as exc:
        reason = f"Redis refuses commands from this user ({str(exc).splitlines()[0]})"
        host.post_message(ReadOnlyDetected(reason))
        progress("failed", reason)
        return False
    except COMMAND_ERRORS as exc:
        progress("failed", str(exc) or describe_redis_error(settings, exc))
        return False
    if outcome.status is ReplyStatus.SUCCESS:
        progress("success", outcome.message or "")
    else:
        progress("error", outcome.message or "the agent reported an error")
    return True
