"""What the fleet area says when Redis answers but knows no exchange at all."""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from textual.content import Content
from textual.widget import Widget

from perseus_core.wire.settings import Settings
from perseus_tui import render


@dataclass(frozen=True, slots=True)
class RedisHint:
    """How the commands an empty fleet suggests reach the Redis shown here,
    copied as they are: an option to append, or a note to read first."""

    option: str = ""
    """Appended to each command (`--redis-url redis://host:6379/0`); empty: none needed."""
    note: str = ""
    """Said below the commands when no option can carry the URL without its secret."""


def redis_hint(
    settings: Settings,
    target: str,
    url_file: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> RedisHint:
    """How a person reaches this dashboard's Redis from a shell, without the
    dashboard ever printing a password.

    A redacted URL (`redis://***@host`) would fail when copied, so a URL
    holding a secret is never offered: the file it was read from is
    (`--redis-url-file`), or, when it came from `$PERSEUS_REDIS_URL`, nothing
    (the commands read it too, where it is set); otherwise a note says where
    to put it.

    Args:
        settings: the dashboard's settings (its Redis URL).
        target: how the dashboard names the Redis (the URL itself when it
            holds no secret; a fixed label in tests and screenshots).
        url_file: the `--redis-url-file` the URL was read from, if it was.
        environ: the environment the dashboard was started in.
    """
    url = settings.redis_url
    if url == Settings.model_fields["redis_url"].default:
        return RedisHint()
    if settings.redacted_redis_url == url:
        return RedisHint(f"--redis-url {target}")
    if url_file:
        return RedisHint(f"--redis-url-file {shlex.quote(url_file)}")
    if environ.get("PERSEUS_REDIS_URL", "").strip() == url:
        return RedisHint(note="These read $PERSEUS_REDIS_URL, as this dashboard does.")
    return RedisHint(
        note="This Redis's URL holds a password, not shown here: set PERSEUS_REDIS_URL"
        " to it, or add --redis-url-file FILE, before running these."
    )


def empty_fleet_text(hint: RedisHint = RedisHint()) -> Content:
    """How to get a first exchange on screen.

    Args:
        hint: how each command reaches the Redis shown here (`redis_hint`).
    """
    # On a line of its own (a shell continuation), so each command stays copyable
    # on an 80-column terminal.
    suffix = f" \\\n      {hint.option}" if hint.option else ""
    parts: list[str | tuple[str, str]] = [
        ("No exchanges yet.", "bold"),
        "\n\n",
        ("Run an agent for one (it lists the exchange; press s here to start it):", render.MUTED),
        "\n",
        (f"  perseus agent --exchange-id 1 --exchange-name coinbase{suffix}", "bold $text-accent"),
        "\n",
        ("or only add it to the catalog:", render.MUTED),
        "\n",
        (f"  perseus catalog add 1 coinbase{suffix}", "bold $text-accent"),
    ]
    if hint.note:
        parts += ["\n\n", (hint.note, f"italic {render.MUTED}")]
    return Content.assemble(*parts)


class EmptyFleet(Widget):
    """The fleet view of an empty fleet: what to run to add the first exchange."""

    DEFAULT_CSS = """
    EmptyFleet {
        height: 1fr;
        padding: 1 2;
        text-wrap: wrap;
    }
    """

    def __init__(
        self,
        hint: RedisHint = RedisHint(),
        *,
        expecting: str | None = None,
        id: str | None = None,
    ) -> None:
        """Say how to add an exchange, or, with `expecting`, that exchanges are on their way."""
        super().__init__(id=id)
        if expecting:
            self._text = Content.styled(expecting, f"italic {render.MUTED}")
        else:
            self._text = empty_fleet_text(hint)

    def render(self) -> Content:
        return self._text
