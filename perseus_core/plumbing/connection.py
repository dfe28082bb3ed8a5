"""Opening Redis connections the way every Perseus component needs them.

One URL decides how: `redis://` (plain), `rediss://` (TLS, the server's
certificate always verified, mutual TLS when a client certificate is set) and
`redis+sentinel://host:26379[,host2:26379]/service[/db]` (the current master
of a Sentinel-watched service, followed across a master switch).
"""

from __future__ import annotations

import re
import ssl
from typing import Any
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.exceptions import (
    AuthenticationError,
    InvalidResponse,
    NoPermissionError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError

from perseus_core.plumbing.errors import TRANSIENT_ERRORS
from perseus_core.plumbing.tls import SERVER_NAME_OPTION, NamedSSLConnection
from perseus_core.plumbing.topology import RedisClient, cluster_client, is_cluster
from perseus_core.wire.errors import AccessDenied, PerseusError, RedisRefused, RedisUnavailable
from perseus_core.wire.settings import Settings, redact_url
from perseus_core.wire.text import clean

SENTINEL_SCHEME = "redis+sentinel"
"""URL scheme of a Sentinel-watched service: `redis+sentinel://host:port/service/db`."""


def is_tls_url(url: str) -> bool:
    """Whether `url` asks for TLS (`rediss://`)."""
    return url.lower().startswith("rediss://")


def tls_options(settings: Settings) -> dict[str, Any]:
    """The TLS keyword arguments of a redis-py client for `settings`.

    Certificate and host name checks are on; the CA file, the client
    certificate and key (mutual TLS) and the server name come from the
    settings. Empty when the URL is not `rediss://`.
    """
    if not is_tls_url(settings.redis_url):
        return {}
    options: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
    if settings.tls_ca_file:
        options["ssl_ca_certs"] = settings.tls_ca_file
    if settings.tls_cert_file:
        options["ssl_certfile"] = settings.tls_cert_file
        options["ssl_keyfile"] = settings.tls_key_file or settings.tls_cert_file
    if settings.tls_server_name:
        options["connection_class"] = NamedSSLConnection
        options[SERVER_NAME_OPTION] = settings.tls_server_name
    return options


def client_options(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of every Perseus client: decoding, timeouts, TLS.

    Responses are decoded as UTF-8 with invalid bytes replaced, so a hostile
    value can never raise UnicodeDecodeError deep inside a reader.
    """
    timeout = settings.socket_timeout_ms / 1000
    options: dict[str, Any] = {
        "decode_responses": True,
        "encoding_errors": "replace",
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": 30,
        **tls_options(settings),
    }
    options.update(overrides)
    return options


def connect(settings: Settings, **overrides: Any) -> RedisClient:
    """A client for short commands, with the settings' socket timeout.

    A URL that leads to a Redis Cluster node gives a cluster client (see
    `topology`): the same URL schemes work for both.
    """
    options = client_options(settings, **overrides)
    if is_sentinel_url(settings.redis_url):
        return _sentinel_master(settings.redis_url, options)
    client = Redis.from_url(settings.redis_url, **options)
    _check_url_options(client)
    if is_cluster(settings.redis_url, options):
        return cluster_client(settings.redis_url, options)
    return client


_UNEXPECTED_ARGUMENT = re.compile(r"unexpected keyword argument '([^']{1,64})'")


def _check_url_options(client: Redis) -> None:
    """Raise ValueError for a query option in the URL that redis-py does not know.

    redis-py passes such options (`?api_token=x`) through to the connection,
    where they raise TypeError at the first command, deep inside whatever ran
    it. Building one connection (nothing is opened) finds them now, as the
    same kind of error as any other unusable URL.
    """
    try:
        client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
    except TypeError as exc:
        found = _UNEXPECTED_ARGUMENT.search(str(exc))
        name = found.group(1) if found else "?"
        raise ValueError(f"unknown option {name!r} in the URL's query") from None


def connect_blocking(settings: Settings, block_ms: int | None = None) -> RedisClient:
    """A dedicated client for blocking reads (XREAD BLOCK, BLPOP).

    Its socket timeout is longer than the block time: with redis-py's default
    5 s socket timeout a 5 s block would time out on the client side.
    """
    block = block_ms if block_ms is not None else settings.block_ms
    return connect(settings, socket_timeout=block / 1000 + 5)


# --- Sentinel ---------------------------------------------------------------


def is_sentinel_url(url: str) -> bool:
    """Whether `url` names a Sentinel-watched service (`redis+sentinel://`)."""
    return url.lower().startswith(f"{SENTINEL_SCHEME}://")


class BadSentinelUrl(PerseusError, ValueError):
    """A `redis+sentinel://` URL that cannot be parsed (the message redacts it);
    a ValueError like every other unparseable Redis URL."""


class SentinelTarget:
    """A parsed `redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]`.

    Attributes:
        sentinels: (host, port) of every sentinel listed (26379 when no port).
        service: the master's name, as the sentinels know it.
        db: the database number (0 when absent).
        username: ACL user of the master, if any.
        password: password of the master, if any.
    """

    def __init__(self, url: str) -> None:
        """Parse `url`; BadSentinelUrl (with the URL redacted) when it is malformed."""
        parts = urlsplit(url)
        netloc = parts.netloc
        userinfo, _, hosts = netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        self.username = unquote(user) or None
        self.password = unquote(password) or None
        self.sentinels: list[tuple[str, int]] = []
        for item in filter(None, hosts.split(",")):
            host, _, port = item.rpartition(":") if ":" in item else (item, "", "26379")
            if not host or not port.isdigit():
                raise BadSentinelUrl(f"bad sentinel address {item!r} in {redact_url(url)}")
            self.sentinels.append((host.strip("[]"), int(port)))
        path = [piece for piece in parts.path.split("/") if piece]
        if not self.sentinels or not path or len(path) > 2:
            raise BadSentinelUrl(
                f"bad Sentinel URL {redact_url(url)}: "
                "expected redis+sentinel://host:26379[,host:26379]/service[/db]"
            )
        self.service = unquote(path[0])
        if len(path) == 2 and not path[1].isdigit():
            raise BadSentinelUrl(f"bad database number in {redact_url(url)}")
        self.db = int(path[1]) if len(path) == 2 else 0


class SentinelMaster(Redis):
    """The client of a Sentinel service's master that also closes its
    connections to the sentinels when it is closed."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        """Close the master's pool, then every sentinel client."""
        await super().aclose(close_connection_pool)
        pool = self.connection_pool
        if isinstance(pool, SentinelConnectionPool):
            for sentinel in pool.sentinel_manager.sentinels:
                await sentinel.aclose()


def _sentinel_master(url: str, options: dict[str, Any]) -> Redis:
    """A client of the current master of the service `url` names.

    redis-py asks the sentinels for the master on every new connection, so
    after a master switch the next reconnect finds the new one. The sentinels
    are asked with the same timeouts; credentials apply to the master.
    """
    target = SentinelTarget(url)
    sentinel_options = {k: v for k, v in options.items() if k.startswith("socket_")}
    sentinel_options["decode_responses"] = True
    manager = Sentinel(target.sentinels, sentinel_kwargs=sentinel_options)
    client: Redis = manager.master_for(
        target.service,
        redis_class=SentinelMaster,
        db=target.db,
        username=target.username,
        password=target.password,
        **options,
    )
    return client


# --- errors for a person ----------------------------------------------------


def _caused_by(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    """The first exception in `exc`'s cause/context chain that is a `kind`.

    redis-py wraps a refused connect as `Error 111 connecting to ...`, with the
    `ConnectionRefusedError` only in the chain, so the message alone misses it.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, kind):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


_NOT_TLS_SIGNS = ("wrong version number", "record layer failure", "packet length too long")
"""What OpenSSL says when the other side does not speak TLS at all."""


def _tls_reason(exc: BaseException) -> str | None:
    """What went wrong in a TLS handshake, in words, or None if it was not TLS."""
    verify = _caused_by(exc, ssl.SSLCertVerificationError)
    if isinstance(verify, ssl.SSLCertVerificationError):
        detail = verify.verify_message or "certificate verify failed"
        return (
            f"TLS certificate not accepted ({detail}); "
            "set PERSEUS_TLS_CA_FILE to the CA that signed it, or PERSEUS_TLS_SERVER_NAME"
        )
    failure = _caused_by(exc, ssl.SSLError)
    text = str(exc).lower()
    if failure is not None or "ssl" in text:
        detail = str(failure or exc).lower()
        if any(sign in detail for sign in _NOT_TLS_SIGNS):
            return "the server does not speak TLS (a plain-text port? use redis://)"
        reason = getattr(failure, "reason", None) or "handshake failed"
        return f"TLS handshake failed ({str(reason).lower().replace('_', ' ')})"
    return None


def is_tls_failure(exc: BaseException) -> bool:
    """Whether a connection failed in the TLS handshake (a certificate, a
    version): a setting to fix, not an outage to wait out."""
    return _tls_reason(exc) is not None


def describe_redis_error(settings_or_url: Settings | str, exc: BaseException) -> str:
    """One line for a person: `cannot reach Redis at <url>: connection refused`,
    or `Redis at <url> refused: <its error>` when Redis answered with an error.

    On a Redis Cluster the node that failed is named too when it is not the
    one the URL names (`cannot reach Redis at <url> (cluster node
    10.0.0.7:6379): ...`): after a failover the URL's node may be the one
    alive, and the dead one is what an operator needs to know. A cluster
    node that closes the connection is not suspected of being a TLS port:
    the client learnt of it from the cluster, in plain Redis.
    """
    url = _address(settings_or_url, exc)
    from_node = isinstance(getattr(exc, "connection", None), ClusterNode)
    if isinstance(exc, AuthenticationError):
        if "required" in str(exc).lower():  # NOAUTH: a password is needed, none was given
            reason = "authentication required: the URL gives no password"
        else:
            reason = "authentication failed: wrong user name or password"
    elif isinstance(exc, InvalidResponse):
        reason = "the server there is not Redis (it answered in another protocol; wrong port?)"
    elif isinstance(exc, RedisTimeoutError | TimeoutError):
        reason = "timed out"
        if is_tls_url(url):  # a plain server never answers a TLS hello
            reason += " (in the TLS handshake? a plain-text port needs redis://)"
    elif isinstance(exc, ResponseError):  # Redis answered: it was reached, and refused
        return f"Redis at {url} refused: {clean(str(exc) or 'an error reply', 300)}"
    else:
        text = str(exc).lower()
        tls = _tls_reason(exc)
        if tls is not None:
            reason = tls
        elif "refused" in text or _caused_by(exc, ConnectionRefusedError):
            reason = "connection refused"
        elif "name or service not known" in text or "nodename nor servname" in text:
            reason = "unknown host"
        elif not is_tls_url(url) and (
            "closed by server" in text or _caused_by(exc, ConnectionResetError)
        ):
            reason = "connection closed by the server"
            if not from_node:
                reason += " (a TLS port? use rediss://)"
        else:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return f"cannot reach Redis at {url}: {clean(reason, 300)}"


def _address(settings_or_url: Settings | str, exc: BaseException) -> str:
    """The redacted URL, and the cluster node `exc` came from when it is not
    the one the URL names."""
    url = (
        settings_or_url.redacted_redis_url
        if isinstance(settings_or_url, Settings)
        else redact_url(settings_or_url)
    )
    node = _failed_cluster_node(url, exc)
    return url if node is None else f"{url} (cluster node {node})"


def _failed_cluster_node(url: str, exc: BaseException) -> str | None:
    """`host:port` of the cluster node `exc` came from (redis-py's cluster
    client attaches it), or None when unknown or the node the URL names."""
    node = getattr(exc, "connection", None)
    if not isinstance(node, ClusterNode):
        return None
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # a port the URL parser rejects: not the node's
        port = None
    # redis-py names a `localhost` node by its address.
    same_host = parts.hostname in (node.host, "localhost")
    return None if same_host and port == int(node.port) else clean(node.name, 100)


def describe_refusal(exc: ResponseError, command: str, key: str) -> str:
    """One line naming the right this user lacks: `this user may not XADD
    perseus:commands:2 (NOPERM ...)`; Redis's own words follow, shortened."""
    return f"this user may not {command.upper()} {clean(key, 200)} ({clean(str(exc), 160)})"


def access_denied(exc: ResponseError, command: str, key: str) -> AccessDenied:
    """The `AccessDenied` to raise for a NOPERM reply to `command` on `key`."""
    return AccessDenied(describe_refusal(exc, command, key))


def is_acl_denial(exc: BaseException) -> bool:
    """Whether Redis refused a command for this user's ACL rights: a NOPERM
    reply, or the error a Lua script reports when a call inside it is denied
    (`The user executing the script can't run this command`)."""
    if isinstance(exc, NoPermissionError):
        return True
    text = str(exc)
    return isinstance(exc, ResponseError) and (
        "NOPERM" in text or "can't run this command" in text or "no permissions" in text
    )


def refused(exc: ResponseError, command: str, key: str) -> PerseusError:
    """The error to raise when Redis refuses `command` on `key`, naming both,
    so that no refusal reaches a person as Redis's bare words: `AccessDenied`
    for a missing ACL right, `RedisRefused` for anything else (a key of the
    wrong type, out of memory, an unknown command, a read-only replica)."""
    if is_acl_denial(exc):
        return access_denied(exc, command, key)
    verb, name = command.upper(), clean(key, 200)
    words = clean(str(exc), 160)
    unusable = True
    if "WRONGTYPE" in str(exc):
        reason, unusable = "the key holds another type of value (WRONGTYPE)", False
    elif isinstance(exc, OutOfMemoryError) or str(exc).startswith("OOM"):
        reason = f"Redis is out of memory ({words})"
    elif isinstance(exc, ReadOnlyError):
        reason = f"this server is a read-only replica ({words})"
    elif "unknown command" in str(exc).lower():
        reason = f"Redis does not know the command: renamed, disabled or too old ({words})"
    else:
        reason = words
    return RedisRefused(f"Redis refused {verb} {name}: {reason}", verb, key, unusable=unusable)


_PING_ERRORS: tuple[type[BaseException], ...] = (
    *TRANSIENT_ERRORS,
    AuthenticationError,
    InvalidResponse,
)


async def ping_or_raise(redis: RedisClient, settings: Settings) -> None:
    """PING, turning any connection failure into RedisUnavailable."""
    try:
        await redis.ping()
    except _PING_ERRORS as exc:
        raise RedisUnavailable(describe_redis_error(settings, exc)) from exc
