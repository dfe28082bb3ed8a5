"""The slot as one agent holds it: at most one run at a time, changed under one lock.

Everything that changes the lifecycle (start, stop, recovery after a child
exit, fencing after a lost lease, shutdown, an automatic restart) runs under
`Slot.lock`, so two of them never interleave. The long wait inside a start
(the warm-up, or the readiness probes) is interruptible: a lost lease, a
dying child or a shutdown is acted on at once, not after the warm-up.

Every run that ends without an operator (or a shutdown) asking for it is
put to the restart policy (`restarts`): the slot then waits out the backoff
with the slot released (another host's agent may take it meanwhile), and
starts again with a fresh claim, which decides whether the slot is still
free. An operator's `start` or `stop` cancels a pending restart and clears
FATAL.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from perseus_core.runtime.probes import Probe, ProbeFailed, check_all, probes
from perseus_core.runtime.restarts import Action, Decision, RestartPolicy, Restarts
from perseus_core.runtime.run import Run
from perseus_core.runtime.supervisor import ChildProcess, child_environment, kill_deadline_ms
from perseus_core.store.lease import ClaimConflict, LeaseLost
from perseus_core.store.output import OutputWriter
from perseus_core.store.wanted import may_start_on_its_own
from perseus_core.wire.errors import CommandRejected, RedisUnavailable
from perseus_core.wire.models import ConnectionState, ReplyStatus, restart_words
from perseus_core.wire.models.catalog import FATAL_NOTE_PREFIX
from perseus_core.wire.text import clean

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
        options = ctx.options
        self.restarts = Restarts(
            RestartPolicy(
                options.restart,
                options.backoff_max_s,
                options.start_secs,
                options.start_retries,
            )
        )
        self.note: str | None = None
        """What the restart policy is doing (a pending restart, FATAL), for the
        agent's presence note; None when nothing."""
        self.last_start_claimed = False
        """Whether the latest start claimed the slot (its failure is then the
        restart policy's to handle, not autostart's)."""
        self._generation = 0
        self._pending: asyncio.Event | None = None
        self._ready = probes(
            options.ready_cmd, options.ready_tcp, options.ready_http, options.ready_file
        )
        self._health = probes(
            options.health_cmd, options.health_tcp, options.health_http, options.health_file
        )

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
        if self._shutdown.is_set():
            self.cancel_restart()

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
        # An operator's (or autostart's) word wins over a pending restart: its
        # wait ends now, and one that a start in progress schedules is dropped.
        self.cancel_restart()
        async with self.lock:
            if self._run is None:
                self.cancel_restart()
                self.restarts.reset()
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

    async def _start_locked(self, origin: str, *, automatic: bool = False) -> Reply:
        name = self._ctx.name
        if self._shutdown.is_set():
            raise CommandRejected(f"cannot start {name}: the agent is shutting down")
        if self._run is not None:
            raise CommandRejected(f"cannot start {name}: it is {self.state.value}")
        self.last_start_claimed = False
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
            if automatic:
                await self._act(self.restarts.claim_refused(clean(exc, 200)))
            return self.reply(ReplyStatus.ERROR, message)
        self.last_start_claimed = True
        run = self._run = Run(self._ctx, instance, changed=self._changed, ended=self._ended)
        self._wake.clear()
        log.info("%s: claimed the slot, epoch %s (%s)", name, instance.lease.epoch, origin)
        try:
            ip = self._ctx.ip
            if ip is not None and instance.status.ip_address != ip:
                await instance.set_ip(ip)  # detected while the claim was in flight
            return await self._bring_up_locked(run)
        except LeaseLost as exc:
            message = await run.fence(exc)
            return self.reply(ReplyStatus.ERROR, message + await self._after(run, True, message))
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
                return self.reply(
                    ReplyStatus.ERROR, message + await self._after(run, True, message)
                )
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
        if self._health:
            self._ctx.tasks.spawn(self._watch_health(run), "health probes")
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
        """Wait out the warm-up, or until the readiness probes pass. Returns why
        the run ended meanwhile (with what the restart policy does about it), or None."""
        options = self._ctx.options
        timeout_s = options.ready_timeout_s if self._ready else options.warmup_s
        started = time.monotonic()
        deadline = started + timeout_s
        child = run.child
        probing: asyncio.Task[None] | None = None
        next_probe = started
        reason = "no probe has answered yet"
        try:
            while True:
                self._wake.clear()
                lost = run.instance.lease.lost
                if lost is not None:
                    message = await run.fence(lost)
                    return message + await self._after(run, True, message)
                if child is not None and child.returncode is not None:
                    message = await run.child_exited(child.describe_exit())
                    return message + await self._after(run, child.returncode != 0, message)
                if self._shutdown.is_set():
                    await run.stop()
                    return f"start of {self._ctx.name} interrupted: the agent is shutting down"
                now = time.monotonic()
                if probing is not None and probing.done():
                    failure = probing.exception()
                    probing = None
                    if failure is None:
                        log.info("%s: ready after %.1fs", self._ctx.name, now - started)
                        return None
                    reason = clean(failure, 300)
                    next_probe = now + options.probe_interval_s
                if now >= deadline:
                    if not self._ready:
                        return None
                    message = await run.fail(f"not ready after {timeout_s:g}s: {reason}")
                    return message + await self._after(run, True, message)
                if self._ready and probing is None and now >= next_probe:
                    probing = asyncio.create_task(self._probe(self._ready))
                    probing.add_done_callback(lambda _: self._wake.set())
                wait = deadline - now
                if self._ready and probing is None:
                    wait = min(wait, next_probe - now)
                await wait_event(self._wake, wait)
        finally:
            if probing is not None and not probing.done():
                probing.cancel()
                with contextlib.suppress(asyncio.CancelledError, ProbeFailed):
                    await probing

    async def _probe(self, checks: list[Probe]) -> None:
        """One round of `checks`. Raises ProbeFailed, with anything unexpected
        turned into one (a probe must not end the run by a bug of its own)."""
        try:
            await check_all(checks, self._ctx.options.probe_timeout_s)
        except ProbeFailed:
            raise
        except Exception as exc:
            log.exception("%s: a probe failed unexpectedly", self._ctx.name)
            raise ProbeFailed(f"{type(exc).__name__}: {clean(exc, 200)}") from None

    async def _watch_health(self, run: Run) -> None:
        """While `run` is active: the health probes every interval; after
        `health_failures` failed rounds in a row an error entry and, with
        `health_restart`, the run ended and put to the restart policy."""
        options = self._ctx.options
        failures = 0
        while not await wait_event(run.over, options.probe_interval_s):
            try:
                await self._probe(self._health)
            except ProbeFailed as exc:
                failures += 1
                if failures == options.health_failures:
                    message = f"health check failed {failures} times in a row: {clean(exc, 300)}"
                    log.error("%s: %s", self._ctx.name, message)
                    if options.health_restart:
                        self._ctx.tasks.spawn(self._unhealthy(run, message), "health restart")
                        return
                    async with self.lock:
                        if self._run is run and run.state is ConnectionState.ACTIVE:
                            with contextlib.suppress(LeaseLost):  # the heartbeat fences it
                                await run.instance.record_error(message)
                continue
            if failures >= options.health_failures:
                log.info("%s: health check passes again", self._ctx.name)
            failures = 0

    async def _unhealthy(self, run: Run, message: str) -> None:
        async with self.lock:
            if self._run is not run or run.state is not ConnectionState.ACTIVE:
                return
            ended = await run.fail(message + "; restarting the child")
            await self._after(run, True, ended)

    # --- the restart policy -------------------------------------------------------

    async def _may_restart(self) -> bool:
        """Whether an automatic (re)start may go ahead now; asked before each one.

        An operator who stopped the exchange, from any host and whichever
        agent ran it (`perseus:wanted:{id}`, docs/wire-format.md 2.6), calls
        it off: returning False drops the pending restart, until their
        `start`. A record that cannot be read says nothing (`read_wanted`).
        """
        ctx = self._ctx
        stopped = await may_start_on_its_own(ctx.redis, ctx.options.exchange_id)
        if stopped is None:
            return True
        log.info("%s: not restarting: %s", ctx.name, stopped.describe(ctx.clock()))
        return False

    async def _after(self, run: Run, failed: bool, outcome: str) -> str:
        """A run ended on its own (`failed`, `outcome` say how): ask the restart
        policy and act on it. Returns what it does, to append to a reply."""
        if self._shutdown.is_set():
            return ""
        decision = self.restarts.run_ended(
            failed=failed,
            outcome=clean(outcome, 300),
            ran_s=run.ran_s,
            reached_active=run.reached_active,
        )
        return await self._act(decision, run_ended=True)

    async def _act(self, decision: Decision, *, run_ended: bool = False) -> str:
        """Carry out the policy's decision. A restart after a run that ended
        (`run_ended`) is recorded in a `restart` entry, which the feed, `perseus
        log` and the exporter's restart counter read; a retried refused
        claim is not (no run ended: its error entry, if any, says why)."""
        name = self._ctx.name
        if decision.action is Action.RESTART:
            delay = decision.delay_s
            log.warning("%s: %s; restarting in %.1fs", name, decision.reason, delay)
            # The countdown first: a card shows the note's start.
            retries = self.restarts.policy.start_retries
            reason = decision.outcome or decision.reason  # a refused claim ended no run
            self._set_note(restart_words(delay, decision.attempt, retries, reason))
            self._schedule_restart(delay)
            if run_ended:
                await self._ctx.append_restart(
                    attempt=decision.attempt,
                    start_retries=self.restarts.policy.start_retries,
                    delay_s=delay,
                    reason=decision.outcome,
                )
            return f"; restarting in {delay:.1f}s"
        if decision.action is Action.FATAL:
            log.error("%s: FATAL: %s", name, decision.reason)
            exchange_id = self._ctx.options.exchange_id
            self._set_note(
                f"{FATAL_NOTE_PREFIX}{decision.reason}; `perseus start {exchange_id}` tries again"
            )
            await self._ctx.append_error(decision.reason, ConnectionState.IDLE)
            return f"; {decision.reason}"
        log.info("%s: %s", name, decision.reason)
        self._set_note(None)
        return ""

    def _set_note(self, note: str | None) -> None:
        if note != self.note:
            self.note = note
            self._changed()

    def _schedule_restart(self, delay_s: float) -> None:
        self.cancel_restart(clear_note=False)
        cancelled = self._pending = asyncio.Event()
        self._ctx.tasks.spawn(
            self._restart_after(self._generation, cancelled, delay_s), "automatic restart"
        )

    def cancel_restart(self, *, clear_note: bool = True) -> bool:
        """Drop a pending restart (its backoff wait ends at once). Returns
        whether one was pending or the policy had given up (FATAL)."""
        self._generation += 1
        pending = self._pending
        self._pending = None
        if pending is not None:
            pending.set()
        if clear_note:
            self._set_note(None)
        return pending is not None or self.restarts.fatal is not None

    async def _restart_after(self, generation: int, cancelled: asyncio.Event, delay: float) -> None:
        if await wait_event(cancelled, delay):
            return
        if not await self._may_restart():
            log.info("%s: automatic restart called off", self._ctx.name)
            if generation == self._generation:
                self.cancel_restart()
            return
        async with self.lock:
            if cancelled.is_set() or generation != self._generation or self._run is not None:
                return
            if self._shutdown.is_set():
                return
            self._pending = None
            log.info("%s: restarting", self._ctx.name)
            status, message, _ = await self._start_locked("restart", automatic=True)
            if status is ReplyStatus.SUCCESS:
                self._set_note(None)
            log.log(
                logging.INFO if status is ReplyStatus.SUCCESS else logging.WARNING,
                "%s: restart: %s",
                self._ctx.name,
                message,
            )

    # --- stop -------------------------------------------------------------------

    async def stop(self) -> Reply:
        """Stop the current run (under the lock).

        Raises:
            CommandRejected: the slot is idle.
        """
        had_restart = self.cancel_restart()
        async with self.lock:
            had_restart = self.cancel_restart() or had_restart
            self.restarts.reset()
            run = self._run
            if run is None:
                if had_restart:
                    message = f"{self._ctx.name} stays idle: its automatic restart is called off"
                    return ReplyStatus.SUCCESS, message, self.describe()
                return await self._stop_idle()
            lost = run.instance.lease.lost
            if lost is not None:  # reported, its fencing queued behind this command
                return self.reply(ReplyStatus.ERROR, await run.fence(lost))
            message = await run.stop()
            return ReplyStatus.SUCCESS, message, self.describe()

    async def _stop_idle(self) -> Reply:
        """A stop while nothing runs: it succeeds when the operators' stop is on
        record (the sender writes it first, docs/wire-format.md 2.6), since
        that is what keeps every agent from starting the exchange on its own;
        without the record there is nothing this stop changed.

        Raises:
            CommandRejected: no stop is on record (the sender could not write it).
        """
        ctx = self._ctx
        stopped = await may_start_on_its_own(ctx.redis, ctx.options.exchange_id)
        if stopped is None:
            raise CommandRejected(f"cannot stop {ctx.name}: it is idle")
        message = (
            f"{ctx.name} is idle and stays stopped ({stopped.describe(ctx.clock())}):"
            " no agent starts it on its own until an operator's start"
        )
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
            log.info("%s: %s", name, message)
            await self._after(run, child.returncode != 0, outcome)

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
                await self._after(run, True, await run.fence(exc))
