"""What every `perseus` verb shares before it touches Redis: the --redis-url and
--redis-url-file options, the exit codes, the one-line failure and the quiet
end of a closed pipe.

Only click is imported here: the `perseus` group itself uses this module, and
`perseus --version` or `--help` must not pay for Redis, pydantic or Textual.
"""

from __future__ import annotations

import functools
import os
import stat
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar, cast
from urllib.parse import parse_qsl, urlsplit

import click

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_NO_AGENT = 4

MAX_EXCHANGE_ID = 10**18 - 1
"""Largest id a status key can carry (`keys.parse_status_key` reads up to 18 digits)."""

F = TypeVar("F", bound=Callable[..., Any])


def redis_url_option(func: F) -> F:
    """`--redis-url URL` and `--redis-url-file PATH`; the verb receives `redis_url`.

    It is the verb's own URL (from either option, never both), else the one
    given before the verb (`perseus --redis-url URL status`, so that form does
    not quietly use localhost), else None: $PERSEUS_REDIS_URL, then
    redis://localhost:6379/0, as `Settings` reads them.
    """
    return _with_redis_url(func, tell_origin=False)


def agent_redis_url_option(func: F) -> F:
    """`redis_url_option` for `perseus agent`, which also receives
    `redis_url_in_argv`: whether the URL was written on a command line, where
    a password must not be (`password_in`)."""
    return _with_redis_url(func, tell_origin=True)


def _with_redis_url(func: F, *, tell_origin: bool) -> F:
    @functools.wraps(func)
    def resolved(
        *args: Any, redis_url: str | None, redis_url_file: str | None, **kwargs: Any
    ) -> Any:
        url, in_argv = _resolve_redis_url(redis_url, redis_url_file)
        if tell_origin:
            kwargs["redis_url_in_argv"] = in_argv
        return func(*args, redis_url=url, **kwargs)

    url_file = click.option(
        "--redis-url-file",
        "redis_url_file",
        default=None,
        metavar="PATH",
        help="Read the Redis URL from this file (one line; keep it mode 600): "
        "a password stays off the command line.",
    )
    url = click.option(
        "--redis-url",
        "redis_url",
        default=None,
        metavar="URL",
        help="Redis to use (default: $PERSEUS_REDIS_URL or redis://localhost:6379/0).",
    )
    return cast(F, url(url_file(resolved)))


def _resolve_redis_url(url: str | None, url_file: str | None) -> tuple[str | None, bool]:
    """The URL a verb uses and whether it came from a command line (see `redis_url_option`)."""
    ctx = click.get_current_context(silent=True)
    parent = ctx.parent if ctx is not None else None
    while not (url or url_file) and parent is not None:
        url, url_file = parent.params.get("redis_url"), parent.params.get("redis_url_file")
        parent = parent.parent
    if url and url_file:
        fail("give --redis-url or --redis-url-file, not both", EXIT_USAGE)
    if url_file:
        # Read once per invocation: `perseus --redis-url-file F status` resolves
        # it for the group and again for the verb.
        read: dict[str, str] = {} if ctx is None else ctx.find_root().meta.setdefault(_READ, {})
        if url_file not in read:
            read[url_file] = read_redis_url_file(url_file)
        return read[url_file], False
    return url or None, bool(url)


_READ = "perseus.redis_url_files"


def read_redis_url_file(path: str) -> str:
    """The URL in `path`: its one line, surrounding whitespace dropped. Exits 2
    when the file cannot be read or holds anything else; warns on stderr when
    other users may read or change it."""
    shown = click.format_filename(path)
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read(64 * 1024)
            mode = os.fstat(file.fileno()).st_mode
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        fail(f"cannot read --redis-url-file {shown}: {reason}", EXIT_USAGE)
    url = text.strip()
    if not url or "\n" in url:
        fail(f"--redis-url-file {shown} must hold one Redis URL on one line", EXIT_USAGE)
    if mode & 0o077:
        click.echo(
            f"perseus: warning: --redis-url-file {shown} is open to other users "
            f"(mode {stat.S_IMODE(mode):o}); chmod 600 it",
            err=True,
        )
    return url


def redis_url_file_of(url: str) -> str | None:
    """The `--redis-url-file` this invocation read `url` from, or None when
    it came from elsewhere: what to name, instead of a URL holding a
    password, in a command shown for a person to copy."""
    ctx = click.get_current_context(silent=True)
    read: dict[str, str] = ctx.find_root().meta.get(_READ, {}) if ctx is not None else {}
    return next((path for path, value in read.items() if value == url), None)


def password_in(url: str) -> bool:
    """Whether `url` holds a password: in its userinfo (`redis://:pw@host`,
    `redis://user:pw@host`) or in a query parameter (`?password=pw`,
    `?sentinel_password=pw`)."""
    try:
        parts = urlsplit(url)
        password, query = parts.password, parts.query
        whole = "@" not in url or "@" in parts.netloc
    except ValueError:
        whole = False
    if not whole:  # a '#', '/' or '?' in the password cuts the address short for a parser
        userinfo = url.partition("://")[2].partition("@")[0]
        password, query = userinfo.partition(":")[2], url.partition("?")[2]
    return bool(password) or any(
        value and "pass" in name.lower() for name, value in parse_qsl(query)
    )


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
"""`--json` of every read verb: the same flag, name and help everywhere."""


FAILURE_WRITER = "perseus.failure_writer"
"""`ctx.meta` key of a verb that reports its own failures (`doctor --json`
prints a JSON document even then): a callable taking the message and exit
code, which `fail` calls instead of printing the line."""


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print one line to stderr (or hand it to the verb's `FAILURE_WRITER`)
    and exit with `code`."""
    ctx = click.get_current_context(silent=True)
    writer = ctx.meta.get(FAILURE_WRITER) if ctx is not None else None
    if writer is not None:
        writer(message, code)
    else:
        click.echo(f"perseus: {message}", err=True)
    sys.exit(code)


def quiet_closed_stdout() -> NoReturn:
    """Exit 0 after whoever read our stdout went away (`perseus log -f | head -1`).

    That is how a pipeline ends, not an error. Stdout is pointed at /dev/null
    so the interpreter's final flush does not fail on the closed pipe again.
    """
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    sys.exit(EXIT_OK)
