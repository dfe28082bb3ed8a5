"""A dismissable panel that explains what the operator is looking at (the demo's tour).

It opens over the dashboard when the dashboard starts (the fleet loads behind
it), closes with Enter or Escape, and `i` opens it again. As a panel over the
screen rather than a pane beside the cards, it costs a small terminal none of
the rows the fleet and the feed need once it is closed.
"""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Static

from perseus_tui.screens import close


class IntroScreen(ModalScreen[None]):
    """Plain text given by whoever started the dashboard, shown as written (no markup)."""

    DEFAULT_CSS = """
    IntroScreen {
        align: center middle;
        background: $background 50%;
    }
    IntroScreen > VerticalScroll {
        width: 84;
        max-width: 96%;
        height: auto;
        max-height: 90%;
        border: round $accent;
        border-title-color: $accent;
        border-title-style: bold;
        border-subtitle-color: $text-muted;
        background: $surface;
        padding: 0 1;
    }
    IntroScreen Static { width: 1fr; }
    """

    BINDINGS = [
        Binding(
            "enter,escape,i,q",
            "close",
            "Close",
            tooltip="Close this explanation (i opens it again)",
            id="intro-close",
        ),
    ]

    def __init__(self, text: str) -> None:
        super().__init__()
        self._text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll() as scroll:
            scroll.border_title = "What you are looking at"
            scroll.border_subtitle = "Enter to begin · i shows this again"
            yield Static(Content(self._text), id="intro-text")

    def action_close(self) -> None:
        """Back to the dashboard."""
        close(self)
