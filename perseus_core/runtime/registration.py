"""The agent's exchange in the catalog: added at startup (waiting out a Redis
that is not up yet), put back when Redis lost it, never overwritten, and
never contradicted: an agent whose name is not the catalog's for its id
refuses to start unless it was told to rename the entry."""

from __future__ import annotations

import asyncio
import json
import logging
import time

from redis.backoff import EqualJitterBackoff
from redis.exceptions import AuthenticationError, InvalidResponse, ResponseError

from perseus_core.plumbing.connection import access_denied, describe_redis_error, is_acl_denial
from perseus_core.plumbing.errors import TRANSIENT_ERRORS
from perseus_core.plumbing.scripts import registered_scripts
from perseus_core.plumbing.tasks import wait_event
from perseus_core.runtime.context import AgentContext
from perseus_core.runtime.options import StartupFailed
from perseus_core.store.network import FleetReader
from perseus_core.wire import keys
from perseus_core.wire.errors import AccessDenied, PayloadError, PerseusError, RedisRefused
from perseus_core.wire.models import CatalogEntry
from perseus_core.wire.text import clean

log = logging.getLogger(__name__)

RENAME_LUA = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""
"""KEYS: the catalog. ARGV: exchange id, the entry as read, the renamed entry.
Compare-and-set: an entry an operator changed meanwhile is read again, not
overwritten."""

RENAME_ATTEMPTS = 3
"""How often a rename reads the entry again when it changed under it."""


class NameContradicted(PerseusError):
    """The catalog names the agent's exchange id differently, and the agent
    was not told to rename it: running would write one name into the status
    key and the activity stream while every reader shows the other."""


