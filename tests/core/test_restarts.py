"""The restart policy (perseus_core.runtime.restarts): pure decisions, no Redis, no process."""

from __future__ import annotations

import pytest
from redis.backoff import AbstractBackoff, ExponentialBackoff

from perseus_core.runtime.restarts import Action, Decision, RestartMode, RestartPolicy, Restarts


class Doubling(AbstractBackoff):
    """Deterministic: 1, 2, 4... seconds after 0, 1, 2... failures in a row."""

    def compute(self, failures: int) -> float:
        return float(2**failures)


def restarts(mode: RestartMode = RestartMode.ON_FAILURE, **kwargs: float) -> Restarts:
    policy = RestartPolicy(mode, **kwargs)  # type: ignore[arg-type]
    return Restarts(policy, Doubling())


def quick(r: Restarts, outcome: str = "exited with code 2") -> Decision:
    return r.run_ended(failed=True, outcome=outcome, ran_s=0.1, reached_active=False)


def test_quick_failures_back_off_then_give_up() -> None:
    r = restarts(start_retries=3, backoff_max_s=100)
    first, second = quick(r), quick(r)
    assert [first.action, second.action] == [Action.RESTART, Action.RESTART]
    assert [first.delay_s, second.delay_s] == [1.0, 2.0]
    assert second.reason == "restart after quick failure 2 of 3: exited with code 2"
    fatal = quick(r)
    assert fatal.action is Action.FATAL
    assert fatal.reason == "gave up after 3 quick failures: exited with code 2"
    assert r.fatal == fatal.reason
    # Given up, a refused claim is not retried either.
    assert r.claim_refused("held by host-b").action is Action.IDLE


def test_the_backoff_is_capped() -> None:
    r = restarts(start_retries=10, backoff_max_s=3)
    delays = [quick(r).delay_s for _ in range(5)]
    assert delays == [1.0, 2.0, 3.0, 3.0, 3.0]


def test_the_default_backoff_has_jitter_within_the_cap() -> None:
    r = Restarts(RestartPolicy(backoff_max_s=0.4, start_retries=50))
    delays = [quick(r).delay_s for _ in range(40)]
    assert all(0.2 <= d <= 0.4 for d in delays)
    assert len(set(delays)) > 1


def test_a_long_run_that_fails_is_restarted_and_resets_the_count() -> None:
    r = restarts(start_retries=2, start_secs=5)
    assert quick(r).action is Action.RESTART
    long = r.run_ended(failed=True, outcome="killed by SIGKILL", ran_s=60, reached_active=True)
    assert long.action is Action.RESTART and long.delay_s == 1.0
    assert r.quick_failures == 0
    assert quick(r).action is Action.RESTART  # counting starts again


def test_a_run_that_never_became_active_is_quick_however_long() -> None:
    r = restarts(start_retries=1, start_secs=5)
    ended = r.run_ended(failed=True, outcome="not ready", ran_s=60, reached_active=False)
    assert ended.action is Action.FATAL
    assert ended.reason == "gave up after 1 quick failure: not ready"


@pytest.mark.parametrize(
    ("mode", "failed", "expected"),
    [
        (RestartMode.NEVER, True, Action.IDLE),
        (RestartMode.NEVER, False, Action.IDLE),
        (RestartMode.ON_FAILURE, True, Action.RESTART),
        (RestartMode.ON_FAILURE, False, Action.IDLE),
        (RestartMode.ALWAYS, True, Action.RESTART),
        (RestartMode.ALWAYS, False, Action.RESTART),
    ],
)
def test_modes(mode: RestartMode, failed: bool, expected: Action) -> None:
    r = restarts(mode)
    decision = r.run_ended(failed=failed, outcome="ended", ran_s=60, reached_active=True)
    assert decision.action is expected


def test_refused_claims_are_retried_with_backoff_and_never_fatal() -> None:
    r = restarts(start_retries=1, backoff_max_s=100)
    decisions = [r.claim_refused("Redis unreachable") for _ in range(4)]
    assert {d.action for d in decisions} == {Action.RESTART}
    assert [d.delay_s for d in decisions] == [1.0, 2.0, 4.0, 8.0]
    assert r.fatal is None
    assert restarts(RestartMode.NEVER).claim_refused("x").action is Action.IDLE


def test_reset_clears_fatal_and_counts() -> None:
    r = restarts(start_retries=1)
    assert quick(r).action is Action.FATAL
    r.reset()
    assert r.fatal is None and r.quick_failures == 0 and r.failures == 0
    assert quick(r).action is Action.FATAL


def test_a_clean_exit_resets_the_count() -> None:
    r = restarts(RestartMode.ALWAYS, start_retries=2)
    quick(r)
    ok = r.run_ended(failed=False, outcome="exited with code 0", ran_s=0.1, reached_active=True)
    assert ok.action is Action.RESTART and r.quick_failures == 0


@pytest.mark.parametrize("kwargs", [{"start_retries": 0}, {"backoff_max_s": -1}])
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RestartPolicy(**kwargs)  # type: ignore[arg-type]


def test_any_redis_backoff_fits() -> None:
    r = Restarts(RestartPolicy(backoff_max_s=5), ExponentialBackoff(cap=5, base=1))
    assert quick(r).delay_s == 1.0
