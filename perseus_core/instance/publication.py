"""How an instance's changes reach Redis: the status key, then the activity entry.

A change is applied in memory first; publishing it afterwards never crashes
the caller when Redis is unreachable. The status key catches up by itself
(the next heartbeat tick writes the whole payload). An activity entry is never
re-sent blindly, because XADD is not idempotent and a lost reply would
duplicate it: the entries that failed wait in an outbox and are summarised in
one `error` entry as soon as Redis answers again, so the stream shows the gap.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import TypeVar

from perseus_core.plumbing.connection import describe_redis_error
from perseus_core.plumbing.errors import REDIS_ERRORS, TRANSIENT_ERRORS
from perseus_core.plumbing.tasks import TaskGroup
from perseus_core.store.activity import ActivityLog
from perseus_core.store.lease import Lease, LeaseLost, wire_now
from perseus_core.wire.models import ErrorEntry, HolderEntry, StateTransitionEntry
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import Clock, format_ts

log = logging.getLogger(__name__)

_T = TypeVar("_T")

MAX_ERROR_CHARS = 2_000
"""Longest error message stored in `lastError` and in an error entry."""

MAX_UNSENT_DETAILS = 20
"""How many unwritten activity entries are described individually in the gap note."""

Entry = StateTransitionEntry | ErrorEntry | HolderEntry
"""The activity entries an instance writes about itself."""


class StatusWrite(StrEnum):
    """What happened to the status key after a change in memory."""

    WRITTEN = "written"
    """The key holds the change."""
    NOT_HELD = "not_held"
    """The exchange is not held (before claim, after release or loss): memory only, by design."""
    DEFERRED = "deferred"
    """Redis did not answer: the change is in memory and the next heartbeat tick writes it."""


@dataclass(frozen=True, slots=True)
class Publication:
    """What reached Redis after a change that has already been applied in memory.

    Attributes:
        status: the fate of the status key write.
        entry_id: the activity stream ID of the entry, or None if no entry was
            written (none is due, or the append failed: see `error`).
        error: one line per part that did not reach Redis, or None.
    """

    status: StatusWrite
    entry_id: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when everything that was due reached Redis."""
        return self.error is None


def describe_failure(exc: BaseException, settings: Settings) -> str:
    """One line for a failed write: the Redis target and reason, or the error reply."""
    if isinstance(exc, TRANSIENT_ERRORS):
        return describe_redis_error(settings, exc)
    return f"{type(exc).__name__}: {exc}"


def _summarise(entry: Entry) -> str:
    if isinstance(entry, StateTransitionEntry):
        return f"{entry.from_state}->{entry.to_state} at {entry.timestamp}"
    if isinstance(entry, HolderEntry):
        return f"holder {entry.instance_id} at {entry.timestamp}"
    return f"error {entry.error[:80]!r} at {entry.timestamp}"


