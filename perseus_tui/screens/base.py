"""What the dashboard and the detail screen share: start/stop of "the current exchange"."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual.binding import Binding
from textual.screen import Screen

from perseus_core.wire.models import CommandType

if TYPE_CHECKING:
    from perseus_tui.app import PerseusApp


class ExchangeScreen(Screen[None]):
    """A screen with a current exchange that `s` starts and `x` stops.

    Start and stop are gated by `check_action`: in read-only mode they show
    as disabled in the Footer, and pressing them falls through to a hidden
    binding on the same key that explains why (no key handler needed).
    """

    BINDINGS = [
        Binding(
            "s", "start", "Start", tooltip="Start the selected exchange's instance", id="start"
        ),
        Binding(
            "x",
            "stop",
            "Stop",
            tooltip="Stop the selected exchange's instance (asks first)",
            id="stop",
        ),
        Binding("s", "explain_read_only('start')", show=False, id="start-read-only"),
        Binding("x", "explain_read_only('stop')", show=False, id="stop-read-only"),
    ]

    @property
    def perseus(self) -> PerseusApp:
        """The app, typed."""
        return cast("PerseusApp", self.app)

    def current_exchange_id(self) -> int | None:
        """The exchange that start/stop act on (None: nothing selected); screens override it."""
        return None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("start", "stop"):
            if self.perseus.read_only:
                return None  # shown, greyed out; the explainer binding answers the key
            return True if self.current_exchange_id() is not None else None
        if action == "explain_read_only":
            return self.perseus.read_only
        return True

    def action_start(self) -> None:
        """Send `start` to the current exchange."""
        exchange_id = self.current_exchange_id()
        if exchange_id is not None:
            self.perseus.send_command(exchange_id, CommandType.START)

    def action_stop(self) -> None:
        """Ask, then send `stop` to the current exchange."""
        exchange_id = self.current_exchange_id()
        if exchange_id is not None:
            self.perseus.request_stop(exchange_id)

    def action_explain_read_only(self, command: str) -> None:
        """Say why start/stop do nothing."""
        self.notify(
            f"Cannot {command}: {self.perseus.read_only_reason}",
            title="Read-only",
            severity="warning",
            markup=False,
        )
