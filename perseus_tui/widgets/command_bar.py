"""The command bar: one line per recent start/stop, updated in place as it progresses.

A command goes sent → acknowledged by the agent → done or failed; a refused
one never leaves the dashboard. Each step rewrites its command's line instead
of stacking notifications over the cards and the feed; only failures also
raise a notification.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

from perseus_tui import render

MAX_LINES = 2
"""Commands shown at once: the newest ones (older finished ones drop off)."""

FAILED_STAGES = frozenset({"error", "failed", "no-agent"})
"""Stages that end a command unsuccessfully (they are also notified)."""
FINAL_STAGES = FAILED_STAGES | {"success", "refused"}


@dataclass(frozen=True)
class CommandLine:
    """What one command has done so far."""

    exchange_id: int
    label: str
    command: str
    steps: tuple[str, ...] = ()
    """What happened, in order (`sent`, `acknowledged by vm`...), cleaned for display."""
    stage: str = "sent"
    """The latest stage: sent, acknowledged, success, error, failed, no-agent or refused."""

    @property
    def finished(self) -> bool:
        """Done, failed or refused: no further step will come."""
        return self.stage in FINAL_STAGES

    def advanced(self, stage: str, step: str) -> CommandLine:
        """This line after one more step."""
        return replace(self, stage=stage, steps=(*self.steps, step))


def progress(
    lines: Sequence[CommandLine], exchange_id: int, label: str, command: str, stage: str, step: str
) -> tuple[CommandLine, ...]:
    """`lines` after a step of a command: its unfinished line is updated in
    place, else a new line is added; only the newest `MAX_LINES` are kept."""
    updated = list(lines)
    for index in range(len(updated) - 1, -1, -1):
        line = updated[index]
        if line.exchange_id == exchange_id and line.command == command and not line.finished:
            updated[index] = line.advanced(stage, step)
            break
    else:
        updated.append(CommandLine(exchange_id, label, command).advanced(stage, step))
    return tuple(updated[-MAX_LINES:])


def line_content(line: CommandLine) -> Content:
    """`⋯ Start Gemini #5: sent · acknowledged by vm`, `✔ …: done`, `✖ … refused: why`."""
    if line.stage == "success":
        mark, style = "✔ ", f"bold {render.SUCCESS}"
    elif line.stage in FAILED_STAGES or line.stage == "refused":
        mark, style = "✖ ", render.OFFLINE_STYLE
    else:
        mark, style = "⋯ ", f"bold {render.PRIMARY}"
    title = f"{line.command.capitalize()} {line.label}"
    if line.stage == "refused":
        title += " refused"
    steps = Content.styled(" · ", render.MUTED).join(
        Content.styled(step, style if index == len(line.steps) - 1 else render.MUTED)
        for index, step in enumerate(line.steps)
    )
    return Content.assemble((mark, style), (title, "bold"), (": ", render.MUTED), steps)


class CommandBar(Widget):
    """The recent commands' lines, newest last; hidden while there are none."""

    DEFAULT_CSS = """
    CommandBar {
        height: auto;
        max-height: 2;
        padding: 0 1;
        background: $boost;
        text-wrap: nowrap;
        text-overflow: ellipsis;
        display: none;
        &.-shown { display: block; }
    }
    """

    lines: reactive[tuple[CommandLine, ...]] = reactive((), layout=True)
    """The lines shown (bound to the app's `commands`)."""

    def watch_lines(self, lines: tuple[CommandLine, ...]) -> None:
        self.set_class(bool(lines), "-shown")

    def render(self) -> Content:
        return Content("\n").join(line_content(line) for line in self.lines)
