"""What the dashboard and the detail screen share: the header, and start/stop of "the current
exchange"."""

from __future__ import annotations

from textual.binding import Binding
from textual.reactive import var
from textual.screen import Screen

from perseus_core.wire.models import CommandType
from perseus_tui.hub import FleetHub
from perseus_tui.messages import CommandRequested
from perseus_tui.widgets.header import HeaderState


class ExchangeScreen(Screen[None]):
    """A screen with a header and a current exchange that `s` starts and `x` stops.

    Its data comes from the app's reactives (`FleetHub`), watched from mount;
    its widgets bind to the screen's own (`header`). Start and stop are gated
    by `check_action`: in read-only mode they show as disabled in the Footer,
    and pressing them falls through to a hidden binding on the same key that
    explains why (no key handler needed).
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

    header: var[HeaderState] = var(HeaderState(target=""), init=False, always_update=True)
    """What the header shows (the header widget binds to it)."""

    def __init__(self, header: HeaderState, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.set_reactive(ExchangeScreen.header, header)

    @property
    def hub(self) -> FleetHub:
        """The app's shared state."""
        app = self.app
        assert isinstance(app, FleetHub)
        return app

    def on_mount(self) -> None:
        self.watch(self.hub, "header", self._header_changed, init=False)

    def _header_changed(self, header: HeaderState | None) -> None:
        if header is not None:
            self.header = header

    def current_exchange_id(self) -> int | None:
        """The exchange that start/stop act on (None: nothing selected); screens override it."""
        return None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("start", "stop"):
            if self.hub.read_only:
                return None  # shown, greyed out; the explainer binding answers the key
            return True if self.current_exchange_id() is not None else None
        if action == "explain_read_only":
            return self.hub.read_only
        return True

    def action_start(self) -> None:
        """Send `start` to the current exchange."""
        exchange_id = self.current_exchange_id()
        if exchange_id is not None:
            self.post_message(CommandRequested(exchange_id, CommandType.START))

    def action_stop(self) -> None:
        """Ask, then send `stop` to the current exchange."""
        exchange_id = self.current_exchange_id()
        if exchange_id is not None:
            self.post_message(CommandRequested(exchange_id, CommandType.STOP))

    def action_explain_read_only(self, command: str) -> None:
        """Say why start/stop do nothing."""
        self.notify(
            f"Cannot {command}: {self.hub.read_only_reason}",
            title="Read-only",
            severity="warning",
            markup=False,
        )
