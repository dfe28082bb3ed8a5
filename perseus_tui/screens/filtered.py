"""A screen with a filter input that `/` opens, which keeps every key typed after it."""

from __future__ import annotations

from textual import events, on
from textual.widgets import Input

from perseus_tui.screens.base import ExchangeScreen


class FilteredScreen(ExchangeScreen):
    """An `ExchangeScreen` with a filter: `/` opens it, Enter keeps it, Escape clears it.

    The screen composes an `Input` with the id `filter-input`; what the query
    hides is up to the subclass (`filter_changed`), and so is where the focus
    goes back to once the filter is done with (`focus_view`).
    """

    query_text = ""
    """The filter in force (stripped)."""

    @property
    def filter_input(self) -> Input:
        """The filter's input."""
        return self.query_one("#filter-input", Input)

    def filter_changed(self, query: str) -> None:
        """Show what matches `query`; every screen with a filter says what it filters."""
        raise NotImplementedError

    def focus_view(self) -> None:
        """Give the keyboard back to what the screen shows (after the filter)."""
        raise NotImplementedError

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "clear_filter":
            return bool(self.query_text) or self.filter_input.display
        return super().check_action(action, parameters)

    def action_filter(self) -> None:
        """Show the filter input and type into it."""
        filter_input = self.filter_input
        filter_input.display = True
        # Focus now, not after the next refresh (`focus()`): keys typed right after
        # `/` are already queued, and must reach the input, not the selected card.
        self.set_focus(filter_input)
        self.sync_bindings()

    def action_clear_filter(self) -> None:
        """Drop the filter and hide its input."""
        filter_input = self.filter_input
        filter_input.value = ""
        filter_input.display = False
        self._apply_filter("")
        self.focus_view()
        self.sync_bindings()

    async def on_key(self, event: events.Key) -> None:
        """Hand the filter the keys typed right after `/`.

        A terminal delivers a burst of keys at once, and the app forwards each
        to the widget focused when it arrives: the selected card, for every key
        of `/off⏎`. Bindings run only when a key has bubbled back up to the
        app, after the whole burst was forwarded; so `/` opens the filter here,
        on the way up, and the keys behind it are typed into the filter instead
        of moving the selection or opening a detail screen.
        """
        filter_input = self.filter_input
        if self.focused is not filter_input:
            if event.key == "slash":
                self.action_filter()
            else:
                return
        elif event.is_printable and event.character is not None:
            filter_input.insert_text_at_cursor(event.character)  # the input's own never bubble
        elif event.key == "enter":
            await filter_input.action_submit()
        else:
            return
        event.stop()
        event.prevent_default()

    @on(Input.Changed, "#filter-input")
    def _filter_typed(self, event: Input.Changed) -> None:
        self._apply_filter(event.value)

    @on(Input.Submitted, "#filter-input")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        event.input.display = bool(event.value)
        self.focus_view()
        self.sync_bindings()

    def _apply_filter(self, query: str) -> None:
        self.query_text = query.strip()
        self.filter_changed(self.query_text)
