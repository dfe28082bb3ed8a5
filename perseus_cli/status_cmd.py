"""`perseus status`: every known exchange in one table (or JSON for scripts).

What an exchange is called (an instance's state, `unreadable`, `ready`,
`offline`) and in which tone comes from the presenter
(`perseus_core.present`), the same one the dashboard uses, so the two never
disagree. Every string read from Redis is cleaned before it is printed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import click

from perseus_cli.common import load_settings, open_redis, run_read
from perseus_cli.options import MAX_EXCHANGE_ID, json_option, redis_url_option
from perseus_cli.output import Cell, ago, echo_json, print_table, styled
from perseus_core.present import (
    HeartbeatThresholds,
    badge,
    exchange_json,
    heartbeat,
    last_seen_text,
    status_word,
    uptime_s,
)
from perseus_core.store.network import ExchangeView, FleetReader, ViewKind
from perseus_core.wire.errors import PerseusError
from perseus_core.wire.models import ConnectionState, InstanceStatus
from perseus_core.wire.text import clean, clean_or
from perseus_core.wire.timeutil import format_duration, id_time, system_clock
from perseus_tui.heap import collector_paused

STATUS_HEADERS = ("ID", "NAME", "STATE", "HOST", "IP", "HEARTBEAT", "UPTIME", "INFO")


@dataclass
class _Where:
    """The host columns of a row and its notes, filled in by kind."""

    host: str = "-"
    ip: str = "-"
    heartbeat: Cell = "-"
    uptime: str = "-"
    info: list[str] = field(default_factory=list)


def _live(
    view: ExchangeView, status: InstanceStatus, now: datetime, thresholds: HeartbeatThresholds
) -> _Where:
    """An instance that reports: its own host, heartbeat, uptime and last error."""
    where = _Where(clean_or(status.hostname, "-", 40), clean_or(status.ip_address, "-", 45))
    beat = heartbeat(view, now, thresholds)
    if beat is not None:
        where.heartbeat = styled(beat.text, beat.tone)
        if beat.skew:
            where.info.append(beat.skew)
    running = uptime_s(view, now, beat)
    if running is not None:
        where.uptime = format_duration(running)
    if status.last_error:
        when = ago(status.last_error_at, now) if status.last_error_at else "earlier"
        where.info.append(f"last error {when}: {clean(status.last_error, 80)}")
    return where


def _ready(view: ExchangeView, now: datetime) -> _Where:
    """No instance, but an agent that would answer a start: say where it waits."""
    agent = view.agents[0]
    where = _Where(clean_or(agent.hostname, "-", 40))
    pid = f" pid {agent.pid}" if agent.pid is not None else ""
    since = agent.since
    waiting = f" for {format_duration((now - since).total_seconds())}" if since else ""
    # An idle agent is what READY means: one vocabulary with the dashboard.
    state = "ready" if agent.state == ConnectionState.IDLE else clean_or(agent.state, "?", 16)
    where.info.append(f"agent{pid} {state}{waiting}")
    if agent.note:
        where.info.append(clean(agent.note, 200))
    if len(view.agents) > 1:
        others = ", ".join(clean_or(a.hostname, "?", 40) for a in view.agents[1:])
        where.info.append(f"{len(view.agents)} agents ready (also {others})")
    known = view.last_known
    if known is not None:
        seen = ago(known.time or id_time(known.id), now)
        where.info.append(f"last {clean_or(known.state, 'unknown state', 20)} {seen}")
    return where


def _absent(view: ExchangeView, now: datetime) -> _Where:
    """Unreadable (alive, payload bad) or offline: the host the stream last named."""
    last = view.last_known
    where = _Where(
        clean_or(last.hostname if last else None, "-", 40),
        clean_or(last.ip if last else None, "-", 45),
    )
    if view.kind is ViewKind.OFFLINE:
        seen = last_seen_text(view, now)
        if seen is not None:
            state = f" ({clean_or(last.state, 'unknown state', 20)})" if last is not None else ""
            where.info.append(seen + state)
        else:
            where.info.append("never seen")
    return where


def status_row(view: ExchangeView, now: datetime, thresholds: HeartbeatThresholds) -> list[Cell]:
    """One table row; every string that came from Redis is cleaned.

    Args:
        view: the exchange.
        now: when it was read.
        thresholds: the heartbeat colours of the configured timing.
    """
    kind = view.kind
    if kind is ViewKind.LIVE and view.status is not None:
        where = _live(view, view.status, now, thresholds)
    elif kind is ViewKind.READY:
        where = _ready(view, now)
    else:
        where = _absent(view, now)
    if not view.in_catalog:
        where.info.append("not in catalog")
    elif not view.is_active:
        where.info.append("inactive in catalog")
    if view.error:
        where.info.append(f"error: {clean(view.error, 120)}")
    name = clean_or(view.exchange_name or view.display_name, "?", 32)
    state = styled(status_word(view), badge(view).tone)
    return [
        str(view.exchange_id),
        name,
        state,
        where.host,
        where.ip,
        where.heartbeat,
        where.uptime,
        "; ".join(where.info),
    ]


@click.command("status")
@json_option
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
    and IP come from their activity stream. One whose agent is running
    (ready to start it) shows as `ready`, with the agent's host.
    """
    settings = load_settings(redis_url)

    async def body() -> None:
        problems: tuple[str, ...] = ()
        async with open_redis(settings) as redis:
            reader = FleetReader(redis)
            if exchange_id is not None:
                view = await reader.exchange(exchange_id)
                known = view.in_catalog or view.online or view.agents or view.last_known
                if not (known or view.error):  # an unreadable key is shown, not "no exchange"
                    raise PerseusError(
                        f"no exchange {exchange_id}: not in the catalog, not online,"
                        " no agent, no activity"
                    )
                views = [view]
                now = system_clock()
            else:
                with collector_paused():  # 10,000 exchanges: a quarter of the read otherwise
                    snapshot = await reader.snapshot()
                views = list(snapshot.exchanges)
                now = snapshot.taken_at
                problems = snapshot.problems  # also warned about on stderr
        if as_json:
            data: dict[str, object] = {"instances": [exchange_json(v) for v in views]}
            if problems:
                data["problems"] = list(problems)
            echo_json(data)
        elif not views:
            click.echo("no exchanges known: add one with `perseus catalog add ID NAME`")
        else:
            thresholds = HeartbeatThresholds.from_settings(settings)
            print_table(STATUS_HEADERS, [status_row(v, now, thresholds) for v in views])

    run_read(settings, body)
