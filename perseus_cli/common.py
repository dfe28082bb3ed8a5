"""What every verb that talks to Redis shares: settings, running an async body,
and turning whatever stops it (see `failures`) into one clear line instead of
a traceback."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, NoReturn, TypeVar

import click
from pydantic import ValidationError
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError, InvalidResponse, NoPermissionError, RedisError

from perseus_cli.failures import REDIS_FAILURES, Failure, describe_failure, redis_url_problem
from perseus_cli.options import EXIT_USAGE, fail, quiet_closed_stdout
from perseus_core.plumbing.connection import connect, is_tls_failure, ping_or_raise
from perseus_core.plumbing.errors import TRANSIENT_ERRORS
from perseus_core.plumbing.topology import RedisClient
from perseus_core.wire.errors import PerseusError
from perseus_core.wire.models import describe_validation_error
from perseus_core.wire.settings import Settings
from perseus_core.wire.text import clean

T = TypeVar("T")


def load_settings(redis_url: str | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, with command-line overrides on top.

    A bad environment value or a malformed Redis URL is a usage error: one
    line (the variable named, the URL's password never shown) and exit 2.
    """
    found = settings_or_problem(redis_url, **overrides)
    if isinstance(found, str):
        fail(found, EXIT_USAGE)
    return found


def settings_or_problem(redis_url: str | None = None, **overrides: Any) -> Settings | str:
    """`load_settings`, returning what is wrong (a usage error) instead of exiting."""
    values = {k: v for k, v in overrides.items() if v is not None}
    if redis_url:
        values["redis_url"] = redis_url
    try:
        settings = Settings(**values)
    except ValidationError as exc:
        return f"invalid configuration: {describe_validation_error(exc)}"
    problem = redis_url_problem(settings)
    return settings if problem is None else problem


def run(settings: Settings, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run an async command body; Redis that cannot be used (unreachable, not
    Redis, refusing the credentials or this user's rights) or that refuses a
    command (a key of the wrong type, out of memory) ends in one line with
    the exit code `describe_failure` gives it, a closed stdout ends quietly."""
    try:
        return asyncio.run(main())
    except BrokenPipeError:
        quiet_closed_stdout()
    except REDIS_FAILURES as exc:
        _fail_with(settings, exc)


def _fail_with(settings: Settings, exc: BaseException) -> NoReturn:
    failure = describe_failure(settings, exc)
    if failure is None:
        raise exc
    fail(failure.message, failure.code)


_PROBE_TIMEOUT_S = 2.0
"""How long the dashboard's start-up probe waits: a Redis that is merely slow
or down is the dashboard's to show (a banner, retries), not a reason to wait."""


def preflight(settings: Settings) -> None:
    """Exit 3 with one line when Redis answers but can never be used as given:
    not Redis at all, a wrong or missing password, a TLS error, an ACL user
    without rights. For the dashboard, before its App starts: those would
    otherwise sit behind a "connecting" banner forever. Redis being down or
    slow is left to the dashboard, which shows it and keeps retrying.
    """

    async def probe() -> None:
        client = connect(
            settings,
            socket_timeout=_PROBE_TIMEOUT_S,
            socket_connect_timeout=_PROBE_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
        )
        try:
            await client.ping()
        finally:
            await client.aclose()

    try:
        asyncio.run(probe())
    except (AuthenticationError, InvalidResponse, NoPermissionError) as exc:
        _fail_with(settings, exc)
    except TRANSIENT_ERRORS as exc:
        if is_tls_failure(exc):
            _fail_with(settings, exc)


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
    found = attempt_read(settings, body)
    if isinstance(found, Failure):
        fail(found.message, found.code)
    return found


_READ_FAILURES: tuple[type[BaseException], ...] = (*REDIS_FAILURES, PerseusError, RedisError)


def attempt_read(settings: Settings, body: Callable[[], Coroutine[Any, Any, T]]) -> T | Failure:
    """`run_read`, returning the failure (its line and exit code) instead of
    printing it: for a verb that reports it its own way (`doctor --json`)."""
    try:
        with _library_warnings():
            return asyncio.run(body())
    except BrokenPipeError:
        quiet_closed_stdout()
    except _READ_FAILURES as exc:
        failure = describe_failure(settings, exc)
        if failure is None:
            raise
        return failure


@contextmanager
def log_to_stderr(verb: str) -> Iterator[None]:
    """Perseus's own log lines on stderr (`12:00:00 perseus notify: ...`)
    while a long-running verb runs; third-party loggers stay quiet. The
    previous configuration is restored afterwards (the command may run
    inside a larger program or a test).

    httpx logs every request URL at INFO level, and a webhook URL carries its
    secret token: keeping httpx at WARNING keeps it out of the logs (the
    notifier also rewrites such records, should anyone lower the level).
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s perseus {verb}: %(message)s", "%H:%M:%S"))
    logger = logging.getLogger("perseus_core")
    quiet = [logging.getLogger(name) for name in ("httpx", "httpcore")]
    saved = (logger.handlers[:], logger.level, logger.propagate, [q.level for q in quiet])
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for other in quiet:
        other.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.handlers[:], level, logger.propagate, levels = saved
        logger.setLevel(level)
        for other, old in zip(quiet, levels, strict=True):
            other.setLevel(old)
