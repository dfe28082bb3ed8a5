"""`perseus doctor`: check a Redis target the way Perseus will use it.

The checks live in `perseus_core.store.doctor`; this prints them as a table
(or JSON) and exits 0 when Perseus will work for this user (it is fit for
the role asked, or for some role when none is), 1 with the reasons
otherwise, 2 for a usage error, 3 when Redis cannot be used at all. With
`--json` every outcome, a failure included, is one JSON document on stdout.
"""

from __future__ import annotations

import os
from typing import Any

import click

from perseus_cli.common import attempt_read, open_redis, settings_or_problem
from perseus_cli.failures import Failure, unexpected
from perseus_cli.options import (
    EXIT_ERROR,
    EXIT_USAGE,
    FAILURE_WRITER,
    MAX_EXCHANGE_ID,
    fail,
    json_option,
    redis_url_option,
)
from perseus_cli.output import Cell, echo_json, print_table, styled
from perseus_core.present import Tone
from perseus_core.store.doctor import Diagnosis, Role, diagnose
from perseus_core.wire.text import clean

_VERDICT = {True: ("ok", Tone.SUCCESS), False: ("FAIL", Tone.ERROR), None: ("-", Tone.MUTED)}


def _print(report: Diagnosis) -> None:
    rows: list[list[Cell]] = []
    for check in report.checks:
        word, tone = _VERDICT[check.ok]
        rows.append([check.name, styled(word, tone), clean(check.value, 300)])
        rows.extend(["", "", f"  {clean(detail, 300)}"] for detail in check.details)
    print_table(("CHECK", "", "FOUND"), rows)
    summary = report.facts.get("summary")
    if summary:
        click.echo(clean(str(summary), 600))
    role = report.facts.get("role")
    if report.ok:
        click.echo(f"Perseus will work with this Redis{f' as {role}' if role else ''}.")
    else:
        click.echo("Perseus will not work with this Redis:", err=True)
        for reason in report.reasons:
            click.echo(f"  {clean(reason, 300)}", err=True)


def _json_failure(message: str, code: int) -> None:
    """The one JSON document of a run that could not report (see `FAILURE_WRITER`)."""
    echo_json(
        {
            "ok": False,
            "error": message,
            "exitCode": code,
            "checks": [],
            "reasons": [message],
            "facts": {},
        }
    )


class _DoctorCommand(click.Command):
    """`doctor`, whose `--json` stays JSON when the command line is wrong too."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--json" not in args:
            return super().parse_args(ctx, args)
        ctx.meta[FAILURE_WRITER] = _json_failure
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            _json_failure(f"usage: {exc.format_message()}", EXIT_USAGE)
            ctx.exit(EXIT_USAGE)


@click.command("doctor", cls=_DoctorCommand)
@json_option
@click.option(
    "--role",
    type=click.Choice([role.value for role in Role]),
    default=None,
    help="The role this user must be fit for (default: any one). Every role is reported.",
)
@click.option(
    "--exchange-id",
    type=click.IntRange(0, MAX_EXCHANGE_ID),
    default=None,
    metavar="ID",
    help="Check the roles on this exchange: an agent's own (default: the catalog's first).",
)
@click.option(
    "--exchange-name",
    default=None,
    metavar="NAME",
    help="Its name, when neither the catalog nor a status key says it (an agent's"
    " streams are named by it).",
)
@redis_url_option
def doctor(
    as_json: bool,
    role: str | None,
    exchange_id: int | None,
    exchange_name: str | None,
    redis_url: str | None,
) -> None:
    """Check a Redis target the way Perseus will use it.

    Reachable, version, mode (standalone, cluster, Sentinel), TLS, what this
    user may do as an agent, an operator and a viewer (asked of Redis without
    running anything), memory against maxmemory, latency, clock skew (this
    host and every writer), stream sizes and retention, how the live tail
    waits, entries that belong to no exchange (exchangeId 0 or exchange
    `unknown`), keys of the wrong type. Exit 0 when Perseus will work for
    this user (fit for --role, or for some role), 1 with the reasons
    otherwise, 3 when Redis cannot be used at all; --json prints one JSON
    document whatever happens.
    """
    found = settings_or_problem(redis_url)
    if isinstance(found, str):
        fail(found, EXIT_USAGE)
    settings = found

    async def body() -> Diagnosis:
        async with open_redis(settings) as redis:
            return await diagnose(
                redis,
                settings,
                exchange_id,
                role=Role(role) if role else None,
                exchange_name=exchange_name,
            )

    try:
        report = attempt_read(settings, body)
    except Exception as exc:  # a bug: still one JSON document with --json
        if not as_json or os.environ.get("PERSEUS_TRACEBACK"):
            raise
        fail(unexpected(exc), EXIT_ERROR)
    if isinstance(report, Failure):
        fail(report.message, report.code)
    if as_json:
        document: dict[str, Any] = {**report.to_dict(), "exitCode": 0 if report.ok else EXIT_ERROR}
        echo_json(document)
    else:
        _print(report)
    if not report.ok:
        raise SystemExit(EXIT_ERROR)
