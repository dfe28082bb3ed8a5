"""Fixtures of the mixed-fleet tests: the dashboard tests' app factory, and
real agent processes."""

from tests.agent.conftest import spawn_agent
from tests.tui.conftest import make_app

__all__ = ["make_app", "spawn_agent"]
