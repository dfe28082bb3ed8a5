"""Find the public IP address an instance reports in its status (`ipAddress`).

Detection asks a few plain-text "what is my IP" services in order and takes
the first answer that is a usable address. It is a nicety, not a dependency:
it never raises, it gives up after one hard overall deadline, and callers run
it as a background task (for example
`asyncio.create_task(detect_public_ip(settings))`, then `Instance.set_ip` when
it finishes) so a slow or absent network never delays startup. The status
simply says `ipAddress: null` until an answer arrives, as docs/wire-format.md allows.

`PERSEUS_PUBLIC_IP` chooses the mode: `auto` (detect), `off` (never make a
request, for air-gapped hosts and privacy) or a fixed address (for hosts
behind NAT rules the services cannot see, or where outbound HTTP is barred).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from perseus_core import __version__
from perseus_core.wire.settings import Settings

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)

DEFAULT_SOURCES: tuple[str, ...] = (
    "https://api.ipify.org",
    "https://icanhazip.com",
    "https://ifconfig.me/ip",
)
"""Services asked in order; each answers a GET with the caller's address as plain text."""

MAX_RESPONSE_BYTES = 256
"""An address is at most 45 characters; a longer body is an error page, not an answer."""

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Documentation ranges (RFC 5737, RFC 3849) are accepted although they are not
# globally routable: no real service answers with one by accident, and they are
# what examples, demos and tests use for "some public address".
_DOCUMENTATION_NETS = (
    ipaddress.ip_network("192.0.2.0/24"),
    ipaddress.ip_network("198.51.100.0/24"),
    ipaddress.ip_network("203.0.113.0/24"),
    ipaddress.ip_network("2001:db8::/32"),
)


def _normalize(addr: IPAddress) -> IPAddress:
    """IPv4-mapped IPv6 (`::ffff:a.b.c.d`) as the IPv4 address it carries."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def parse_ip(text: str) -> IPAddress | None:
    """The address in `text` (surrounding whitespace ignored), or None.

    IPv6 zone ids (`fe80::1%eth0`) are refused: they only mean something on
    the host that wrote them.
    """
    try:
        addr = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.scope_id:
        return None
    return _normalize(addr)


def is_plausible_public(addr: IPAddress) -> bool:
    """Whether a detector's answer can be this host's public address.

    Loopback, private (RFC 1918, unique-local), shared/CGNAT (RFC 6598),
    link-local, multicast, unspecified and reserved addresses are refused: a
    service answering with one of those is a misconfigured proxy or captive
    portal, and reporting it would mislead operators. Documentation ranges are
    accepted (see `_DOCUMENTATION_NETS`).
    """
    if any(addr.version == net.version and addr in net for net in _DOCUMENTATION_NETS):
        return True
    return addr.is_global and not addr.is_multicast


def _mode(settings: Settings) -> str | IPAddress:
    """`"auto"`, `"off"`, or the fixed address; an invalid value warns and means off."""
    value = settings.public_ip.strip()
    lowered = value.lower()
    if lowered in ("auto", "off"):
        return lowered
    addr = parse_ip(value)
    if addr is None:
        logger.warning(
            "PERSEUS_PUBLIC_IP=%r is not 'auto', 'off' or an IP address; "
            "public IP detection is off",
            value[:80],
        )
        return "off"
    return addr


async def _ask(client: httpx.AsyncClient, url: str, timeout_s: float) -> str | None:
    """One source's answer, validated, or None (the reason is logged at debug)."""
    async with client.stream("GET", url, timeout=timeout_s) as response:
        if response.status_code != 200:
            logger.debug("public IP source %s answered HTTP %d", url, response.status_code)
            return None
        body = b""
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > MAX_RESPONSE_BYTES:
                logger.debug("public IP source %s sent more than %d bytes", url, len(body))
                return None
    text = body.decode("ascii", errors="replace")
    addr = parse_ip(text)
    if addr is None:
        logger.debug("public IP source %s answered something else: %r", url, text[:60])
        return None
    if not is_plausible_public(addr):
        logger.debug("public IP source %s answered a non-public address %s", url, addr)
        return None
    return str(addr)


async def _detect(urls: Sequence[str], deadline: float) -> str | None:
    # httpx (and the rich it loads) is imported only for a lookup: every agent
    # imports this module, and most run with detection off or a fixed address.
    import httpx

    loop = asyncio.get_running_loop()
    headers = {"User-Agent": f"perseus/{__version__}", "Accept": "text/plain"}
    async with httpx.AsyncClient(headers=headers, follow_redirects=True) as client:
        for index, url in enumerate(urls):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            # Share what is left among the sources still to try, so that one
            # source that accepts the connection and then hangs cannot use up
            # the whole budget before the fallbacks are asked.
            budget = remaining / (len(urls) - index)
            try:
                async with asyncio.timeout(budget):
                    answer = await _ask(client, url, budget)
            except (TimeoutError, httpx.HTTPError) as exc:
                logger.debug("public IP source %s failed: %s", url, type(exc).__name__)
                continue
            if answer is not None:
                return answer
    return None


async def detect_public_ip(
    settings: Settings,
    *,
    sources: Sequence[str] | None = None,
    timeout_s: float | None = None,
) -> str | None:
    """This host's public IP address, or None when it cannot be found in time.

    Never raises (any failure is logged at debug level and gives None), and
    returns within the deadline (`timeout_s`, else
    `settings.public_ip_timeout_ms`) for the whole chain, plus the time to
    close sockets. Cancellation is not swallowed, so a caller may cancel the
    task at shutdown.

    Args:
        settings: `public_ip` selects the mode: `off` returns None without any
            request, an IP address returns that address (any valid address:
            the operator knows the network) and `auto` asks `sources`.
        sources: URLs tried in order instead of `DEFAULT_SOURCES`; each must
            answer a GET with the address as plain text.
        timeout_s: overall deadline in seconds instead of the settings' one.
    """
    try:
        mode = _mode(settings)
        if mode == "off":
            return None
        if not isinstance(mode, str):
            return str(mode)
        urls = list(DEFAULT_SOURCES if sources is None else sources)
        total = timeout_s if timeout_s is not None else settings.public_ip_timeout_ms / 1000
        if not urls or total <= 0:
            return None
        deadline = asyncio.get_running_loop().time() + total
        async with asyncio.timeout(total):
            return await _detect(urls, deadline)
    except Exception as exc:  # a best-effort lookup must never take its caller down
        logger.debug("public IP detection failed: %r", exc)
        return None
