"""The presenter's tones as Textual styles, and the activity feed's lines as `Content`.

What an exchange shows is decided by `perseus_core.present.exchange` as
typed lines; `line_content` is the one place their tones become styles.
Every string that came from Redis goes through `perseus_core.wire.text.clean`
and is placed in `Content` as plain text: markup in a hostname stays
literal, and control characters or escape sequences never reach the terminal.

Styles are theme variables (`$success`, `$text-error`, ...) resolved when Textual
renders the content, so every built-in theme works and nothing here names a
colour.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, tzinfo
from functools import cache

from textual.content import Content

from perseus_core.present import (
    Badge,
    Tone,
    error_state,
    holder_text,
    restart_text,
    state_tone,
)
from perseus_core.present.edges import EdgeKind
from perseus_core.present.exchange import Line, Part, clock_time
from perseus_core.wire.models import (
    ActivityEntry,
    CommandEntry,
    ErrorEntry,
    HolderEntry,
    OtherEntry,
    RestartEntry,
    StateTransitionEntry,
)
from perseus_core.wire.text import clean, clean_or
from perseus_tui.observed import OBSERVED_EVENTS, OBSERVED_OFFLINE

TONE_TEXT: Mapping[Tone, str] = {
    Tone.SUCCESS: "$text-success",
    Tone.WARNING: "$text-warning",
    Tone.ERROR: "$text-error",
    Tone.PRIMARY: "$text-primary",
    Tone.ACCENT: "$text-accent",
    Tone.SECONDARY: "$text-secondary",
    Tone.MUTED: "$text-muted",
}
"""The theme variable of each tone as a text colour (feed, table, header, hollow badges)."""

TONE_FILL: Mapping[Tone, str] = {
    Tone.SUCCESS: "$success",
    Tone.WARNING: "$warning",
    Tone.ERROR: "$error",
    Tone.PRIMARY: "$primary",
    Tone.ACCENT: "$accent",
    Tone.SECONDARY: "$secondary",
    Tone.MUTED: "$foreground-muted",
}
"""The theme variable of each tone as a background (filled badges)."""

MUTED = TONE_TEXT[Tone.MUTED]
ERROR = TONE_TEXT[Tone.ERROR]
SUCCESS = TONE_TEXT[Tone.SUCCESS]
PRIMARY = TONE_TEXT[Tone.PRIMARY]
OFFLINE_STYLE = f"bold {TONE_TEXT[Tone.ERROR]}"


def state_colour(state: str | None) -> str:
    """The text colour (theme variable) of a state name; muted for anything unknown."""
    return TONE_TEXT[state_tone(state)]


def badge_content(badge: Badge) -> Content:
    """A badge as styled text: filled (an instance is online) or hollow (none is)."""
    if badge.filled:
        return Content.styled(badge.text, f"bold auto 90% on {TONE_FILL[badge.tone]}")
    return Content.styled(badge.text, f"bold {TONE_TEXT[badge.tone]}")


@cache
def _style(tone: Tone | None, bold: bool, italic: bool) -> str:
    words = ["bold"] if bold else []
    if italic:
        words.append("italic")
    if tone is not None:
        words.append(TONE_TEXT[tone])
    return " ".join(words)


def part_style(part: Part) -> str:
    """The style of a part: its emphasis, then its tone's text colour."""
    return _style(part.tone, part.bold, part.italic)


def _piece(part: Part | Badge) -> str | tuple[str, str] | Content:
    if isinstance(part, Badge):
        return badge_content(part)
    style = _style(part.tone, part.bold, part.italic)
    return (part.text, style) if style else part.text


def part_content(part: Part | Badge) -> Content:
    """One part (or badge) of a presenter's line, styled."""
    return Content.assemble(_piece(part))


def runs(pieces: Iterable[tuple[str, str]]) -> Content:
    """Glyphs and their styles as one `Content`, neighbours of one style joined.

    A strip or sparkline is a character per slice, mostly in one style; as one
    span a run is styled, measured and drawn once instead of once a character,
    which the table does for every visible row on every poll and tick.
    """
    joined: list[tuple[str, str]] = []
    for text, style in pieces:
        if joined and joined[-1][1] == style:
            joined[-1] = (joined[-1][0] + text, style)
        else:
            joined.append((text, style))
    return Content.assemble(*joined)


def line_content(line: Line) -> Content:
    """A presenter's line (or table cell) as one `Content`."""
    return Content.assemble(*(_piece(part) for part in line))


def label(value: object | None, default: str = "-", max_chars: int = 60) -> str:
    """An untrusted value as one clean printable line (never markup)."""
    return clean_or(value, default, max_chars)


def entry_exchange(entry: ActivityEntry) -> str:
    """The exchange an entry belongs to: its own field, else the stream it was read from."""
    return clean(entry.exchange_name or entry.stream or "?", 40)


def entry_line(entry: ActivityEntry, tz: tzinfo | None, now: datetime) -> Content:
    """One feed line: time, exchange, then what happened, coloured by its meaning.

    Transitions take the colour of their target state, errors the error colour,
    commands show operator and outcome; unknown events and entries with missing
    fields are shown generically with whatever fields they have.
    """
    return entry_head(entry, tz, now) + _entry_body(entry)


def entry_head(entry: ActivityEntry, tz: tzinfo | None, now: datetime) -> Content:
    """The time and exchange columns of a feed line."""
    when = clock_time(entry.time, tz, now)
    return Content.assemble((when, MUTED), " ", (f"{entry_exchange(entry):<12}", "bold"), " ")


