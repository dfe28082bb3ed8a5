"""Fixtures for dashboard tests: apps built like the CLI builds them, agents as subprocesses."""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from perseus_cli.apps.screenshots import DISPLAY_URL, SCREENSHOT_TZ
from perseus_core.wire.settings import Settings
from perseus_tui.app import PerseusApp, create_app
from tests.helpers import start_agent, stop_agent


@pytest.fixture
def make_app(make_settings: Callable[..., Settings]) -> Callable[..., PerseusApp]:
    """An app on the test Redis, with animations off and a fixed zone and label.

    The clock stays real unless a test passes one: ages must move for the
    offline and heartbeat tests.
    """

    def factory(*, settings: Settings | None = None, **kwargs: Any) -> PerseusApp:
        kwargs.setdefault("local_tz", SCREENSHOT_TZ)
        kwargs.setdefault("target_label", DISPLAY_URL)
        kwargs.setdefault("operator", "tester@ci")
        app = create_app(settings or make_settings(refresh_ms=60_000), **kwargs)
        app.animation_level = "none"
        return app

    return factory


class Notes:
    """Every notification an app showed, as (title, message, severity)."""

    def __init__(self, app: PerseusApp) -> None:
        self.items: list[tuple[str, str, str]] = []
        original = app.notify

        def record(message: str, **kwargs: Any) -> None:
            self.items.append(
                (kwargs.get("title", ""), message, kwargs.get("severity", "information"))
            )
            original(message, **kwargs)

        app.notify = record  # type: ignore[method-assign]

    def text(self) -> str:
        """All notifications, one per line, for assertions and failure messages."""
        return "\n".join(f"[{sev}] {title}: {msg}" for title, msg, sev in self.items)

    def has(self, fragment: str) -> bool:
        """Whether any notification's title or message contains `fragment`."""
        return any(fragment in title or fragment in msg for title, msg, _ in self.items)


@pytest.fixture
def spawn_agent(tmp_path: Path) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start `perseus agent` subprocesses (killed, with their children, in teardown)."""
    started: list[subprocess.Popen[bytes]] = []

    def spawn(redis_url: str, *args: str) -> subprocess.Popen[bytes]:
        process = start_agent(
            redis_url,
            list(args),
            tmp_path / f"agent-{len(started)}.log",
            PERSEUS_HEARTBEAT_INTERVAL_MS="150",
            PERSEUS_HEARTBEAT_TTL_MS="600",
            PERSEUS_BLOCK_MS="200",
            PERSEUS_SOCKET_TIMEOUT_MS="1000",
        )
        started.append(process)
        return process

    yield spawn
    for process in started:
        stop_agent(process)
