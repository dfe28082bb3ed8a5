"""What the demo's dashboard says about itself: the intro panel's tour and the first selection.

A newcomer sees six cards at once and no hint of what each is there to
show; the intro names them, tells what to try first, and that exchange is
the one selected when the dashboard opens.
"""

from __future__ import annotations

from collections.abc import Sequence

from perseus_cli.apps.demo import TRY_FIRST, DemoMember, Role

_ON_SCREEN = {
    Role.ACTIVE: "active and healthy: its heartbeat stays green",
    Role.IDLE: "READY: an agent waits and nothing runs yet",
    Role.CRASHING: "its child crashes every few seconds: errors in the feed",
    Role.KILLED: "killed with SIGKILL once active: no heartbeat, then offline",
    Role.WARMING: "warming up slowly (five minutes)",
    Role.LAGGING: "heartbeats lag: its age turns yellow, then red, then green",
}
"""What each role's card is there to show."""


def first_selection(members: Sequence[DemoMember]) -> int | None:
    """The exchange the dashboard selects first: the one to try first, if the fleet has it."""
    return next((m.exchange_id for m in members if m.name == TRY_FIRST), None)


def intro_text(members: Sequence[DemoMember]) -> str:
    """The intro panel: one line per named card, then what to try first."""
    width = max((len(f"{m.display_name} #{m.exchange_id}") for m in members[:6]), default=0)
    lines = [
        f"{len(members)} real `perseus agent` processes on a throw-away Redis,",
        "one per exchange. Each card shows one thing:",
        "",
    ]
    for member in members[:6]:
        name = f"{member.display_name} #{member.exchange_id}"
        lines.append(f"  {name:<{width}}  {_ON_SCREEN[member.role]}")
    if len(members) > 6:
        lines.append(f"  and {len(members) - 6} more, active")
    first = next((m for m in members if m.name == TRY_FIRST), None)
    lines.append("")
    if first is not None:
        lines.append(
            f"Try first: {first.display_name} is selected; press s to start it, x to stop it."
        )
    lines.append("Enter opens a card's history, ? lists every key and what the colours mean.")
    return "\n".join(lines)
