"""Fixtures of the mixed-fleet tests: the dashboard tests' app factory."""

from tests.tui.conftest import make_app

__all__ = ["make_app"]
