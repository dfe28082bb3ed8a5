"""What every verb that talks to Redis shares: settings, running an async body,
and turning an unreachable Redis into one clear line instead of a traceback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeVar

import click
from pydantic import ValidationError
from redis.exceptions import AuthenticationError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from perseus_cli.options import EXIT_ERROR, EXIT_UNREACHABLE, fail, quiet_closed_stdout
from perseus_core.plumbing.connection import connect, describe_redis_error, ping_or_raise
from perseus_core.plumbing.topology import RedisClient
from perseus_core.wire.errors import PerseusError, RedisUnavailable
from perseus_core.wire.models import describe_validation_error
from perseus_core.wire.settings import Settings
from perseus_core.wire.text import clean

T = TypeVar("T")


def load_settings(redis_url: str | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, with command-line overrides on top.

    A bad environment value is a usage error (exit 2) with the variable named.
    """
    values = {k: v for k, v in overrides.items() if v is not None}
    if redis_url:
        values["redis_url"] = redis_url
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise click.UsageError(f"invalid configuration: {describe_validation_error(exc)}") from None


def run(settings: Settings, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run an async command body; Redis being unreachable exits 3 with one line,
    a closed stdout ends quietly."""
    try:
        return asyncio.run(main())
    except BrokenPipeError:
        quiet_closed_stdout()
    except RedisUnavailable as exc:
        fail(str(exc), EXIT_UNREACHABLE)
    except (RedisConnectionError, RedisTimeoutError, AuthenticationError, OSError) as exc:
        fail(describe_redis_error(settings, exc), EXIT_UNREACHABLE)


@asynccontextmanager
async def open_redis(settings: Settings) -> AsyncIterator[RedisClient]:
    """A client that has answered PING, closed on exit.

    The PING up front turns an unreachable Redis into `RedisUnavailable`
    before anything is printed, so `run` can exit 3 with one line.
    """
    client = connect(settings)
    try:
        await ping_or_raise(client, settings)
        yield client
    finally:
        await client.aclose()


class _WarningsToStderr(logging.Handler):
    """Shows the library's warnings (a corrupt catalog entry, an unreadable
    stream, an exchange `discover` skipped) as cleaned `perseus: warning:`
    lines, instead of Python's bare last-resort output."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = clean(record.getMessage(), 300)
        except (TypeError, ValueError):  # a log call whose arguments do not fit its format
            message = "(unprintable warning)"
        click.echo(f"perseus: warning: {message}", err=True)


@contextmanager
def _library_warnings() -> Iterator[None]:
    logger = logging.getLogger("perseus_core")
    handler = _WarningsToStderr(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)


def run_read(settings: Settings, body: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """`run` for the read-side verbs: the library's warnings on stderr, and one
    line (exit 1) for errors Redis or Perseus reports on purpose, such as a key
    of the wrong type or an ACL refusal."""
    try:
        with _library_warnings():
            return run(settings, body)
    except PerseusError as exc:
        fail(clean(str(exc)), EXIT_ERROR)
    except ResponseError as exc:
        fail(f"Redis refused the request: {clean(str(exc))}", EXIT_ERROR)
