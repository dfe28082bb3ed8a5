"""What the dashboard and the detail screen share: the header, and start/stop of "the current
exchange"."""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding
from textual.reactive import var
from textual.screen import Screen

from perseus_core.present import refusal
from perseus_core.wire.models import CommandType
from perseus_tui.fleet import FleetState
from perseus_tui.messages import CommandRequested
from perseus_tui.widgets.command_bar import CommandBar, CommandLine
from perseus_tui.widgets.header import HeaderState


class ExchangeScreen(Screen[None]):
    """A screen with a header and a current exchange that `s` starts and `x` stops.

    Its data comes from the app's reactives, watched by name from mount (a
    screen never imports the app); its widgets bind to the screen's own
    (`header`). It starts from the fleet and the read-only reason the app
    had when it built the screen, and follows them from then on. Start and stop are gated
    by `check_action`: in read-only mode, or when what the dashboard already
    knows says the command cannot succeed (`perseus_core.present.refusal`),
    they show as disabled in the Footer, and pressing them falls through to a
    hidden binding on the same key that says why at once (no key handler).
    """

    GATED_ACTIONS: ClassVar[tuple[str, ...]] = ("start", "stop", "explain")
    """Actions whose availability depends on the data shown (see `sync_bindings`)."""

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
        Binding("s", "explain('start')", show=False, id="start-refused"),
        Binding("x", "explain('stop')", show=False, id="stop-refused"),
    ]

    header: var[HeaderState] = var(HeaderState(target=""), init=False, always_update=True)
    """What the header shows (the header widget binds to it)."""

    def __init__(
        self,
        header: HeaderState,
        fleet: FleetState,
        read_only_reason: str,
        *,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.set_reactive(ExchangeScreen.header, header)
        self.fleet = fleet
        """The fleet as the app last showed it."""
        self.read_only_reason = read_only_reason
        """Why start and stop are disabled (empty: they are not)."""
        self._binding_answers: tuple[bool | None, ...] = ()

    def on_mount(self) -> None:
        app = self.app
        self.watch(app, "header", self._header_changed, init=False)
        self.watch(app, "commands", self._commands_changed)
        self.watch(app, "fleet", self._fleet_watched)
        self.watch(app, "read_only_reason", self._read_only_watched, init=False)

    def _fleet_watched(self, fleet: FleetState) -> None:
        self.fleet = fleet
        self.fleet_changed(fleet)

    def fleet_changed(self, fleet: FleetState) -> None:
        """Show a new read of the fleet (also called once on mount); screens override it."""

    def _read_only_watched(self, reason: str) -> None:
        self.read_only_reason = reason
        self.sync_bindings()

    def on_unmount(self) -> None:
        """Drop this screen's watchers of the app's state.

        Textual forgets a closed node's watcher only when the watched value
        next changes; a value that rarely does (the time zone, the command
        lines) would keep every closed detail screen, and everything it
        shows, in memory for the rest of the session.
        """
        watchers: dict[str, list[tuple[object, object]]] = getattr(self.app, "__watchers", {})
        for entries in watchers.values():
            entries[:] = [(node, callback) for node, callback in entries if node is not self]

    def _commands_changed(self, lines: tuple[CommandLine, ...]) -> None:
        for bar in self.query(CommandBar):
            bar.lines = lines

    def sync_bindings(self) -> None:
        """Refresh the Footer only when what `check_action` answers changed.

        A refresh recomposes the Footer and lays the screen out again (about
        30 ms), so doing it on every poll and every feed-triggered read would
        cost more than the update it follows.
        """
        answers = tuple(self.check_action(action, ()) for action in self.GATED_ACTIONS)
        if answers != self._binding_answers:
            self._binding_answers = answers
            self.refresh_bindings()

    def _header_changed(self, header: HeaderState | None) -> None:
        if header is not None:
            self.header = header

    def current_exchange_id(self) -> int | None:
        """The exchange that start/stop act on (None: nothing selected); screens override it."""
        return None

    def refusal(self, command: CommandType) -> str | None:
        """Why `command` cannot succeed on the current exchange (None: it may)."""
        exchange_id = self.current_exchange_id()
        if exchange_id is None:
            return None
        if self.read_only_reason:
            return self.read_only_reason
        view = self.fleet.views.get(exchange_id)
        return refusal(view, command) if view is not None else None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in ("start", "stop"):
            if self.current_exchange_id() is None or self.refusal(CommandType(action)):
                return None  # shown, greyed out; the explainer binding answers the key
            return True
        if action == "explain":
            asked = [CommandType(str(p)) for p in parameters] or [
                CommandType.START,
                CommandType.STOP,
            ]
            return any(self.refusal(command) for command in asked)
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

    def action_explain(self, command: str) -> None:
        """Say at once why start/stop cannot succeed (the app shows the refusal)."""
        exchange_id = self.current_exchange_id()
        if exchange_id is not None:
            self.post_message(CommandRequested(exchange_id, CommandType(command)))
