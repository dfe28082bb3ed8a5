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

    A key can also arrive while the app shuts down, after the screens below
    this one were taken off the stack: this one is then on top but alone,
    and popping it raises ScreenStackError. Nothing is left to go back to.
    """
    if screen.is_active and len(screen.app.screen_stack) > 1:
        screen.dismiss(result)
