"""Agent presence (docs/wire-format.md 2.4): an agent says it is running, idle or not.

An agent claims its exchange's status key only while it runs an instance, so
an idle agent is invisible in the status keys: the dashboard would show its
exchange exactly like one that has no agent at all. Presence closes that gap
without touching the shared status key format.

Layout: one sorted set per exchange, `perseus:agents:{exchangeId}`. Each
running agent owns one member, its `AgentPresence` JSON, scored by the
moment (Redis server time, ms) that member expires. Why a sorted set:

- Several agents may watch one exchange (a standby on another host). One
  string key would hold only the latest writer; a hash cannot expire its
  fields on Redis 6.2. A sorted set keeps every agent, and the score gives
  each member its own expiry.
- Every write is one Lua script on one key (keys in KEYS), so it works on
  Redis Cluster and is atomic: drop members whose time has passed, replace
  this agent's own member, and push the key's expiry out to at least this
  member's. Scores come from the server's clock (`TIME`), so agents on hosts
  whose clocks disagree never prune each other's live members.
- Readers list only the members whose expiry, on the server's clock, has
  not passed (`store.network.reader`): writers prune expired members only
  when they write, so an agent killed with -9 beside another one would
  otherwise stay listed until that one's next refresh. A reader on the
  agent's own host (same kernel, same pid namespace: `pidScope`) also drops
  a member whose process is gone, at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Awaitable, Callable

from perseus_core import __version__
from perseus_core.plumbing.connection import describe_redis_error
from perseus_core.plumbing.errors import REDIS_ERRORS
from perseus_core.plumbing.processes import process_scope
from perseus_core.plumbing.scripts import registered_scripts
from perseus_core.plumbing.tasks import raise_if_cancelling, wait_event
from perseus_core.plumbing.topology import RedisClient
from perseus_core.store.lease import unique_start_ms, wire_now
from perseus_core.wire import keys
from perseus_core.wire.models import AgentPresence, ConnectionState
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import Clock, system_clock

log = logging.getLogger(__name__)

_NOW_MS = """
local t = redis.call('TIME')
local now_ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function agent_of(member)
  local ok, doc = pcall(cjson.decode, member)
  if ok and type(doc) == 'table' then return doc['agentId'] end
  return nil
end
"""

PUBLISH_LUA = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
local found = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if member == ARGV[2] then
    found = 1
  elseif agent_of(member) == ARGV[1] then
    found = 1
    redis.call('ZREM', KEYS[1], member)
  end
end
local ttl = tonumber(ARGV[3])
redis.call('ZADD', KEYS[1], now_ms + ttl, ARGV[2])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return {now_ms + ttl, found}
"""
)
"""KEYS: presence set. ARGV: agentId, member JSON, TTL in ms. Prunes expired
members, replaces this agent's member, never shortens the key's expiry (other
agents may use a longer TTL). Returns the member's expiry (server ms) and 1
if this agent's member was still there (0: first write, or Redis lost it)."""

WITHDRAW_LUA = (
    _NOW_MS
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms)
local removed = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if agent_of(member) == ARGV[1] then
    removed = removed + redis.call('ZREM', KEYS[1], member)
  end
end
return removed
"""
)
"""KEYS: presence set. ARGV: agentId. Compare-and-delete: removes only this
agent's member (the set disappears with its last member)."""


def make_agent_id(hostname: str, pid: int, start_ms: int) -> str:
    """An agent's own token, `{hostname}:{pid}:{startMs}`: unique per process
    run, so a restarted agent never mistakes its predecessor's member for its own."""
    return f"{hostname}:{pid}:{start_ms}"


