"""The one place that turns what can go wrong into a line for a person and an exit code.

Every verb (and the dashboard's start-up) goes through here, so the same
problem reads the same everywhere: a malformed URL is a usage error (exit 2)
found before anything connects; a port that is not Redis, a wrong password,
a TLS mismatch or a missing ACL right each get their own line (exit 3); an
error Redis or Perseus reports on purpose exits 1. Nothing here ever prints a
password: URLs are shown redacted, and a URL that cannot be parsed is
described, never quoted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from redis.exceptions import (
    AuthenticationError,
    InvalidResponse,
    NoPermissionError,
    RedisError,
    ResponseError,
)

from perseus_cli.options import EXIT_ERROR, EXIT_UNREACHABLE
from perseus_core.plumbing.connection import (
    connect,
    describe_redis_error,
    is_sentinel_url,
    refused,
)
from perseus_core.plumbing.errors import TRANSIENT_ERRORS
from perseus_core.wire.errors import AccessDenied, PerseusError, RedisRefused, RedisUnavailable
from perseus_core.wire.settings import Settings, redact_url
from perseus_core.wire.text import clean

URL_FORM = "redis://[[user]:password@]host[:port][/db]"
"""The shape of a Redis URL, quoted in the messages about a malformed one."""

ENCODE_HINT = (
    "a '#', '/', '?' or '@' in the user name or password must be percent-encoded"
    " (%23, %2F, %3F, %40)"
)


_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    AuthenticationError,
    InvalidResponse,
    *TRANSIENT_ERRORS,
    OSError,
)
"""Errors of the connection itself (exit 3); a bare OSError too, as a Unix
socket path that does not exist surfaces as one."""

REDIS_FAILURES: tuple[type[BaseException], ...] = (
    RedisUnavailable,
    AccessDenied,
    RedisRefused,
    ResponseError,
    *_CONNECTION_ERRORS,
)
"""What any verb turns into one line (`describe_failure` picks the exit code):
Redis could not be used at all, or refused a command. A refusal never reads
as an internal error, whichever verb met it."""

_PIPELINED = re.compile(
    r"^Command # \d+ \((\S+)(?: (\S+))?[^)]*\) of pipeline caused error: (.*)$", re.S
)
"""How redis-py annotates an error reply inside a pipeline: `Command # 2 (GET
exchange:2:status) of pipeline caused error: WRONGTYPE ...`."""


@dataclass(frozen=True, slots=True)
class Failure:
    """What to tell a person about an error, and the exit code that goes with it."""

    message: str
    code: int


def _unencoded_userinfo(rest: str) -> bool:
    """Whether the part after `scheme://` reads like `user:pa#ss@host`: an `@`
    after the authority ends, with no `=` before it (so `?password=a@b`, a
    query parameter, is not mistaken for one)."""
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    if "@" in rest[:end]:
        return False
    at = rest.find("@", end)
    return at >= 0 and "=" not in rest[end:at]


def redis_url_problem(settings: Settings) -> str | None:
    """Why the settings' URL cannot be used, or None when a client accepts it.

    The checks run before anything connects, and the answer never quotes the
    URL's password: a password with an unencoded `#` or `/` makes the rest of
    the URL unparseable, and the parser's own message would echo part of it.
    """
    url = settings.redis_url
    scheme, sep, rest = url.partition("://")
    if not sep:
        return f"not a Redis URL: expected {URL_FORM}, rediss://... (TLS) or unix:///path"
    if _unencoded_userinfo(rest):
        return f"cannot parse the Redis URL: {ENCODE_HINT}"
    try:
        parts = urlsplit(url)
    except ValueError:  # only "Invalid IPv6 URL" gets here
        return f"cannot parse the Redis URL: an IPv6 host is written [addr], e.g. {scheme}://[::1]:6379"
    try:
        if not is_sentinel_url(url):  # a sentinel URL lists host:port pairs
            parts.port  # noqa: B018 - parsed on access, and raises then
    except ValueError:
        return f"invalid port in the Redis URL (expected a number from 1 to 65535): {URL_FORM}"
    try:
        connect(settings)  # parses only: a client connects on first use
    except ValueError as exc:
        text = str(exc).splitlines()[0] if str(exc) else "unparseable"
        if parts.password and parts.password in text:
            text = "unparseable"
        return f"invalid Redis URL {redact_url(url)}: {clean(text, 200)}"
    return None


def describe_failure(settings: Settings, exc: BaseException) -> Failure | None:
    """The line and exit code for an error a verb may meet, or None when it is
    not one this module knows (a bug, reported by the caller as such)."""
    if isinstance(exc, ResponseError):
        exc = _named(exc)
    if isinstance(exc, RedisUnavailable | AccessDenied):
        return Failure(clean(str(exc), 500), EXIT_UNREACHABLE)
    if isinstance(exc, RedisRefused):
        return Failure(clean(str(exc), 500), EXIT_UNREACHABLE if exc.unusable else EXIT_ERROR)
    if isinstance(exc, NoPermissionError):
        return Failure(
            f"Redis refused this user: {clean(str(exc), 300)} (check its ACL rights)",
            EXIT_UNREACHABLE,
        )
    if isinstance(exc, _CONNECTION_ERRORS):
        return Failure(clean(describe_redis_error(settings, exc), 500), EXIT_UNREACHABLE)
    if isinstance(exc, PerseusError):
        return Failure(clean(str(exc), 500), EXIT_ERROR)
    if isinstance(exc, ResponseError):
        return Failure(f"Redis refused the request: {clean(str(exc), 300)}", EXIT_ERROR)
    if isinstance(exc, RedisError):
        return Failure(clean(describe_redis_error(settings, exc), 500), EXIT_UNREACHABLE)
    return None


def _named(exc: ResponseError) -> BaseException:
    """A refusal from inside a pipeline as the error naming its command and key
    (`refused`); any other error reply as it is. The stores name the key of
    what they refuse themselves; this covers the pipelines they do not wrap."""
    match = _PIPELINED.match(str(exc))
    if match is None:
        return exc
    command, key, words = match.groups()
    bare = type(exc)(words)
    return refused(bare, command, key or "")


def unexpected(exc: BaseException) -> str:
    """One line for an exception nothing expected: what it was, and what to do."""
    first = str(exc).splitlines()[0] if str(exc) else ""
    detail = f": {clean(first, 200)}" if first else ""
    return (
        f"internal error ({type(exc).__name__}{detail}); "
        "set PERSEUS_TRACEBACK=1 for the details, and please report it"
    )
