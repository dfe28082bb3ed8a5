"""Delivery: a bounded queue of payloads drained by one sender.

A slow, rate-limited or dead webhook delays or drops messages (each drop is
logged) but never stalls the watching. 429 and 5xx answers and network
errors are retried with exponential backoff, honouring the server's Retry-After up to
a cap; other answers are logged and given up on.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from redis.backoff import ExponentialBackoff

from perseus_core.notify.discord import WebhookSecrets, describe_error
from perseus_core.wire.text import clean
from perseus_core.wire.timeutil import Clock

log = logging.getLogger(__name__)

Payload = dict[str, Any]
"""One webhook message body."""


def retry_delay(response: httpx.Response, *, now: datetime) -> float | None:
    """Seconds the server asked us to wait, or None if it did not say.

    Discord's JSON `retry_after` (seconds, fractional) is more precise than its
    `Retry-After` header, so it wins; the header may be seconds or an HTTP date.
    """
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        body = response.json()
        if isinstance(body, dict):
            value = body.get("retry_after")
            if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
                return float(value)
    header = response.headers.get("retry-after")
    if not header:
        return None
    try:
        seconds = float(header)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(header)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:
            return None
        return max(0.0, (moment - now).total_seconds())
    return seconds if seconds >= 0 else None


@dataclass(slots=True)
class NotifierStats:
    """Counters for logs and tests: what was delivered, given up on or dropped,
    left out (a kind not asked for), and how many status snapshots were compared."""

    delivered: int = 0
    failed: int = 0
    dropped: int = 0
    skipped: int = 0
    polls: int = 0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How one message is retried.

    Attributes:
        max_attempts: posts of one message before it is given up on.
        backoff_s: first retry delay when the server names none; doubles.
        max_retry_delay_s: cap of any retry delay, Retry-After included.
    """

    max_attempts: int = 5
    backoff_s: float = 0.5
    max_retry_delay_s: float = 30.0

    def backoff(self) -> ExponentialBackoff:
        """The exact (jitter-free) backoff between attempts at one message."""
        return ExponentialBackoff(cap=self.max_retry_delay_s, base=self.backoff_s)


class Sender:
    """Queues payloads and posts them one at a time (or prints them, in a dry run).

    Args:
        url: the webhook; None in a dry run.
        secrets: scrubs the webhook's secret from logged text; None in a dry run.
        retry: how a failed post is retried.
        clock: time source for Retry-After given as a date.
        queue_size: messages waiting at most; a full queue loses its oldest.
        output: where dry-run payloads go, one JSON line each.
        on_output_gone: called when `output` fails (nobody reads any more).
        stats: the counters to update.
    """

    def __init__(
        self,
        url: str | None,
        secrets: WebhookSecrets | None,
        retry: RetryPolicy,
        *,
        clock: Clock,
        queue_size: int,
        output: Callable[[str], None],
        on_output_gone: Callable[[], None],
        stats: NotifierStats,
    ) -> None:
        self._url = url if secrets is not None else None
        self._secrets = secrets
        self._redacted = secrets.shown if secrets is not None else "(dry run)"
        self._retry = retry
        self._clock = clock
        self._output = output
        self._on_output_gone = on_output_gone
        self._queue: asyncio.Queue[Payload] = asyncio.Queue(maxsize=max(1, queue_size))
        self.stats = stats

    def submit(self, payload: Payload) -> None:
        """Queue `payload`; a full queue loses its oldest message."""
        if self._queue.full():
            dropped = self._queue.get_nowait()
            self._queue.task_done()
            self.stats.dropped += 1
            log.warning(
                "notification queue full (%d): dropped the oldest message: %s",
                self._queue.maxsize,
                dropped.get("content", ""),
            )
        self._queue.put_nowait(payload)

    async def send_forever(self, http: httpx.AsyncClient) -> None:
        """Post queued payloads until cancelled."""
        while True:
            payload = await self._queue.get()
            try:
                if await self._deliver(http, payload):
                    self.stats.delivered += 1
                else:
                    self.stats.failed += 1
            finally:
                self._queue.task_done()

    async def drain(self, sender: asyncio.Task[None], timeout_s: float) -> None:
        """Give queued messages a bounded chance to go out, then stop `sender`."""
        if not sender.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout_s)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
        left = self._queue.qsize()
        if left:
            log.warning("shutting down with %d undelivered notification(s)", left)

    async def _deliver(self, http: httpx.AsyncClient, payload: Payload) -> bool:
        """Post one payload, retrying what may succeed later; True when delivered."""
        if self._url is None or self._secrets is None:
            return self._print(payload)
        scrub = self._secrets.scrub
        backoff = self._retry.backoff()
        failures = 0
        while True:
            asked: float | None = None
            try:
                response = await http.post(self._url, json=payload)
            except httpx.HTTPError as exc:  # network trouble: worth another try
                reason = scrub(describe_error(exc))
            except Exception as exc:
                log.warning(
                    "cannot post to webhook %s (%s); not retrying this message",
                    self._redacted,
                    scrub(describe_error(exc)),
                )
                return False
            else:
                if response.is_success:
                    return True
                status = response.status_code
                if status != 429 and status < 500:
                    log.warning(
                        "webhook %s answered %d (%s); not retrying this message",
                        self._redacted,
                        status,
                        scrub(clean(response.text, 200)),
                    )
                    return False
                asked = retry_delay(response, now=self._clock())
                reason = f"HTTP {status}"
            attempt = failures + 1
            if attempt >= self._retry.max_attempts:
                log.warning(
                    "webhook %s failed %d times (last: %s); giving up on this message",
                    self._redacted,
                    attempt,
                    reason,
                )
                return False
            delay = backoff.compute(failures)
            failures += 1
            if asked is not None:
                delay = min(asked, self._retry.max_retry_delay_s)
            log.info(
                "webhook %s: %s; retrying in %.1fs (attempt %d of %d)",
                self._redacted,
                reason,
                delay,
                attempt + 1,
                self._retry.max_attempts,
            )
            await asyncio.sleep(delay)

    def _print(self, payload: Payload) -> bool:
        """Dry run: one JSON line per payload. Output that is gone (a closed
        pipe) ends the run: nobody is reading any more."""
        try:
            self._output(json.dumps(payload, ensure_ascii=False, separators=(",", ":")))
        except OSError as exc:
            log.warning("cannot write payloads (%s); stopping", describe_error(exc))
            self._on_output_gone()
            return False
        return True