class Registration:
    """Puts the agent's exchange in the catalog and keeps it there."""

    def __init__(self, ctx: AgentContext) -> None:
        self._ctx = ctx
        self._reader = FleetReader(ctx.redis)

    def entry(self) -> CatalogEntry:
        """The catalog entry this agent would write for its exchange."""
        options = self._ctx.options
        return CatalogEntry(
            id=options.exchange_id,
            name=self._ctx.name,
            display_name=options.display_name or self._ctx.name,
            is_active=True,
        )

    async def register(self, stopping: asyncio.Event) -> bool:
        """Reach Redis and put the exchange in the catalog, retrying while Redis
        is unreachable. Returns False if `stopping` was set meanwhile.

        Raises:
            StartupFailed: Redis refused the credentials, or the server is not
                Redis (waiting will not fix either), or Redis stayed
                unreachable past the startup timeout.
        """
        ctx = self._ctx
        started = time.monotonic()
        backoff = EqualJitterBackoff(cap=5.0, base=0.2)
        failures = 0
        entry = self.entry()
        while True:
            try:
                await ctx.redis.ping()
                added = await self._add(entry)
                if added is False:
                    await self._check_name()
            except AccessDenied as exc:  # this user may not write the catalog
                raise StartupFailed(str(exc)) from None
            except (AuthenticationError, ResponseError, InvalidResponse) as exc:
                # Wrong password, NOAUTH, an ACL denial, a port where no Redis
                # listens (an HTTP server): waiting will not fix it.
                raise StartupFailed(describe_redis_error(ctx.settings, exc)) from None
            except TRANSIENT_ERRORS as exc:
                waited = time.monotonic() - started
                limit = ctx.options.startup_timeout_s
                problem = describe_redis_error(ctx.settings, exc)
                if limit is not None and waited >= limit:
                    raise StartupFailed(f"{problem} (gave up after {waited:.1f}s)") from None
                delay = backoff.compute(failures)
                failures += 1
                log.warning(
                    "%s: waiting for Redis (attempt %d): %s; retrying in %.1fs",
                    ctx.name,
                    failures,
                    problem,
                    delay,
                )
                if await wait_event(stopping, delay):
                    return False
                continue
            if failures:
                log.info("%s: Redis reachable after %d attempt(s)", ctx.name, failures + 1)
            if added:
                log.info("%s: added exchange %d to the catalog", ctx.name, entry.id)
            return True

    async def _add(self, entry: CatalogEntry) -> bool | None:
        """Add the exchange to the catalog unless it is there: True if added,
        False if it was there, None when Redis refused the write (a catalog of
        the wrong type, out of memory). The catalog is shared by the whole
        fleet: one broken key must not stop every agent from starting, so
        this agent runs on unlisted (its status key still shows it online),
        with one warning."""
        try:
            return await self._reader.add_to_catalog(entry, overwrite=False)
        except RedisRefused as exc:
            log.warning("%s: not added to the catalog, running without it: %s", self._ctx.name, exc)
            return None

    async def restore(self) -> None:
        """Redis lost this agent's presence: if it lost the catalog too (a restart
        without persistence), put the exchange back so dashboards list it.

        Never overwrites: an operator's entry stays as it is.
        """
        if await self._add(self.entry()):
            log.warning(
                "%s: Redis had lost this exchange's catalog entry (restarted without "
                "persistence?); added exchange %d again",
                self._ctx.name,
                self._ctx.options.exchange_id,
            )

    async def _check_name(self) -> None:
        """Refuse (or, with `rename`, fix) a catalog entry that names this
        exchange id differently: the dashboard would show one name while the
        status key and the activity stream carry another.

        Raises:
            NameContradicted: the names differ and `rename` is off.
        """
        ctx = self._ctx
        exchange_id = ctx.options.exchange_id
        for _ in range(RENAME_ATTEMPTS):
            raw = await ctx.redis.hget(keys.CATALOG_KEY, str(exchange_id))
            if raw is None:
                return
            try:
                listed = CatalogEntry.from_json(raw)
            except PayloadError as exc:
                log.warning(
                    "%s: the catalog entry of exchange %d is unreadable: %s",
                    ctx.name,
                    exchange_id,
                    exc,
                )
                return
            if listed.name.lower() == ctx.name.lower():
                return
            shown = clean(listed.name, 64)
            if not ctx.options.rename:
                raise NameContradicted(
                    f"the catalog lists exchange {exchange_id} as {shown!r}, not {ctx.name!r}: "
                    f"run it as --exchange-name {shown}, or add --rename to rename it "
                    "in the catalog"
                )
            if await self._rename(raw, listed):
                log.warning(
                    "%s: renamed exchange %d in the catalog from %r to %r (--rename)",
                    ctx.name,
                    exchange_id,
                    shown,
                    ctx.name,
                )
                return
        raise StartupFailed(
            f"the catalog entry of exchange {exchange_id} kept changing while renaming it"
        )

    async def _rename(self, raw: str | bytes, listed: CatalogEntry) -> bool:
        """Write `raw` with this agent's name; False if the entry changed meanwhile.

        Every other field of the entry stays as the operator wrote it (unknown
        ones too); a display name that only repeated the old name follows it.
        """
        ctx = self._ctx
        document = json.loads(raw)
        document["name"] = ctx.name
        if ctx.options.display_name is not None:
            document["displayName"] = ctx.options.display_name
        elif listed.display_name.lower() in ("", listed.name.lower()):
            document["displayName"] = ctx.name
        renamed = json.dumps(document, separators=(",", ":"), ensure_ascii=False)
        CatalogEntry.from_json(renamed)  # still a valid entry
        (script,) = registered_scripts(ctx.redis, RENAME_LUA)
        try:
            done = await script(
                keys=[keys.CATALOG_KEY], args=[str(ctx.options.exchange_id), raw, renamed]
            )
        except ResponseError as exc:
            if not is_acl_denial(exc):
                raise
            # The agent role of docs/production-redis.md on Redis 7 may add its
            # entry but never rewrite one: say so, not just that Redis refused.
            denied = access_denied(exc, "EVALSHA", keys.CATALOG_KEY)
            raise AccessDenied(
                f"{denied}: renaming a catalog entry is an operator's right "
                f"(perseus catalog add {ctx.options.exchange_id} {ctx.name})"
            ) from None
        return bool(done)
