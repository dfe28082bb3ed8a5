"""The instance runtime behind `perseus agent`.

An agent owns one exchange slot *on request*: it sits idle (claiming nothing,
so the slot stays free for another host) until a `start` command arrives,
then claims the slot, walks the lifecycle to `active` and, when given a
command line, runs it as the instance's process. `stop`, a child that dies,
a lost lease or a signal bring it back to idle.

Everything that changes the lifecycle (start, stop, recovery after a child
exit, fencing after a lost lease, shutdown) runs under one lock, so two of
them never interleave. The long wait inside a start (the warm-up) is
interruptible: a lost lease, a dying child or a signal is acted on at once,
not after the warm-up.

Each run (claim to release) gets a fresh `Instance`: a new owner token, a
lifecycle that starts at idle, and, after a lost lease, nothing to undo: the
fenced run's instance is dropped without one more write to a key that
belongs to someone else now.

Redis outages are absorbed below the agent: the instance's heartbeat retries
and re-creates a vanished key when the slot is still free (or reports the
lease lost when it is not), transitions made meanwhile reach the key on the
next heartbeat, and the command server reconnects and resumes where it was.

Idle or not, the agent announces itself for as long as it runs (presence,
WIRE.md 2.4: refreshed every heartbeat interval and on every state change,
removed on a graceful exit, expired by its TTL after a kill), so an exchange
whose slot is free still shows that a `start` would be answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import AuthenticationError, RedisError, ResponseError

from perseus_core.instance import Instance
from perseus_core.plumbing.connection import connect, describe_redis_error
from perseus_core.plumbing.errors import TRANSIENT_ERRORS
from perseus_core.runtime.public_ip import detect_public_ip
from perseus_core.runtime.supervisor import ChildProcess, describe_exit
from perseus_core.store.activity import ActivityLog
from perseus_core.store.control import CommandServer, HandlerResult
from perseus_core.store.lease import ClaimConflict, LeaseLost
from perseus_core.store.network import NetworkReader
from perseus_core.store.presence import AgentAnnouncer
from perseus_core.wire import keys
from perseus_core.wire.errors import CommandRejected, PayloadError, PerseusError, RedisUnavailable
from perseus_core.wire.models import (
    CatalogEntry,
    Command,
    CommandType,
    ConnectionState,
    ErrorEntry,
    InstanceStatus,
    ReplyStatus,
)
from perseus_core.wire.settings import Settings
from perseus_core.wire.text import clean
from perseus_core.wire.timeutil import Clock, format_ts, system_clock

log = logging.getLogger("perseus.agent")

FORCED_EXIT = 130
"""Exit code after a second Ctrl-C (128 + SIGINT, as shells report it)."""

_BACKOFF_START_S = 0.2
_BACKOFF_MAX_S = 5.0
_IDLE = ConnectionState.IDLE


class StartupFailed(PerseusError):
    """The agent could not get going: Redis unreachable past the startup
    timeout, or refusing the credentials (retrying would not help)."""


@dataclass(frozen=True, slots=True)
class AgentOptions:
    """What `perseus agent` was asked to run.

    Attributes:
        exchange_id: the slot.
        exchange_name: the exchange's name (validated by the caller).
        display_name: catalog display name; defaults to the name.
        command: the child command line run while the slot is held; empty for none.
        autostart: run a start as soon as the agent is listening.
        symbol_count: `symbolCount` reported once active.
        warmup_s: time spent in `warming`; a child must survive it.
        admin_email: operator identity written in the status.
        admin_display_name: operator display name written in the status.
        startup_timeout_s: give up when Redis is still unreachable after this
            long at startup; None keeps trying (a service manager may start
            the agent before Redis, and the agent must not die for that).
        hostname: reported hostname; defaults to this machine's.
    """

    exchange_id: int
    exchange_name: str
    display_name: str | None = None
    command: Sequence[str] = ()
    autostart: bool = False
    symbol_count: int = 0
    warmup_s: float = 2.0
    admin_email: str | None = None
    admin_display_name: str | None = None
    startup_timeout_s: float | None = None
    hostname: str | None = None


class Agent:
    """One exchange slot's agent: `await run()` until a signal or `request_stop()`."""

    def __init__(
        self, settings: Settings, options: AgentOptions, *, clock: Clock = system_clock
    ) -> None:
        self.settings = settings
        self.options = options
        self.name = options.exchange_name
        self.hostname = options.hostname or socket.gethostname()
        self._clock = clock
        self._grace_s = settings.stop_grace_ms / 1000
        self._redis: Redis | None = None
        self._activity: ActivityLog | None = None
        self._server: CommandServer | None = None
        self._instance: Instance | None = None
        self._child: ChildProcess | None = None
        self._ip: str | None = None
        self._presence: AgentAnnouncer | None = None
        self._lock = asyncio.Lock()
        self._shutdown = asyncio.Event()
        # Set by anything a warm-up must react to: child exit, lost lease, shutdown.
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sigint_count = 0

    # --- public surface ---------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """The lifecycle state: idle whenever no run holds (or is claiming) the slot."""
        return self._instance.state if self._instance is not None else _IDLE

    @property
    def child(self) -> ChildProcess | None:
        """The supervised child of the current run, if any."""
        return self._child

    def request_stop(self) -> None:
        """Ask for a graceful shutdown: stop the run if any, release, return from `run()`."""
        if not self._shutdown.is_set():
            log.info("%s: shutting down", self.name)
        self._shutdown.set()
        self._wake.set()

    def run_forever(self) -> int:
        """Run in a fresh event loop; returns the process exit code (0 after a graceful stop).

        Raises:
            StartupFailed: see `run`.
        """
        return asyncio.run(self.run())

    async def run(self) -> int:
        """Connect, register in the catalog, serve commands until asked to stop.

        SIGTERM and SIGINT are handled while this runs (when called in the main
        thread): the first stops gracefully, a second SIGINT exits at once.

        Returns:
            0 after a graceful stop.

        Raises:
            StartupFailed: Redis refused the credentials, or stayed unreachable
                past `AgentOptions.startup_timeout_s`.
        """
        loop = asyncio.get_running_loop()
        installed = self._install_signal_handlers(loop)
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
            if not await self._connect():
                log.info("%s: stopped before Redis could be reached", self.name)
                return 0
            self._announce()
            self._spawn(self._detect_ip(), "public IP detection")
            await self._serve()
            await self._shutdown.wait()
            await self._graceful_stop()
            log.info("%s: agent stopped", self.name)
            return 0
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self._close()

    # --- startup ----------------------------------------------------------------

    async def _connect(self) -> bool:
        """Open the client and put the exchange in the catalog, retrying while Redis
        is unreachable. Returns False if a stop was requested meanwhile."""
        started = time.monotonic()
        delay = _BACKOFF_START_S
        self._redis = connect(self.settings)
        self._activity = ActivityLog(self._redis, self.settings)
        reader = NetworkReader(self._redis, self.settings)
        entry = self._catalog_entry()
        failures = 0
        while True:
            try:
                await self._redis.ping()
                added = await reader.add_to_catalog(entry, overwrite=False)
                if not added:
                    await self._check_catalog_name()
            except (AuthenticationError, ResponseError) as exc:
                # Wrong password, NOAUTH, an ACL denial: waiting will not fix it.
                raise StartupFailed(describe_redis_error(self.settings, exc)) from None
            except TRANSIENT_ERRORS as exc:
                failures += 1
                waited = time.monotonic() - started
                limit = self.options.startup_timeout_s
                problem = describe_redis_error(self.settings, exc)
                if limit is not None and waited >= limit:
                    raise StartupFailed(f"{problem} (gave up after {waited:.1f}s)") from None
                log.warning(
                    "%s: waiting for Redis (attempt %d): %s; retrying in %.1fs",
                    self.name,
                    failures,
                    problem,
                    delay,
                )
                if await self._sleep_unless_stopping(delay):
                    return False
                delay = min(_BACKOFF_MAX_S, delay * 2)
                continue
            if failures:
                log.info("%s: Redis reachable after %d attempt(s)", self.name, failures + 1)
            if added:
                log.info("%s: added exchange %d to the catalog", self.name, entry.id)
            return True

    def _catalog_entry(self) -> CatalogEntry:
        return CatalogEntry(
            id=self.options.exchange_id,
            name=self.name,
            display_name=self.options.display_name or self.name,
            is_active=True,
        )

    async def _restore_catalog(self) -> None:
        """Redis lost this agent's presence: if it lost the catalog too (a restart
        without persistence), put the exchange back so dashboards list it.

        Never overwrites: an operator's entry stays as it is.
        """
        reader = NetworkReader(self._require_redis(), self.settings)
        if await reader.add_to_catalog(self._catalog_entry(), overwrite=False):
            log.warning(
                "%s: Redis had lost this exchange's catalog entry (restarted without "
                "persistence?); added exchange %d again",
                self.name,
                self.options.exchange_id,
            )

    def _announce(self) -> None:
        """Keep this agent's presence (WIRE.md 2.4) fresh for as long as it runs.

        The slot is claimed only on `start`, so without presence an idle agent
        would look exactly like no agent at all: the dashboard could not show
        that a start would work.
        """
        self._presence = AgentAnnouncer(
            self._require_redis(),
            self.settings,
            exchange_id=self.options.exchange_id,
            exchange_name=self.name,
            state=lambda: self.state,
            hostname=self.hostname,
            clock=self._clock,
            on_lost=self._restore_catalog,
        )
        self._spawn(self._presence.run(), "presence")

    def _presence_changed(self) -> None:
        """The lifecycle state changed: tell readers now, not at the next refresh."""
        if self._presence is not None:
            self._presence.nudge()

    async def _check_catalog_name(self) -> None:
        """Warn when the operator's catalog entry names this slot differently:
        the dashboard would show one name and the activity stream another."""
        raw = await self._require_redis().hget(keys.CATALOG_KEY, str(self.options.exchange_id))
        if raw is None:
            return
        try:
            listed = CatalogEntry.from_json(raw)
        except PayloadError as exc:
            log.warning(
                "%s: the catalog entry of exchange %d is unreadable: %s",
                self.name,
                self.options.exchange_id,
                exc,
            )
            return
        if listed.name.lower() != self.name.lower():
            log.warning(
                "%s: the catalog lists exchange %d as %r; this agent runs it as %r",
                self.name,
                self.options.exchange_id,
                clean(listed.name, 64),
                self.name,
            )

    async def _serve(self) -> None:
        """Start answering commands; with --autostart, run a start right away."""
        self._server = CommandServer(
            self.settings,
            self.options.exchange_id,
            self.name,
            self._handle,
            identity=lambda: (self.hostname, self._ip),
            clock=self._clock,
            should_serve=self._should_serve,
        )
        await self._server.start()
        log.info(
            "%s: idle, listening for commands (perseus start %d)",
            self.name,
            self.options.exchange_id,
        )
        if self.options.autostart:
            self._spawn(self._autostart(), "autostart")

    async def _autostart(self) -> None:
        try:
            status, message, _ = await self._run_command(CommandType.START, "autostart")
        except CommandRejected as exc:  # a command got there first, or shutting down
            status, message = ReplyStatus.ERROR, str(exc)
        if status is ReplyStatus.ERROR:
            log.error("%s: autostart failed: %s", self.name, message)

    async def _detect_ip(self) -> None:
        """Public IP in the background: the status says null until it is known."""
        ip = await detect_public_ip(self.settings)
        if ip is None:
            return
        self._ip = ip
        log.info("%s: public IP %s", self.name, ip)
        instance = self._instance
        if instance is not None and instance.holds_lease:
            with contextlib.suppress(LeaseLost):  # the heartbeat's report fences the run
                await instance.set_ip(ip)

    # --- commands ---------------------------------------------------------------

    async def _should_serve(self, command: Command) -> bool:
        """Leave a command to the agent that holds the slot, when another one does.

        Two agents may watch the same exchange (a standby on another host).
        Whichever reads a command first would run it; the holder is the one
        that can answer `stop` or `ping` truthfully, so an idle agent steps
        aside while the status key names a Perseus holder other than itself.
        """
        if self._instance is not None:
            return True
        raw = await self._require_redis().get(keys.status_key(self.options.exchange_id))
        if raw is None:
            return True
        try:
            holder = InstanceStatus.from_json(raw)
        except PayloadError:
            return True
        if holder.instance_id is None:  # another implementation: no agent of ours there
            return True
        if holder.hostname == self.hostname and holder.pid == os.getpid():
            return True  # a key of ours that outlived its run (release did not reach Redis)
        log.debug(
            "%s: leaving %s %s to the holder %s",
            self.name,
            command.type,
            command.correlation_id,
            holder.instance_id,
        )
        return False

    async def _handle(self, command: Command) -> HandlerResult:
        """Command server handler: one command at a time, in order."""
        operator = command.operator or "unknown operator"
        log.info(
            "%s: command %s from %s (%s)",
            self.name,
            command.type,
            clean(operator, 100),
            command.correlation_id,
        )
        try:
            status, message, data = await self._run_command(command.type, operator)
        except CommandRejected as exc:
            log.warning("%s: %s rejected: %s", self.name, command.type, exc)
            raise
        log.log(
            logging.INFO if status is ReplyStatus.SUCCESS else logging.WARNING,
            "%s: %s -> %s: %s",
            self.name,
            command.type,
            status.value,
            message,
        )
        return status, message, data

    async def _run_command(self, kind: str, origin: str) -> tuple[ReplyStatus, str, dict[str, Any]]:
        if kind == CommandType.PING:
            return ReplyStatus.SUCCESS, f"{self.name} is {self.state.value}", self._describe()
        if kind == CommandType.START:
            async with self._lock:
                return await self._start_locked(origin)
        if kind == CommandType.STOP:
            async with self._lock:
                return await self._stop_command_locked()
        raise CommandRejected(f"unknown command {clean(kind, 64)!r} (expected start, stop or ping)")

    def _describe(self) -> dict[str, Any]:
        child = self._child
        instance = self._instance
        return {
            "state": self.state.value,
            "hostname": self.hostname,
            "pid": os.getpid(),
            "childPid": child.pid if child is not None and child.returncode is None else None,
            "epoch": instance.epoch if instance is not None else None,
        }

    def _idle_reply(
        self, status: ReplyStatus, message: str
    ) -> tuple[ReplyStatus, str, dict[str, Any]]:
        return status, message, self._describe()

    # --- start ------------------------------------------------------------------

    def _new_instance(self) -> Instance:
        instance: Instance | None = None

        def lease_lost(exc: LeaseLost) -> None:
            if instance is not None:
                self._on_lease_lost(instance, exc)

        instance = Instance(
            self._require_redis(),
            self.settings,
            exchange_id=self.options.exchange_id,
            exchange_name=self.name,
            hostname=self.hostname,
            admin_email=self.options.admin_email,
            admin_display_name=self.options.admin_display_name,
            symbol_count=0,
            on_lease_lost=lease_lost,
            clock=self._clock,
        )
        return instance

    async def _start_locked(self, origin: str) -> tuple[ReplyStatus, str, dict[str, Any]]:
        if self._shutdown.is_set():
            raise CommandRejected(f"cannot start {self.name}: the agent is shutting down")
        if self._instance is not None:
            raise CommandRejected(f"cannot start {self.name}: it is {self.state.value}")
        instance = self._new_instance()
        if self._ip is not None:
            await instance.set_ip(self._ip)  # memory only until the claim writes it
        try:
            await instance.claim()
        except ClaimConflict as exc:
            await instance.close()
            message = f"cannot start {self.name}: {exc}"
            log.error("%s: %s", self.name, message)
            await self._append_error(message, _IDLE)
            return self._idle_reply(ReplyStatus.ERROR, message)
        except (RedisUnavailable, RedisError) as exc:
            await instance.close()
            message = f"cannot start {self.name}: {exc}"
            log.error("%s: %s", self.name, message)
            return self._idle_reply(ReplyStatus.ERROR, message)
        self._instance = instance
        self._wake.clear()
        log.info("%s: claimed the slot, epoch %s (%s)", self.name, instance.epoch, origin)
        try:
            if self._ip is not None and instance.status.ip_address != self._ip:
                await instance.set_ip(self._ip)  # detected while the claim was in flight
            return await self._bring_up_locked(instance)
        except LeaseLost as exc:
            message = await self._fence_locked(instance, exc)
            return self._idle_reply(ReplyStatus.ERROR, message)
        except BaseException as exc:
            # A bug or a cancellation half-way: leave nothing running or held
            # behind, so the agent is idle (and startable) rather than stuck.
            if not isinstance(exc, asyncio.CancelledError):
                log.exception("%s: start failed unexpectedly; undoing it", self.name)
            self._instance = None
            self._presence_changed()
            await self._stop_child()
            with contextlib.suppress(Exception):
                await instance.close()
            raise

    async def _bring_up_locked(self, instance: Instance) -> tuple[ReplyStatus, str, dict[str, Any]]:
        """starting -> (spawn) -> warming -> (warm-up) -> active."""
        await self._transition(instance, ConnectionState.STARTING)
        child: ChildProcess | None = None
        if self.options.command:
            try:
                child = await ChildProcess.spawn(self.options.command)
            except OSError as exc:
                message = f"cannot run {self.options.command[0]!r}: {exc.strerror or exc}"
                await self._abort_start_locked(instance, message)
                return self._idle_reply(ReplyStatus.ERROR, message)
            self._child = child
            log.info("%s: child started (pid %d)", self.name, child.pid)
            self._spawn(self._watch_child(instance, child), f"child {child.pid} watcher")
        await self._transition(instance, ConnectionState.WARMING)
        interrupted = await self._warm_up(instance, child)
        if interrupted is not None:
            return self._idle_reply(ReplyStatus.ERROR, interrupted)
        await instance.set_symbol_count(self.options.symbol_count)
        await self._transition(instance, ConnectionState.ACTIVE)
        suffix = f" (child pid {child.pid})" if child is not None else ""
        return ReplyStatus.SUCCESS, f"{self.name} is active{suffix}", self._describe()

    async def _warm_up(self, instance: Instance, child: ChildProcess | None) -> str | None:
        """Wait out the warm-up. Returns why the run ended meanwhile, or None."""
        deadline = time.monotonic() + self.options.warmup_s
        while True:
            lost = instance.lease_lost
            if lost is not None:
                return await self._fence_locked(instance, lost)
            if child is not None and child.returncode is not None:
                return await self._child_exited_locked(instance, child, child.returncode)
            if self._shutdown.is_set():
                await self._stop_run_locked(instance)
                return f"start of {self.name} interrupted: the agent is shutting down"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=remaining)

    async def _abort_start_locked(self, instance: Instance, message: str) -> None:
        """A start that failed before warming: error entry, starting -> idle, release."""
        log.error("%s: %s", self.name, message)
        await instance.record_error(message)
        await self._transition(instance, _IDLE)
        await self._release_locked(instance)

    # --- stop -------------------------------------------------------------------

    async def _stop_command_locked(self) -> tuple[ReplyStatus, str, dict[str, Any]]:
        instance = self._instance
        if instance is None:
            raise CommandRejected(f"cannot stop {self.name}: it is idle")
        lost = instance.lease_lost
        if lost is not None:  # reported, its fencing queued behind this command
            return self._idle_reply(ReplyStatus.ERROR, await self._fence_locked(instance, lost))
        message = await self._stop_run_locked(instance)
        return ReplyStatus.SUCCESS, message, self._describe()

    async def _stop_run_locked(self, instance: Instance) -> str:
        """stopping -> stop the child -> stopped -> idle -> release."""
        try:
            await self._transition(instance, ConnectionState.STOPPING)
            outcome = await self._stop_child()
            await self._transition(instance, ConnectionState.STOPPED)
            await self._transition(instance, _IDLE)
            await self._release_locked(instance)
        except LeaseLost as exc:
            return await self._fence_locked(instance, exc)
        return f"{self.name} stopped" + (f" (child {outcome})" if outcome else "")

    async def _release_locked(self, instance: Instance) -> None:
        """Give the slot back and forget the run. Raises LeaseLost (caller fences)."""
        if instance.lease_lost is not None:
            raise instance.lease_lost
        await instance.release()
        self._instance = None
        await instance.close()
        log.info("%s: released the slot; idle", self.name)

    async def _stop_child(self) -> str | None:
        """SIGTERM the child's group, SIGKILL after the grace; its exit, described."""
        child = self._child
        if child is None:
            return None
        self._child = None
        running = child.returncode is None
        if running:
            log.info(
                "%s: stopping child (pid %d): SIGTERM, SIGKILL after %gs",
                self.name,
                child.pid,
                self._grace_s,
            )
        code = await child.terminate(self._grace_s)  # also clears what it left in its group
        outcome = describe_exit(code)
        if running:
            log.info("%s: child (pid %d) %s", self.name, child.pid, outcome)
        return outcome

    # --- what ends a run on its own ---------------------------------------------

    async def _watch_child(self, instance: Instance, child: ChildProcess) -> None:
        code = await child.wait()
        if child.stopping:
            return
        log.error("%s: child (pid %d) %s on its own", self.name, child.pid, describe_exit(code))
        self._wake.set()
        async with self._lock:
            if self._child is not child or self._instance is not instance:
                return  # the start that was warming it up has dealt with it
            message = await self._child_exited_locked(instance, child, code)
            log.info("%s: %s; ready for another start", self.name, message)

    async def _child_exited_locked(self, instance: Instance, child: ChildProcess, code: int) -> str:
        """Record the exit, walk back to idle through valid transitions, release."""
        if instance.lease_lost is not None:
            return await self._fence_locked(instance, instance.lease_lost)
        state = instance.state
        message = f"child command {describe_exit(code)} while {state.value}"
        await self._stop_child()  # whatever it left in its process group
        try:
            await instance.record_error(message)
            if state is ConnectionState.ACTIVE:
                await self._transition(instance, ConnectionState.STOPPING)
                await self._transition(instance, ConnectionState.STOPPED)
            await self._transition(instance, _IDLE)
            await self._release_locked(instance)
        except LeaseLost as exc:
            await self._fence_locked(instance, exc)
        return message

    def _on_lease_lost(self, instance: Instance, exc: LeaseLost) -> None:
        """From the instance's heartbeat: someone else holds the slot now."""
        if instance is not self._instance:
            return
        log.error("%s: %s; fencing", self.name, exc)
        self._wake.set()
        self._spawn(self._fence(instance, exc), "fencing")

    async def _fence(self, instance: Instance, exc: LeaseLost) -> None:
        async with self._lock:
            if self._instance is instance:
                await self._fence_locked(instance, exc)

    async def _fence_locked(self, instance: Instance, exc: LeaseLost) -> str:
        """Stop the child at once and drop the run without touching the status key.

        The key belongs to the new holder; the instance has already recorded
        the loss in the activity stream. No transitions are written for the
        dropped run: in the shared stream they would read as the exchange
        stopping while the new holder runs it. One error entry says what this
        agent did about it.
        """
        state = instance.state
        self._instance = None
        self._presence_changed()
        outcome = await self._stop_child()
        with contextlib.suppress(Exception):
            await instance.close()  # heartbeat already stopped; no write to the key
        message = f"fenced after losing the slot while {state.value}" + (
            f": child {outcome}" if outcome else ""
        )
        await self._append_error(f"{message}; this agent is idle", state)
        log.error("%s: %s; idle", self.name, message)
        return message

    # --- shutdown ---------------------------------------------------------------

    async def _graceful_stop(self) -> None:
        async with self._lock:
            instance = self._instance
            if instance is not None:
                lost = instance.lease_lost
                if lost is not None:
                    await self._fence_locked(instance, lost)
                else:
                    log.info("%s: %s", self.name, await self._stop_run_locked(instance))
        if self._server is not None:
            await self._server.stop()

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> list[signal.Signals]:
        installed = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, self._on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):  # not Unix / not main thread
                continue
            installed.append(sig)
        return installed

    def _on_signal(self, sig: signal.Signals) -> None:
        if sig == signal.SIGINT:
            self._sigint_count += 1
            if self._sigint_count > 1:
                self._force_exit()
                return
        log.info("%s: received %s", self.name, sig.name)
        if sig == signal.SIGINT and self._instance is not None:
            log.info("%s: stopping gracefully; Ctrl-C again to exit at once", self.name)
        self.request_stop()

    def _force_exit(self) -> None:
        """Second Ctrl-C: kill the child's group and leave now; the key expires by TTL."""
        log.warning("%s: forced exit: child killed, the slot expires on its own", self.name)
        if self._child is not None:
            self._child.kill_now()
        logging.shutdown()
        os._exit(FORCED_EXIT)

    async def _close(self) -> None:
        """Last resort on every exit path: nothing keeps running, connections closed."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            with contextlib.suppress(Exception):
                await self._server.stop()
        if self._child is not None:
            await self._child.aclose()
            self._child = None
        if self._instance is not None:
            with contextlib.suppress(Exception):
                await self._instance.close()
            self._instance = None
        if self._presence is not None:
            # Only our own member: a standby's stays. (Its refresh task was
            # cancelled above, so nothing re-adds it.)
            await self._presence.withdraw()
            self._presence = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    # --- helpers ----------------------------------------------------------------

    async def _transition(self, instance: Instance, to: ConnectionState) -> None:
        """One lifecycle step, logged. Raises LeaseLost, without writing anything,
        once the run's lease is known to be lost: the caller fences instead."""
        if instance.lease_lost is not None:
            raise instance.lease_lost
        before = instance.state
        publication = await instance.transition(to)
        self._presence_changed()
        log.info(
            "%s: %s -> %s%s",
            self.name,
            before.value,
            to.value,
            "" if publication.ok else " (Redis catches up when it answers again)",
        )

    async def _append_error(self, message: str, state: ConnectionState) -> None:
        """An error entry for a run that does not (or no longer) hold the slot,
        and so must not write its status key."""
        if self._activity is None:
            return
        entry = ErrorEntry(
            timestamp=format_ts(self._clock()),
            error=message,
            exchange_id=str(self.options.exchange_id),
            exchange_name=self.name,
            hostname=self.hostname,
            ip=self._ip or "",
            state=state.value,
        )
        try:
            await self._activity.append(self.name, entry)
        except TRANSIENT_ERRORS as exc:
            log.error(
                "%s: error not recorded in the activity stream: %s",
                self.name,
                describe_redis_error(self.settings, exc),
            )

    async def _sleep_unless_stopping(self, seconds: float) -> bool:
        """Sleep; True (early) if a stop was requested."""
        try:
            await asyncio.wait_for(self._shutdown.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True

    def _spawn(self, coro: Coroutine[Any, Any, Any], what: str) -> None:
        task = asyncio.create_task(coro, name=f"{self.name} {what}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("%s: %s failed: %s", self.name, task.get_name(), exc, exc_info=exc)

    def _require_redis(self) -> Redis:
        if self._redis is None:
            raise RuntimeError("the agent is not connected")
        return self._redis
