"""Opening Redis connections the way every Perseus component needs them."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from perseus_core.plumbing.errors import TRANSIENT_ERRORS
from perseus_core.wire.errors import RedisUnavailable
from perseus_core.wire.settings import Settings, redact_url


def connect(settings: Settings, **overrides: Any) -> Redis:
    """A client for short commands, with the settings' socket timeout.

    Responses are decoded as UTF-8 with invalid bytes replaced, so a hostile
    value can never raise UnicodeDecodeError deep inside a reader.
    """
    timeout = settings.socket_timeout_ms / 1000
    options: dict[str, Any] = {
        "decode_responses": True,
        "encoding_errors": "replace",
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": 30,
    }
    options.update(overrides)
    return Redis.from_url(settings.redis_url, **options)


def connect_blocking(settings: Settings, block_ms: int | None = None) -> Redis:
    """A dedicated client for blocking reads (XREAD BLOCK, BLPOP).

    Its socket timeout is longer than the block time: with redis-py's default
    5 s socket timeout a 5 s block would time out on the client side.
    """
    block = block_ms if block_ms is not None else settings.block_ms
    return connect(settings, socket_timeout=block / 1000 + 5)


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether `exc` or any exception in its cause/context chain is a `kind`.

    redis-py wraps a refused connect as `Error 111 connecting to ...`, with the
    `ConnectionRefusedError` only in the chain, so the message alone misses it.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def describe_redis_error(settings_or_url: Settings | str, exc: BaseException) -> str:
    """One line for a person: `cannot reach Redis at <url>: connection refused`."""
    url = (
        settings_or_url.redacted_redis_url
        if isinstance(settings_or_url, Settings)
        else redact_url(settings_or_url)
    )
    if isinstance(exc, AuthenticationError):
        reason = "authentication failed"
    elif isinstance(exc, RedisTimeoutError | TimeoutError):
        reason = "timed out"
    elif isinstance(exc, ResponseError):
        reason = str(exc) or "error reply"
    else:
        text = str(exc).lower()
        if "refused" in text or _caused_by(exc, ConnectionRefusedError):
            reason = "connection refused"
        elif "name or service not known" in text or "nodename nor servname" in text:
            reason = "unknown host"
        else:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"cannot reach Redis at {url}: {reason}"


_PING_ERRORS: tuple[type[BaseException], ...] = (*TRANSIENT_ERRORS, AuthenticationError)


async def ping_or_raise(redis: Redis, settings: Settings) -> None:
    """PING, turning any connection failure into RedisUnavailable."""
    try:
        await redis.ping()
    except _PING_ERRORS as exc:
        raise RedisUnavailable(describe_redis_error(settings, exc)) from exc