def entry_lines(
    entry: ActivityEntry, tz: tzinfo | None, now: datetime, width: int
) -> list[Content]:
    """One feed entry wrapped to `width`: what happened continues under itself,
    indented past the time and exchange columns, so a long reason is read whole."""
    head = entry_head(entry, tz, now)
    indent = head.cell_length
    room = max(10, width - indent)
    body = _entry_body(entry).wrap(room)
    if not body:
        return [head]
    pad = Content(" " * indent)
    return [head + body[0], *(pad + more for more in body[1:])]


def _entry_body(entry: ActivityEntry) -> Content:
    if isinstance(entry, StateTransitionEntry):
        target = entry.to_state
        parts: list[str | tuple[str, str] | Content] = [
            (label(entry.from_state, "?", 12), state_colour(entry.from_state)),
            (" → ", MUTED),
            (label(target, "?", 12), f"bold {state_colour(target)}"),
        ]
        who = " ".join(v for v in (label(entry.hostname, ""), label(entry.admin_email, "")) if v)
        if who:
            parts += ["  ", (who, MUTED)]
        return Content.assemble(*parts)
    if isinstance(entry, ErrorEntry):
        parts = [
            ("✖ ", OFFLINE_STYLE),
            (label(entry.error, "(no message)", ERROR_MAX_CHARS), ERROR),
        ]
        state = error_state(entry)
        if state is not None:
            parts += ["  ", (f"in {label(state, '?', 12)}", MUTED)]
        if entry.hostname:
            parts += ["  ", (label(entry.hostname), MUTED)]
        return Content.assemble(*parts)
    if isinstance(entry, CommandEntry):
        return Content.assemble(
            ("⚑ ", PRIMARY),
            (label(entry.command, "?", 20), "bold"),
            (" by ", MUTED),
            (label(entry.operator, "unknown", 40), PRIMARY),
            (": ", MUTED),
            command_outcome(entry.status, entry.message),
        )
    if isinstance(entry, HolderEntry):
        # A change of holder stands out; the first holder on record is only noted.
        style = f"bold {TONE_TEXT[Tone.WARNING]}" if entry.changed else MUTED
        return Content.assemble(("⇄ ", style), (holder_text(entry), style))
    if isinstance(entry, RestartEntry):
        # The crash's error entry is the alarm; the restart it led to is its follow-up.
        parts = [("↻ ", f"bold {TONE_TEXT[Tone.WARNING]}"), (restart_text(entry), MUTED)]
        if entry.hostname:
            parts += ["  ", (label(entry.hostname), MUTED)]
        return Content.assemble(*parts)
    if entry.event in OBSERVED_EVENTS:
        return _observed_body(entry)
    return _generic_body(entry)


def _observed_body(entry: OtherEntry) -> Content:
    """What the dashboard saw itself (`perseus_tui.observed`), marked as such."""
    state = label(entry.extra_fields.get("state"), "?", 16)
    if entry.event == OBSERVED_OFFLINE:
        parts: list[str | tuple[str, str] | Content] = [("○ offline", OFFLINE_STYLE)]
        crash = entry.extra_fields.get("crash")
        if crash:  # a crash is never an expected exit
            parts.append((f": its {label(crash, '?', 120)}", ERROR))
        elif entry.extra_fields.get("edge") == EdgeKind.RELEASED:
            parts.append((f" after {state}, as expected", MUTED))
        else:
            parts.append((f": its status key vanished while {state}, an unexpected loss", ERROR))
    else:
        parts = [("● back online", f"bold {SUCCESS}"), (f": {state}", state_colour(state))]
    if entry.hostname:
        parts += ["  ", (label(entry.hostname), MUTED)]
    parts.append(("  (observed by this dashboard)", f"italic {MUTED}"))
    return Content.assemble(*parts)


COMMAND_STATUS_WORDS: Mapping[str, str] = {"ack": "acknowledged"}
"""Audit statuses as they read in a sentence (`ack` is the wire's short form)."""


def command_outcome(status: str | None, message: str | None) -> Content:
    """`acknowledged by vm`, `success · kraken is active`: a command's status and message.

    An agent's message often restates the status (an ack says "acknowledged by
    vm"); then the message alone is shown, in the status's colour.
    """
    word = COMMAND_STATUS_WORDS.get(status or "", label(status, "?", 12))
    style = {"success": f"bold {SUCCESS}", "error": OFFLINE_STYLE}.get(status or "", MUTED)
    text = label(message, "", 120)
    if not text:
        return Content.styled(word, style)
    if text.lower().startswith(word.lower()):
        return Content.styled(text, style)
    return Content.assemble((word, style), (" · ", MUTED), (text, MUTED))


def _generic_body(entry: OtherEntry) -> Content:
    fields = {"hostname": entry.hostname, "ip": entry.ip, **entry.extra_fields}
    pairs = " ".join(f"{clean(k, 24)}={clean(v, 40)}" for k, v in fields.items() if v)
    return Content.assemble(
        (label(entry.event, "(no event)", 24), f"italic {MUTED}"),
        " ",
        (pairs, MUTED),
    )


def entry_matches(entry: ActivityEntry, query: str) -> bool:
    """Case-insensitive filter on exchange, host, operator and admin of an entry."""
    if not query:
        return True
    needle = query.lower()
    haystack: list[str] = [entry.exchange_name, entry.stream, entry.hostname]
    if isinstance(entry, CommandEntry):
        haystack.append(entry.operator)
    if isinstance(entry, HolderEntry):
        haystack.append(entry.previous_hostname)
    if isinstance(entry, StateTransitionEntry):
        haystack.append(entry.admin_email)
    return any(needle in value.lower() for value in haystack if value)


ERROR_MAX_CHARS = 1_000
"""An error's reason is kept whole up to this: the feed cuts it at its width, the
detail history wraps it."""
