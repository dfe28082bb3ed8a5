"""The read-side verbs: `status`, `log` and `catalog`.

These are what operators type over SSH and what scripts and monitoring call,
so every command has a `--json` form with a stable shape, and the plain form
never lets a value read from Redis reach the terminal unfiltered: every
string goes through `perseus_core.wire.text.clean` (no escape sequences, no control
characters) and is printed with `click.echo`, which interprets no markup.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import UTC, datetime
from typing import Any, TypeVar

import click
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from perseus_cli.common import EXIT_ERROR, EXIT_OK, fail, load_settings, redis_url_option, run
from perseus_core.plumbing.connection import connect, ping_or_raise
from perseus_core.store.activity import (
    ActivityLog,
    ActivityPage,
    ActivityTail,
    parse_cursor,
    stream_name,
)
from perseus_core.store.network import ExchangeView, NetworkReader
from perseus_core.wire import keys
from perseus_core.wire.errors import PerseusError
from perseus_core.wire.models import (
    ActivityEntry,
    CatalogEntry,
    CommandEntry,
    ErrorEntry,
    OtherEntry,
    StateTransitionEntry,
    validate_exchange_name,
)
from perseus_core.wire.settings import Settings
from perseus_core.wire.text import clean, clean_or
from perseus_core.wire.timeutil import format_duration, system_clock

T = TypeVar("T")

MAX_EXCHANGE_ID = 10**18 - 1
"""Largest id a status key can carry (`keys.parse_status_key` reads up to 18 digits)."""

_NAME_WIDTH = 12
"""Minimum width of the exchange column in `log`, so followed lines stay aligned."""


def register(cli: click.Group) -> None:
    """Add `status`, `log` and `catalog` to the `perseus` group."""
    cli.add_command(status_cmd)
    cli.add_command(log_cmd)
    cli.add_command(catalog_group)


# --- plumbing ---------------------------------------------------------------


@asynccontextmanager
async def _redis(settings: Settings) -> AsyncIterator[Redis]:
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
        except Exception:  # a bad log call must not break the command
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


class _OutputClosed(Exception):
    """Whoever reads our stdout stopped (`perseus log -f | head`)."""


def _run(settings: Settings, body: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """`common.run`, plus one line (exit 1) for errors Redis or Perseus reports
    on purpose, such as a key of the wrong type or an ACL refusal, and a quiet
    exit when stdout is a pipe that was closed.

    A broken pipe is an OSError, which `common.run` would report as Redis
    being unreachable, so it is turned into `_OutputClosed` inside the body.
    """

    async def guarded() -> T:
        try:
            return await body()
        except BrokenPipeError:
            raise _OutputClosed from None

    try:
        with _library_warnings():
            return run(settings, guarded)
    except _OutputClosed:
        # Point stdout at /dev/null so the interpreter's final flush does not
        # fail on the closed pipe a second time.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        sys.exit(EXIT_OK)
    except PerseusError as exc:
        fail(clean(str(exc)), EXIT_ERROR)
    except ResponseError as exc:
        fail(f"Redis refused the request: {clean(str(exc))}", EXIT_ERROR)
    raise AssertionError("unreachable")  # fail() exits


def _echo_json(data: object) -> None:
    # ASCII-only: any non-ASCII or control character from Redis is a \u escape,
    # so even the JSON form cannot reorder or recolour a terminal.
    click.echo(json.dumps(data, indent=2))


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns, two spaces apart, no trailing blanks."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = []
    for row in (headers, *rows):
        line = "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))
        lines.append(line.rstrip())
    return lines


def _id_time(entry_id: str) -> datetime | None:
    """When Redis stored a stream entry (the milliseconds part of its auto ID):
    a fallback for entries whose own `timestamp` is missing or unparseable."""
    ms = entry_id.partition("-")[0]
    if not ms.isdigit():
        return None
    try:
        return datetime.fromtimestamp(int(ms) / 1000, tz=UTC)
    except (OverflowError, ValueError, OSError):  # beyond what datetime can hold
        return None


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "-"
    return f"{format_duration((now - moment).total_seconds())} ago"


# --- status -----------------------------------------------------------------


STATUS_HEADERS = ("ID", "NAME", "STATE", "HOST", "IP", "HEARTBEAT", "UPTIME", "INFO")


def _status_row(view: ExchangeView, now: datetime) -> list[str]:
    """One table row; every string that came from Redis is cleaned."""
    name = clean_or(view.exchange_name or view.display_name, "?", 32)
    info: list[str] = []
    status = view.status
    if status is not None:
        state = status.connection_state.value
        host = clean_or(status.hostname, "-", 40)
        ip = clean_or(status.ip_address, "-", 45)
        heartbeat = _ago(status.last_heartbeat, now)
        uptime = "-"
        if state == "active" and status.connected_at is not None:
            uptime = format_duration((now - status.connected_at).total_seconds())
        if status.last_error:
            when = _ago(status.last_error_at, now) if status.last_error_at else "earlier"
            info.append(f"last error {when}: {clean(status.last_error, 80)}")
    elif view.ready:
        # No instance, but an agent that would answer a start: say where.
        agent = view.agents[0]
        state = f"{clean_or(agent.state, '?', 16)} (agent)"
        host = clean_or(agent.hostname, "-", 40)
        ip = heartbeat = uptime = "-"
        pid = f" pid {agent.pid}" if agent.pid is not None else ""
        since = agent.since
        waiting = f" for {format_duration((now - since).total_seconds())}" if since else ""
        info.append(f"agent{pid} {clean_or(agent.state, '?', 16)}{waiting}")
        if len(view.agents) > 1:
            others = ", ".join(clean_or(a.hostname, "?", 40) for a in view.agents[1:])
            info.append(f"{len(view.agents)} agents ready (also {others})")
        known = view.last_known
        if known is not None:
            seen = _ago(known.time or _id_time(known.id), now)
            info.append(f"last {clean_or(known.state, 'unknown state', 20)} {seen}")
    else:
        state = "unreadable" if view.online else "offline"
        last = view.last_known
        host = clean_or(last.hostname if last else None, "-", 40)
        ip = clean_or(last.ip if last else None, "-", 45)
        heartbeat = uptime = "-"
        if not view.online:
            if last is not None:
                seen = _ago(last.time or _id_time(last.id), now)
                last_state = clean_or(last.state, "unknown state", 20)
                info.append(f"last seen {seen} ({last_state})")
            else:
                info.append("never seen")
    if not view.in_catalog:
        info.append("not in catalog")
    elif not view.is_active:
        info.append("inactive in catalog")
    if view.error:
        info.append(f"error: {clean(view.error, 120)}")
    return [str(view.exchange_id), name, state, host, ip, heartbeat, uptime, "; ".join(info)]


@click.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@click.option(
    "--exchange-id",
    type=click.IntRange(0, MAX_EXCHANGE_ID),
    default=None,
    metavar="ID",
    help="Only this exchange.",
)
@redis_url_option
def status_cmd(as_json: bool, exchange_id: int | None, redis_url: str | None) -> None:
    """Show every known exchange: state, host, IP, heartbeat age and uptime.

    Exchanges whose status key is missing are offline; for those the host
    and IP come from their activity stream. One whose agent is running (idle,
    ready to start it) shows the agent's state and host instead, e.g.
    `idle (agent)`.
    """
    settings = load_settings(redis_url)

    async def body() -> None:
        async with _redis(settings) as redis:
            reader = NetworkReader(redis, settings)
            if exchange_id is not None:
                views = [await reader.exchange(exchange_id)]
                now = system_clock()
            else:
                snapshot = await reader.snapshot()
                views = list(snapshot.exchanges)
                now = snapshot.taken_at
        if as_json:
            _echo_json({"instances": [v.to_dict() for v in views]})
            return
        if not views:
            click.echo("no exchanges known: add one with `perseus catalog add ID NAME`")
            return
        for line in _table(STATUS_HEADERS, [_status_row(v, now) for v in views]):
            click.echo(line)

    _run(settings, body)


# --- log --------------------------------------------------------------------


def _entry_json(entry: ActivityEntry) -> dict[str, str]:
    """`{"id", "stream", <wire fields>}`: raw data, for scripts."""
    data = {"id": entry.id, "stream": entry.stream}
    for key, value in entry.to_fields().items():
        data.setdefault(key, value)
    return data


def _entry_time(entry: ActivityEntry) -> datetime | None:
    """The entry's timestamp, else the time encoded in its stream ID."""
    return entry.time or _id_time(entry.id)


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
        if entry.state:
            text += f" (while {clean(entry.state, 20)})"
        return text + _where(entry)
    if isinstance(entry, CommandEntry):
        text = f"command {clean_or(entry.command, '?', 20)}: {clean_or(entry.status, '?', 20)}"
        if entry.operator:
            text += f" by {clean(entry.operator, 60)}"
        if entry.message:
            text += f" - {clean(entry.message, 120)}"
        return text
    assert isinstance(entry, OtherEntry)
    text = clean_or(entry.event, "(no event)", 40)
    extra = " ".join(f"{clean(k, 30)}={clean(v, 60)}" for k, v in entry.extra_fields.items())
    if extra:
        text += f" {clean(extra, 160)}"
    return text + _where(entry)