class AgentAnnouncer:
    """Keeps one agent's presence member fresh while the agent runs.

    `run()` publishes at once, then every heartbeat interval, and right away
    after `nudge()` (the agent calls it on every state change, so the
    dashboard sees `starting` or `idle` without waiting for the next round).
    Redis errors never end it: it logs the outage once, keeps trying, and
    says when presence is written again.
    """

    def __init__(
        self,
        redis: RedisClient,
        settings: Settings,
        *,
        exchange_id: int,
        exchange_name: str,
        state: Callable[[], ConnectionState],
        hostname: str | None = None,
        clock: Clock = system_clock,
        on_lost: Callable[[], Awaitable[None]] | None = None,
        note: Callable[[], str | None] = lambda: None,
    ) -> None:
        """Create an announcer (nothing is written until `publish` or `run`).

        Args:
            redis: the agent's client.
            settings: heartbeat interval (refresh period) and TTL (member expiry).
            exchange_id: the exchange the agent watches.
            exchange_name: its name, written for readers.
            state: the agent's current lifecycle state, read at every publish.
            hostname: reported hostname; defaults to this machine's.
            clock: source of `since`.
            on_lost: awaited after a refresh finds this agent's member gone
                although it had been written (Redis restarted without
                persistence, or this process was paused past the TTL), so
                the agent can restore what else Redis lost (its catalog entry).
            note: what keeps the agent from doing what it was asked (the
                member's `note`), read at every publish; `nudge` after it changes.
        """
        self._redis = redis
        self._settings = settings
        self.exchange_id = exchange_id
        self.exchange_name = exchange_name
        self.hostname = hostname or socket.gethostname()
        self.pid = os.getpid()
        self.agent_id = make_agent_id(self.hostname, self.pid, unique_start_ms(clock()))
        self._state = state
        self._clock = clock
        self.key = keys.agents_key(exchange_id)
        """This agent's presence key, `perseus:agents:{id}`."""
        self._publish_script, self._withdraw_script = registered_scripts(
            redis, PUBLISH_LUA, WITHDRAW_LUA
        )
        self._nudged = asyncio.Event()
        self._last_state: ConnectionState | None = None
        self._since = wire_now(clock)
        self._failing: str | None = None
        self._on_lost = on_lost
        self._note = note
        self._written = False

    def presence(self) -> AgentPresence:
        """The member as it would be written now; `since` moves only when the state changes."""
        state = self._state()
        if state != self._last_state:
            if self._last_state is not None:
                self._since = wire_now(self._clock)
            self._last_state = state
        return AgentPresence(
            agent_id=self.agent_id,
            exchange_id=self.exchange_id,
            exchange_name=self.exchange_name,
            hostname=self.hostname,
            pid=self.pid,
            state=state.value,
            since=self._since,
            version=__version__,
            note=self._note(),
            pid_scope=process_scope(),
        )

    def nudge(self) -> None:
        """Publish as soon as possible (the state changed)."""
        self._nudged.set()

    async def publish(self) -> int:
        """Write or refresh this agent's member once.

        Returns:
            When the member expires, in Redis server milliseconds.

        Raises:
            redis / OS errors: Redis did not answer.
        """
        member = self.presence().to_json()
        ttl_ms = self._settings.heartbeat_ttl_ms
        expires, found = await self._publish_script(
            keys=[self.key], args=[self.agent_id, member, ttl_ms]
        )
        if self._written and not int(found) and self._on_lost is not None:
            await self._on_lost()
        self._written = True
        return int(expires)

    async def run(self) -> None:
        """Publish every heartbeat interval (and on `nudge`) until cancelled."""
        interval_s = self._settings.heartbeat_interval_ms / 1000
        while True:
            self._nudged.clear()
            try:
                await self.publish()
            except REDIS_ERRORS as exc:
                raise_if_cancelling()  # a cancellation redis-py turned into an error
                self._report(describe_redis_error(self._settings, exc))
            except Exception as exc:  # a bug must not silence presence for the agent's lifetime
                self._report(f"{type(exc).__name__}: {exc}", unexpected=True)
            else:
                if self._failing is not None:
                    log.info("%s: agent presence written again", self.exchange_name)
                    self._failing = None
            await wait_event(self._nudged, interval_s)

    async def withdraw(self) -> bool:
        """Remove this agent's member (only its own). Never raises: a member
        that cannot be removed expires with its score.

        Returns:
            True if a member was removed now.
        """
        if not self._written:  # never published: there is nothing to remove
            return False
        try:
            removed = await self._withdraw_script(keys=[self.key], args=[self.agent_id])
        except REDIS_ERRORS as exc:
            log.warning(
                "%s: agent presence not removed (it expires by itself): %s",
                self.exchange_name,
                describe_redis_error(self._settings, exc),
            )
            return False
        return bool(removed)

    def _report(self, message: str, *, unexpected: bool = False) -> None:
        """Log a failed refresh once per distinct problem, not once per interval."""
        if message == self._failing:
            return
        self._failing = message
        if unexpected:
            log.error("%s: agent presence not written: %s", self.exchange_name, message)
        else:
            log.warning(
                "%s: agent presence not written (retrying every heartbeat): %s",
                self.exchange_name,
                message,
            )
