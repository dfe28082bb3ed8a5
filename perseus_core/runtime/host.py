"""Several exchange slots in one process: `perseus agent --config host.toml`.

Each slot is a whole `Agent` of its own (child, lease, command server,
presence, watchdog, Redis clients), run as one task of a shared event loop;
the host only starts them, stops them and decides what the process's
signals mean for all of them. An agent that fails (refused at startup, a
name the catalog contradicts, a bug) ends alone: its failure is logged under
its exchange's name and every other slot runs on. Only when none is left
running does the process end.

With a reload function (the host file), SIGHUP applies the file again:
slots it adds start, slots it drops stop gracefully (child stopped, slot
released, presence withdrawn), slots whose options changed restart, and the
others are not touched (their child keeps running, its pid unchanged). A
file that fails its checks changes nothing. Slots are matched by exchange id.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from perseus_core.plumbing.processes import install_signal_handlers
from perseus_core.runtime.agent import Agent
from perseus_core.runtime.host_config import HostConfigInvalid
from perseus_core.runtime.options import FORCED_EXIT, AgentOptions
from perseus_core.wire.errors import PerseusError
from perseus_core.wire.settings import Settings
from perseus_core.wire.text import clean
from perseus_core.wire.timeutil import Clock, system_clock

log = logging.getLogger(__name__)

Reload = Callable[[], Sequence[AgentOptions]]
"""Reads the slots again (the host file); raises `HostConfigInvalid` when it cannot."""


class AllSlotsFailed(PerseusError):
    """Every slot's agent ended on its own: nothing is left to run.

    Attributes:
        failures: exchange name -> what ended its agent.
    """

    def __init__(self, failures: dict[str, BaseException]) -> None:
        self.failures = failures
        super().__init__(
            "no slot left running: "
            + "; ".join(
                f"{name}: {clean(str(exc), 300) or type(exc).__name__}"
                for name, exc in failures.items()
            )
        )


@dataclass(eq=False)
class _Member:
    """One slot's agent and the task running it."""

    options: AgentOptions
    agent: Agent
    task: asyncio.Task[None] = field(init=False)
    failure: BaseException | None = None

    @property
    def running(self) -> bool:
        return not self.task.done()


