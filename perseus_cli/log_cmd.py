"""`perseus log`: the activity log, one page or followed live (`--follow`).

Every value read from Redis goes through `perseus_core.wire.text.clean` (no
escape sequences, no control characters) and is printed with `click.echo`,
which interprets no markup. Names are padded by terminal cells, so a wide
character keeps the columns of followed lines aligned.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import click
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from perseus_cli.common import load_settings, open_redis, run_read
from perseus_cli.follow import follow
from perseus_cli.options import json_option, redis_url_option
from perseus_cli.output import echo_json, pad
from perseus_core.plumbing.connection import connect
from perseus_core.plumbing.topology import RedisClient
from perseus_core.present import error_state, holder_text, restart_text
from perseus_core.store.activity import (
    ActivityLog,
    ActivityPage,
    ActivityTail,
    exchange_stream_keys,
    parse_cursor,
    stream_label,
)
from perseus_core.store.network import FleetReader
from perseus_core.wire import keys
from perseus_core.wire.errors import PerseusError
from perseus_core.wire.models import (
    ActivityEntry,
    CommandEntry,
    ErrorEntry,
    HolderEntry,
    OtherEntry,
    RestartEntry,
    StateTransitionEntry,
)
from perseus_core.wire.settings import Settings
from perseus_core.wire.text import clean, clean_or

_NAME_WIDTH = 12
"""Minimum width (in terminal cells) of the exchange column, so followed lines stay aligned."""


def _entry_json(entry: ActivityEntry) -> dict[str, str]:
    """`{"id", "stream", <wire fields>}`: raw data, for scripts."""
    data = {"id": entry.id, "stream": entry.stream}
    for key, value in entry.to_fields().items():
        data.setdefault(key, value)
    return data


def _where(entry: ActivityEntry) -> str:
    parts = [clean(p, 60) for p in (entry.hostname, entry.ip) if p]
    return f" on {' '.join(parts)}" if parts else ""


def _summary(entry: ActivityEntry) -> str:
    """What happened, in a few words; every part cleaned."""
    if isinstance(entry, StateTransitionEntry):
        text = f"{clean_or(entry.from_state, '?', 20)} -> {clean_or(entry.to_state, '?', 20)}"
        return text + _where(entry)
    if isinstance(entry, ErrorEntry):
        text = f"error: {clean_or(entry.error, '(no message)')}"
        state = error_state(entry)
        if state is not None:
            text += f" (while {clean(state, 20)})"
        return text + _where(entry)
    if isinstance(entry, CommandEntry):
        text = f"command {clean_or(entry.command, '?', 20)}: {clean_or(entry.status, '?', 20)}"
        if entry.operator:
            text += f" by {clean(entry.operator, 60)}"
        if entry.message:
            text += f" - {clean(entry.message, 120)}"
        return text
    if isinstance(entry, HolderEntry):
        return holder_text(entry)
    if isinstance(entry, RestartEntry):
        return restart_text(entry) + _where(entry)
    assert isinstance(entry, OtherEntry)
    text = clean_or(entry.event, "(no event)", 40)
    extra = " ".join(f"{clean(k, 30)}={clean(v, 60)}" for k, v in entry.extra_fields.items())
    if extra:
        text += f" {clean(extra, 160)}"
    return text + _where(entry)


def _entry_line(entry: ActivityEntry) -> str:
    """`2026-02-10 19:22:04  coinbase      warming -> active on DESKTOP-ABC 203.0.113.7`."""
    moment = entry.moment
    when = moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "????-??-?? ??:??:??"
    name = pad(clean_or(entry.exchange_name or entry.stream, "?", 32), _NAME_WIDTH)
    return f"{when}  {name}  {_summary(entry)}"


async def _activity_names(reader: FleetReader) -> list[str]:
    """Every exchange with an activity stream (either kind), a catalog entry or
    a status key: `exchange_names` scans the streams too (stream-typed keys
    only), so exchanges neither in the catalog nor online any more but with
    history left behind are read as well."""
    return sorted({name.lower() for name in await reader.exchange_names()})


async def _require_known(redis: RedisClient, reader: FleetReader, name: str) -> None:
    """Raise PerseusError (exit 1) for a name that is nowhere: a typo must not
    read as "no activity" and exit 0."""
    if await redis.exists(keys.activity_key(name)):
        return
    if name in {known.lower() for known in await reader.exchange_names()}:
        return
    raise PerseusError(
        f"no exchange named {clean(name, 64)!r}: not in the catalog, not online, no activity"
        " (see `perseus status`)"
    )


def _resume_points(page: ActivityPage, names: Sequence[str]) -> dict[str, str]:
    """Where a live tail must start so that nothing is missed or repeated.

    A stream with entries in the page resumes after its newest one. A stream
    without any had nothing newer than the page's oldest entry (or the page
    would hold it), so it resumes there; with an empty page, from the start.
    """
    floor = page.entries[-1].id if page.entries else "0-0"
    labels = [stream_label(key) for key in exchange_stream_keys(names)]
    points = dict.fromkeys(labels, floor)  # both streams of each exchange
    for entry in reversed(page.entries):  # oldest first: the newest per stream wins
        points[stream_label(entry.key)] = entry.id
    return points


def _check_cursor(before: str | None, single: bool) -> str | None:
    """The `--before` value as the reader wants it, or a usage error (exit 2).

    Merged pages hand out `{id}@{stream}` cursors; a single stream's page
    takes a plain ID, so a merged cursor passed with `--exchange` is reduced
    to its ID ("older than this").
    """
    if before is None:
        return None
    try:
        entry_id, _ = parse_cursor(before)
    except ValueError as exc:
        raise click.BadParameter(clean(str(exc)), param_hint="--before") from None
    return entry_id if single else before.strip()


@click.command("log")
@click.option("--exchange", "exchange", metavar="NAME", help="Only this exchange.")
@click.option(
    "--count",
    type=click.IntRange(1, 10_000),
    default=50,
    show_default=True,
    metavar="N",
    help="Entries per page.",
)
@click.option(
    "--before",
    metavar="CURSOR",
    help="Only entries older than this (a stream ID, or the nextCursor of a previous page).",
)
@click.option(
    "--follow",
    "-f",
    is_flag=True,
    help="Keep printing new entries as they arrive, until Ctrl-C.",
)
@json_option
@redis_url_option
def log_cmd(
    exchange: str | None,
    count: int,
    before: str | None,
    follow: bool,
    as_json: bool,
    redis_url: str | None,
) -> None:
    """Show the activity log, newest first, all exchanges merged by default.

    `--json` prints {"entries": [...], "nextCursor": CURSOR or null}; pass the
    cursor as `--before` for the next page. With `--follow` the page is
    printed oldest first and new entries follow below it, as with `tail -f`
    (with `--json`, one JSON object per line).
    """
    if exchange is not None and not exchange.strip():
        raise click.BadParameter("must not be empty", param_hint="--exchange")
    if follow and before is not None:
        raise click.UsageError("--follow shows the newest entries; it cannot be used with --before")
    cursor = _check_cursor(before, single=exchange is not None)
    settings = load_settings(redis_url)

    async def body() -> None:
        async with open_redis(settings) as redis:
            activity = ActivityLog(redis, settings)
            if exchange is not None:
                names = [exchange.strip().lower()]
                page = await activity.page(names[0], count=count, before=cursor)
                if not page.entries:
                    await _require_known(redis, FleetReader(redis), names[0])
            else:
                names = await _activity_names(FleetReader(redis))
                page = await activity.merged_page(names, count=count, before=cursor)
        if follow:
            await _follow(settings, page, names, single=exchange is not None, as_json=as_json)
        elif as_json:
            entries = [_entry_json(e) for e in page.entries]
            echo_json({"entries": entries, "nextCursor": page.next_cursor})
        else:
            for entry in page.entries:
                click.echo(_entry_line(entry))

    try:
        run_read(settings, body)
    except KeyboardInterrupt:
        # Ctrl-C is how --follow ends: a normal exit, not an error. (Once the
        # tail runs, `_stop_on_ctrl_c` ends it without an exception at all.)
        if not follow:
            raise


async def _follow(
    settings: Settings,
    page: ActivityPage,
    names: list[str],
    *,
    single: bool,
    as_json: bool,
) -> None:
    """Print the page oldest first, then every new entry until cancelled."""

    def show(entry: ActivityEntry) -> None:
        if as_json:
            click.echo(json.dumps(_entry_json(entry)))
        else:
            click.echo(_entry_line(entry))

    for entry in reversed(page.entries):
        show(entry)

    async def only_these() -> list[str]:
        return names

    # Without --exchange, the catalog + online exchanges (re-read every few
    # seconds) pick up exchanges that appear later; the streams found now are
    # followed from the start mapping either way. Their client fails fast: the
    # tail retries and reports an outage itself.
    names_client = connect(settings, retry=Retry(NoBackoff(), 0))
    everything = FleetReader(names_client).exchange_names
    tail = ActivityTail(
        settings, names=only_these if single else everything, start=_resume_points(page, names)
    )
    try:
        await follow(tail, show)
    finally:
        await names_client.aclose()