def _entry_line(entry: ActivityEntry) -> str:
    """`2026-02-10 19:22:04  coinbase      warming -> active on DESKTOP-ABC 203.0.113.7`."""
    moment = _entry_time(entry)
    when = moment.astimezone().strftime("%Y-%m-%d %H:%M:%S") if moment else "????-??-?? ??:??:??"
    name = clean_or(entry.exchange_name or entry.stream, "?", 32).ljust(_NAME_WIDTH)
    return f"{when}  {name}  {_summary(entry)}"


async def _activity_names(redis: Redis, reader: NetworkReader) -> list[str]:
    """Every exchange with an activity stream, a catalog entry or a status key.

    Streams are found with SCAN (restricted to stream-typed keys, so a stray
    key of another type is not even tried), which also covers exchanges that
    are neither in the catalog nor online any more but left history behind.
    """
    names = {name.lower() for name in await reader.exchange_names()}
    async for key in redis.scan_iter(match=f"{keys.ACTIVITY_KEY_PREFIX}*", _type="STREAM"):
        names.add(stream_name(str(key)))
    return sorted(names)


def _resume_points(page: ActivityPage, names: Sequence[str]) -> dict[str, str]:
    """Where a live tail must start so that nothing is missed or repeated.

    A stream with entries in the page resumes after its newest one. A stream
    without any had nothing newer than the page's oldest entry (or the page
    would hold it), so it resumes there; with an empty page, from the start.
    """
    floor = page.entries[-1].id if page.entries else "0-0"
    points = {name.lower(): floor for name in names}
    for entry in reversed(page.entries):  # oldest first: the newest per stream wins
        points[entry.stream.lower()] = entry.id
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
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
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
        async with _redis(settings) as redis:
            activity = ActivityLog(redis, settings)
            if exchange is not None:
                names = [exchange.strip().lower()]
                page = await activity.page(names[0], count=count, before=cursor)
            else:
                names = await _activity_names(redis, NetworkReader(redis, settings))
                page = await activity.merged_page(names, count=count, before=cursor)
        if follow:
            await _follow(settings, page, names, single=exchange is not None, as_json=as_json)
        elif as_json:
            entries = [_entry_json(e) for e in page.entries]
            _echo_json({"entries": entries, "nextCursor": page.next_cursor})
        else:
            for entry in page.entries:
                click.echo(_entry_line(entry))

    try:
        _run(settings, body)
    except KeyboardInterrupt:
        # Ctrl-C is how --follow ends: a normal exit, not an error. (Once the
        # tail runs, `_stop_on_ctrl_c` ends it without an exception at all.)
        if not follow:
            raise


