"""How a sent command ended, whichever channel carried it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from perseus_core.wire.errors import PerseusError
from perseus_core.wire.models import ReplyStatus


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """How a sent command ended.

    `status` is None when the command was acknowledged but no result came
    within the result timeout (it may still be running); `message` says so.
    `acked` is False when the first answer was already final, as for a
    command rejected before it was accepted (malformed, unknown type, expired).
    """

    correlation_id: str
    acked: bool
    status: ReplyStatus | None
    message: str | None
    data: dict[str, Any] | None

    @classmethod
    def no_result(cls, correlation_id: str, result_ms: int) -> CommandOutcome:
        """Acknowledged, but no final answer within the result timeout."""
        return cls(
            correlation_id,
            True,
            None,
            f"acknowledged, but no result within {result_ms / 1000:g} s "
            "(the command may still be running)",
            None,
        )

    @property
    def ok(self) -> bool:
        """True when the command succeeded."""
        return self.status is ReplyStatus.SUCCESS


class NoAgentAnswered(PerseusError):
    """No server acknowledged a command within the ack timeout."""

    def __init__(
        self, exchange_id: int, timeout_ms: int, correlation_id: str, *, who: str | None = None
    ) -> None:
        self.exchange_id = exchange_id
        self.timeout_ms = timeout_ms
        self.correlation_id = correlation_id
        super().__init__(
            f"no agent answered in {timeout_ms / 1000:g} s: check that "
            + (who or f"an agent for exchange {exchange_id}")
            + " is running"
        )


class OutcomeUnknown(PerseusError):
    """The command was sent (or may have been), then the connection to Redis was
    lost before its outcome arrived: it may have run, or may still run (at most
    once). Not the same as "not sent" (`RedisUnavailable`): retrying blindly
    could act twice, so the operator should look (ping, status) first."""

    def __init__(self, correlation_id: str, detail: str) -> None:
        self.correlation_id = correlation_id
        super().__init__(
            f"sent, outcome unknown (Redis connection lost): {detail}; "
            f"correlation id {correlation_id}"
        )
