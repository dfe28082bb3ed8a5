"""The last lines an exchange's child wrote, live: `o` on a card or a table row.

The lines come from `perseus:output:{id}` (docs/wire-format.md 2.5): the
newest that Redis keeps first, then every new one as its agent writes it,
read with a blocking XREAD on a connection of the screen's own. They are shown
in a `Log`, which renders plain text only: what a child prints is never read
as markup (and the reader already removed escape sequences).
"""

from __future__ import annotations

from datetime import tzinfo

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Log

from perseus_core.plumbing.connection import describe_redis_error
from perseus_core.plumbing.errors import REDIS_ERRORS
from perseus_core.store.output import OutputFollower, OutputLine, recent_output
from perseus_core.wire.text import clean
from perseus_core.wire.timeutil import parse_ts_or_none
from perseus_tui.messages import OutputArrived
from perseus_tui.screens import close
from perseus_tui.service import FleetService

MAX_LINES = 5_000
"""Lines the view keeps (the oldest go first); Redis keeps fewer per exchange."""

_WATCH_S = 0.5
"""How often the title says whether the live read has Redis."""


def screen_line(line: OutputLine, tz: tzinfo | None) -> str:
    """`22:45:00 stderr  ERROR feed: connection refused`, the time in `tz`."""
    moment = parse_ts_or_none(line.at)
    when = moment.astimezone(tz).strftime("%H:%M:%S") if moment else "??:??:??"
    return f"{when} {line.stream:<7} {line.line}"


class OutputScreen(ModalScreen[None]):
    """One exchange's child output over the dashboard; Escape or `o` closes it."""

    DEFAULT_CSS = """
    OutputScreen {
        align: center middle;
        background: $background 60%;
    }
    OutputScreen > Log {
        width: 96%;
        height: 90%;
        border: round $primary;
        border-title-color: $primary;
        border-title-style: bold;
        background: $surface;
    }
    """

    BINDINGS = [
        Binding("escape,o", "close", "Close", tooltip="Back to the dashboard", id="output-close"),
    ]

    def __init__(
        self, exchange_id: int, title: str, *, service: FleetService, tz: tzinfo | None
    ) -> None:
        """Args:
        exchange_id: whose output.
        title: the exchange as the dashboard names it.
        service: the Redis target and the client for the first read.
        tz: the zone the times are shown in.
        """
        super().__init__()
        self.exchange_id = exchange_id
        self._title = title
        self._service = service
        self._tz = tz
        self._follower: OutputFollower | None = None
        self._loaded = False

    def compose(self) -> ComposeResult:
        log = Log(max_lines=MAX_LINES, highlight=False, auto_scroll=True, id="output")
        # Content, not a str: a str title would be read as markup.
        log.border_title = Content(f"Output of {clean(self._title, 60)} (#{self.exchange_id})")
        log.border_subtitle = Content("loading… · Esc to close")
        yield log

    def on_mount(self) -> None:
        self.query_one(Log).focus()
        self._read()
        self.set_interval(_WATCH_S, self._show_connection)

    @work(exclusive=True, group="output", exit_on_error=False)
    async def _read(self) -> None:
        """The newest lines kept, then each new one until the screen closes."""
        service = self._service
        after = "0-0"
        try:
            lines = await recent_output(
                service.redis, self.exchange_id, service.settings.output_lines
            )
        except REDIS_ERRORS as exc:
            self.notify(
                describe_redis_error(service.settings, exc),
                title="Output not loaded",
                severity="error",
                markup=False,
            )
            lines = []
        if lines:
            after = lines[-1].id
        self.post_message(OutputArrived(lines))
        follower = self._follower = OutputFollower(service.settings, self.exchange_id, after)
        try:
            async for line in follower:
                self.post_message(OutputArrived([line]))
        finally:
            self._follower = None
            await follower.aclose()

    @on(OutputArrived)
    def _arrived(self, message: OutputArrived) -> None:
        log = self.query_one(Log)
        if not self._loaded:
            self._loaded = True
            if not message.lines:
                # Two short lines: a Log does not wrap, and a narrow terminal cut one.
                log.write_lines(
                    [
                        "(no output kept: its agent runs no child, runs it with --no-output,",
                        " or its output expired; new lines appear here as they come)",
                    ]
                )
            self._show_connection()
        log.write_lines(screen_line(line, self._tz) for line in message.lines)

    def _show_connection(self) -> None:
        follower = self._follower
        if not self._loaded:
            return
        problem = follower.last_error if follower is not None else None
        shown = f"{clean(problem, 80)}; retrying" if problem else "live"
        for log in self.query(Log):
            log.border_subtitle = Content(f"{shown} · Esc to close")

    def action_close(self) -> None:
        """Back to the dashboard."""
        close(self)
