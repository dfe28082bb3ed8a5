"""`perseus catalog list|add|set|remove|discover`: the known exchanges.

The catalog is the `perseus:exchanges` hash (docs/wire-format.md); what is
read from it is cleaned before it is printed, and what is written is
validated first (a bad name or display name is a usage error, exit 2).
"""

from __future__ import annotations

from typing import Any, cast

import click
from redis.exceptions import ResponseError

from perseus_cli.common import load_settings, open_redis, run_read
from perseus_cli.groups import SuggestingGroup
from perseus_cli.options import EXIT_ERROR, MAX_EXCHANGE_ID, fail, json_option, redis_url_option
from perseus_cli.output import echo_json, print_table
from perseus_core.plumbing.connection import refused
from perseus_core.store.network import FleetReader, parse_catalog_payload
from perseus_core.wire import keys
from perseus_core.wire.errors import PerseusError
from perseus_core.wire.models import CatalogEntry, validate_exchange_name
from perseus_core.wire.text import clean, clean_or


@click.group("catalog", cls=SuggestingGroup)
def catalog_group() -> None:
    """List and edit the known exchanges (the `perseus:exchanges` hash)."""


def _catalog_json(entry: CatalogEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "name": entry.name,
        "displayName": entry.display_name,
        "isActive": entry.is_active,
        "livermoreSub": entry.livermore_sub,
    }


@catalog_group.command("list")
@json_option
@redis_url_option
def catalog_list(as_json: bool, redis_url: str | None) -> None:
    """Show every catalog entry: id, name, display name, active."""
    settings = load_settings(redis_url)

    async def body() -> None:
        async with open_redis(settings) as redis:
            reader = FleetReader(redis)
            entries = await reader.catalog()
        if as_json:
            # Corrupt fields are named with what is wrong (they are also
            # warned about on stderr) so a script can tell them from absence.
            exchanges = [_catalog_json(e) for e in entries]
            echo_json({"exchanges": exchanges, "errors": reader.catalog_errors})
            return
        if not entries:
            click.echo("the catalog is empty: add an exchange with `perseus catalog add ID NAME`")
            return
        rows = [
            [
                str(e.id),
                clean_or(e.name, "?", 64),
                clean_or(e.display_name, "-", 64),
                "yes" if e.is_active else "no",
            ]
            for e in entries
        ]
        print_table(("ID", "NAME", "DISPLAY", "ACTIVE"), rows)

    run_read(settings, body)


def _check_display_name(value: str | None) -> str:
    if value is None:
        return ""
    if clean(value, 10_000) != value or len(value) > 128:
        raise click.BadParameter(
            "use at most 128 printable characters, no control characters",
            param_hint="--display-name",
        )
    return value


def _check_sub(value: str | None) -> str | None:
    if value is None:
        return None
    if not value or clean(value, 256) != value or len(value) > 256 or " " in value:
        raise click.BadParameter(
            "use 1-256 printable characters, no spaces or control characters",
            param_hint="--livermore-sub",
        )
    return value


_SUB_HELP = (
    "Owner identity of the Livermore servers running it: start/stop then reach "
    "them on livermore:commands:SUB."
)