async def _watch_connection(tail: ActivityTail) -> None:
    """Say on stderr when the tail loses Redis and when it is back: while it
    retries, no entries arrive, and silence would look like a quiet fleet.

    A failed call leaves `connected` false with `last_error` set; that also
    covers Redis going away between the page read and the tail's first call.
    """
    lost = False
    while True:
        await asyncio.sleep(0.2)
        if tail.connected:
            if lost:
                click.echo("perseus: reconnected", err=True)
                lost = False
        elif tail.last_error is not None and not lost:
            click.echo(f"perseus: {clean(tail.last_error, 300)}; retrying", err=True)
            lost = True


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

    # Without --exchange, the tail's own provider (catalog + online exchanges,
    # re-read every few seconds) picks up exchanges that appear later; the
    # streams found now are followed from the start mapping either way.
    tail = ActivityTail(
        settings, names=only_these if single else None, start=_resume_points(page, names)
    )
    watcher = asyncio.create_task(_watch_connection(tail))
    async with _stop_on_ctrl_c(tail):
        try:
            async for entry in tail:
                show(entry)
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)
            await tail.aclose()


@asynccontextmanager
async def _stop_on_ctrl_c(tail: ActivityTail) -> AsyncIterator[None]:
    """Ctrl-C closes the tail, so the loop over it simply ends (exit 0).

    Cancelling the task that iterates, which is what `asyncio.run` does on
    Ctrl-C, is not reliable here: on Python 3.11 redis-py sends commands under
    `asyncio.wait_for`, which loses a cancellation that lands just as the send
    completes, and the follow loop would then run on. `aclose()` stops the
    tail whatever the in-flight read does. A second Ctrl-C cancels the task
    outright. Where the loop cannot take over SIGINT (not the main thread, or
    no signal support), `asyncio.run`'s own handling stays in place.
    """
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    closers: set[asyncio.Task[None]] = set()

    def on_sigint() -> None:
        if not closers:
            closers.add(loop.create_task(tail.aclose()))
        elif main is not None:
            main.cancel()

    try:
        loop.add_signal_handler(signal.SIGINT, on_sigint)
    except (NotImplementedError, RuntimeError, ValueError):
        yield
        return
    try:
        yield
    finally:
        loop.remove_signal_handler(signal.SIGINT)
        # Let the close finish: asyncio.run would cancel it half-way and
        # leave a connection open.
        await asyncio.gather(*closers, return_exceptions=True)


