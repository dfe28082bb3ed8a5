"""The slot as one agent holds it: at most one run at a time, changed under one lock.

Everything that changes the lifecycle (start, stop, recovery after a child
exit, fencing after a lost lease, shutdown) runs under `Slot.lock`, so two of
them never interleave. The long wait inside a start (the warm-up) is
interruptible: a lost lease, a dying child or a shutdown is acted on at once,
not after the warm-up.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from redis.exceptions import RedisError

from perseus_core.instance import Instance
from perseus_core.plumbing.tasks import wait_event
from perseus_core.runtime.context import AgentContext
from perseus_core.runtime.output import ChildOutput, OutputDrain, OutputLog
from perseus_core.runtime.run import Run
from perseus_core.runtime.supervisor import ChildProcess, child_environment, kill_deadline_ms
from perseus_core.store.lease import ClaimConflict, LeaseLost
from perseus_core.store.output import OutputWriter
from perseus_core.wire.errors import CommandRejected, RedisUnavailable
from perseus_core.wire.models import ConnectionState, ReplyStatus

log = logging.getLogger(__name__)

Reply = tuple[ReplyStatus, str, dict[str, Any]]
"""A command's outcome: status, message for the operator, and `Slot.describe()`."""


class Slot:
    """The agent's exchange slot: idle, or held by one `Run`.

    Args:
        ctx: the agent's shared context.
        shutdown: set when the agent is shutting down; a start is then refused
            and a warm-up in progress ends.
        changed: called after every state change (refreshes the agent's presence).
    """

    def __init__(
        self, ctx: AgentContext, shutdown: asyncio.Event, *, changed: Callable[[], None]
    ) -> None:
        self._ctx = ctx
        self._shutdown = shutdown
        self._changed = changed
        self.lock = asyncio.Lock()
        # Set by anything a warm-up must react to: child exit, lost lease, shutdown.
        self._wake = asyncio.Event()
        self._run: Run | None = None

    @property
    def run(self) -> Run | None:
        """The current run, if the slot is held (or being claimed)."""
        return self._run

    @property
    def state(self) -> ConnectionState:
        """The lifecycle state: idle whenever no run holds (or is claiming) the slot."""
        return self._run.state if self._run is not None else ConnectionState.IDLE

    @property
    def child(self) -> ChildProcess | None:
        """The supervised child of the current run, if any."""
        return self._run.child if self._run is not None else None

    def wake(self) -> None:
        """Interrupt a warm-up so it looks again at what it must react to."""
        self._wake.set()

    def describe(self) -> dict[str, Any]:
        """The `data` of every reply: state, host, pids and the run's epoch."""
        child = self.child
        return {
            "state": self.state.value,
            "hostname": self._ctx.hostname,
            "pid": os.getpid(),
            "childPid": child.pid if child is not None and child.returncode is None else None,
            "epoch": self._run.instance.lease.epoch if self._run is not None else None,
        }

    def reply(self, status: ReplyStatus, message: str) -> Reply:
        """A reply carrying the slot's description as it is now."""
        return status, message, self.describe()

    # --- start ------------------------------------------------------------------

    async def start(self, origin: str) -> Reply:
        """Claim the slot and bring the run up to active (under the lock).

        Raises:
            CommandRejected: the agent is shutting down, or the slot is not idle.
        """
        async with self.lock:
            return await self._start_locked(origin)

    def _new_instance(self) -> Instance:
        ctx = self._ctx
        return Instance(
            ctx.redis,
            ctx.settings,
            exchange_id=ctx.options.exchange_id,
            exchange_name=ctx.name,
            hostname=ctx.hostname,
            admin_email=ctx.options.admin_email,
            admin_display_name=ctx.options.admin_display_name,
            symbol_count=0,
            on_lease_lost=self._on_lease_lost,
            clock=ctx.clock,
        )

    async def _start_locked(self, origin: str) -> Reply:
        name = self._ctx.name
        if self._shutdown.is_set():
            raise CommandRejected(f"cannot start {name}: the agent is shutting down")
        if self._run is not None:
            raise CommandRejected(f"cannot start {name}: it is {self.state.value}")
        instance = self._new_instance()
        if self._ctx.ip is not None:
            await instance.set_ip(self._ctx.ip)  # memory only until the claim writes it
        try:
            await instance.claim()
        except (ClaimConflict, RedisUnavailable, RedisError) as exc:
            await instance.close()
            message = f"cannot start {name}: {exc}"
            log.error("%s: %s", name, message)
            if isinstance(exc, ClaimConflict):
                await self._ctx.append_error(message, ConnectionState.IDLE)
            return self.reply(ReplyStatus.ERROR, message)
        run = self._run = Run(self._ctx, instance, changed=self._changed, ended=self._ended)
        self._wake.clear()
        log.info("%s: claimed the slot, epoch %s (%s)", name, instance.lease.epoch, origin)
        try:
            ip = self._ctx.ip
            if ip is not None and instance.status.ip_address != ip:
                await instance.set_ip(ip)  # detected while the claim was in flight
            return await self._bring_up_locked(run)
        except LeaseLost as exc:
            return self.reply(ReplyStatus.ERROR, await run.fence(exc))
        except BaseException as exc:
            if not isinstance(exc, asyncio.CancelledError):
                log.exception("%s: start failed unexpectedly; undoing it", name)
            await run.abandon()
            raise

    async def _bring_up_locked(self, run: Run) -> Reply:
        """starting -> (spawn) -> warming -> (warm-up) -> active."""
        options = self._ctx.options
        await run.transition(ConnectionState.STARTING)
        if options.command:
            ttl_ms = self._ctx.settings.heartbeat_ttl_ms
            lease = run.instance.lease
            confirmed = lease.confirmed_at
            output = run.output = self._child_output(run)
            try:
                child = await ChildProcess.spawn(
                    options.command,
                    env=child_environment(os.environ, pass_env=options.pass_env),
                    deadline_ms=kill_deadline_ms(
                        time.monotonic() if confirmed is None else confirmed, ttl_ms
                    ),
                    drain=OutputDrain(output, on_end=output.ended),
                    cgroup=self._ctx.settings.child_cgroup,
                )
            except OSError as exc:
                output.ended()
                message = f"cannot run {options.command[0]!r}: {exc.strerror or exc}"
                await run.abort_start(message)
                return self.reply(ReplyStatus.ERROR, message)
            run.child = child
            log.info(
                "%s: child started (pid %d, %s)", self._ctx.name, child.pid, child.tree.describe()
            )
            self._ctx.tasks.spawn(self._watch_child(run, child), f"child {child.pid} watcher")

            def renew(confirmed_at: float) -> None:
                child.renew(kill_deadline_ms(confirmed_at, ttl_ms))

            # Every heartbeat Redis confirms moves the watchdog's deadline on; a
            # frozen agent confirms none, which is the point.
            run.instance.heartbeat.on_renewal(renew)
            latest = lease.confirmed_at
            if latest is not None and latest != confirmed:
                renew(latest)  # a heartbeat landed while the child was starting
        await run.transition(ConnectionState.WARMING)
        interrupted = await self._warm_up(run)
        if interrupted is not None:
            return self.reply(ReplyStatus.ERROR, interrupted)
        await run.instance.set_symbol_count(options.symbol_count)
        await run.transition(ConnectionState.ACTIVE)
        suffix = f" (child pid {run.child.pid})" if run.child is not None else ""
        return ReplyStatus.SUCCESS, f"{self._ctx.name} is active{suffix}", self.describe()

    def _child_output(self, run: Run) -> ChildOutput:
        """Where the child's lines go: the agent's log, and unless turned off
        (`perseus agent --no-output`) the exchange's output stream, written by
        a task of its own that ends once the child's pipes are closed."""
        ctx = self._ctx
        writer = None
        if ctx.settings.child_output:
            writer = OutputWriter(ctx.redis, ctx.settings, ctx.options.exchange_id, clock=ctx.clock)
            writer.note(f"child starting (epoch {run.instance.lease.epoch})")
            ctx.tasks.spawn(writer.run(), "child output writer")
        return ChildOutput(OutputLog(ctx.name), writer)

    async def _warm_up(self, run: Run) -> str | None:
        """Wait out the warm-up. Returns why the run ended meanwhile, or None."""
        deadline = time.monotonic() + self._ctx.options.warmup_s
        child = run.child
        while True:
            lost = run.instance.lease.lost
            if lost is not None:
                return await run.fence(lost)
            if child is not None and child.returncode is not None:
                return await run.child_exited(child.describe_exit())
            if self._shutdown.is_set():
                await run.stop()
                return f"start of {self._ctx.name} interrupted: the agent is shutting down"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self._wake.clear()
            await wait_event(self._wake, remaining)

    # --- stop -------------------------------------------------------------------

    async def stop(self) -> Reply:
        """Stop the current run (under the lock).

        Raises:
            CommandRejected: the slot is idle.
        """
        async with self.lock:
            run = self._run
            if run is None:
                raise CommandRejected(f"cannot stop {self._ctx.name}: it is idle")
            lost = run.instance.lease.lost
            if lost is not None:  # reported, its fencing queued behind this command
                return self.reply(ReplyStatus.ERROR, await run.fence(lost))
            message = await run.stop()
            return ReplyStatus.SUCCESS, message, self.describe()

    async def shut_down(self) -> None:
        """The agent is leaving: stop the run if any (fence it if its lease is lost)."""
        async with self.lock:
            run = self._run
            if run is None:
                return
            lost = run.instance.lease.lost
            if lost is not None:
                await run.fence(lost)
            else:
                log.info("%s: %s", self._ctx.name, await run.stop())

    def kill_child_now(self) -> None:
        """Forced exit: SIGKILL every process of the child without waiting."""
        child = self.child
        if child is not None:
            child.kill_now()

    async def aclose(self) -> None:
        """Last resort on every exit path: nothing of a run keeps running."""
        run = self._run
        self._run = None
        if run is not None:
            await run.aclose()

    # --- what ends a run on its own ---------------------------------------------

    def _ended(self, run: Run) -> None:
        if self._run is run:
            self._run = None
            self._changed()

    async def _watch_child(self, run: Run, child: ChildProcess) -> None:
        await child.wait()
        if child.stopping:
            return
        name = self._ctx.name
        outcome = child.describe_exit()
        log.error("%s: child (pid %d) %s on its own", name, child.pid, outcome)
        self._wake.set()
        async with self.lock:
            if self._run is not run or run.child is not child:
                return  # the start that was warming it up has dealt with it
            message = await run.child_exited(outcome)
            log.info("%s: %s; ready for another start", name, message)

    def _on_lease_lost(self, exc: LeaseLost) -> None:
        """From a run's instance: someone else holds the exchange now.

        The holder token in `exc` says whose lease it was: a report from an
        earlier run's instance is not about the current run.
        """
        run = self._run
        if run is None or run.instance.instance_id != exc.instance_id:
            return
        log.error("%s: %s; fencing", self._ctx.name, exc)
        self._wake.set()
        self._ctx.tasks.spawn(self._fence(run, exc), "fencing")

    async def _fence(self, run: Run, exc: LeaseLost) -> None:
        async with self.lock:
            if self._run is run:
                await run.fence(exc)
