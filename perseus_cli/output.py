"""How the read-side verbs print: tables, JSON and times.

Tables are drawn by rich, which measures every cell in terminal columns, so a
wide character (`東京-feed`) keeps the columns aligned where `len()` would
not. Every value read from Redis reaches rich as a `Text` (never markup: a
hostname `[bold]x[/]` prints literally) after `perseus_core.wire.text.clean`
has removed escape sequences and control characters. Colour is used only when
stdout is a terminal, so what scripts and pipes read stays plain.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence

import click
from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

from perseus_core.present import Tone

TONE_STYLES: Mapping[Tone, str] = {
    Tone.SUCCESS: "green",
    Tone.WARNING: "yellow",
    Tone.ERROR: "red",
    Tone.PRIMARY: "blue",
    Tone.ACCENT: "magenta",
    Tone.SECONDARY: "cyan",
    Tone.MUTED: "dim",
}
"""The terminal style of each presenter tone (applied only when colour is on)."""

_UNBOUNDED_WIDTH = 10_000
"""Tables are drawn at their natural width, never wrapped to the terminal:
one line per row, as scripts and `grep` expect."""

Cell = str | Text
"""A table cell: a plain (already cleaned) string, or a `Text` carrying a style."""


def echo_json(data: object) -> None:
    """Indented JSON on stdout.

    ASCII-only: any non-ASCII or control character from Redis is a \\u escape,
    so even the JSON form cannot reorder or recolour a terminal.
    """
    click.echo(json.dumps(data, indent=2))


def styled(text: str, tone: Tone | None) -> Text:
    """`text` as literal text in the style of `tone` (no style for None)."""
    return Text(text, style=TONE_STYLES[tone] if tone is not None else "")


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> None:
    """Left-aligned columns two cells apart, one line per row, no trailing blanks."""
    console = Console(
        file=sys.stdout, width=_UNBOUNDED_WIDTH, markup=False, emoji=False, highlight=False
    )
    table = Table(
        *headers, box=None, pad_edge=False, padding=(0, 1), header_style="bold", show_edge=False
    )
    for row in rows:
        table.add_row(*(Text(cell) if isinstance(cell, str) else cell for cell in row))
    with console.capture() as capture:
        console.print(table)
    for line in capture.get().splitlines():
        click.echo(line.rstrip())


def pad(text: str, width: int) -> str:
    """`text` padded with spaces to `width` terminal cells (wide characters count two)."""
    return text + " " * max(0, width - cell_len(text))
