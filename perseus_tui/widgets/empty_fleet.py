"""What the fleet area says when Redis answers but knows no exchange at all."""

from __future__ import annotations

from textual.content import Content
from textual.widget import Widget

from perseus_tui import render


def empty_fleet_text(redis_option: str = "") -> Content:
    """How to get a first exchange on screen.

    Args:
        redis_option: appended to each command (e.g. `--redis-url redis://host:6379/0`)
            when the dashboard does not watch the default Redis, so the commands
            reach the Redis shown here.
    """
    # On a line of its own (a shell continuation), so each command stays copyable
    # on an 80-column terminal.
    suffix = f" \\\n      {redis_option}" if redis_option else ""
    return Content.assemble(
        ("No exchanges yet.", "bold"),
        "\n\n",
        ("Run an agent for one (it lists the exchange; press s here to start it):", render.MUTED),
        "\n",
        (f"  perseus agent --exchange-id 1 --exchange-name coinbase{suffix}", "bold $text-accent"),
        "\n",
        ("or only add it to the catalog:", render.MUTED),
        "\n",
        (f"  perseus catalog add 1 coinbase{suffix}", "bold $text-accent"),
    )


class EmptyFleet(Widget):
    """The fleet view of an empty fleet: what to run to add the first exchange."""

    DEFAULT_CSS = """
    EmptyFleet {
        height: 1fr;
        padding: 1 2;
        text-wrap: wrap;
    }
    """

    def __init__(
        self, redis_option: str = "", *, expecting: str | None = None, id: str | None = None
    ) -> None:
        """Say how to add an exchange, or, with `expecting`, that exchanges are on their way."""
        super().__init__(id=id)
        if expecting:
            self._text = Content.styled(expecting, f"italic {render.MUTED}")
        else:
            self._text = empty_fleet_text(redis_option)

    def render(self) -> Content:
        return self._text
