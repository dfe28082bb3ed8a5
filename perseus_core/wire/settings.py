"""One settings object for every Perseus process, read from `PERSEUS_*` env vars."""

from __future__ import annotations

import re
from urllib.parse import unquote_plus, urlsplit, urlunsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def redact_url(url: str) -> str:
    """The URL with every secret it may hold replaced by `***`, safe to print or log.

    Secrets hide in three places: the userinfo password, a `?password=`
    query parameter (redis-py honours it), and any other query parameter
    whose name looks like a secret (`SECRET_PARAMETER`). A username is kept
    (it helps to know *who* connects). A password with an unencoded `#`,
    `/` or `?` cuts the address short for a URL parser, so the whole
    userinfo is hidden then; unparseable input is redacted entirely rather
    than risk echoing a secret.
    """
    try:
        parts = urlsplit(url)
        if "@" in url and "@" not in parts.netloc:  # '#', '/' or '?' in a password
            return _redact_query_of(_USERINFO_RAW.sub(r"\g<scheme>***@", url, count=1))
        query = _redact_query(parts.query)
        if parts.password is None:
            return url if query == parts.query else urlunsplit(parts._replace(query=query))
        user = parts.username or ""
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{user}:***@{host}" if user else f"***@{host}"
        if parts.port is not None:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        # `redis+sentinel://u:p@h1:26379,h2:26379/...` lists several hosts,
        # which urlsplit cannot parse: blank the password by pattern instead.
        redacted, found = _USERINFO.subn(_redact_userinfo, url, count=1)
        return _redact_query_of(redacted) if found else "<unparseable redis url>"


SECRET_PARAMETER = re.compile(r"pass|pwd|secret|token|key|auth|cred|sig", re.IGNORECASE)
"""Query parameter names whose values are hidden: `password`, `pass`, `pwd`,
`secret`, `token`, `key` (also `api_key`, `ssl_keyfile`: a path shown as
`***` costs nothing), `auth`, `credentials`, `signature`..."""

_USERINFO = re.compile(r"^(?P<scheme>[a-z+]+://)(?P<user>[^:@/]*)(?P<password>:[^@/]*)?@")
_USERINFO_RAW = re.compile(r"^(?P<scheme>[a-z][a-z0-9+.-]*://)[^@]*@")


def _redact_userinfo(match: re.Match[str]) -> str:
    if match.group("password") is None:
        return match.group(0)
    user = match.group("user")
    return f"{match.group('scheme')}{user}:***@" if user else f"{match.group('scheme')}***@"


def _redact_query(query: str) -> str:
    """`query` with the value of every secret-looking parameter replaced by `***`."""
    if not query:
        return query
    items = []
    for item in query.split("&"):
        name, sep, value = item.partition("=")
        if sep and value and SECRET_PARAMETER.search(unquote_plus(name)):
            item = f"{name}=***"
        items.append(item)
    return "&".join(items)


def _redact_query_of(url: str) -> str:
    """`_redact_query` on whatever follows the first `?` of a URL urlsplit cannot read."""
    head, sep, query = url.partition("?")
    if not sep:
        return url
    query, hash_sign, fragment = query.partition("#")
    return f"{head}?{_redact_query(query)}{hash_sign}{fragment}"


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
        default=15_000,
        gt=0,
        description="How often a holder refreshes its status key (and says so in it);"
        " readers judge a holder that does not say its interval by this one.",
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
    child_cgroup: bool = Field(
        default=True,
        description="Run each supervised child in a cgroup v2 of its own where the host lets"
        " the agent make one (root, or a delegated subtree such as systemd's Delegate=yes);"
        " off, or where it cannot, the child's watchdog keeps its processes as a subreaper.",
    )
    child_output: bool = Field(
        default=True,
        description="Keep the last lines of each child's stdout and stderr in Redis"
        " (`perseus:output:{id}`, for `perseus output` and the dashboard); off keeps them"
        " only in the agent's log (`perseus agent --no-output`).",
    )
    output_lines: int = Field(
        default=500,
        ge=10,
        le=100_000,
        description="About how many lines of a child's output Redis keeps (the stream's"
        " MAXLEN ~: a few more may stay until the next trim).",
    )
    output_keep_days: float = Field(
        default=7,
        gt=0,
        description="A child's output expires this long after its last line was written.",
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
    full_refresh_ms: int = Field(
        default=60_000,
        gt=0,
        description="While Redis tells the dashboard which keys change (keyspace"
        " notifications on, `notify-keyspace-events` with `K$gxzh` or `KA`), how often it"
        " still re-reads every status, in case a notification was lost; between those"
        " reads it re-reads only what changed. Without notifications every read is full,"
        " every `refresh_ms`.",
    )
    exporter_listen: str = Field(
        default="127.0.0.1:9464",
        description="Where `perseus exporter` serves /metrics: HOST:PORT ([::1]:PORT for IPv6;"
        " port 0 picks a free one).",
    )
    exporter_cache_ms: int = Field(
        default=1_000,
        ge=0,
        description="How long one fleet read answers `perseus exporter`'s scrapes, so that"
        " several Prometheus servers cost Redis one read per this period (0: read per scrape).",
    )
    flap_transitions: int = Field(
        default=6,
        ge=1,
        description="An exchange with more state transitions than this in the last hour"
        " counts as flapping (the dashboard's header counts them): a healthy start or stop"
        " is 3 or 4 transitions, so more than 6 is at least two round trips in an hour.",
    )
    heartbeat_fresh_ms: int | None = Field(
        default=None,
        gt=0,
        description="Heartbeat age shown as fresh (green) up to this, for every holder;"
        " default: the holder's own interval plus a fifth (18 s at 15 s).",
    )
    heartbeat_overdue_ms: int | None = Field(
        default=None,
        gt=0,
        description="Heartbeat age shown as overdue (red) from this on, for every holder;"
        " late (yellow) in between; default: two of the holder's intervals (30 s at 15 s).",
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
