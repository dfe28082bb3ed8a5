"""The key bar: Textual's Footer, keeping the most useful keys when not all of them fit,
and greying keys out or back in place."""

from __future__ import annotations

from collections.abc import Mapping

from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

FOOTER_PRIORITY: Mapping[str, int] = {
    "help": 100,
    "quit": 90,
    "clear_filter": 85,
    "back": 85,
    "start": 80,
    "stop": 80,
    "open_detail": 70,
    "filter": 60,
    "older": 55,
    "show_intro": 45,
    "toggle_view": 40,
    "refresh": 30,
    "pause_feed": 20,
    "toggle_utc": 10,
}
"""Which keys stay in the footer when the terminal is too narrow for all (by action).

`?` comes first: it lists every key, so whatever is left out stays one key
away. Keys not named here rank in the middle.
"""
DEFAULT_PRIORITY = 50


class PerseusFooter(Footer):
    """The Footer; on a narrow terminal the lowest-ranked keys are left out.

    Every key keeps working whether it is shown or not; `?` lists them all and
    the command palette key (on the right) always shows. Without this, an
    80-column terminal cuts the bar in the middle of a label and the keys at
    its end (quit, help) never show.
    """

    _recompose_queued = False
    """A recompose is asked for (`bindings_changed`) and has not run yet."""

    def compose(self) -> ComposeResult:
        """Textual's keys, each made in the bar's `compact` style already.

        A key is made compact, and its `data_bind` to the bar's `compact`
        turns that off as it mounts: every key of every recompose was styled
        a second time (a dashboard's start cost 84 ms of CPU with that, 76 without).
        The command palette's key is not bound: it stays compact.
        """
        for widget in super().compose():
            if isinstance(widget, FooterKey) and not widget.has_class("-command-palette"):
                widget.set_reactive(FooterKey.compact, self.compact)
                widget.set_class(self.compact, "-compact", update=False)
            yield widget

    async def recompose(self) -> None:
        self._recompose_queued = False
        await super().recompose()
        self._forget_removed_keys()
        self._fit()

    def bindings_changed(self, screen: Screen[object]) -> None:
        """Textual recomposes the whole bar whenever a key is enabled or greyed
        out: a dozen widgets made, styled and laid out again (about 20 ms),
        after every selection move that changes what start and stop may do.
        When the same keys are shown and only that changed, they are updated
        in place; keys that come or go still recompose, once: a change while
        a recompose is queued is left to it, since `compose` reads the keys
        as they are when it runs (every dashboard start changed them twice
        before its first frame, and the bar was built two or three times)."""
        # What Textual's Footer asks before it queues a recompose.
        shown = screen.app.app_focus and self.is_attached and screen is self.screen
        if shown and (self._recompose_queued or (self._bindings_ready and self._update_in_place())):
            return
        super().bindings_changed(screen)
        self._recompose_queued = shown

    def _update_in_place(self) -> bool:
        """Grey the keys out or back as `check_action` answers now, if the bar
        shows the same keys `compose` would (same actions and keys, in order).
        Returns False, changing nothing, when it does not."""
        active = self.screen.active_bindings
        wanted: dict[str, tuple[Binding, bool, str]] = {}
        for _node, binding, enabled, tooltip in active.values():
            if binding.show:
                wanted.setdefault(binding.action, (binding, enabled, tooltip))
        palette = active.get(self.app.COMMAND_PALETTE_BINDING)
        keys = list(self.query_children(FooterKey))
        shown = [key for key in keys if not key.has_class("-command-palette")]
        if [(key.action, key.key) for key in shown] != [
            (binding.action, binding.key) for binding, _, _ in wanted.values()
        ]:
            return False
        updates = [
            (key, enabled, tooltip)
            for key, (_, enabled, tooltip) in zip(shown, wanted.values(), strict=True)
        ]
        if palette is not None:
            _node, binding, enabled, _tooltip = palette
            for key in keys:
                if key.has_class("-command-palette"):  # as `Footer.compose` words it
                    updates.append((key, enabled, binding.tooltip or binding.description))
        for key, enabled, tooltip in updates:
            if key.has_class("-disabled") == (not enabled) and key.tooltip == (tooltip or None):
                continue
            key._disabled = not enabled  # what a click on the key consults
            key.set_class(not enabled, "-disabled")
            key.tooltip = tooltip or None
            key.refresh()
        return True

    def on_resize(self) -> None:
        self._fit()

    def _forget_removed_keys(self) -> None:
        """Drop the watchers that the keys removed by a recompose left on this footer.

        `Footer.compose` binds every FooterKey's `compact` to the footer's
        (`data_bind`), which adds a watcher to the footer's own list. Textual
        prunes a removed node from that list only when `compact` next
        changes, and here it never does: every recompose (each time a screen
        closes over the dashboard, each time a key is enabled or greyed out)
        would keep its dozen removed keys, their styles and render caches in
        memory for the rest of the session.
        """
        watchers: dict[str, list[tuple[Widget, object]]] = getattr(self, "__watchers", {})
        for entries in watchers.values():
            entries[:] = [(node, callback) for node, callback in entries if node.is_attached]

    @staticmethod
    def _width(key: Widget) -> int:
        return (
            key.get_content_width(key.size, key.size)
            + key.styles.gutter.width
            + key.styles.margin.width
        )

    def _fit(self) -> None:
        """Show the highest-ranked keys that fit, in their usual order."""
        width = self.size.width
        if not width:
            return  # not laid out yet: the resize that follows fits the keys
        keys = list(self.query_children("FooterKey"))
        room = width - sum(self._width(key) for key in keys if key.has_class("-command-palette"))
        ranked = sorted(
            (key for key in keys if not key.has_class("-command-palette")),
            key=lambda key: -FOOTER_PRIORITY.get(getattr(key, "action", ""), DEFAULT_PRIORITY),
        )
        shown: set[Widget] = set()
        for key in ranked:
            needed = self._width(key)
            if needed <= room:
                shown.add(key)
                room -= needed
        for key in ranked:
            key.display = key in shown