class Publisher:
    """Writes an instance's status key and appends its entries, keeping an
    outbox of the entries that could not be appended.

    Whether an entry goes to the shared `logs:network:{name}` is decided
    here, once, from the lease as it stands when the entry is appended: only
    while the instance holds the status key. Livermore's admin shows every
    entry of that stream as the exchange's own, so anything written before
    the claim, after the release, or once the lease is lost (the loss
    itself, a child killed after it) goes to `perseus:activity:{name}`
    (docs/wire-format.md part 4). The status key write comes first in
    `publish`, so a loss it detects already routes the entry that follows.

    Args:
        lease: the instance's lease (it writes the status key and holds the status).
        activity: the exchange's activity log.
        settings: the per-call time budget and the Redis target for messages.
        clock: source of the gap note's timestamp.
        tasks: the instance's background tasks (the gap note is written in one).
    """

    def __init__(
        self,
        lease: Lease,
        activity: ActivityLog,
        settings: Settings,
        *,
        clock: Clock,
        tasks: TaskGroup,
    ) -> None:
        self._lease = lease
        self._activity = activity
        self._settings = settings
        self._clock = clock
        self._tasks = tasks
        self._call_timeout_s = settings.socket_timeout_ms / 1000
        self._lock = asyncio.Lock()
        self._unsent: deque[Entry] = deque(maxlen=MAX_UNSENT_DETAILS)
        self._unsent_total = 0
        self._flushing = False
        self.last_write_error: str | None = None
        """The most recent failure to reach Redis from a call (not the heartbeat)."""

    @property
    def unsent_entries(self) -> int:
        """Activity entries that failed to append and are not yet noted in the stream."""
        return self._unsent_total

    def error_entry(self, text: str, now: datetime) -> ErrorEntry:
        """An `error` entry about this instance, in its current state."""
        status = self._lease.status
        return ErrorEntry(
            timestamp=format_ts(now),
            error=text,
            exchange_id=str(status.exchange_id),
            exchange_name=status.exchange_name,
            hostname=status.hostname,
            ip=status.ip_address or "",
            state=status.connection_state.value,
        )

    def note_failure(self, message: str) -> None:
        """Keep and log a failure to reach Redis that the caller absorbed."""
        self.last_write_error = message
        log.warning("exchange %s: %s", self._lease.status.exchange_id, message)

    async def publish(self, entry: Entry | None) -> Publication:
        """Write the status key (if held), then append `entry`.

        Raises:
            LeaseLost: another instance holds the exchange (the entry is still
                appended, to Perseus's own stream).
        """
        lost: LeaseLost | None = None
        errors: list[str] = []
        async with self._lock:
            write = StatusWrite.NOT_HELD
            try:
                if await self._lease.publish():
                    write = StatusWrite.WRITTEN
            except LeaseLost as exc:
                lost = exc
            except REDIS_ERRORS as exc:
                write = StatusWrite.DEFERRED
                errors.append(
                    "status key not updated yet (the heartbeat retries it): "
                    + describe_failure(exc, self._settings)
                )
            entry_id = None
            if entry is not None:
                entry_id = await self._append(entry, errors)
        if lost is not None:
            raise lost
        error = "; ".join(errors) or None
        if error is not None:
            self.note_failure(error)
        return Publication(write, entry_id, error)

    async def append_quietly(self, entry: Entry) -> None:
        """Append `entry`, only logging a failure (for incidents the heartbeat
        found, and the note of a change of holder after a claim)."""
        errors: list[str] = []
        await self._append(entry, errors)
        if errors:
            log.warning("exchange %s: %s", self._lease.status.exchange_id, "; ".join(errors))

    def after_tick(self) -> None:
        """A heartbeat tick reached Redis: note the unsent entries now, in the background."""
        if self._unsent_total and not self._flushing:
            self._flushing = True
            self._tasks.spawn(self._flush_in_background(), "unsent note")

    async def _io(self, awaitable: Awaitable[_T]) -> _T:
        async with asyncio.timeout(self._call_timeout_s):
            return await awaitable

    async def _append(self, entry: Entry, errors: list[str]) -> str | None:
        name = self._lease.status.exchange_name
        try:
            await self._flush_unsent()
            return await self._io(self._activity.append(name, entry, holder=self._lease.held))
        except REDIS_ERRORS as exc:
            self._unsent.append(entry)
            self._unsent_total += 1
            errors.append(
                f"{entry.event} entry not written to the activity stream: "
                + describe_failure(exc, self._settings)
            )
            return None

    async def _flush_unsent(self) -> None:
        """If entries failed earlier, note them in one `error` entry (raises on failure)."""
        if not self._unsent_total:
            return
        total = self._unsent_total
        described = "; ".join(_summarise(e) for e in self._unsent)
        shown = len(self._unsent)
        suffix = f" (the last {shown}: {described})" if shown < total else f": {described}"
        text = (
            f"{total} activity entr{'y' if total == 1 else 'ies'} could not be written "
            f"while Redis was unreachable{suffix}"
        )[:MAX_ERROR_CHARS]
        note = self.error_entry(text, wire_now(self._clock))
        name = self._lease.status.exchange_name
        await self._io(self._activity.append(name, note, holder=self._lease.held))
        self._unsent.clear()
        self._unsent_total = 0

    async def _flush_in_background(self) -> None:
        try:
            async with self._lock:
                await self._flush_unsent()
        except REDIS_ERRORS as exc:
            log.debug(
                "exchange %s: unsent note not written yet: %s", self._lease.status.exchange_id, exc
            )
        finally:
            self._flushing = False
