"""Every key binding, grouped by where it works, read from the bindings themselves."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

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
    HelpScreen Static { width: 1fr; }
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
            scroll.border_title = "Keys"
            scroll.border_subtitle = "Esc to close"
            yield Static(self._render_sections(), id="help-text")

    def _render_sections(self) -> Content:
        lines: list[Content] = []
        for heading, bindings in self._sections:
            rows = binding_rows(bindings)
            if not rows:
                continue
            if lines:
                lines.append(Content(""))
            lines.append(Content.styled(heading, "bold $accent"))
            for group, text in rows:
                keys = " ".join(dict.fromkeys(self.app.get_key_display(b) for b in group))
                lines.append(
                    Content.assemble((f"  {keys:<14}", "bold $text-accent"), (text, "$foreground"))
                )
        return Content("\n").join(lines)

    def action_close(self) -> None:
        """Back to where help was opened."""
        self.dismiss(None)
