"""Make untrusted strings from Redis safe to show in a terminal."""

from __future__ import annotations

import re

MAX_DISPLAY_CHARS = 200
"""Longest string shown for a single field; longer ones are cut with an ellipsis."""

# CSI / OSC / other ESC sequences first, then any remaining C0/C1 control or
# bidi-override character (a hostname must not reorder or hide the text around it).
_ESCAPE_SEQ = re.compile(
    r"\x1b\[[0-?]*[ -/]*[@-~]"  # CSI
    r"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?"  # OSC, BEL- or ST-terminated
    r"|\x1b[PX^_][^\x1b]*(?:\x1b\\)?"  # DCS/SOS/PM/APC
    r"|\x1b[@-Z\\-_]?"  # two-byte ESC sequences, or a lone ESC
    r"|\x9b[0-?]*[ -/]*[@-~]"  # 8-bit CSI
)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_WHITESPACE_CONTROL = re.compile(r"[\t\n\r]+")


def clean(value: object, max_chars: int = MAX_DISPLAY_CHARS) -> str:
    """The value as one printable line: escapes and control characters removed,
    tabs and newlines folded into spaces, cut to `max_chars` with an ellipsis.

    Markup is *not* escaped here: renderers must still treat the result as plain
    text (Rich `Text`, or markup disabled); this only guarantees that nothing
    reaching the terminal can move the cursor, change colours or hide text.
    """
    text = value if isinstance(value, str) else str(value)
    text = _ESCAPE_SEQ.sub("", text)
    text = _WHITESPACE_CONTROL.sub(" ", text)
    text = _CONTROL.sub("", text)
    if len(text) > max_chars:
        text = text[: max(0, max_chars - 1)] + "…"
    return text


def clean_or(value: object | None, default: str = "-", max_chars: int = MAX_DISPLAY_CHARS) -> str:
    """`clean`, but `default` for None or an empty result."""
    if value is None:
        return default
    cleaned = clean(value, max_chars)
    return cleaned if cleaned else default
