"""What every `perseus` verb shares before it touches Redis: the --redis-url
option, the exit codes, the one-line failure and the quiet end of a closed pipe.

Only click is imported here: the `perseus` group itself uses this module, and
`perseus --version` or `--help` must not pay for Redis, pydantic or Textual.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import click

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_NO_AGENT = 4

MAX_EXCHANGE_ID = 10**18 - 1
"""Largest id a status key can carry (`keys.parse_status_key` reads up to 18 digits)."""

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


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
"""`--json` of every read verb: the same flag, name and help everywhere."""


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print one line to stderr and exit with `code`."""
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
