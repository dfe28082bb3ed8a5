"""What the demo's dashboard says about itself: the intro panel's tour and the first selection.

A newcomer sees six cards at once and no hint of what each is there to
show; the intro names them, says how the fleet runs (one host process and
two agents of their own), tells what to try, and the exchange to try first
is the one selected when the dashboard opens.
"""

from __future__ import annotations

from collections.abc import Sequence

from perseus_cli.apps.demo import TRY_FIRST, DemoMember, DemoTimings, Role

_ON_SCREEN = {
    Role.ACTIVE: "active and healthy: its heartbeat stays green",
    Role.IDLE: "READY: an agent waits and nothing runs yet",
    Role.CRASHING: "its feed crashes: restarted with backoff, then FATAL",
    Role.KILLED: "own agent, SIGKILLed: no heartbeat, then offline",
    Role.WARMING: "warming until its feed opens its port (ready_tcp)",
    Role.LAGGING: "own agent, frozen at times: heartbeat yellow, red",
}
"""What each role's card is there to show.

Every line of the intro stays within 70 characters: the panel is that wide
inside on an 80-column terminal, and a wrapped line breaks the table."""


def first_selection(members: Sequence[DemoMember]) -> int | None:
    """The exchange the dashboard selects first: the one to try first, if the fleet has it."""
    return next((m.exchange_id for m in members if m.name == TRY_FIRST), None)


def _named(members: Sequence[DemoMember], role: Role) -> DemoMember | None:
    return next((m for m in members if m.role is role), None)


def intro_text(
    members: Sequence[DemoMember],
    timings: DemoTimings | None = None,
    host_file: str | None = None,
) -> str:
    """The intro panel: how the fleet runs, one line per named card, then what to try.

    Args:
        members: the fleet.
        timings: how fast its scripted behaviours play out (the live demo's by default).
        host_file: where the host process's file is, to read it.
    """
    timings = timings or DemoTimings()
    width = max((len(f"{m.display_name} #{m.exchange_id}") for m in members[:6]), default=0)
    in_host = sum(not m.separate for m in members)
    alone = len(members) - in_host
    plural = "s" * (len(members) != 1)
    runs = f"runs {in_host}, {alone} run alone." if alone else f"runs {in_host}."
    if host_file is not None:
        runs += f" Host file: {host_file}"
    lines = [
        f"{len(members)} exchange{plural} on a throw-away Redis: one `perseus agent --config`",
        runs,
        "",
    ]
    for member in members[:6]:
        name = f"{member.display_name} #{member.exchange_id}"
        lines.append(f"  {name:<{width}}  {_ON_SCREEN[member.role]}")
    if len(members) > 6:
        lines.append(f"  and {len(members) - 6} more, active")
    lines.append("")
    first = next((m for m in members if m.name == TRY_FIRST), None)
    if first is not None:
        lines.append(f"Try: {first.display_name} is selected; s starts it, x stops it.")
    lines.append("o on a card shows its feed's output, live.")
    crashing = _named(members, Role.CRASHING)
    if crashing is not None:
        lines.append(
            f"{crashing.display_name}: restarts with backoff, then FATAL after"
            f" {timings.start_retries} tries; s clears it."
        )
    warming = _named(members, Role.WARMING)
    if warming is not None:
        lines.append(
            f"{warming.display_name} warms until its port opens (~{timings.ready_after_s:g} s);"
            " x then s to see it again."
        )
    lines.append("Enter opens a card's history; ? lists every key and the colours.")
    return "\n".join(lines)