# --- catalog ----------------------------------------------------------------


@click.group("catalog")
def catalog_group() -> None:
    """List and edit the known exchanges (the `perseus:exchanges` hash)."""


def _catalog_json(entry: CatalogEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "name": entry.name,
        "displayName": entry.display_name,
        "isActive": entry.is_active,
    }


@catalog_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@redis_url_option
def catalog_list(as_json: bool, redis_url: str | None) -> None:
    """Show every catalog entry: id, name, display name, active."""
    settings = load_settings(redis_url)

    async def body() -> None:
        async with _redis(settings) as redis:
            reader = NetworkReader(redis, settings)
            entries = await reader.catalog()
        if as_json:
            # Corrupt fields are named with what is wrong (they are also
            # warned about on stderr) so a script can tell them from absence.
            exchanges = [_catalog_json(e) for e in entries]
            _echo_json({"exchanges": exchanges, "errors": reader.catalog_errors})
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
        for line in _table(("ID", "NAME", "DISPLAY", "ACTIVE"), rows):
            click.echo(line)

    _run(settings, body)


def _check_display_name(value: str | None) -> str:
    if value is None:
        return ""
    if clean(value, 10_000) != value or len(value) > 128:
        raise click.BadParameter(
            "use at most 128 printable characters, no control characters",
            param_hint="--display-name",
        )
    return value


@catalog_group.command("add")
@click.argument("exchange_id", metavar="ID", type=click.IntRange(0, MAX_EXCHANGE_ID))
@click.argument("name", metavar="NAME")
@click.option("--display-name", metavar="TEXT", help="Name to show (default: NAME).")
@redis_url_option
def catalog_add(
    exchange_id: int, name: str, display_name: str | None, redis_url: str | None
) -> None:
    """Add an exchange to the catalog, or replace the entry with this ID."""
    try:
        validate_exchange_name(name)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="NAME") from None
    entry = CatalogEntry(id=exchange_id, name=name, display_name=_check_display_name(display_name))
    settings = load_settings(redis_url)

    async def body() -> None:
        async with _redis(settings) as redis:
            existed = bool(await redis.hexists(keys.CATALOG_KEY, str(entry.id)))
            await NetworkReader(redis, settings).add_to_catalog(entry, overwrite=True)
        verb = "updated" if existed else "added"
        click.echo(f"{verb} {entry.id} {entry.name} ({clean(entry.label, 128)})")

    _run(settings, body)


@catalog_group.command("remove")
@click.argument("exchange_id", metavar="ID", type=click.IntRange(0, MAX_EXCHANGE_ID))
@redis_url_option
def catalog_remove(exchange_id: int, redis_url: str | None) -> None:
    """Remove an exchange from the catalog (its status and log are kept)."""
    settings = load_settings(redis_url)

    async def body() -> bool:
        async with _redis(settings) as redis:
            return await NetworkReader(redis, settings).remove_from_catalog(exchange_id)

    if not _run(settings, body):
        fail(f"exchange {exchange_id} is not in the catalog", EXIT_ERROR)
    click.echo(f"removed {exchange_id} from the catalog")


@catalog_group.command("discover")
@redis_url_option
def catalog_discover(redis_url: str | None) -> None:
    """Add every exchange that is online now (has a status key) but not in the catalog."""
    settings = load_settings(redis_url)

    async def body() -> None:
        async with _redis(settings) as redis:
            added = await NetworkReader(redis, settings).discover()
        if not added:
            click.echo("nothing to add: every online exchange is in the catalog")
            return
        for entry in added:
            click.echo(f"added {entry.id} {clean_or(entry.name, '?', 64)}")

    _run(settings, body)