@catalog_group.command("add")
@click.argument("exchange_id", metavar="ID", type=click.IntRange(0, MAX_EXCHANGE_ID))
@click.argument("name", metavar="NAME")
@click.option("--display-name", metavar="TEXT", help="Name to show (default: NAME title-cased).")
@click.option("--livermore-sub", metavar="SUB", help=_SUB_HELP)
@click.option(
    "--rename",
    is_flag=True,
    help="When the catalog lists ID under another name, rename it to NAME (else refused).",
)
@redis_url_option
def catalog_add(
    exchange_id: int,
    name: str,
    display_name: str | None,
    livermore_sub: str | None,
    rename: bool,
    redis_url: str | None,
) -> None:
    """Add an exchange to the catalog, or replace the entry with this ID.

    An ID the catalog lists under another name is refused (exit 1), naming
    the entry, unless --rename: a typo in ID must not silently rename
    another exchange.
    """
    try:
        validate_exchange_name(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    entry = CatalogEntry(
        id=exchange_id,
        name=name,
        display_name=_check_display_name(display_name) or name.replace("_", " ").title(),
        livermore_sub=_check_sub(livermore_sub),
    )
    settings = load_settings(redis_url)

    async def body() -> str:
        async with open_redis(settings) as redis:
            try:
                raw = await redis.hget(keys.CATALOG_KEY, str(entry.id))
            except ResponseError as exc:
                raise refused(exc, "HGET", keys.CATALOG_KEY) from exc
            # `connect` decodes replies: the value is a str.
            listed = parse_catalog_payload(cast(str, raw)) if raw is not None else None
            renamed = isinstance(listed, CatalogEntry) and listed.name.lower() != name.lower()
            if isinstance(listed, CatalogEntry) and renamed and not rename:
                raise PerseusError(
                    f"exchange {entry.id} is already in the catalog as "
                    f"{clean(listed.name, 64)} ({clean(listed.label, 128)}): add --rename to "
                    f"rename it to {name}, or choose another ID (`perseus catalog list`)"
                )
            await FleetReader(redis).add_to_catalog(entry, overwrite=True)
        named = f"{entry.name} ({clean(entry.label, 128)})"
        shown = f"{entry.id} {named}"
        if listed is None:
            return f"added {shown}"
        if isinstance(listed, str):
            return f"updated {shown}; the entry it replaces was unreadable: {clean(listed, 200)}"
        if renamed:
            assert isinstance(listed, CatalogEntry)
            return f"renamed {entry.id} from {clean(listed.name, 64)} to {named}"
        return f"updated {shown}"

    click.echo(run_read(settings, body))


@catalog_group.command("set")
@click.argument("exchange_id", metavar="ID", type=click.IntRange(0, MAX_EXCHANGE_ID))
@click.option("--livermore-sub", metavar="SUB", help=_SUB_HELP)
@click.option("--no-livermore-sub", is_flag=True, help="Forget the owner identity.")
@click.option("--display-name", metavar="TEXT", help="Name to show.")
@redis_url_option
def catalog_set(
    exchange_id: int,
    livermore_sub: str | None,
    no_livermore_sub: bool,
    display_name: str | None,
    redis_url: str | None,
) -> None:
    """Change fields of an existing catalog entry."""
    if livermore_sub is not None and no_livermore_sub:
        raise click.UsageError("use either --livermore-sub or --no-livermore-sub")
    changes: dict[str, Any] = {}
    if livermore_sub is not None or no_livermore_sub:
        changes["livermore_sub"] = _check_sub(livermore_sub)
    if display_name is not None:
        changes["display_name"] = _check_display_name(display_name)
    if not changes:
        raise click.UsageError("nothing to change: pass --livermore-sub or --display-name")
    settings = load_settings(redis_url)

    async def body() -> CatalogEntry | None:
        async with open_redis(settings) as redis:
            reader = FleetReader(redis)
            current = {e.id: e for e in await reader.catalog()}.get(exchange_id)
            if current is None:
                return None
            entry = current.model_copy(update=changes)
            await reader.add_to_catalog(entry, overwrite=True)
            return entry

    entry = run_read(settings, body)
    if entry is None:
        fail(f"exchange {exchange_id} is not in the catalog: add it first", EXIT_ERROR)
    sub = f", Livermore owner {clean(entry.livermore_sub, 128)}" if entry.livermore_sub else ""
    click.echo(f"updated {entry.id} {entry.name} ({clean(entry.label, 128)}){sub}")


@catalog_group.command("remove")
@click.argument("exchange_id", metavar="ID", type=click.IntRange(0, MAX_EXCHANGE_ID))
@redis_url_option
def catalog_remove(exchange_id: int, redis_url: str | None) -> None:
    """Remove an exchange from the catalog (its status and log are kept)."""
    settings = load_settings(redis_url)

    async def body() -> bool:
        async with open_redis(settings) as redis:
            return await FleetReader(redis).remove_from_catalog(exchange_id)

    if not run_read(settings, body):
        fail(f"exchange {exchange_id} is not in the catalog", EXIT_ERROR)
    click.echo(f"removed {exchange_id} from the catalog")


@catalog_group.command("discover")
@redis_url_option
def catalog_discover(redis_url: str | None) -> None:
    """Add every exchange that is online now (has a status key) but not in the catalog."""
    settings = load_settings(redis_url)

    async def body() -> None:
        async with open_redis(settings) as redis:
            added = await FleetReader(redis).discover()
        if not added:
            click.echo("nothing to add: every online exchange is in the catalog")
            return
        for entry in added:
            click.echo(f"added {entry.id} {clean_or(entry.name, '?', 64)}")

    run_read(settings, body)
