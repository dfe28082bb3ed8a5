"""Strings from Redis never put control characters on the terminal."""

from __future__ import annotations

import pytest

from perseus_core.wire.text import clean, clean_or


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[31mred\x1b[0m", "red"),
        ("a\x1b]8;;http://evil\x07link\x1b]8;;\x07b", "alinkb"),
        ("bell\x07 and nul\x00", "bell and nul"),
        ("line1\nline2\r\n\tend", "line1 line2 end"),
        ("8bit\x9b31mcsi", "8bitcsi"),
        ("rtl\u202eoverride", "rtloverride"),
        ("[bold red]markup[/]", "[bold red]markup[/]"),
    ],
)
def test_clean_strips_escapes_but_keeps_text(raw: str, shown: str) -> None:
    assert clean(raw) == shown


def test_clean_cuts_huge_strings() -> None:
    shown = clean("x" * 1_000_000, max_chars=50)
    assert len(shown) == 50 and shown.endswith("…")


def test_clean_or_default() -> None:
    assert clean_or(None) == "-"
    assert clean_or("\x1b[0m") == "-"
    assert clean_or(42) == "42"
