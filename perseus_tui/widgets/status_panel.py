"""Every field of one exchange's status (Perseus extras included), for the detail screen."""

from __future__ import annotations

from datetime import datetime, tzinfo

from textual.content import Content
from textual.widget import Widget

from perseus_core.present import last_seen_text
from perseus_core.present.exchange import Timing
from perseus_core.store.network import ExchangeView, ViewKind
from perseus_tui import render


def _row(name: str, value: str | Content, note: str | Content = "") -> Content:
    value_content = value if isinstance(value, Content) else Content(value)
    note_content = note if isinstance(note, Content) else Content.styled(note, render.MUTED)
    line = Content.assemble((f"{name:<18}", render.MUTED), value_content)
    if note_content.plain:
        line += Content("  ") + note_content
    return line


def _time_row(name: str, moment: datetime | None, now: datetime, tz: tzinfo | None) -> Content:
    if moment is None:
        return _row(name, "-")
    return _row(name, render.format_full_time(moment, tz), render.age_text(moment, now))


def status_lines(
    view: ExchangeView, now: datetime, tz: tzinfo | None, timing: Timing
) -> list[Content]:
    """The detail screen's field list: identity, then every status field, then problems."""
    title = Content.styled(
        render.label(view.display_name or view.exchange_name, "?", 80), f"bold {render.PRIMARY}"
    )
    kind = view.kind
    status = view.status
    lines = [
        Content.assemble(title, f"  #{view.exchange_id}  ", render.view_badge(view)),
        Content(""),
        _row("exchangeName", render.label(view.exchange_name)),
        _row("in catalog", "yes" if view.in_catalog else "no (found online)"),
    ]
    if kind is ViewKind.LIVE and status is not None:
        lines += [
            _row("hostname", render.label(status.hostname, max_chars=120)),
            _row("ipAddress", render.label(status.ip_address)),
            _row("countryCode", render.label(status.country_code)),
            _row("adminDisplayName", render.label(status.admin_display_name)),
            _row("adminEmail", render.label(status.admin_email)),
            _row(
                "connectionState",
                render.view_word(view),
            ),
            _row("symbolCount", str(status.symbol_count)),
            _time_row("connectedAt", status.connected_at, now, tz),
            _row(
                "lastHeartbeat",
                render.format_full_time(status.last_heartbeat, tz),
                render.heartbeat(view, now, timing),
            ),
            _time_row("lastStateChange", status.last_state_change, now, tz),
            _time_row("registeredAt", status.registered_at, now, tz),
            _row(
                "lastError",
                Content.styled(render.label(status.last_error, "-", 200), render.ERROR)
                if status.last_error
                else Content("-"),
            ),
            _time_row("lastErrorAt", status.last_error_at, now, tz),
            _row("instanceId", render.label(status.instance_id, "-", 120)),
            _row("epoch", "-" if status.epoch is None else str(status.epoch)),
            _row("pid", "-" if status.pid is None else str(status.pid)),
            _row("version", render.label(status.version)),
        ]
        running = render.uptime(view, now, timing)
        if running:
            lines.append(_row("uptime", Content.styled(running, render.SUCCESS)))
    elif kind is ViewKind.UNREADABLE:
        lines.append(_row("status", render.view_word(view)))
    else:
        if kind is ViewKind.READY:
            status_text = Content.styled("no instance; an agent is ready", render.READY_STYLE)
        else:
            status_text = Content.styled("offline (no status key)", render.OFFLINE_STYLE)
        lines.append(_row("status", status_text))
        seen = view.last_seen
        if seen is not None:
            said = last_seen_text(view, now) or ""
            lines.append(_row("last seen", said, render.format_full_time(seen.at, tz)))
        lines += _agent_rows(view, now, tz)
        known = view.last_known
        if known is not None:
            lines += [
                Content(""),
                Content.styled("Last known, from the activity stream", "bold"),
                _row("hostname", render.label(known.hostname)),
                _row("ip", render.label(known.ip)),
                _row(
                    "state",
                    Content.styled(render.label(known.state), render.state_colour(known.state)),
                ),
                _row("event", render.label(known.event)),
                _time_row("at", render.parse_time(known.timestamp), now, tz),
            ]
    if view.error:
        lines += [
            Content(""),
            _row("problem", Content.styled(render.label(view.error, "", 300), render.ERROR)),
        ]
    return lines


def _agent_rows(view: ExchangeView, now: datetime, tz: tzinfo | None) -> list[Content]:
    """One block per running agent (docs/wire-format.md 2.4): where a start would run."""
    lines: list[Content] = []
    for number, agent in enumerate(view.agents, start=1):
        title = "Agent" if len(view.agents) == 1 else f"Agent {number} of {len(view.agents)}"
        lines += [
            Content(""),
            Content.styled(title, "bold"),
            _row("hostname", render.label(agent.hostname, max_chars=120)),
            _row("pid", "-" if agent.pid is None else str(agent.pid)),
            _row(
                "state",
                Content.styled(
                    render.label(agent.state, "?", 16), render.state_colour(agent.state)
                ),
            ),
            _time_row("since", agent.since, now, tz),
            _row("agentId", render.label(agent.agent_id, "-", 120)),
            _row("version", render.label(agent.version)),
        ]
    return lines


class StatusPanel(Widget):
    """The field list of one exchange; repaints when the view or the clock's second changes."""

    DEFAULT_CSS = """
    StatusPanel {
        height: auto;
        padding: 0 1;
        border: round $border-blurred;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def __init__(
        self,
        view: ExchangeView,
        now: datetime,
        tz: tzinfo | None,
        timing: Timing,
        *,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self._view = view
        self._now = now
        self._tz = tz
        self.timing = timing
        """Heartbeat thresholds and when the fleet was read (set by the screen)."""
        self._content = Content("\n").join(status_lines(view, now, tz, timing))

    @property
    def view(self) -> ExchangeView:
        """The exchange shown."""
        return self._view

    def show(self, view: ExchangeView, now: datetime, tz: tzinfo | None) -> None:
        """Show a newer view or time; repaint only if the text or styles changed."""
        self._view, self._now, self._tz = view, now, tz
        content = Content("\n").join(status_lines(view, now, tz, self.timing))
        if not content.is_same(self._content):
            self._content = content
            self.refresh(layout=True)

    def render(self) -> Content:
        return self._content
