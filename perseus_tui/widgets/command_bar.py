"""The command bar: one line per recent start/stop, updated in place as it progresses.

A command goes sent → acknowledged by the agent → done or failed; a refused
one never leaves the dashboard. Each step rewrites its command's line instead
of stacking notifications over the cards and the feed; only failures also
raise a notification. A line too long for the terminal (a refusal's reason
at 80 columns) wraps at a word onto a second row, rather than being cut in
the middle of one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from textual.content import Content
from textual.geometry import Size
from textual.reactive import reactive
from textual.widget import Widget

from perseus_tui import render

MAX_LINES = 2
"""Commands shown at once: the newest ones (older finished ones drop off)."""
ROWS_PER_LINE = 2
"""Screen rows one command's line may wrap onto; beyond them it ends in an ellipsis."""

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


def fitted(content: Content, width: int, rows: int = ROWS_PER_LINE) -> list[Content]:
    """`content` wrapped at words to `width`, on at most `rows` rows; what
    does not fit ends the last row in an ellipsis."""
    if width <= 0:
        return [content]
    wrapped = content.wrap(width)
    if len(wrapped) <= rows:
        return wrapped
    rest = Content(" ").join(wrapped[rows - 1 :])
    return [*wrapped[: rows - 1], rest.truncate(width, ellipsis=True)]


class CommandBar(Widget):
    """The recent commands' lines, newest last; hidden while there are none."""

    DEFAULT_CSS = f"""
    CommandBar {{
        height: auto;
        max-height: {MAX_LINES * ROWS_PER_LINE};
        padding: 0 1;
        background: $boost;
        text-wrap: nowrap;
        display: none;
        &.-shown {{ display: block; }}
    }}
    """

    lines: reactive[tuple[CommandLine, ...]] = reactive((), layout=True)
    """The lines shown (bound to the app's `commands`)."""

    def watch_lines(self, lines: tuple[CommandLine, ...]) -> None:
        self.set_class(bool(lines), "-shown")

    def _rows(self, width: int) -> list[Content]:
        return [row for line in self.lines for row in fitted(line_content(line), width)]

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self._rows(width))

    def render(self) -> Content:
        return Content("\n").join(self._rows(self.content_region.width))
