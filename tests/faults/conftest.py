"""Fixtures the fault tests share with the agent's tests."""

from tests.agent.conftest import spawn_agent  # noqa: F401 - the agent fixture, reused
