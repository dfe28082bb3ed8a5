"""Which exceptions mean "Redis is briefly unreachable" and which mean "Redis said no"."""

from __future__ import annotations

from redis.exceptions import ClusterDownError, RedisClusterException, RedisError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    TimeoutError,
    ConnectionResetError,
    ConnectionRefusedError,
    ConnectionAbortedError,
    # Redis Cluster: no node reachable, a slot between owners, a failover in progress.
    RedisClusterException,
    ClusterDownError,
    TryAgainError,
)
"""Errors that mean the connection to Redis is (briefly) gone: retry, do not crash.

Deliberately narrow: redis-py wraps socket failures in its own
`ConnectionError`, so a bare `OSError` (a closed stdout pipe, a missing file)
is a different problem and must not be mistaken for an outage.
"""

REDIS_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, RedisError)
"""Anything Redis or the connection to it can raise: transient errors and error replies."""


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` is a transient connection problem (see `TRANSIENT_ERRORS`)."""
    return isinstance(exc, TRANSIENT_ERRORS)
