"""The one backoff policy: exponential, capped, with jitter.

Every loop that retries after a Redis or HTTP failure (the agent's claim, the
activity tail, the control server and client, the notifier) uses `Backoff`,
so retries behave alike everywhere and are tuned in one place. Jitter keeps a
fleet that lost Redis at the same moment from reconnecting in lockstep.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class Backoff:
    """Delays `initial_s`, `initial_s * factor`, ... capped at `max_s`.

    `jitter` is the fraction of each delay that is random: 0.5 gives delays
    uniformly between half and all of the exponential value; 0 gives exact
    delays (useful where a test or an operator reads the figure).
    Call `next_delay()` after each failure and `reset()` after a success.
    """

    initial_s: float = 0.1
    max_s: float = 5.0
    factor: float = 2.0
    jitter: float = 0.5
    failures: int = field(default=0, init=False)

    def delay(self, attempt: int) -> float:
        """The delay before retry number `attempt` (0-based), without side effects."""
        exponent = min(max(attempt, 0), 64)
        base = min(self.max_s, self.initial_s * self.factor**exponent)
        if self.jitter <= 0:
            return base
        return base * random.uniform(1.0 - self.jitter, 1.0)

    def next_delay(self) -> float:
        """Record one more failure and return how long to wait before retrying."""
        delay = self.delay(self.failures)
        self.failures += 1
        return delay

    def reset(self) -> None:
        """Forget past failures: the next retry waits `initial_s` again."""
        self.failures = 0
