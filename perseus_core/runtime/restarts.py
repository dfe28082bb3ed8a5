"""When an agent starts its exchange again on its own: the restart policy.

Operators of supervisord, systemd or pm2 expect a service that crashes to
come back, a service that cannot start at all to stop being retried, and
the retries to slow down. This module decides exactly that, and nothing
else: it is told how each run ended (or that a claim was refused) and says
whether to start again, after how long, or to give up (FATAL). It does no
I/O and keeps no clock of its own, so it is unit-tested directly; the slot
(`runtime.slot`) acts on its decisions.

The words are supervisord's:

- a *quick failure* is a run that failed before it was active or within
  `start_secs` of its claim (`startsecs`); `start_retries` of them in a row
  and the policy gives up: FATAL, until an operator's `start` or `stop`
  (`reset`) clears it (`startretries`, the FATAL state);
- a run that failed after a longer life is restarted without counting
  towards FATAL, and it resets the count (a service that ran well and then
  crashed gets the same chances again);
- the wait before each attempt grows exponentially with the failures in a
  row, with jitter, up to `backoff_max_s` (the BACKOFF state); redis-py's
  `EqualJitterBackoff`, as the agent's autostart uses, so that a fleet
  that failed together does not retry in lock-step;
- a refused claim (another holder has the slot, Redis does not answer) is
  not a failure of the service: it is retried with the same backoff for as
  long as the policy wants the exchange running, and never makes it FATAL.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from redis.backoff import AbstractBackoff, EqualJitterBackoff

BACKOFF_BASE_S = 1.0
"""The first wait of a streak of failures (halved and jittered by the backoff),
never more than `backoff_max_s`."""


class RestartMode(enum.StrEnum):
    """Which ends of a run start the exchange again (`perseus agent --restart`)."""

    NEVER = "never"
    """Never: a run that ends leaves the slot idle (supervisord autorestart=false)."""
    ON_FAILURE = "on-failure"
    """After a failure: a non-zero exit, a signal, the watchdog, a lost lease, a
    failed readiness or health check; not after an exit with code 0."""
    ALWAYS = "always"
    """After any end that an operator (or a shutdown) did not ask for."""


class Action(enum.StrEnum):
    """What the slot does after a run ended or a claim was refused."""

    RESTART = "restart"
    """Start again after `Decision.delay_s`."""
    IDLE = "idle"
    """Stay idle: the policy does not restart this kind of end."""
    FATAL = "fatal"
    """Give up: too many quick failures in a row."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The policy's answer.

    Attributes:
        action: what to do.
        delay_s: the wait before the restart (0 unless `action` is RESTART).
        reason: one line for the log, the presence note and, when FATAL, the
            error entry ("gave up after 5 quick failures: exited with code 2").
        attempt: the quick failures in a row so far, for a restart after a
            run (0 after a run that lasted, or one that ended well).
        outcome: how the run ended ("exited with code 2"), for the
            `restart` entry (docs/wire-format.md 2.8); empty when no run
            ended (a refused claim).
    """

    action: Action
    delay_s: float = 0.0
    reason: str = ""
    attempt: int = 0
    outcome: str = ""


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """The operator's settings (`perseus agent --restart ... --backoff-max ...`).

    Attributes:
        mode: which ends are restarted.
        backoff_max_s: the longest wait between two attempts.
        start_secs: a failed run shorter than this (from its claim) is quick.
        start_retries: quick failures in a row before giving up (at least 1).
    """

    mode: RestartMode = RestartMode.ON_FAILURE
    backoff_max_s: float = 30.0
    start_secs: float = 10.0
    start_retries: int = 5

    def __post_init__(self) -> None:
        if self.backoff_max_s < 0 or self.start_secs < 0:
            raise ValueError("backoff and start seconds must be >= 0")
        if self.start_retries < 1:
            raise ValueError(f"start retries must be >= 1, got {self.start_retries}")


class Restarts:
    """The policy's memory for one slot: failures in a row, and FATAL.

    Args:
        policy: the settings.
        backoff: how long to wait after N failures in a row; by default
            `EqualJitterBackoff` capped at `policy.backoff_max_s` (tests pass a
            deterministic one).
    """

    def __init__(self, policy: RestartPolicy, backoff: AbstractBackoff | None = None) -> None:
        self.policy = policy
        self._backoff = backoff or EqualJitterBackoff(
            cap=policy.backoff_max_s, base=min(BACKOFF_BASE_S, policy.backoff_max_s)
        )
        self.quick_failures = 0
        """Quick failures in a row since the last good run or reset."""
        self.failures = 0
        """Failed runs and refused claims in a row: the backoff's exponent."""
        self.fatal: str | None = None
        """Why the policy gave up, while it has; None otherwise."""

    def reset(self) -> None:
        """An operator acted (`start` or `stop`): clear FATAL and every count."""
        self.quick_failures = 0
        self.failures = 0
        self.fatal = None

    def run_ended(
        self, *, failed: bool, outcome: str, ran_s: float, reached_active: bool
    ) -> Decision:
        """A run ended without an operator (or a shutdown) asking for it.

        Args:
            failed: whether it counts as a failure (anything but an exit with
                code 0).
            outcome: how it ended, one line ("exited with code 2").
            ran_s: seconds from its claim to its end.
            reached_active: whether it was ever active.
        """
        policy = self.policy
        if not failed:
            self.quick_failures = 0
            self.failures = 0
            if policy.mode is RestartMode.ALWAYS:
                return Decision(
                    Action.RESTART, self._delay(), f"restart after it {outcome}", outcome=outcome
                )
            return Decision(Action.IDLE, reason=f"not restarted after it {outcome}")
        if policy.mode is RestartMode.NEVER:
            return Decision(Action.IDLE, reason=f"not restarted (--restart never): {outcome}")
        if reached_active and ran_s >= policy.start_secs:
            self.quick_failures = 0
            self.failures = 0
            return Decision(
                Action.RESTART, self._delay(), f"restart after it {outcome}", outcome=outcome
            )
        self.quick_failures += 1
        if self.quick_failures >= policy.start_retries:
            count = self.quick_failures
            self.fatal = f"gave up after {count} quick failure{'s' * (count != 1)}: {outcome}"
            return Decision(Action.FATAL, reason=self.fatal)
        return Decision(
            Action.RESTART,
            self._delay(),
            f"restart after quick failure {self.quick_failures} of {policy.start_retries}:"
            f" {outcome}",
            attempt=self.quick_failures,
            outcome=outcome,
        )

    def claim_refused(self, why: str) -> Decision:
        """An automatic start could not claim the slot (held by another, Redis
        unreachable): try again later, as long as the policy restarts at all."""
        if self.policy.mode is RestartMode.NEVER or self.fatal is not None:
            return Decision(Action.IDLE, reason=f"not retried: {why}")
        return Decision(Action.RESTART, self._delay(), f"claim refused ({why})")

    def _delay(self) -> float:
        delay = self._backoff.compute(self.failures)
        self.failures += 1
        return max(0.0, min(delay, self.policy.backoff_max_s))
