"""The one parser of XREAD / XREADGROUP replies."""

from __future__ import annotations

from typing import Any

StreamRow = tuple[str, dict[str, str]]
"""One stream entry: its ID and its field/value pairs."""


def xread_rows(response: Any) -> list[tuple[str, list[StreamRow]]]:
    """XREAD's reply as (stream key, rows) pairs, whatever shape the client
    parsed it into: RESP2 (a list of pairs), RESP3 (a dict), with or without
    an extra list level per stream. Rows whose ID is missing are dropped;
    a missing field map reads as empty."""
    if not response:
        return []
    pairs = response.items() if isinstance(response, dict) else response
    out: list[tuple[str, list[StreamRow]]] = []
    for key, value in pairs:
        rows: list[Any] = list(value or [])
        if rows and all(isinstance(part, list) for part in rows):
            rows = [row for part in rows for row in part]
        out.append(
            (str(key), [(str(r[0]), dict(r[1] or {})) for r in rows if r and r[0] is not None])
        )
    return out