class Host:
    """Run the agents of several exchange slots until a signal or `request_stop()`.

    Args:
        settings: Redis target and timings, shared by every slot.
        slots: what each slot runs; exchange ids are unique.
        reload: how SIGHUP reads the slots again; None makes SIGHUP a
            graceful stop, as for a single agent (a closed SSH session).
        name: what the host's own log lines start with (the host file's name).
        clock: source of every timestamp written.
    """

    def __init__(
        self,
        settings: Settings,
        slots: Sequence[AgentOptions],
        *,
        reload: Reload | None = None,
        name: str = "host",
        clock: Clock = system_clock,
    ) -> None:
        self.settings = settings
        self.name = name
        self._initial = tuple(slots)
        self._reload = reload
        self._clock = clock
        self._members: dict[int, _Member] = {}
        self._shutdown = asyncio.Event()
        self._wake = asyncio.Event()
        self._reloads = 0  # reloads asked for and not yet applied
        self._reloader: asyncio.Task[None] | None = None
        self._sigint_count = 0

    # --- public surface ---------------------------------------------------------

    def request_stop(self) -> None:
        """Stop every slot gracefully and return from `run()`."""
        if not self._shutdown.is_set():
            log.info("%s: stopping every slot", self.name)
        self._shutdown.set()
        self._wake.set()
        for member in self._members.values():
            if member.running:
                member.agent.request_stop()

    def request_reload(self) -> None:
        """Apply the host file again (in the background, after any reload under way)."""
        if self._reload is None or self._shutdown.is_set():
            return
        self._reloads += 1
        if self._reloader is None or self._reloader.done():
            self._reloader = asyncio.create_task(self._reload_all(), name="host reload")

    def run_forever(self) -> int:
        """Run in a fresh event loop; see `run`."""
        return asyncio.run(self.run())

    async def run(self) -> int:
        """Start every slot and run until asked to stop.

        SIGTERM and SIGINT stop every slot gracefully, a second SIGINT kills
        every child and exits at once; SIGHUP reloads (with a reload
        function) or stops gracefully (without).

        Returns:
            0 after a graceful stop.

        Raises:
            AllSlotsFailed: every slot's agent ended on its own.
        """
        loop = asyncio.get_running_loop()
        installed = install_signal_handlers(loop, self._on_signal)
        try:
            log.info(
                "%s: %d slot(s): %s",
                self.name,
                len(self._initial),
                ", ".join(f"{o.exchange_name} ({o.exchange_id})" for o in self._initial),
            )
            for options in self._initial:
                self._start(options)
            while not self._shutdown.is_set():
                busy = self._reloader is not None and not self._reloader.done()
                if not busy and not any(m.running for m in self._members.values()):
                    break
                self._wake.clear()
                await self._wake.wait()
            requested = self._shutdown.is_set()
            failures = {
                m.options.exchange_name: m.failure
                for m in self._members.values()
                if m.failure is not None
            }
            self._shutdown.set()  # no reload may start a slot from now on
            await self._settle()
            if failures and not requested:
                raise AllSlotsFailed(failures)
            log.info("%s: every slot stopped", self.name)
            return 0
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
            self.request_stop()  # a no-op unless run() itself was cancelled
            await self._settle()

    # --- slots --------------------------------------------------------------------

    def _start(self, options: AgentOptions) -> None:
        member = _Member(options, Agent(self.settings, options, clock=self._clock))
        member.task = asyncio.create_task(
            self._run_agent(member), name=f"agent {options.exchange_name}"
        )
        self._members[options.exchange_id] = member

    async def _run_agent(self, member: _Member) -> None:
        """One slot's agent, its failure kept to itself."""
        name = member.options.exchange_name
        try:
            await member.agent.run(signals=False)
        except PerseusError as exc:  # refused at startup: one line, as a single agent's
            member.failure = exc
            log.error("%s: %s; the other slots run on", name, exc)
        except Exception as exc:
            member.failure = exc
            log.exception("%s: agent failed; the other slots run on", name)
        finally:
            self._wake.set()

    async def _stop(self, member: _Member) -> None:
        member.agent.request_stop()
        await asyncio.shield(member.task)

    async def _settle(self) -> None:
        """Wait for every agent (and a reload under way) to finish."""
        tasks: list[asyncio.Task[None]] = [m.task for m in self._members.values()]
        if self._reloader is not None:
            tasks.append(self._reloader)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # --- reload -------------------------------------------------------------------

    async def _reload_all(self) -> None:
        try:
            while self._reloads and not self._shutdown.is_set():
                self._reloads = 0
                await self._apply_file()
        finally:
            self._wake.set()

    async def _apply_file(self) -> None:
        assert self._reload is not None
        try:
            wanted = {o.exchange_id: o for o in self._reload()}
        except HostConfigInvalid as exc:
            log.error("%s: reload refused, every slot kept as it runs: %s", self.name, exc)
            return
        current = dict(self._members)
        added = [o for i, o in wanted.items() if i not in current]
        removed = [m for i, m in current.items() if i not in wanted]
        changed = [
            (m, wanted[i])
            for i, m in current.items()
            if i in wanted and (wanted[i] != m.options or not m.running)
        ]
        kept = len(current) - len(removed) - len(changed)
        log.info(
            "%s: reloading: %d to start, %d to stop, %d to restart, %d unchanged",
            self.name,
            len(added),
            len(removed),
            len(changed),
            kept,
        )
        steps = [self._remove(m) for m in removed]
        steps += [self._replace(m, o) for m, o in changed]
        for options in added:
            log.info("%s: starting %s (added)", self.name, options.exchange_name)
            self._start(options)
        await asyncio.gather(*steps)

    async def _remove(self, member: _Member) -> None:
        name = member.options.exchange_name
        log.info("%s: stopping %s (no longer in the file)", self.name, name)
        await self._stop(member)
        if self._members.get(member.options.exchange_id) is member:
            del self._members[member.options.exchange_id]
        log.info("%s: %s stopped and removed", self.name, name)

    async def _replace(self, member: _Member, options: AgentOptions) -> None:
        why = "changed" if member.running else "its agent had ended"
        log.info("%s: restarting %s (%s)", self.name, options.exchange_name, why)
        await self._stop(member)
        if not self._shutdown.is_set():
            self._start(options)

    # --- signals and exit -------------------------------------------------------

    def _on_signal(self, sig: signal.Signals) -> None:
        if sig == signal.SIGINT:
            self._sigint_count += 1
            if self._sigint_count > 1:
                self._force_exit()
                return
        log.info("%s: received %s", self.name, sig.name)
        if sig == signal.SIGHUP and self._reload is not None:
            self.request_reload()
            return
        if sig == signal.SIGINT:
            log.info("%s: stopping gracefully; Ctrl-C again to exit at once", self.name)
        self.request_stop()

    def _force_exit(self) -> None:
        """Second Ctrl-C: kill every child now and leave; the slots expire on their own."""
        log.warning("%s: forced exit: every child killed, the slots expire on their own", self.name)
        for member in self._members.values():
            member.agent.kill_child_now()
        logging.shutdown()
        os._exit(FORCED_EXIT)
