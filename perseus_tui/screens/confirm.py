"""A yes/no question before anything destructive (stopping an instance)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Label

from perseus_tui.screens import close


class ConfirmScreen(ModalScreen[bool]):
    """Dismisses with True only on an explicit yes; Escape and "No" both mean no.

    The question is `Content` (never markup), since it names an exchange read
    from Redis.
    """

    DEFAULT_CSS = """
    ConfirmScreen {
        align: center middle;
        background: $background 60%;
    }
    ConfirmScreen > Vertical {
        width: 60;
        max-width: 90%;
        height: auto;
        padding: 1 2;
        border: thick $error 70%;
        background: $surface;
    }
    ConfirmScreen #question { width: 1fr; text-style: bold; margin-bottom: 1; }
    ConfirmScreen #explanation { width: 1fr; color: $text-muted; margin-bottom: 1; }
    ConfirmScreen Horizontal { height: auto; align-horizontal: right; }
    ConfirmScreen Button { margin-left: 2; }
    """

    BINDINGS = [
        Binding("y", "answer(True)", "Yes", tooltip="Confirm", id="confirm-yes"),
        Binding("n,escape", "answer(False)", "No", tooltip="Cancel", id="confirm-no"),
    ]

    def __init__(self, question: Content | str, explanation: str = "", *, yes: str = "Yes") -> None:
        super().__init__()
        self._question = question if isinstance(question, Content) else Content(question)
        self._explanation = explanation
        self._yes = yes

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Label(self._question, id="question")
            if self._explanation:
                yield Label(Content(self._explanation), id="explanation")
            with Horizontal():
                yield Button(self._yes + " (y)", variant="error", id="yes")
                yield Button("Cancel (n)", variant="default", id="no")

    def on_mount(self) -> None:
        # The safe answer has the focus: Enter on a reflex does not stop anything.
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        close(self, event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        """Close with the given answer."""
        close(self, answer)
