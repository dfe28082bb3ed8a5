"""What every `perseus` verb shares: the --redis-url option, settings, exit codes,
and turning an unreachable Redis into one clear line instead of a traceback."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click
from pydantic import ValidationError
from redis.exceptions import AuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from perseus_core.plumbing.connection import describe_redis_error
from perseus_core.wire.errors import RedisUnavailable
from perseus_core.wire.models import describe_validation_error
from perseus_core.wire.settings import Settings

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_NO_AGENT = 4

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


def _inherit_redis_url(
    ctx: click.Context, _param: click.Parameter, value: str | None
) -> str | None:
    """A verb's own --redis-url wins; else the one given before the verb
    (`perseus --redis-url URL status`), so that form does not quietly use localhost."""
    if value:
        return value
    parent = ctx.parent
    while parent is not None:
        inherited = parent.params.get("redis_url")
        if inherited:
            return str(inherited)
        parent = parent.parent
    return None


def redis_url_option(func: F) -> F:
    """`--redis-url URL`, defaulting to $PERSEUS_REDIS_URL, then redis://localhost:6379/0."""
    return click.option(
        "--redis-url",
        "redis_url",
        default=None,
        metavar="URL",
        callback=_inherit_redis_url,
        help="Redis to use (default: $PERSEUS_REDIS_URL or redis://localhost:6379/0).",
    )(func)


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


def fail(message: str, code: int = EXIT_ERROR) -> None:
    """Print one line to stderr and exit with `code`."""
    click.echo(f"perseus: {message}", err=True)
    sys.exit(code)


def run(settings: Settings, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run an async command body; Redis being unreachable exits 3 with one line."""
    try:
        return asyncio.run(main())
    except BrokenPipeError:
        # `perseus log | head`: the reader went away; that is not an error.
        # Point stdout at /dev/null so the interpreter's final flush is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(EXIT_OK)
    except RedisUnavailable as exc:
        fail(str(exc), EXIT_UNREACHABLE)
    except (RedisConnectionError, RedisTimeoutError, AuthenticationError, OSError) as exc:
        fail(describe_redis_error(settings, exc), EXIT_UNREACHABLE)
    raise AssertionError("unreachable")  # fail() exits
