"""The instance runtime behind `perseus agent`.

An agent holds one exchange *on request*: it sits idle (claiming nothing,
so the exchange stays free for another host) until a `start` command arrives,
then claims its status key, walks the lifecycle to `active` and, when given a
command line, runs it as the instance's process. `stop`, a child that dies,
a lost lease or a signal bring it back to idle; after a child that dies or a
lost lease, the restart policy (`restarts`) may start it again.

The parts, each in its own module: `Registration` (the catalog entry,
waiting out a Redis that is not up yet), `Slot` (one run at a time, under
one lock), `Run` (the steps from claim back to idle), `Commands` (start,
stop, ping) and this `Agent`, which wires them up, handles signals and
leaves nothing behind on exit.

Redis outages are absorbed below the agent: the instance's heartbeat retries
and re-creates a vanished key when the slot is still free (or reports the
lease lost when it is not), transitions made meanwhile reach the key on the
next heartbeat, and the command server reconnects and resumes where it was.
An outage (or a freeze of the agent) that outlasts the lease, less the
watchdog's margin (`supervisor`), costs the child: its watchdog kills it
before another agent could claim the slot, and the run ends as after a crash.
Like a crash, it is then restarted by the restart policy (`restarts`), with a
fresh claim once Redis answers again, unless an operator stopped it.

Idle or not, the agent announces itself for as long as it runs (presence,
docs/wire-format.md 2.4: refreshed every heartbeat interval and on every
state change, removed on a graceful exit, expired by its TTL after a kill),
so an exchange whose slot is free still shows that a `start` would be answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket

from redis.exceptions import ResponseError

from perseus_core.plumbing.connection import access_denied, connect, is_acl_denial
from perseus_core.plumbing.errors import REDIS_ERRORS
from perseus_core.plumbing.processes import install_signal_handlers
from perseus_core.plumbing.tasks import TaskGroup
from perseus_core.runtime.commands import Commands
from perseus_core.runtime.context import AgentContext
from perseus_core.runtime.options import FORCED_EXIT, AgentOptions, StartupFailed
from perseus_core.runtime.public_ip import detect_public_ip
from perseus_core.runtime.registration import NameContradicted, Registration
from perseus_core.runtime.slot import Slot
from perseus_core.runtime.supervisor import ChildProcess
from perseus_core.store.control.server import CommandServer
from perseus_core.store.lease import LeaseLost
from perseus_core.store.presence import AgentAnnouncer
from perseus_core.wire.models import ConnectionState
from perseus_core.wire.settings import Settings
from perseus_core.wire.timeutil import Clock, system_clock

__all__ = ["FORCED_EXIT", "Agent", "AgentOptions", "NameContradicted", "StartupFailed"]

log = logging.getLogger(__name__)


class Agent:
    """One exchange's agent: `await run()` until a signal or `request_stop()`."""

    def __init__(
        self, settings: Settings, options: AgentOptions, *, clock: Clock = system_clock
    ) -> None:
        self.settings = settings
        self.options = options
        self.name = options.exchange_name
        self.hostname = options.hostname or socket.gethostname()
        self._clock = clock
        self._tasks = TaskGroup(log, self.name)
        self._ctx: AgentContext | None = None
        self._slot: Slot | None = None
        self._server: CommandServer | None = None
        self._presence: AgentAnnouncer | None = None
        self._shutdown = asyncio.Event()
        self._sigint_count = 0
        self._note: str | None = None

    # --- public surface ---------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """The lifecycle state: idle whenever no run holds (or is claiming) the slot."""
        return self._slot.state if self._slot is not None else ConnectionState.IDLE

    @property
    def child(self) -> ChildProcess | None:
        """The supervised child of the current run, if any."""
        return self._slot.child if self._slot is not None else None

    def request_stop(self) -> None:
        """Ask for a graceful shutdown: stop the run if any, release, return from `run()`."""
        if not self._shutdown.is_set():
            log.info("%s: shutting down", self.name)
        self._shutdown.set()
        if self._slot is not None:
            self._slot.wake()

    def kill_child_now(self) -> None:
        """SIGKILL every process of the current run's child without waiting
        (a forced exit: the slot is left to expire on its own)."""
        if self._slot is not None:
            self._slot.kill_child_now()

    def run_forever(self) -> int:
        """Run in a fresh event loop; returns the process exit code (0 after a graceful stop).

        Raises:
            StartupFailed: see `run`.
        """
        return asyncio.run(self.run())

    async def run(self, *, signals: bool = True) -> int:
        """Connect, register in the catalog, serve commands until asked to stop.

        SIGTERM, SIGHUP and SIGINT are handled while this runs (when called in
        the main thread): each stops gracefully (a closed SSH session sends
        SIGHUP: the slot is released and the presence withdrawn, not left to
        expire), a second SIGINT exits at once.

        Args:
            signals: handle the process's signals as above. An agent embedded
                beside others in one event loop (`perseus_core.runtime.host`)
                leaves them to its caller: a loop has one handler per signal,
                and the caller decides what a signal means for every agent
                (`request_stop`, `kill_child_now`) and when the process exits.

        Returns:
            0 after a graceful stop.

        Raises:
            StartupFailed: Redis refused the credentials, or stayed unreachable
                past `AgentOptions.startup_timeout_s`.
            NameContradicted: the catalog names the exchange id differently
                and `AgentOptions.rename` is off.
        """
        loop = asyncio.get_running_loop()
        installed = install_signal_handlers(loop, self._on_signal) if signals else []
        try:
            command = " ".join(self.options.command)
            log.info(
                "%s: agent for exchange %d on %s, Redis %s%s",
                self.name,
                self.options.exchange_id,
                self.hostname,
                self.settings.redacted_redis_url,
                f", child command: {command}" if command else ", no child command",
            )
            ctx = self._ctx = AgentContext(
                self.settings,
                self.options,
                hostname=self.hostname,
                clock=self._clock,
                redis=connect(self.settings),
                tasks=self._tasks,
            )
            registration = Registration(ctx)
            if not await registration.register(self._shutdown):
                log.info("%s: stopped before Redis could be reached", self.name)
                return 0
            slot = self._slot = Slot(ctx, self._shutdown, changed=self._presence_changed)
            await self._announce(ctx, registration)
            self._tasks.spawn(self._detect_ip(ctx, slot), "public IP detection")
            await self._serve(ctx, Commands(ctx, slot))
            await self._shutdown.wait()
            await slot.shut_down()
            if self._server is not None:
                await self._server.stop()
            log.info("%s: agent stopped", self.name)
            return 0
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self._close()

    # --- startup ----------------------------------------------------------------

    async def _announce(self, ctx: AgentContext, registration: Registration) -> None:
        """Keep this agent's presence (docs/wire-format.md 2.4) fresh for as long as it runs.

        The slot is claimed only on `start`, so without presence an idle agent
        would look exactly like no agent at all: the dashboard could not show
        that a start would work. Should Redis lose the presence, it may have
        lost the catalog too: `registration.restore` puts the exchange back.

        The first write is made here, before any command is served: it is the
        agent's first script call, and a user that may not run scripts could
        claim the status key (a plain SET) but never heartbeat or update it.
        Such an agent stops at once, naming the refused command, instead of
        retrying for ever.

        Raises:
            StartupFailed: this user may not run the agent's scripts.
        """
        self._presence = AgentAnnouncer(
            ctx.redis,
            self.settings,
            exchange_id=self.options.exchange_id,
            exchange_name=self.name,
            state=lambda: self.state,
            hostname=self.hostname,
            clock=self._clock,
            on_lost=registration.restore,
            note=self._current_note,
        )
        try:
            await self._presence.publish()
        except ResponseError as exc:
            if is_acl_denial(exc):
                denied = access_denied(exc, "EVALSHA", self._presence.key)
                raise StartupFailed(
                    f"{denied}: the agent runs its heartbeat and presence as scripts"
                    " (docs/production-redis.md lists the rights it needs)"
                ) from None
            # Anything else (a wrong-type key, out of memory) is retried and
            # reported by the presence loop, like an outage.
        self._tasks.spawn(self._presence.run(), "presence")

    def _presence_changed(self) -> None:
        """The lifecycle state changed: tell readers now, not at the next refresh."""
        if self._presence is not None:
            self._presence.nudge()

    async def _serve(self, ctx: AgentContext, commands: Commands) -> None:
        """Start answering commands; with --autostart, run a start right away."""
        self._server = CommandServer(
            self.settings,
            self.options.exchange_id,
            self.name,
            commands.handle,
            identity=lambda: (self.hostname, ctx.ip),
            clock=self._clock,
            should_serve=commands.should_serve,
        )
        await self._server.start()
        log.info(
            "%s: idle, listening for commands (perseus start %d)",
            self.name,
            self.options.exchange_id,
        )
        if self.options.autostart:
            self._tasks.spawn(commands.autostart(self._shutdown, self._set_note), "autostart")
        else:
            standby = await commands.standby(" (a start is left to that holder)")
            if standby is not None:
                log.warning("%s: %s", self.name, standby)

    def _current_note(self) -> str | None:
        """The presence note: what the restart policy does (a pending restart,
        FATAL) comes first, then autostart's refusals."""
        slot_note = self._slot.note if self._slot is not None else None
        return slot_note or self._note

    def _set_note(self, note: str | None) -> None:
        """Show `note` in this agent's presence (where dashboards read it) now."""
        if note != self._note:
            self._note = note
            self._presence_changed()

    async def _detect_ip(self, ctx: AgentContext, slot: Slot) -> None:
        """Public IP in the background: the status says null until it is known."""
        ip = await detect_public_ip(self.settings)
        if ip is None:
            return
        ctx.ip = ip
        log.info("%s: public IP %s", self.name, ip)
        run = slot.run
        if run is not None and run.instance.lease.held:
            with contextlib.suppress(LeaseLost):  # the heartbeat's report fences the run
                await run.instance.set_ip(ip)

    # --- signals and exit -------------------------------------------------------

    def _on_signal(self, sig: signal.Signals) -> None:
        if sig == signal.SIGINT:
            self._sigint_count += 1
            if self._sigint_count > 1:
                self._force_exit()
                return
        log.info("%s: received %s", self.name, sig.name)
        if sig == signal.SIGINT and self._slot is not None and self._slot.run is not None:
            log.info("%s: stopping gracefully; Ctrl-C again to exit at once", self.name)
        self.request_stop()

    def _force_exit(self) -> None:
        """Second Ctrl-C: kill every process of the child and leave now; the key
        expires by TTL."""
        log.warning("%s: forced exit: child killed, the slot expires on its own", self.name)
        self.kill_child_now()
        logging.shutdown()
        os._exit(FORCED_EXIT)

    async def _close(self) -> None:
        """Last resort on every exit path: nothing keeps running, connections closed."""
        await self._tasks.aclose()
        if self._server is not None:
            with contextlib.suppress(*REDIS_ERRORS):
                await self._server.stop()
        if self._slot is not None:
            await self._slot.aclose()
        if self._presence is not None:
            # Only our own member: a standby's stays. (Its refresh task was
            # cancelled above, so nothing re-adds it.)
            await self._presence.withdraw()
            self._presence = None
        if self._ctx is not None:
            await self._ctx.redis.aclose()
            self._ctx = None
