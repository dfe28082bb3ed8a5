"""The key bar: Textual's Footer, keeping the most useful keys when not all of them fit."""

from __future__ import annotations

from collections.abc import Mapping

from textual.widget import Widget
from textual.widgets import Footer

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

    async def recompose(self) -> None:
        await super().recompose()
        self._forget_removed_keys()
        self._fit()

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
