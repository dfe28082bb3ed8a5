"""Every key binding, grouped by where it works, read from the bindings themselves."""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.content import Content
from textual.geometry import Size
from textual.screen import ModalScreen
from textual.widget import Widget

from perseus_core.present import HEARTBEAT_LEGEND, LEGEND, Tone
from perseus_core.present.exchange import Part
from perseus_tui import render
from perseus_tui.screens import close
from perseus_tui.screens.base import ExchangeScreen
from perseus_tui.screens.confirm import ConfirmScreen
from perseus_tui.screens.dashboard import DashboardScreen
from perseus_tui.screens.detail import DetailScreen
from perseus_tui.screens.output import OutputScreen
from perseus_tui.widgets.card_grid import CardGrid
from perseus_tui.widgets.instance_table import InstanceTable

HelpSection = tuple[str, Sequence[BindingType]]
"""A heading and the bindings that apply there."""


def binding_rows(bindings: Iterable[BindingType]) -> list[tuple[list[Binding], str]]:
    """Bindings grouped by action (`up,k` is one row), in declaration order, with descriptions.

    Hidden helper bindings without a description or tooltip are left out.
    """
    rows: dict[str, tuple[list[Binding], str]] = {}
    for binding in Binding.make_bindings(bindings):
        text = binding.tooltip or binding.description
        if not text:
            continue
        key = binding.id or binding.action
        if key in rows:
            rows[key][0].append(binding)
        else:
            rows[key] = ([binding], text)
    return list(rows.values())


KEY_COLUMN = 16
"""Cells before the descriptions; a wrapped description continues under itself."""


class HelpText(Widget):
    """Headings and `key  description` rows, descriptions wrapped with a hanging indent."""

    DEFAULT_CSS = """
    HelpText { width: 1fr; height: auto; }
    """

    def __init__(self, rows: Sequence[tuple[str, str] | str], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._rows = rows

    def _lines(self, width: int) -> list[Content]:
        lines: list[Content] = []
        room = max(20, width - KEY_COLUMN)
        for row in self._rows:
            if isinstance(row, str):
                if lines:
                    lines.append(Content(""))
                lines.append(Content.styled(row, "bold $accent"))
                continue
            keys, text = row
            wrapped = textwrap.wrap(text, room) or [""]
            lines.append(
                Content.assemble(
                    (f"  {keys:<{KEY_COLUMN - 2}}", "bold $text-accent"),
                    (wrapped[0], "$foreground"),
                )
            )
            lines += [
                Content.styled(" " * KEY_COLUMN + more, "$foreground") for more in wrapped[1:]
            ]
        return lines

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        return len(self._lines(width))

    def render(self) -> Content:
        return Content("\n").join(self._lines(self.content_size.width))


def legend_lines() -> list[Content]:
    """What every badge and every heartbeat colour means, from the presenter's own table."""
    lines = [Content.styled("States", "bold $accent")]
    for badge, meaning in LEGEND:
        shown = render.badge_content(badge)
        pad = Content(" " * max(1, KEY_COLUMN - shown.cell_length))
        lines.append(Content("  ") + shown + pad + Content.styled(meaning, "$foreground"))
    lines += [Content(""), Content.styled("Heartbeat age", "bold $accent")]
    for tone, meaning in HEARTBEAT_LEGEND:
        sample = render.part_content(Part("♥ 12s ago", tone, bold=tone is Tone.ERROR))
        pad = Content(" " * max(1, KEY_COLUMN - 1 - sample.cell_length))
        lines.append(Content("   ") + sample + pad + Content.styled(meaning, "$foreground"))
    return lines


class Legend(Widget):
    """The legend of states and colours, above the keys."""

    DEFAULT_CSS = """
    Legend { width: 1fr; height: auto; margin-bottom: 1; }
    """

    def render(self) -> Content:
        return Content("\n").join(legend_lines())


def help_sections(anywhere: Sequence[BindingType]) -> list[HelpSection]:
    """Every binding, grouped by where it applies (read from the classes themselves).

    Args:
        anywhere: the app's own bindings (they work on every screen).
    """
    palette = Binding(
        "ctrl+p",
        "command_palette",
        "Commands",
        tooltip="Command palette: start, stop or open an exchange, switch view, change theme",
    )
    focus = Binding("tab,shift+tab", "focus_next", "Next", tooltip="Move to the next card / pane")
    return [
        ("Anywhere", [*anywhere, palette]),
        ("Dashboard", [*ExchangeScreen.BINDINGS, *DashboardScreen.BINDINGS]),
        ("Cards", [*CardGrid.BINDINGS, focus]),
        ("Table", [*InstanceTable.BINDINGS]),
        ("Detail screen", [*DetailScreen.BINDINGS]),
        ("Output screen", [*OutputScreen.BINDINGS]),
        ("Stop confirmation", [*ConfirmScreen.BINDINGS]),
    ]


class HelpScreen(ModalScreen[None]):
    """A scrollable list of every binding; Escape, q or ? closes it."""

    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
        background: $background 60%;
    }
    HelpScreen > VerticalScroll {
        width: 100;
        max-width: 96%;
        height: auto;
        max-height: 90%;
        border: round $primary;
        border-title-color: $primary;
        border-title-style: bold;
        background: $surface;
        padding: 0 2;
    }
    """

    BINDINGS = [
        Binding(
            "escape,q,question_mark", "close", "Close", tooltip="Close the help", id="help-close"
        ),
    ]

    def __init__(self, sections: Sequence[HelpSection]) -> None:
        super().__init__()
        self._sections = sections

    def compose(self) -> ComposeResult:
        with VerticalScroll() as scroll:
            scroll.border_title = "States, colours and keys"
            scroll.border_subtitle = "Esc to close"
            yield Legend(id="legend")
            yield HelpText(self._rows(), id="help-text")

    def _rows(self) -> list[tuple[str, str] | str]:
        rows: list[tuple[str, str] | str] = []
        for heading, bindings in self._sections:
            section = binding_rows(bindings)
            if not section:
                continue
            rows.append(heading)
            for group, text in section:
                keys = " ".join(dict.fromkeys(self.app.get_key_display(b) for b in group))
                rows.append((keys, text))
        return rows

    def action_close(self) -> None:
        """Back to where help was opened."""
        close(self)
