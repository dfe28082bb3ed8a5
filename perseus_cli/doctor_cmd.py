"""`perseus doctor`: check a Redis target the way Perseus will use it.

The checks live in `perseus_core.store.doctor`; this prints them as a table
(or JSON) and exits 0 when Perseus will work, 1 with the reasons otherwise,
3 when Redis cannot be reached at all.
"""

from __future__ import annotations

import click

from perseus_cli.common import load_settings, open_redis, run_read
from perseus_cli.options import EXIT_ERROR, MAX_EXCHANGE_ID, json_option, redis_url_option
from perseus_cli.output import Cell, echo_json, print_table, styled
from perseus_core.present import Tone
from perseus_core.store.doctor import Diagnosis, diagnose
from perseus_core.wire.text import clean

_VERDICT = {True: ("ok", Tone.SUCCESS), False: ("FAIL", Tone.ERROR), None: ("-", Tone.MUTED)}


def _print(report: Diagnosis) -> None:
    rows: list[list[Cell]] = []
    for check in report.checks:
        word, tone = _VERDICT[check.ok]
        rows.append([check.name, styled(word, tone), clean(check.value, 200)])
        rows.extend(["", "", f"  {clean(detail, 200)}"] for detail in check.details)
    print_table(("CHECK", "", "FOUND"), rows)
    if report.ok:
        click.echo("Perseus will work with this Redis.")
    else:
        click.echo("Perseus will not work with this Redis:", err=True)
        for reason in report.reasons:
            click.echo(f"  {clean(reason, 300)}", err=True)


@click.command("doctor")
@json_option
@click.option(
    "--exchange-id",
    type=click.IntRange(0, MAX_EXCHANGE_ID),
    default=None,
    metavar="ID",
    help="Probe the roles on this exchange (default: the catalog's first).",
)
@redis_url_option
def doctor(as_json: bool, exchange_id: int | None, redis_url: str | None) -> None:
    """Check a Redis target the way Perseus will use it.

    Reachable, version, mode (standalone, cluster, Sentinel), TLS, which roles
    this user can act as, latency, keyspace notifications, clock skew (this
    host and every writer), stream sizes and retention, entries that belong
    to no exchange (exchangeId 0 or exchange `unknown`), keys of the wrong
    type. Exit 0 when Perseus will work, 1 with the reasons otherwise.
    """
    settings = load_settings(redis_url)

    async def body() -> Diagnosis:
        async with open_redis(settings) as redis:
            return await diagnose(redis, settings, exchange_id)

    report = run_read(settings, body)
    if as_json:
        echo_json(report.to_dict())
    else:
        _print(report)
    if not report.ok:
        raise SystemExit(EXIT_ERROR)
