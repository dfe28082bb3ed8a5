"""One settings object for every Perseus process, read from `PERSEUS_*` env vars."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***`, safe to print or log.

    A username is kept (it helps to know *who* connects); the password never
    leaves the process. Unparseable input is redacted entirely rather than
    risk echoing a secret.
    """
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{user}:***@{host}" if user else f"***@{host}"
        if parts.port is not None:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    except ValueError:
        # `redis+sentinel://u:p@h1:26379,h2:26379/...` lists several hosts,
        # which urlsplit cannot parse: blank the password by pattern instead.
        redacted, found = _USERINFO.subn(_redact_userinfo, url, count=1)
        return redacted if found else "<unparseable redis url>"


_USERINFO = re.compile(r"^(?P<scheme>[a-z+]+://)(?P<user>[^:@/]*)(?P<password>:[^@/]*)?@")


def _redact_userinfo(match: re.Match[str]) -> str:
    if match.group("password") is None:
        return match.group(0)
    user = match.group("user")
    return f"{match.group('scheme')}{user}:***@" if user else f"{match.group('scheme')}***@"


class Settings(BaseSettings):
    """Configuration shared by the library, the agent, the CLI and the dashboard.

    Durations are in milliseconds so that tests can run the heartbeat at
    100-500 ms while production keeps the 15 s / 45 s defaults of the
    existing implementation.
    """

    model_config = SettingsConfigDict(env_prefix="PERSEUS_", extra="ignore")

    redis_url: str = Field(
        default="redis://localhost:6379/0",
        description="Redis to connect to. May hold a password; it is redacted whenever shown.",
    )
    heartbeat_interval_ms: int = Field(
        default=15_000, gt=0, description="How often a holder refreshes its status key."
    )
    heartbeat_ttl_ms: int = Field(
        default=45_000,
        gt=0,
        description="Expiry of the status key; no refresh within it means offline.",
    )
    retention_days: float = Field(
        default=90, gt=0, description="Activity entries older than this are trimmed on append."
    )
    public_ip: str = Field(
        default="auto",
        description="`auto` to detect, `off` to never detect, or a fixed IP address.",
    )
    public_ip_timeout_ms: int = Field(
        default=3_000, gt=0, description="Hard deadline for the whole public IP detection."
    )
    command_expiry_ms: int = Field(
        default=30_000, gt=0, description="Commands older than this when read are not executed."
    )
    command_skew_ms: int = Field(
        default=5_000,
        ge=0,
        description="Commands stamped further ahead than this (clock skew) are rejected.",
    )
    ack_timeout_ms: int = Field(
        default=5_000, gt=0, description="How long a sender waits for an agent's ack."
    )
    result_timeout_ms: int = Field(
        default=60_000, gt=0, description="How long a sender waits for the final result."
    )
    stop_grace_ms: int = Field(
        default=10_000, ge=0, description="SIGTERM-to-SIGKILL grace for a supervised child."
    )
    socket_timeout_ms: int = Field(
        default=5_000, gt=0, description="Socket timeout of ordinary (non-blocking) Redis calls."
    )
    block_ms: int = Field(
        default=2_000, gt=0, description="Block time of blocking stream reads (tail, commands)."
    )
    refresh_ms: int = Field(
        default=5_000, gt=0, description="How often the dashboard re-reads every status."
    )
    heartbeat_fresh_ms: int | None = Field(
        default=None,
        gt=0,
        description="Heartbeat age shown as fresh (green) up to this; default: the interval"
        " plus a fifth of it (18 s at the 15 s default).",
    )
    heartbeat_overdue_ms: int | None = Field(
        default=None,
        gt=0,
        description="Heartbeat age shown as overdue (red) from this on; late (yellow) in"
        " between; default: two intervals (30 s).",
    )
    tls_ca_file: str | None = Field(
        default=None,
        description="PEM file of the CA that signed the server's certificate (`rediss://`);"
        " without it the system's trusted CAs verify it. Verification is never off.",
    )
    tls_cert_file: str | None = Field(
        default=None,
        description="PEM client certificate, for servers that require mutual TLS.",
    )
    tls_key_file: str | None = Field(
        default=None,
        description="PEM private key of `tls_cert_file` (may be the same file).",
    )
    tls_server_name: str | None = Field(
        default=None,
        description="Name the server's certificate must carry, when it differs from the"
        " URL's host (connecting through an IP, a tunnel or a private endpoint).",
    )

    @field_validator("heartbeat_ttl_ms")
    @classmethod
    def _ttl_covers_interval(cls, ttl: int, info: object) -> int:
        data = getattr(info, "data", {})
        interval = data.get("heartbeat_interval_ms")
        if interval is not None and ttl <= interval:
            raise ValueError(
                f"heartbeat TTL ({ttl} ms) must be longer than the interval ({interval} ms)"
            )
        return ttl

    @property
    def redacted_redis_url(self) -> str:
        """The Redis URL as it may be shown to a person."""
        return redact_url(self.redis_url)
