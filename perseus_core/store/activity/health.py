"""A tail's connection health: what the dashboard and the CLI show while it retries."""

from __future__ import annotations

import logging
import time

from redis.backoff import ExponentialBackoff

from perseus_core.plumbing.connection import describe_redis_error
from perseus_core.wire.settings import Settings

log = logging.getLogger(__name__)


class TailHealth:
    """Connected or not, the last problem, and when the next attempt is due.

    The reconnect delay doubles from 0.1 s up to `max_backoff_s` without
    jitter: `retry_in_s` is shown to the user, and one tail per screen does
    not need spreading out.
    """

    def __init__(self, settings: Settings, max_backoff_s: float) -> None:
        self._settings = settings
        self._backoff = ExponentialBackoff(cap=max_backoff_s, base=0.1)
        self._failures = 0
        self._retry_at = 0.0
        self._connected = False
        self._last_error: str | None = None
        self._retry_in_s: float | None = None
        self._reconnects = 0

    @property
    def connected(self) -> bool:
        """The last Redis call succeeded."""
        return self._connected

    @property
    def last_error(self) -> str | None:
        """The most recent problem (connection, provider, unreadable stream);
        kept after recovery, so read it together with `connected`."""
        return self._last_error

    @property
    def retry_in_s(self) -> float | None:
        """The current reconnect delay while disconnected, else None."""
        return self._retry_in_s

    @property
    def reconnects(self) -> int:
        """How many times the tail recovered from a connection failure."""
        return self._reconnects

    def _retry_wait_s(self) -> float:
        """How long until the next attempt is due (0 or less: now)."""
        return self._retry_at - time.monotonic()

    def _failed(self, exc: BaseException) -> None:
        self._connected = False
        self._last_error = describe_redis_error(self._settings, exc)
        delay = self._retry_in_s = self._backoff.compute(self._failures)
        self._failures += 1
        self._retry_at = time.monotonic() + delay
        log.info("activity tail: %s; retrying in %.1f s", self._last_error, delay)

    def _succeeded(self) -> None:
        if self._failures:
            self._reconnects += 1
        self._connected = True
        self._failures = 0
        self._retry_in_s = None
