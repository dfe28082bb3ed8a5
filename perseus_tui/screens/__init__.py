"""The dashboard's screens: the fleet, one exchange in detail, help, and confirmation."""

from __future__ import annotations

from typing import TypeVar

from textual.screen import Screen

Result = TypeVar("Result")


def close(screen: Screen[Result], result: Result | None = None) -> None:
    """Dismiss `screen` with `result`, if it is the top screen.

    Keys typed ahead (Enter then `y`, Esc twice, `x` twice) can reach a screen
    after it was dismissed, or while another screen opened over it, and
    Textual's `dismiss` pops whatever screen is on top and runs the result
    callback again: a second stop sent, the dashboard popped
    (ScreenStackError), the screen above closed in its place, or a result
    set twice (InvalidStateError). Every screen closes through here.
    """
    if screen.is_active:
        screen.dismiss(result)
