"""Discord-compatible webhook messages, and keeping the webhook's secret out of logs.

A webhook URL's path (and, for some receivers, its query) is its secret
token: it is validated without being echoed, shown only redacted, and
scrubbed from log records and error text.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import urlsplit

from perseus_core.notify.events import COLOURS, TITLES, EventKind, FleetEvent
from perseus_core.wire.text import clean, clean_or
from perseus_core.wire.timeutil import format_ts

# Markdown Discord renders inside content, descriptions and field values. `<`
# also starts user/role/channel mentions (`<@123>`), so escaping it disarms them.
_MARKDOWN = re.compile(r"([\\*_~`|>\[\]<#])")
_MASS_MENTION = re.compile(r"@(?=everyone|here)", re.IGNORECASE)


def discord_text(value: object, max_chars: int, default: str = "-") -> str:
    """An untrusted string made safe for a Discord message.

    Control characters and escape sequences are stripped (`clean`), Markdown is
    escaped so a hostname cannot become a masked link or a header, and mass
    mentions get a zero-width space: `allowed_mentions` already stops pings on
    Discord, this also covers receivers that only mimic its API.
    """
    text = clean_or(value, default, max_chars)
    text = _MARKDOWN.sub(r"\\\1", text)
    return _MASS_MENTION.sub("@\u200b", text)


def redact_webhook_url(url: str) -> str:
    """`scheme://host[:port]/...`: a webhook URL's path is its secret token."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparseable webhook url>"
    if not parts.scheme or not host:
        return "<unparseable webhook url>"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    return f"{parts.scheme}://{netloc}/..."


def validate_webhook_url(url: str) -> str:
    """Check that `url` is an absolute http(s) URL; the error never echoes it."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
        _ = parts.port
    except ValueError:
        raise ValueError("the webhook URL cannot be parsed") from None
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError("the webhook URL must be an absolute http:// or https:// URL")
    return url


def build_payload(event: FleetEvent) -> dict[str, Any]:
    """The Discord webhook body for one event: `content` plus one embed.

    Every string that came from Redis goes through `discord_text`, lengths stay
    well inside Discord's limits (content 2000, title 256, field value 1024,
    description 4096), and `allowed_mentions` forbids any ping.
    """
    name = discord_text(event.exchange_name, 100, default="unknown exchange")
    exchange = f"{name} (#{event.exchange_id})" if event.exchange_id is not None else name
    transition = discord_text(event.transition, 300)
    host = discord_text(event.host, 150)
    detail = discord_text(event.detail, 1000, default="")
    when = format_ts(event.time)
    fields = [
        {"name": "exchange", "value": exchange, "inline": True},
        {"name": "transition", "value": transition, "inline": True},
        {"name": "host", "value": host, "inline": True},
        {"name": "time", "value": when, "inline": False},
    ]

    if event.kind is EventKind.TRANSITION:
        content = f"{name}: {transition} on {host}"
        description = f"{name} moved {transition}."
    elif event.kind is EventKind.ERROR:
        content = f"{name}: {transition} on {host}: {discord_text(event.detail, 200)}"
        description = detail or "(no message)"
        if event.states:  # told with the transitions around it (`episodes`)
            walked = discord_text(" → ".join(event.states), 300)
            content += f"; {walked}"
            description += f"\n\n{name} went {walked}."
            fields.insert(2, {"name": "states", "value": walked, "inline": False})
    elif event.kind is EventKind.OTHER_WRITER:
        holder = discord_text(event.holder, 150)
        content = f"{name}: {transition}: {discord_text(event.detail, 200)} (held by {holder})"
        description = (
            f"{detail or '(no message)'}\n\nNot {name}'s error: it is held by {holder}, "
            f"which is healthy; {host} does not hold it."
        )
    elif event.kind in (EventKind.HOLDER, EventKind.RESTART):
        content = f"{name}: {discord_text(event.detail, 300)}"
        description = detail
    elif event.kind is EventKind.OFFLINE:
        content = f"{name} went offline ({host})"
        description = detail
    else:
        content = f"{name} is back online ({host})"
        description = detail

    return {
        "content": content,
        "embeds": [
            {
                "title": f"{TITLES[event.kind]}: {name}",
                "description": description,
                "color": COLOURS[event.kind],
                "timestamp": when,
                "fields": fields,
            }
        ],
        "allowed_mentions": {"parse": []},
    }


class WebhookSecrets(logging.Filter):
    """Keeps a webhook URL's secret parts out of log lines.

    The token is in the URL's path (Discord) or, for some receivers, its query.
    httpx logs every request URL at INFO level, so while a notifier runs this
    filter sits on the `httpx` logger and rewrites records naming it; `scrub`
    does the same for text the notifier logs itself (an error body may echo
    the request path).
    """

    def __init__(self, url: str) -> None:
        super().__init__()
        parts = urlsplit(url)
        self._secrets = [part for part in (parts.path, parts.query) if len(part) > 1]
        self.shown = redact_webhook_url(url)

    def scrub(self, text: str) -> str:
        """`text` with every secret part replaced by `...`."""
        for secret in self._secrets:
            text = text.replace(secret, "/...")
        return text

    def _leaks(self, value: object) -> bool:
        text = str(value)
        return any(secret in text for secret in self._secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        if self._leaks(record.msg):
            record.msg = f"(log line hidden: it named the webhook {self.shown})"
            record.args = None
        elif isinstance(record.args, tuple):
            record.args = tuple(self.shown if self._leaks(a) else a for a in record.args)
        return True


def describe_error(exc: BaseException) -> str:
    """An exception as one short line that cannot carry a URL (httpx puts the
    request URL, token included, into some messages)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    text = re.sub(r"\b[a-z][a-z0-9+.-]*://\S+", "<url>", text, flags=re.IGNORECASE)
    return f"{type(exc).__name__}: {clean(text, 200)}" if text else type(exc).__name__
